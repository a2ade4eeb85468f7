"""Seconds to compile the de-blocker's train step (paper scale): groups unrolled vs nn.scan.

  python benchmarks/compile_time.py --json experiments/results/compile_time.json

Compiles (lower + XLA compile, no step run) the `paper` step as train_and_evaluate does, on this
machine's backend, for each variant; XLA's FLOP count of a step comes with it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from cqrnet_jax.config_base import load_config_file
from cqrnet_jax.train import loop
from cqrnet_jax.train.deblock_task import DeblockTask

REPO = Path(__file__).resolve().parents[1]


def get_config(presets: str):
    return load_config_file(REPO / "configs" / "deblock.py", presets)


def measure(presets: str, batch: int, **model) -> dict:
    config = get_config(presets)
    config.batch_size = batch
    config.model.update(model)
    task = DeblockTask(config)
    mesh = loop.make_mesh()
    state = loop.create_state(task, config, mesh)
    p = config.data.patch_size
    fake = {
        "degraded": np.zeros((batch, 1, p, p), np.uint8),
        "clean": np.zeros((batch, p, p), np.uint8),
        "quality": np.zeros((batch, 1), np.int32),
        "label": np.zeros((batch, 1), np.int32),
    }
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    batch_arrays = jax.device_put(fake, sharding)
    frozen = jax.device_put(
        task.frozen, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    )
    t = time.perf_counter()
    _, timing = loop.compile_step(task, config, mesh, state, batch_arrays, frozen)
    return dict(presets=presets, batch=batch, **model, wall_s=time.perf_counter() - t, **timing)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="experiments/results/compile_time.json")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    rows = []
    for presets, model in [
        ("paper", dict(scan_groups=False)),
        ("paper", dict(scan_groups=True)),
        ("paper,gpu", dict()),
    ]:
        rows.append(measure(presets, args.batch, **model))
        print(json.dumps(rows[-1]), flush=True)
    record = dict(
        command=f"python benchmarks/compile_time.py --batch {args.batch} --json {args.json}",
        hardware=f"{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()})",
        jax=jax.__version__,
        note="compile = lower + XLA compile of train_step (train_and_evaluate's AOT compile)",
        rows=rows,
    )
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
