"""How much each term of the stage-2 loss steers training: gradient norms of L_MAE, α·L_Q and β·L_F
with respect to the de-blocker's parameters, and the cosine between ∇L_MAE and ∇(β·L_F), on real
training batches (the shipped de-blocker by default).

  CQRNET_DATA_DIR=DATA python benchmarks/loss_gradients.py [--model PREFIX] [--batches 4]

Measured: experiments/results/loss_gradients.txt (docs/method.md, "L_F on a CPU budget").
"""

import argparse
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from cqrnet_jax import pretrained
from cqrnet_jax.data.pipeline import make_batches
from cqrnet_jax.data.sources import load_training_images
from cqrnet_jax.train.deblock_task import DeblockTask

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "deblock.py"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(pretrained.shipped("deblock")))
    p.add_argument("--batches", type=int, default=4)
    args = p.parse_args()
    spec = importlib.util.spec_from_file_location("deblock_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    variables, meta = pretrained.load_variables(args.model)
    config = module.get_config("cpu")
    config.model.update(meta["model"])
    config.data.backend = "numpy"
    task = DeblockTask(config)

    grads = {  # each weighted term as it enters the loss (the same code as training's)
        k: jax.jit(jax.grad(lambda prm, x, y, k=k: task.weighted_terms(prm, x, y)[k]))
        for k in ("l_mae", "l_q", "l_f")
    }
    flat = lambda g: jnp.concatenate([v.ravel() for v in jax.tree.leaves(g)])  # noqa: E731
    batches = make_batches(
        config.data,
        load_training_images(config.data),
        mode="deblock",
        global_batch=config.batch_size,
        start_step=123_456,
    )
    rows = []
    for _ in range(args.batches):
        b = next(batches)
        x = jnp.asarray(b["degraded"][:, 0], jnp.float32) / 255.0
        y = jnp.asarray(b["clean"], jnp.float32) / 255.0
        g = {k: flat(fn(variables["params"], x, y)) for k, fn in grads.items()}
        mae, f = g["l_mae"], g["l_f"]
        cos = float(mae @ f / (jnp.linalg.norm(mae) * jnp.linalg.norm(f)))
        rows.append([float(jnp.linalg.norm(g[k])) for k in ("l_mae", "l_q", "l_f")] + [cos])
    m = np.mean(rows, axis=0)
    print(
        f"model {args.model} (step {meta.get('step')}), "
        f"{args.batches} batches of {config.batch_size}"
    )
    print(f"|grad L_MAE| {m[0]:.4g}  |grad a*L_Q| {m[1]:.4g}  |grad b*L_F| {m[2]:.4g}")
    print(f"|grad b*L_F| / |grad L_MAE| {m[2] / m[0]:.2f}  cos(grad L_MAE, grad b*L_F) {m[3]:.3f}")


if __name__ == "__main__":
    main()
