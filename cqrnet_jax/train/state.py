"""Train state and optimizer, built from the config."""

from __future__ import annotations

from typing import Any

import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    """Flax's TrainState plus BatchNorm statistics (empty dict for models without BatchNorm)."""

    batch_stats: Any = None


def learning_rate_schedule(optim_cfg) -> optax.Schedule:
    """'constant', 'step' (x decay_rate every decay_steps, the paper's) or 'cosine' (to 0 over
    decay_steps steps, from step decay_begin or the warm-up's end); optional linear warm-up."""
    lr = optim_cfg.learning_rate
    if optim_cfg.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    elif optim_cfg.schedule == "step":
        schedule = optax.exponential_decay(
            lr, optim_cfg.decay_steps, optim_cfg.decay_rate, staircase=True
        )
    elif optim_cfg.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(lr, max(1, optim_cfg.decay_steps))
        # flat until step decay_begin (to anneal a continued run), else the cosine starts at once
        flat = optim_cfg.get("decay_begin", 0) - optim_cfg.warmup_steps
        if flat > 0:
            schedule = optax.join_schedules([optax.constant_schedule(lr), schedule], [flat])
    else:
        raise ValueError(f"unknown learning-rate schedule {optim_cfg.schedule!r}")
    if optim_cfg.warmup_steps:
        warmup = optax.linear_schedule(0.0, lr, optim_cfg.warmup_steps)
        schedule = optax.join_schedules([warmup, schedule], [optim_cfg.warmup_steps])
    return schedule


def create_optimizer(optim_cfg) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(optim_cfg)
    if optim_cfg.name == "adam":
        opt = optax.adam(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2)
    elif optim_cfg.name == "adamw":
        opt = optax.adamw(
            schedule, b1=optim_cfg.b1, b2=optim_cfg.b2, weight_decay=optim_cfg.weight_decay
        )
    else:
        raise ValueError(f"unknown optimizer {optim_cfg.name!r}; choose adam or adamw")
    if optim_cfg.grad_clip:
        opt = optax.chain(optax.clip_by_global_norm(optim_cfg.grad_clip), opt)
    return opt
