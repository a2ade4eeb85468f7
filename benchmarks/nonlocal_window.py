"""Fwd+bwd time of windowed attention (batch 16 of 48x48, 16 channels): window and key/value
subsampling options of the de-blocker's non-local block.

  python benchmarks/nonlocal_window.py
Measured: experiments/results/nonlocal_window.txt.
"""

import time

import jax
import jax.numpy as jnp

from cqrnet_jax.models.layers import _attention, _pool_tokens


def windowed(x, window, pool):
    n, h, w, c = x.shape
    k = window
    tokens = x.reshape(n, h // k, k, w // k, k, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, k * k, c)
    theta, phi, g = tokens[..., :16], tokens[..., 16:], tokens[..., :16] * 2
    if pool > 1:
        phi, g = _pool_tokens(phi, k, pool), _pool_tokens(g, k, pool)
    return _attention(theta, phi, g)


def main():
    x = jax.random.normal(jax.random.key(0), (16, 48, 48, 32))
    for window, pool in [(48, 1), (48, 2), (24, 1), (24, 2)]:
        f = jax.jit(jax.grad(lambda x, w=window, p=pool: jnp.sum(windowed(x, w, p) ** 2)))
        jax.block_until_ready(f(x))
        start = time.perf_counter()
        for _ in range(5):
            jax.block_until_ready(f(x))
        ms = (time.perf_counter() - start) / 5 * 1000
        print(f"window {window}, pool {pool}: {ms:.0f} ms")


if __name__ == "__main__":
    main()
