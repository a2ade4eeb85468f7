"""Why the mask branch upsamples with a sub-pixel conv: fwd+bwd time of RNAN's 6x6 stride-2
transposed conv vs a 3x3 conv to 4C channels + depth-to-space (the same function class).

  python benchmarks/upsampling.py
Measured: experiments/results/upsampling.txt.
"""

import time

import jax
import jax.numpy as jnp
from flax import linen as nn

from cqrnet_jax.models.layers import depth_to_space


def timed(fn, *args, repeats=20):
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / repeats * 1000


def main(c=32):
    x = jax.random.normal(jax.random.key(0), (16, 24, 24, c))
    candidates = {
        "convT": (nn.ConvTranspose(c, (6, 6), strides=(2, 2), padding="SAME"), lambda y: y),
        "subpix": (nn.Conv(4 * c, (3, 3), padding=1), depth_to_space),
    }
    for name, (module, post) in candidates.items():
        v = module.init(jax.random.key(1), x)

        def loss(v, x, module=module, post=post):
            return jnp.sum(post(module.apply(v, x)) ** 2)

        print(f"{name}: {timed(jax.jit(jax.grad(loss, argnums=(0, 1))), v, x):.1f} ms")


if __name__ == "__main__":
    main()
