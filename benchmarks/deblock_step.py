"""Seconds per training step of the de-blocker presets (batch 16 x 48x48, Adam, frozen ranker).

  python benchmarks/deblock_step.py
Measured: experiments/results/deblock_step.txt.
"""

import functools
import importlib.util
import pathlib
import time

import jax
import numpy as np

from cqrnet_jax.train.deblock_task import DeblockTask
from cqrnet_jax.train.loop import train_step
from cqrnet_jax.train.state import TrainState, create_optimizer

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "deblock.py"


def load_config(arg, **overrides):
    spec = importlib.util.spec_from_file_location("deblock_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg)
    for key, value in overrides.items():
        node, *path = [config, *key.split(".")]
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return config


def seconds_per_step(config, repeats=5):
    task = DeblockTask(config)
    variables = task.init_variables(jax.random.key(0))
    state = TrainState.create(
        apply_fn=None, params=variables["params"], batch_stats={}, tx=create_optimizer(config.optim)
    )
    rng = np.random.default_rng(0)
    p = config.data.patch_size
    batch = dict(
        degraded=rng.integers(0, 255, (config.batch_size, 1, p, p), dtype=np.uint8),
        clean=rng.integers(0, 255, (config.batch_size, p, p), dtype=np.uint8),
    )
    step = jax.jit(functools.partial(train_step, loss_fn=task.loss_fn))
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(repeats):
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / repeats


def main():
    cases = {
        "cpu": ("cpu", {}),
        "cpu,no_cqr": ("cpu,no_cqr", {}),
        "cpu, no local groups": ("cpu", {"model.num_local_groups": 0}),
        "cpu, 24x24 full attention": ("cpu", {"model.nl_window": 24, "model.nl_subsample": 1}),
    }
    for name, (arg, overrides) in cases.items():
        print(f"{name}: {seconds_per_step(load_config(arg, **overrides)):.2f} s/step", flush=True)


if __name__ == "__main__":
    main()
