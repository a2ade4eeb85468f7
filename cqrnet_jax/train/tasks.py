"""The training tasks by config name (a small dict, not a registry)."""

from __future__ import annotations

from cqrnet_jax.errors import ConfigError


def get_task(config):
    if config.task == "ranker":
        from cqrnet_jax.train.ranker_task import RankerTask

        return RankerTask(config)
    if config.task == "deblock":
        from cqrnet_jax.train.deblock_task import DeblockTask

        return DeblockTask(config)
    raise ConfigError(f"unknown task {config.task!r}; expected 'ranker' or 'deblock'")
