"""Train state and optimizer, built from the config."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from cqrnet_jax.errors import ConfigError


class TrainState(train_state.TrainState):
    """Flax's TrainState plus BatchNorm statistics (empty dict for models without BatchNorm)."""

    batch_stats: Any = None


def learning_rate_schedule(optim_cfg) -> optax.Schedule:
    """The learning rate at each step. Every step here is absolute (the state's step, which a
    resumed or continued run keeps), so a schedule ends where its numbers say:

    - 'constant': learning_rate;
    - 'step': learning_rate x decay_rate every decay_steps steps (the paper's halving);
    - 'cosine': learning_rate until decay_begin, then a cosine that reaches 0 at step
      decay_begin + decay_steps and stays there (decay_begin=0, decay_steps=num_steps: 0 at the
      last step; decay_begin far beyond num_steps: flat, to end the run later with a decay);

    after an optional linear warm-up from 0 over the warmup_steps steps from warmup_begin (0; a
    continuation's first step, to warm up again), which the schedule then takes over from: a
    cosine begins at the later of decay_begin and the warm-up's end.
    """
    lr = optim_cfg.learning_rate
    warmup_end = optim_cfg.warmup_begin + optim_cfg.warmup_steps
    if optim_cfg.schedule == "constant":
        schedule = optax.constant_schedule(lr)
    elif optim_cfg.schedule == "step":
        schedule = optax.exponential_decay(
            lr, optim_cfg.decay_steps, optim_cfg.decay_rate, staircase=True
        )
    elif optim_cfg.schedule == "cosine":
        begin = max(optim_cfg.decay_begin, warmup_end)
        length = max(1, optim_cfg.decay_begin + optim_cfg.decay_steps - begin)
        schedule = optax.join_schedules(
            [optax.constant_schedule(lr), optax.cosine_decay_schedule(lr, length)], [begin]
        )
    else:
        raise ConfigError(f"unknown learning-rate schedule {optim_cfg.schedule!r}")
    if optim_cfg.warmup_steps:
        warmup = optax.linear_schedule(
            0.0, lr, optim_cfg.warmup_steps, transition_begin=optim_cfg.warmup_begin
        )
        after = schedule  # join_schedules hands it steps counted from warmup_end: made absolute
        schedule = optax.join_schedules(
            [warmup, lambda count: after(count + warmup_end)], [warmup_end]
        )
    return schedule


def create_optimizer(optim_cfg) -> optax.GradientTransformation:
    """Adam(W) with the schedule injected (`optax.inject_hyperparams`): the optimizer state holds
    the schedule's own step counter and the rate it applied last (`applied_learning_rate`)."""
    schedule = learning_rate_schedule(optim_cfg)
    betas = dict(b1=optim_cfg.b1, b2=optim_cfg.b2)
    if optim_cfg.name == "adam":
        opt = optax.inject_hyperparams(optax.adam, static_args=("b1", "b2"))(schedule, **betas)
    elif optim_cfg.name == "adamw":
        opt = optax.inject_hyperparams(optax.adamw, static_args=("b1", "b2", "weight_decay"))(
            schedule, weight_decay=optim_cfg.weight_decay, **betas
        )
    else:
        raise ConfigError(f"unknown optimizer {optim_cfg.name!r}; choose adam or adamw")
    if optim_cfg.grad_clip:
        opt = optax.chain(optax.clip_by_global_norm(optim_cfg.grad_clip), opt)
    return opt


def applied_learning_rate(opt_state):
    """The learning rate of the optimizer's last update (as read from its state, not recomputed)."""
    # hyperparams["learning_rate"], not the schedule's state of the same name (a NamedTuple)
    return optax.tree_utils.tree_get(
        opt_state, "learning_rate", filtering=lambda _path, value: not hasattr(value, "_fields")
    )


def with_schedule_step(opt_state, step: int):
    """`opt_state` whose learning-rate schedule continues at `step`.

    For a continuation from exported params (fresh Adam moments): the schedule's counters move to
    `step`, so every update applies the rate an uninterrupted run applies at that step, while Adam's
    own counter (inside `inner_state`) stays at 0 and its bias correction stays right for the
    fresh moments.
    """
    found = []

    def move(path, leaf):
        names = [getattr(key, "name", None) for key in path]
        if names and names[-1] == "count" and "inner_state" not in names:
            found.append(path)
            return jnp.full_like(leaf, step)
        return leaf

    moved = jax.tree_util.tree_map_with_path(move, opt_state)
    if not found:
        raise ValueError("the optimizer state has no learning-rate schedule counter")
    return moved
