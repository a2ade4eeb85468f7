"""The training loop, written once for every task (ranker, de-blocker, later baselines).

Data parallelism is `jax.jit` over a one-axis `Mesh` named `data`: the batch is split across all
devices (of all processes), the state is replicated. A task (see `tasks.py`) supplies the model's
variables, the loss, the pipeline mode and an optional host-side evaluation.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cqrnet_jax.data.pipeline import make_batches
from cqrnet_jax.data.sources import load_training_images
from cqrnet_jax.train.logging import MetricWriter, Progress
from cqrnet_jax.train.state import (
    TrainState,
    applied_learning_rate,
    create_optimizer,
    with_schedule_step,
)


class NonFiniteLossError(RuntimeError):
    """A step produced a non-finite loss; the state and checkpoints stay as they were before it."""


def train_step(state: TrainState, batch, frozen=None, *, loss_fn, seed: int = 0):
    """One optimizer step. `frozen`: the task's fixed variables (the guiding ranker's), an argument
    rather than constants baked into the compiled program. A non-finite loss or gradient leaves the
    state unchanged and is reported through `metrics['finite']`, so no NaN ever reaches the
    parameters or a checkpoint."""
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def objective(params):
        return loss_fn(params, state.batch_stats, batch, rng, frozen)

    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params
    )
    finite = jnp.isfinite(loss) & jnp.all(
        jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
    )
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    # the rate this update applied, read from the optimizer (after a revert: the previous one)
    lr = applied_learning_rate(new_state.opt_state)
    return new_state, dict(metrics, loss=loss, finite=finite, learning_rate=lr)


def make_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("data",))


def check_batch_divisible(global_batch: int, mesh: Mesh):
    n = mesh.devices.size
    if global_batch % n:
        raise ValueError(
            f"batch_size {global_batch} must be divisible by the number of devices ({n}); "
            f"set --config.batch_size to a multiple of {n}"
        )


def create_state(task, config, mesh: Mesh) -> TrainState:
    """Initialises the state directly replicated on the mesh."""
    replicated = NamedSharding(mesh, P())

    def init(rng):
        variables = task.init_variables(rng)
        return TrainState.create(
            apply_fn=None,
            params=variables["params"],
            batch_stats=variables.get("batch_stats", {}),
            tx=create_optimizer(config.optim),
        )

    return jax.jit(init, out_shardings=replicated)(jax.random.key(config.seed))


def checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True)
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"), options=options
    )


def restore_or_keep(manager: ocp.CheckpointManager, state: TrainState) -> TrainState:
    step = manager.latest_step()
    if step is None:
        return state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def init_from_params(state: TrainState, prefix: str) -> TrainState:
    """Starts from exported params (no optimizer state): the weights and BatchNorm statistics of
    PREFIX, and its step, so the data pipeline and the learning-rate schedule (the optimizer's
    counter too, `with_schedule_step`) continue where it stopped; Adam's moments start afresh."""
    from cqrnet_jax import pretrained

    variables, meta = pretrained.load_variables(prefix)

    def like(new, old):
        if np.shape(new) != old.shape:
            raise ValueError(f"{prefix}: parameter shapes do not match the config's model")
        return jax.device_put(np.asarray(new, old.dtype), old.sharding)

    params = jax.tree.map(like, variables["params"], state.params)
    batch_stats = jax.tree.map(like, variables.get("batch_stats", {}), state.batch_stats)
    step = int(meta.get("step", 0))
    replicated = state.step.sharding
    return state.replace(
        params=params,
        batch_stats=batch_stats,
        step=jax.device_put(jnp.asarray(step, state.step.dtype), replicated),
        opt_state=jax.device_put(with_schedule_step(state.opt_state, step), replicated),
    )


def save_config(workdir: str, config):
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))


def _flush_metrics(pending, step, writer, progress, extra=None):
    """Fetches the metrics of the steps since the last flush (one host sync), checks finiteness."""
    fetched = jax.device_get(pending)
    for i, m in enumerate(fetched):
        if not bool(m["finite"]):
            raise NonFiniteLossError(f"non-finite loss at step {step - len(fetched) + i + 1}")
    scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1] if k != "finite"}
    scalars.update(extra or {})
    writer.write(step, scalars)
    if jax.process_index() == 0:
        print(progress.line(step, scalars), flush=True)


def train_and_evaluate(config, workdir: str, task) -> TrainState:
    """Trains `task` per `config`, resuming from the latest checkpoint in `workdir`."""
    mesh = make_mesh()
    check_batch_divisible(config.batch_size, mesh)
    save_config(workdir, config)
    state = create_state(task, config, mesh)
    manager = checkpoint_manager(workdir, config)
    if manager.latest_step() is None and config.get("init_from"):
        state = init_from_params(state, config.init_from)
        print(f"initialised from {config.init_from} at step {int(state.step)}", flush=True)
    state = restore_or_keep(manager, state)
    start = int(state.step)
    if start >= config.num_steps:
        print(f"{workdir}: already trained to step {start} (num_steps={config.num_steps})")
        task.finalize(state, workdir)
        return state
    print(
        f"{'resuming at' if start else 'starting'} step {start} of {config.num_steps} "
        f"on {mesh.devices.size} device(s), batch {config.batch_size}",
        flush=True,
    )

    images = load_training_images(config.data)
    data_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    batches = device_prefetch(
        make_batches(
            config.data,
            images,
            mode=task.pipeline_mode,
            global_batch=config.batch_size,
            start_step=start,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        ),
        data_sharding,
        depth=config.get("device_prefetch", 2),
    )
    step_fn = jax.jit(
        functools.partial(train_step, loss_fn=task.loss_fn, seed=config.seed),
        in_shardings=(replicated, data_sharding, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    frozen = jax.device_put(task.frozen, replicated) if task.frozen is not None else None
    writer = MetricWriter(os.path.join(workdir, "logs"), enabled=jax.process_index() == 0)
    progress = Progress(start, config.num_steps)
    budget = float(config.get("train_seconds", 0) or 0)
    pending, t0, step = [], time.perf_counter(), start
    try:
        for step in range(start + 1, config.num_steps + 1):
            state, metrics = step_fn(state, next(batches), frozen)
            pending.append(metrics)
            last = step == config.num_steps or _out_of_time(t0, budget, step, config.log_every)
            extra = {}
            if config.eval_every and (step % config.eval_every == 0 or last):
                extra = task.evaluate(state)
            if step % config.log_every == 0 or last or extra or step % config.checkpoint_every == 0:
                _flush_metrics(pending, step, writer, progress, extra)
                pending = []
            if step % config.checkpoint_every == 0 or last:
                manager.save(step, args=ocp.args.StandardSave(state))
            if last:
                break
    finally:
        manager.wait_until_finished()
        writer.close()
    seconds = time.perf_counter() - t0
    why = "" if step == config.num_steps else f" (train_seconds={budget:g} reached)"
    print(f"done: {step - start} steps in {seconds:.0f} s, at step {step}{why}", flush=True)
    task.finalize(state, workdir)
    return state


def device_prefetch(batches, sharding: NamedSharding, depth: int = 2):
    """Yields global device arrays of the host batches, keeping `depth` transfers in flight ahead
    of the step that consumes them (each process contributes its local share)."""
    queue = collections.deque()

    def put(local):
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)

    for local in batches:
        queue.append(put(local))
        if len(queue) > max(0, depth):
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def _out_of_time(t0: float, budget: float, step: int, every: int) -> bool:
    """Whether the wall budget is spent. All processes must stop at the same step: with several,
    process 0 decides, at logging steps only (one broadcast, no per-step sync)."""
    if budget <= 0:
        return False
    if jax.process_count() == 1:
        return time.perf_counter() - t0 >= budget
    if step % every:
        return False
    from jax.experimental import multihost_utils

    spent = np.asarray(time.perf_counter() - t0 >= budget, np.int32)
    return bool(multihost_utils.broadcast_one_to_all(spent))


def read_workdir_config(workdir: str) -> dict:
    with open(os.path.join(workdir, "config.json")) as f:
        return json.load(f)
