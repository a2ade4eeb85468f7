"""The training loop, written once for every task (ranker, de-blocker, later baselines).

Data parallelism is `jax.jit` over a one-axis `Mesh` named `data`: the batch is split across all
devices (of all processes), the state is replicated. A task (see `tasks.py`) supplies the model's
variables, the loss, the pipeline mode and an optional host-side evaluation.

With several processes (`distributed.py`) every process runs this loop: each builds its own rows
of every global batch and all of them save and load the checkpoints together (orbax
coordinates them; the workdir must be shared); only process 0 prints, writes logs, the config
and timing, evaluates and exports.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cqrnet_jax.config_base import deblock_model_defaults
from cqrnet_jax.data.datasets import CONFIG_FLAG, DATA_DIR_ENV, NoDataDirError
from cqrnet_jax.data.pipeline import make_batches
from cqrnet_jax.data.sources import load_training_images, training_files
from cqrnet_jax.devices import compiler_options
from cqrnet_jax.errors import ConfigError
from cqrnet_jax.train.config_check import check_config
from cqrnet_jax.train.guard import NonFiniteGuard, all_finite
from cqrnet_jax.train.logging import MetricWriter, Progress
from cqrnet_jax.train.state import (
    TrainState,
    applied_learning_rate,
    create_optimizer,
    with_schedule_step,
)
from cqrnet_jax.train.workdir import resume_hint


def train_step(state: TrainState, batch, frozen=None, *, loss_fn, seed: int = 0):
    """One optimizer step. `frozen`: the task's fixed variables (the guiding ranker's), an argument
    rather than constants baked into the compiled program. A step whose loss, gradients or new
    BatchNorm statistics are not all finite is skipped: it returns `state` unchanged (parameters,
    optimizer state, statistics and step) with `metrics['finite']` False, so no NaN ever reaches
    the parameters or a checkpoint (the loop counts such steps: `guard.NonFiniteGuard`)."""
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def objective(params):
        return loss_fn(params, state.batch_stats, batch, rng, frozen)

    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params
    )
    finite = all_finite((loss, grads, batch_stats))
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    # the rate this update applied, read from the optimizer (after a revert: the previous one)
    lr = applied_learning_rate(new_state.opt_state)
    return new_state, dict(metrics, loss=loss, finite=finite, learning_rate=lr)


def make_mesh() -> Mesh:
    """All devices of all processes on the `data` axis, process by process: process i's devices
    hold rows i*B/N to (i+1)*B/N of the global batch, the rows its input pipeline builds."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), ("data",))


def report(message: str):
    """Prints a progress line on process 0 only (the others would repeat it)."""
    if jax.process_index() == 0:
        print(message, flush=True)


def check_batch_divisible(global_batch: int, mesh: Mesh):
    n = mesh.devices.size
    if global_batch % n:
        raise ConfigError(
            f"batch_size {global_batch} must be divisible by the number of devices ({n}); "
            f"set --config.batch_size to a multiple of {n}"
        )


def create_state(task, config, mesh: Mesh) -> TrainState:
    """Initialises the state directly replicated on the mesh. Its step is a strongly typed int32,
    as a loaded checkpoint's is (Flax's `step=0` would be weakly typed): a fresh and a resumed
    run then compile the same step program, and the persistent compilation cache serves both."""
    replicated = NamedSharding(mesh, P())

    def init(rng):
        variables = task.init_variables(rng)
        return TrainState.create(
            apply_fn=None,
            params=variables["params"],
            batch_stats=variables.get("batch_stats", {}),
            tx=create_optimizer(config.optim),
        ).replace(step=jnp.zeros((), jnp.int32))

    return jax.jit(init, out_shardings=replicated)(jax.random.key(config.seed))


def checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True)
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"), options=options
    )


def load_latest_checkpoint(manager: ocp.CheckpointManager, state: TrainState) -> TrainState:
    """The state of the workdir's latest checkpoint, placed as `state` is; `state` if none."""
    step = manager.latest_step()
    if step is None:
        return state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def init_from_params(
    state: TrainState,
    prefix: str,
    channels: int = 1,
    quality_input: bool = False,
    model: dict | None = None,
) -> TrainState:
    """Starts from exported params (no optimizer state): the weights and BatchNorm statistics of
    PREFIX, and its step, so the data pipeline and the learning-rate schedule (the optimizer's
    counter too, `with_schedule_step`) continue where it stopped; Adam's moments start afresh.
    A grey U-Net's params for a colour (`channels` 3) model: `unet.colour_from_grey`, at step 0
    (a new task, with its own schedule); for a chroma U-Net, its frozen Y model (the chroma
    branch starts fresh); for a quality-conditioned U-Net (`quality_input`), a U-Net without
    the quality plane: `unet.add_quality_input`, at its step (the same network until trained),
    and for a quality-conditioned chroma U-Net, a blind one: `unet.add_chroma_quality_input`.
    `model`: the config's model settings, to name the ones that differ when shapes don't match."""
    from cqrnet_jax import pretrained

    variables, meta = pretrained.load_variables(prefix)
    saved = {**deblock_model_defaults(), **meta.get("model", {})}
    grey = saved["channels"] == 1
    if saved["quality_input"] and not quality_input:
        raise ConfigError(
            f"{prefix}: a quality-conditioned model (told the JPEG quality); train from it with "
            "--config.model.quality_input=True"
        )
    if quality_input and not saved["quality_input"] and saved["arch"] == "unet":
        from cqrnet_jax.models.unet import add_quality_input

        variables = {**variables, "params": add_quality_input(variables["params"])}
    if quality_input and not saved["quality_input"] and saved["arch"] == "chroma":
        from cqrnet_jax.models.unet import add_chroma_quality_input

        variables = {**variables, "params": add_chroma_quality_input(variables["params"])}
    if grey and "luma" in state.params:  # a chroma U-Net: the grey model is its frozen Y
        fresh = jax.device_get(state.params)
        variables = {**variables, "params": {**fresh, "luma": variables["params"]}}
        meta = {**meta, "step": 0}
    elif channels == 3 and grey:
        from cqrnet_jax.models.unet import colour_from_grey

        try:
            variables = {**variables, "params": colour_from_grey(variables["params"])}
        except (KeyError, ValueError):
            raise ConfigError(f"{prefix}: not a grey U-Net, cannot start a colour model") from None
        meta = {**meta, "step": 0}

    def like(new, old):
        if np.shape(new) != old.shape:
            raise ConfigError(
                f"{prefix}: parameter shapes do not match the config's model"
                + _shape_settings_hint(saved, model)
            )
        return jax.device_put(np.asarray(new, old.dtype), old.sharding)

    if jax.tree.structure(variables["params"]) != jax.tree.structure(state.params):
        raise ConfigError(
            f"{prefix}: its parameters are not laid out as the config's model (another model, "
            "or groups unrolled vs model.scan_groups: see models.deblock.scan_layout)"
        )
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


_SHAPE_SETTINGS = ("widths", "blocks", "chroma_widths", "chroma_blocks", "features", "depth")


def _shape_settings_hint(saved: dict, model: dict | None) -> str:
    """'; it has model.K=V (the config: W), ...' for the size settings of a saved model that
    the config's `model` sets otherwise ('' if none is known to differ)."""

    def value(v):  # JSON gives lists, the config tuples
        return tuple(v) if isinstance(v, (list, tuple)) else v

    differ = [
        f"model.{k}={value(saved[k])} (the config: {value(model[k])})"
        for k in _SHAPE_SETTINGS
        if model and k in saved and k in model and value(saved[k]) != value(model[k])
    ]
    return f"; it has {', '.join(differ)}: set them with --config.model.NAME" if differ else ""


def save_config(workdir: str, config):
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))


def _flush_metrics(pending, step, writer, progress, extra, skipped: int):
    """Fetches the metrics of the steps since the last flush (one host sync) and logs their means
    over the steps that were applied (a skipped step's loss is NaN; if all were skipped, the NaNs
    show), with `skipped_steps`, the run's skipped steps so far, once there is one."""
    fetched = jax.device_get(pending)
    applied = [m for m in fetched if m["finite"]] or fetched
    scalars = {k: float(np.mean([m[k] for m in applied])) for k in fetched[-1] if k != "finite"}
    if skipped:
        scalars["skipped_steps"] = skipped
    scalars.update(extra)
    writer.write(step, scalars)
    if jax.process_index() == 0:
        print(progress.line(step, scalars), flush=True)


def _start_state(task, config, mesh: Mesh, manager) -> tuple[TrainState, int]:
    """The state to train from (the latest checkpoint, `init_from`'s params or a fresh one) and
    the step the run starts after. Steps count batches: a checkpoint's step is where the data
    resumes, while `state.step` counts the updates applied (fewer by the steps skipped as
    non-finite), which the learning-rate schedule and Adam follow."""
    state = create_state(task, config, mesh)
    if manager.latest_step() is None and config.init_from:
        from cqrnet_jax.pretrained import resolve_model_prefix

        channels = config.model.channels if config.task == "deblock" else 1  # rankers: grey
        prefix = resolve_model_prefix(config.init_from, config.task)  # 'default', a workdir, ...
        quality_input = config.task == "deblock" and bool(config.model.get("quality_input"))
        model = config.model.to_dict() if config.task == "deblock" else None
        state = init_from_params(state, prefix, channels, quality_input, model)
        report(f"initialised from {prefix} at step {int(state.step)}")
    state = load_latest_checkpoint(manager, state)
    start = manager.latest_step()
    return state, int(state.step) if start is None else start


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; the message (one line) says the step and where a rerun resumes.
    A KeyboardInterrupt still, for callers that catch those."""


class _StopRequest:
    """Ctrl-C in the training loop: the first asks the loop to stop after the step in progress
    (it saves a checkpoint there), a second interrupts at once (KeyboardInterrupt). Only in a
    one-process run's main thread where Ctrl-C raises KeyboardInterrupt: several processes would
    have to agree on the step to save together, and a SIGINT ignored (a background job) stays
    ignored."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if (
            jax.process_count() == 1
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _evaluation_every(config, task) -> int:
    """config.eval_every, once the task's evaluation data is read (before anything compiles, so a
    set that cannot be read stops the run at once, with one line); 0 when no data directory is
    named at all: evaluation only monitors training, so the run goes on without it, saying so."""
    every = config.eval_every
    load = getattr(task, "load_evaluation", None)
    if not every or load is None or jax.process_index() != 0:  # only process 0 evaluates
        return every
    try:
        load()
    except NoDataDirError:
        report(
            f"no data directory for the evaluation set {config.eval_set!r} "
            f"({CONFIG_FLAG} or ${DATA_DIR_ENV}): evaluation, which only monitors "
            "training, is off"
        )
        return 0
    return every


def train_and_evaluate(config, workdir: str, task) -> TrainState:
    """Trains `task` per `config`, resuming from the latest checkpoint in `workdir`.

    The data are checked first, before anything is written or compiled. Ctrl-C stops the run
    after the step in progress, saves a checkpoint there and raises `TrainingInterrupted`; a
    second Ctrl-C stops at once (the latest checkpoint is where a rerun resumes)."""
    check_config(config)
    mesh = make_mesh()
    check_batch_divisible(config.batch_size, mesh)
    training_files(config.data)  # listed, not read: a missing folder or file fails here
    eval_every = _evaluation_every(config, task)
    save_config(workdir, config)
    manager = checkpoint_manager(workdir, config)
    state, start = _start_state(task, config, mesh, manager)
    if start >= config.num_steps:
        report(f"{workdir}: already trained to step {start} (num_steps={config.num_steps})")
        task.finalize(state, workdir)
        return state
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    report(
        f"{'resuming at' if start else 'starting'} step {start} of {config.num_steps} "
        f"on {mesh.devices.size} device(s){processes}, batch {config.batch_size}"
    )

    replicated = NamedSharding(mesh, P())
    batches = _training_batches(config, task, start, NamedSharding(mesh, P("data")))
    frozen = jax.device_put(task.frozen, replicated) if task.frozen is not None else None
    t0 = time.perf_counter()  # train_seconds counts from here: compiling is part of the run
    first = next(batches)
    step_fn, timing = compile_step(task, config, mesh, state, first, frozen)
    batches = itertools.chain([first], batches)
    main_process = jax.process_index() == 0
    writer = MetricWriter(os.path.join(workdir, "logs"), enabled=main_process)
    budget = float(config.train_seconds)
    progress = Progress(start, config.num_steps, t0 + budget if budget else None)
    guard = NonFiniteGuard(config.max_nonfinite_steps, start - int(state.step), main_process)
    steady_from = start + max(config.log_first_steps, 1)  # past compile and synced steps
    pending, step, t_steady, waited = [], start, None, 0.0
    stopping = interrupted = False
    try:
        with _StopRequest() as stop:
            for step in range(start + 1, config.num_steps + 1):
                t_wait = time.perf_counter()
                batch = next(batches)
                waited += time.perf_counter() - t_wait  # host time waiting for input
                state, metrics = step_fn(state, batch, frozen)
                guard.push(step, metrics["finite"])
                pending.append(metrics)
                last = step == config.num_steps or _out_of_time(t0, budget, step, config.log_every)
                stopping = stop.requested  # Ctrl-C: this step is the last, and is saved
                due = _due(config, step, start, last, eval_every) | (
                    {"save"} if stopping else set()
                )
                guard.settle(lag=0 if due else 1)  # a step is read before it is saved or shown
                extra = task.evaluate(state) if "eval" in due and main_process else {}
                if "log" in due or extra:
                    _flush_metrics(pending, step, writer, progress, extra, guard.skipped)
                    pending = []
                if step == steady_from:
                    jax.block_until_ready(state)
                    t_steady = (time.perf_counter(), step)
                if "save" in due:  # every process: orbax writes the shards and syncs them
                    manager.save(step, args=ocp.args.StandardSave(state))
                if "export" in due:
                    task.finalize(state, workdir)
                if last or stopping:
                    break
        jax.block_until_ready(state)
    except KeyboardInterrupt:  # a second Ctrl-C, or one in a multi-process run: nothing saved
        interrupted = True
    finally:
        manager.wait_until_finished()
        writer.close()
    if stopping or interrupted:
        raise TrainingInterrupted(f"interrupted at step {step}; {resume_hint(workdir)}")
    seconds = time.perf_counter() - t0
    timing.update(steps=step - start, seconds=seconds, end_step=step, input_wait_s=waited)
    timing["skipped_steps"] = guard.skipped
    if t_steady and step > t_steady[1]:
        timing["steps_per_s"] = (step - t_steady[1]) / (time.perf_counter() - t_steady[0])
    write_timing(workdir, timing)
    why = "" if step == config.num_steps else f" (train_seconds={budget:g} reached)"
    why += f", {guard.skipped} skipped as non-finite" if guard.skipped else ""
    report(f"done: {step - start} steps in {seconds:.0f} s, at step {step}{why}")
    task.finalize(state, workdir)
    return state


def _due(config, step: int, start: int, last: bool, eval_every: int | None = None) -> set[str]:
    """What step `step` does besides its update: "log", "eval", "save" (a checkpoint), "export".
    `eval_every`: config.eval_every unless given (0 when the evaluation data are missing). Each
    `*_every` of 0 is off: then only the last step saves (and logs, as every save does)."""
    due = set()
    if _every(step, config.checkpoint_every) or last:
        due.add("save")
    # log_first_steps: the first steps shown at once (a broken run fails within a minute)
    if due or _every(step, config.log_every) or step <= start + config.log_first_steps:
        due.add("log")
    eval_every = config.eval_every if eval_every is None else eval_every
    if _every(step, eval_every) or (eval_every and last):
        due.add("eval")
    if _every(step, config.export_every) and not last:
        due.add("export")
    return due


def _every(step: int, every: int) -> bool:
    """Whether `step` is one of every `every` steps; never when `every` is 0 (off)."""
    return bool(every) and step % every == 0


def _training_batches(config, task, start: int, sharding: NamedSharding):
    """This process's batches from step `start + 1` on, as global arrays prefetched to devices."""
    images = load_training_images(config.data)
    local = make_batches(
        config.data,
        images,
        mode=task.pipeline_mode,
        global_batch=config.batch_size,
        start_step=start,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    return device_prefetch(local, sharding, depth=config.device_prefetch)


def export_target(config, workdir: str, name: str) -> tuple[str, int]:
    """(prefix, split_bytes) of a task's export: WORKDIR/export/NAME, or config.export_dir/NAME,
    in parts of config.export_split_mb MiB (0: one file)."""
    folder = config.export_dir or os.path.join(workdir, "export")
    return os.path.join(folder, name), int(config.export_split_mb * 2**20)


def compile_step(task, config, mesh: Mesh, state, batch, frozen):
    """The jitted train step compiled ahead of time for these shapes, and its timing record:
    compile seconds and XLA's FLOP count of one step (all devices; a scanned loop's body is
    counted once, so with model.scan_groups it is a lower bound)."""
    data_sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    jitted = jax.jit(
        functools.partial(train_step, loss_fn=task.loss_fn, seed=config.seed),
        in_shardings=(replicated, data_sharding, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    t = time.perf_counter()
    lowered = jitted.lower(state, batch, frozen)
    options = compiler_options("train", mesh.devices.flat)  # on a CPU: convolutions off YNNPACK
    try:
        compiled = lowered.compile(options)
    except jax.errors.JaxRuntimeError as err:  # a jaxlib that does not know these options
        if not options or "option" not in str(err):
            raise
        report(f"compiling without {sorted(options)}: {str(err).splitlines()[0]}")
        compiled, options = lowered.compile(), None
    timing = dict(
        compile_s=time.perf_counter() - t,
        compiler_options=options or {},
        batch_size=config.batch_size,
        devices=mesh.devices.size,
        platform=jax.devices()[0].platform,
    )
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        # the partitioned program's cost is one device's: the step's is that times the devices
        timing["flops_per_step"] = float(cost["flops"]) * mesh.devices.size
    except Exception:  # noqa: BLE001 - cost analysis is best-effort on some backends
        pass
    report(f"compiled the train step in {timing['compile_s']:.1f} s")
    return compiled, timing


def write_timing(workdir: str, timing: dict):
    """WORKDIR/timing.json: the last run's compile time, FLOPs, steps/s and peak memory."""
    if jax.process_index() != 0:
        return
    stats = getattr(jax.local_devices()[0], "memory_stats", lambda: None)() or {}
    if "peak_bytes_in_use" in stats:
        timing["peak_bytes_in_use"] = int(stats["peak_bytes_in_use"])
    with open(os.path.join(workdir, "timing.json"), "w") as f:
        json.dump(timing, f, indent=2)


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
    process 0 decides, at logging steps only (one broadcast, no per-step sync; every step when
    logging is off)."""
    if budget <= 0:
        return False
    if jax.process_count() == 1:
        return time.perf_counter() - t0 >= budget
    if every and step % every:
        return False
    from jax.experimental import multihost_utils

    spent = np.asarray(time.perf_counter() - t0 >= budget, np.int32)
    return bool(multihost_utils.broadcast_one_to_all(spent))


def read_workdir_config(workdir: str) -> dict:
    with open(os.path.join(workdir, "config.json")) as f:
        return json.load(f)
