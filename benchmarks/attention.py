"""The windowed attention's formulation on XLA:CPU: `softmax(logits)` then the value product
(the plain formulation, `softmax_then_product`) against `layers._attention` (the key mask as
one more logit channel, the normalisation after the value product), forward and forward+backward,
in one run, on the shipped model's shapes: 48x48 windows (2 304 queries), 2x2-pooled keys (576), 16
channels, a chunk of 16 windows, with and without a key mask. Also the whole shipped model on a
BSDS500-sized image (321 x 481) with either formulation.

  python benchmarks/attention.py [--json OUT]

Measure with the cores idle. The outputs agree to float rounding (printed).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from cqrnet_jax.models import layers


def softmax_then_product(theta, phi, g, key_valid=None):
    """The plain formulation: a select over the logits, softmax, then the value product."""
    logits = jnp.einsum("bqc,bkc->bqk", theta, phi, preferred_element_type=jnp.float32)
    if key_valid is not None:
        logits = jnp.where(key_valid[:, None, :], logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(g.dtype)
    return jnp.einsum("bqk,bkc->bqc", weights, g)


FORMULATIONS = {"softmax_then_product": softmax_then_product, "deferred": layers._attention}


def best_seconds(fn, args, repeats: int) -> float:
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def attention_rows(repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    b, q, k, c = 16, 48 * 48, 24 * 24, 16
    theta = jnp.asarray(rng.standard_normal((b, q, c), np.float32) * 0.5)
    phi = jnp.asarray(rng.standard_normal((b, k, c), np.float32) * 0.5)
    g = jnp.asarray(rng.standard_normal((b, k, c), np.float32))
    mask = jnp.asarray(rng.random((b, k)) > 0.2)
    rows = []
    for masked in (False, True):
        args = (theta, phi, g) + ((mask,) if masked else ())
        reference = jax.jit(softmax_then_product)(*args)
        for name, fn in FORMULATIONS.items():

            def loss(theta, phi, g, *rest, fn=fn):
                return jnp.sum(fn(theta, phi, g, *rest) ** 2)

            grad = jax.grad(loss, argnums=(0, 1, 2))
            rows.append(
                dict(
                    formulation=name,
                    key_mask=masked,
                    forward_ms=1e3 * best_seconds(fn, args, repeats),
                    forward_backward_ms=1e3 * best_seconds(grad, args, repeats),
                    max_abs_diff=float(jnp.max(jnp.abs(jax.jit(fn)(*args) - reference))),
                )
            )
            print(rows[-1], flush=True)
    return rows


def model_rows(repeats: int) -> list[dict]:
    from cqrnet_jax.inference import load_restorer

    restorer, _ = load_restorer("default")
    model, variables = restorer.model, restorer.variables
    x = jnp.asarray(np.random.default_rng(1).random((1, 321, 481), np.float32))
    valid = jnp.asarray([[321, 481]], jnp.int32)
    told = {"quality": jnp.full((1,), 10.0)} if restorer.quality_input else {}  # the shipped
    rows, outputs = [], {}
    for name, fn in FORMULATIONS.items():
        layers._attention = fn  # traced anew below, so the model picks this one up
        try:

            def apply(v, x, valid):
                return model.apply(v, x, valid, **told)

            seconds = best_seconds(apply, (variables, x, valid), repeats)
            rows.append(dict(formulation=name, model_s=seconds))
            outputs[name] = np.asarray(jax.jit(apply)(variables, x, valid))
        finally:
            layers._attention = FORMULATIONS["deferred"]
        print(rows[-1], flush=True)
    diff = 255 * np.abs(outputs["deferred"] - outputs["softmax_then_product"]).max()
    for row in rows:
        row["max_abs_diff_grey_levels"] = float(diff)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    report = {
        "command": "python benchmarks/attention.py" + (" --json OUT" if args.json else ""),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "attention_chunk": attention_rows(args.repeats),
        "shipped_model_321x481": model_rows(args.repeats),
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
