"""The training loop on the ranker's `smoke` preset: learning, checkpoints, logs and export,
resuming (bit-exact continuation), the non-finite guard, data-parallel sharding, and the CLI.

CI runs this with XLA_FLAGS=--xla_force_host_platform_device_count=2; the tests use whatever device
count jax started with. Every `train_and_evaluate` builds fresh jitted functions, so this module
turns on JAX's persistent compilation cache (in a temporary folder) to compile each program once.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from helpers import assert_trees_equal, cached_compile_env

from cqrnet_jax import pretrained
from cqrnet_jax.data.pipeline import make_batches
from cqrnet_jax.data.sources import load_training_images
from cqrnet_jax.train import loop
from cqrnet_jax.train.guard import NonFiniteGuard, NonFiniteLossError, all_finite
from cqrnet_jax.train.ranker_task import RankerTask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 4  # resume tests: train K steps, stop, resume to 2K


def _smoke(ranker_config, **overrides):
    """The smoke preset, on the TensorFlow-free backend, with dotted-key overrides."""
    config = ranker_config("smoke")
    config.data.backend = "numpy"
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _run(config, workdir, task=None):
    """train_and_evaluate with its stdout captured: (host copy of the final state, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        state = loop.train_and_evaluate(config, str(workdir), task or RankerTask(config))
    return jax.device_get(state), out.getvalue()


def _logged_steps(workdir):
    with open(os.path.join(workdir, "logs", "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f]


def _variables(state):
    return {"params": state.params, "batch_stats": state.batch_stats}


def _max_abs_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


# --- learning -------------------------------------------------------------------------------------


@pytest.mark.slow  # ~20 s on 2 busy cores; the de-blocker's twin in test_deblock_task.py is fast
def test_loss_goes_down_on_a_fixed_batch(ranker_config):
    """A few jitted Adam steps of train_step on one repeated batch clearly lower the loss."""
    config = _smoke(ranker_config, **{"optim.learning_rate": 1e-3})
    task = RankerTask(config)
    state = loop.create_state(task, config, loop.make_mesh())
    init_stats = jax.device_get(state.batch_stats)
    images = load_training_images(config.data)
    batches = make_batches(config.data, images, mode="ranker", global_batch=8, start_step=0)
    batch = next(batches)
    batches.close()
    step = jax.jit(functools.partial(loop.train_step, loss_fn=task.loss_fn))
    losses = []
    for _ in range(12):
        state, metrics = step(state, batch)
        assert bool(metrics["finite"])
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 12
    assert losses[0] > 0.2  # an untrained ranker cannot order the pairs by the margin
    assert losses[-1] < 0.5 * losses[0], losses
    assert float(metrics["pair_accuracy"]) >= 0.75
    # training mode updates the BatchNorm running statistics
    assert _max_abs_diff(init_stats, jax.device_get(state.batch_stats)) > 0


# --- a run, stopped and resumed, against a straight run -------------------------------------------


@pytest.fixture(scope="module")
def runs(ranker_config, tmp_path_factory):
    """Run A: K steps, then rerun to 2K (resumes); run B: 2K steps straight. Same config."""
    recorded = []
    original_load = loop.load_latest_checkpoint

    def recording_load(manager, state):
        loaded = original_load(manager, state)
        recorded.append(jax.device_get(loaded))  # copy now: the loop donates the state
        return loaded

    overrides = {"log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 2}
    dir_a, dir_b = tmp_path_factory.mktemp("run_a"), tmp_path_factory.mktemp("run_b")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "load_latest_checkpoint", recording_load)
        first, out_first = _run(_smoke(ranker_config, num_steps=K, **overrides), dir_a)
        export_first = pretrained.load_variables(dir_a / "export" / "ranker")
        logged_first = _logged_steps(dir_a)
        resumed, out_resumed = _run(_smoke(ranker_config, num_steps=2 * K, **overrides), dir_a)
    straight, _ = _run(_smoke(ranker_config, num_steps=2 * K, **overrides), dir_b)
    return dict(
        dir_a=dir_a,
        first=first,
        out_first=out_first,
        export_first=export_first,
        logged_first=logged_first,
        restored=recorded,
        resumed=resumed,
        out_resumed=out_resumed,
        straight=straight,
    )


def test_run_writes_checkpoints_config_logs_and_export(runs, ranker_config):
    """A run leaves config.json, checkpoints (the newest kept), metrics.jsonl and the export."""
    workdir = runs["dir_a"]
    with open(workdir / "config.json") as f:
        saved = json.load(f)
    assert saved["task"] == "ranker" and saved["num_steps"] == 2 * K
    assert saved["model"] == json.loads(ranker_config("smoke").model.to_json())
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2 * K - 2, 2 * K]  # every 2 steps, keep_checkpoints=2
    assert runs["logged_first"] == list(range(1, K + 1))
    with open(workdir / "logs" / "metrics.jsonl") as f:
        record = json.loads(f.readline())
    assert {"step", "loss", "pair_accuracy", "learning_rate"} <= set(record)
    assert any(p.name.startswith("events.out.tfevents") for p in (workdir / "logs").iterdir())
    for suffix in ("msgpack", "json"):
        assert (workdir / "export" / f"ranker.{suffix}").is_file()


def test_export_holds_the_final_params_and_batch_stats_only(runs):
    """export/ranker.msgpack is the final state's params + BatchNorm stats; the JSON says how."""
    variables, meta = runs["export_first"]
    assert set(variables) == {"params", "batch_stats"}  # no optimizer state
    assert_trees_equal(variables, _variables(runs["first"]))
    assert meta["kind"] == "ranker" and meta["step"] == K
    assert meta["model"]["features"] == [8, 8, 16, 16, 16, 16, 16, 16, 16, 16]
    variables, meta = pretrained.load_variables(runs["dir_a"] / "export" / "ranker")
    assert meta["step"] == 2 * K  # the resumed run re-exported
    assert_trees_equal(variables, _variables(runs["resumed"]))


def test_rerun_with_more_steps_resumes_where_it_stopped(runs):
    """The rerun restores step K's saved state exactly and continues the step count to 2K."""
    first_restore, second_restore = runs["restored"]
    assert int(first_restore.step) == 0  # nothing to restore on the first run
    assert int(second_restore.step) == K
    assert_trees_equal(second_restore.params, runs["first"].params)
    assert_trees_equal(second_restore.batch_stats, runs["first"].batch_stats)
    assert_trees_equal(second_restore.opt_state, runs["first"].opt_state)
    assert f"resuming at step {K} of {2 * K}" in runs["out_resumed"]
    assert "starting step 0" in runs["out_first"]
    assert _logged_steps(runs["dir_a"]) == list(range(1, 2 * K + 1))  # K + 1 is the first after
    assert int(runs["resumed"].step) == 2 * K


def test_init_from_exported_params_continues_step_and_weights(runs, ranker_config, tmp_path):
    """A fresh workdir with init_from=an export (here named by its run's workdir) starts at the
    export's step with its weights (what a new machine does with the shipped params), then
    trains on."""
    prefix = runs["dir_a"] / "export" / "ranker"
    exported, meta = pretrained.load_variables(prefix)
    recorded = []
    original_load = loop.load_latest_checkpoint

    def recording_load(manager, state):
        recorded.append(jax.device_get(state))
        return original_load(manager, state)

    workdir = str(runs["dir_a"])
    config = _smoke(ranker_config, num_steps=meta["step"] + 2, init_from=workdir, log_every=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "load_latest_checkpoint", recording_load)
        final, out = _run(config, tmp_path)
    assert f"initialised from {prefix} at step {meta['step']}" in out
    assert int(recorded[0].step) == meta["step"]
    assert_trees_equal(_variables(recorded[0]), exported)
    assert int(final.step) == meta["step"] + 2
    assert _logged_steps(tmp_path) == [meta["step"] + 1, meta["step"] + 2]


def test_resumed_run_equals_a_straight_run(runs):
    """Training K steps, stopping and resuming to 2K gives the state of 2K steps straight, bit for
    bit: the checkpoint restores the state exactly, the pipeline restarts at plan K + 1, and the
    same compiled step runs on the same inputs."""
    resumed, straight = runs["resumed"], runs["straight"]
    assert int(resumed.step) == int(straight.step) == 2 * K
    assert_trees_equal(
        (resumed.params, resumed.batch_stats, resumed.opt_state),
        (straight.params, straight.batch_stats, straight.opt_state),
    )
    # and the run did move the parameters (the comparison is not between two initial states)
    assert _max_abs_diff(straight.params, runs["restored"][0].params) > 1e-4


def test_fresh_and_restored_states_compile_the_same_step(runs, ranker_config):
    """A fresh state and one restored from a checkpoint have the same dtypes, weak types and
    shardings leaf for leaf, so a resumed run runs (and finds in the persistent compilation
    cache) the very program of the run it continues."""
    config = _smoke(ranker_config)
    task, mesh = RankerTask(config), loop.make_mesh()
    manager = loop.checkpoint_manager(str(runs["dir_a"]), config)
    fresh = loop.create_state(task, config, mesh)
    loaded = loop.load_latest_checkpoint(manager, loop.create_state(task, config, mesh))
    manager.close()
    assert int(loaded.step) == 2 * K

    def avals(state):
        leaves = jax.tree.leaves((state.step, state.params, state.batch_stats, state.opt_state))
        return [(x.dtype, x.shape, x.weak_type, x.sharding) for x in leaves]

    assert avals(fresh) == avals(loaded)


def test_rerun_at_num_steps_only_reexports(runs, ranker_config):
    """Rerunning a finished workdir does not train further: same state, step stays 2K."""
    config = _smoke(ranker_config, num_steps=2 * K, log_every=1, checkpoint_every=2)
    state, out = _run(config, runs["dir_a"])
    assert "already trained to step" in out
    assert int(state.step) == 2 * K
    assert_trees_equal(_variables(state), _variables(runs["resumed"]))
    assert _logged_steps(runs["dir_a"]) == list(range(1, 2 * K + 1))
    variables, meta = pretrained.load_variables(runs["dir_a"] / "export" / "ranker")
    assert meta["step"] == 2 * K
    assert_trees_equal(variables, _variables(runs["resumed"]))


# --- the non-finite guard ------------------------------------------------------------------------


class NaNAfterTwoSteps(RankerTask):
    """The ranker task with a loss that turns NaN from the third update on (state.step >= 2; a
    skipped step keeps state.step, so every later step is NaN too); the step is recognised
    through the step's rng, fold_in(key(0), state.step)."""

    def loss_fn(self, params, batch_stats, batch, rng, frozen=None):
        loss, aux = super().loss_fn(params, batch_stats, batch, rng, frozen)
        data = jax.random.key_data(rng)
        early = [jax.random.key_data(jax.random.fold_in(jax.random.key(0), s)) for s in (0, 1)]
        is_early = jnp.any(jnp.stack([jnp.all(data == e) for e in early]))
        return jnp.where(is_early, loss, jnp.nan), aux


def _nan_image_at(step, monkeypatch):
    """Makes the pipeline's batches float32 (as the loss reads them: x / 255) with one NaN image
    in the batch of `step`, so that its BatchNorm statistics, loss and gradients are NaN."""
    original = loop.make_batches

    def poisoned(*args, start_step, **kwargs):
        for s, batch in enumerate(original(*args, start_step=start_step, **kwargs), start_step + 1):
            degraded = batch["degraded"].astype(np.float32)
            if s == step:
                degraded[0, 0] = np.nan
            yield dict(batch, degraded=degraded)

    monkeypatch.setattr(loop, "make_batches", poisoned)


def _record_steps(monkeypatch) -> list:
    """The list that will hold a host copy of the state after each step the loop dispatches."""
    states = []
    original = loop.compile_step

    def recording_compile_step(*args, **kwargs):
        compiled, timing = original(*args, **kwargs)

        def step_fn(*step_args):
            state, metrics = compiled(*step_args)
            states.append(jax.device_get(state))  # now: the next step donates it
            return state, metrics

        return step_fn, timing

    monkeypatch.setattr(loop, "compile_step", recording_compile_step)
    return states


def _checkpoint(workdir, config, step):
    """The state saved at `step` in WORKDIR/checkpoints (host copy)."""
    manager = loop.checkpoint_manager(str(workdir), config)
    fresh = loop.create_state(RankerTask(config), config, loop.make_mesh())
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh)
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    manager.close()
    return jax.device_get(state)


def _all_finite(tree):
    return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree))


@pytest.mark.slow  # compiles a step for float32 images
def test_a_non_finite_step_is_skipped_and_training_goes_on(ranker_config, tmp_path, monkeypatch):
    """A NaN image in step 3's batch: step 3 leaves the state exactly as step 2 left it
    (parameters, BatchNorm statistics, optimizer state, step), a warning names it, the log counts
    it, and the run trains on from the next batch to its end and exports finite parameters."""
    _nan_image_at(3, monkeypatch)
    states = _record_steps(monkeypatch)
    config = _smoke(ranker_config, num_steps=5, log_every=1)
    final, out = _run(config, tmp_path)
    assert "warning: step 3: non-finite loss or gradient, update skipped" in out
    assert "done: 5 steps" in out and "1 skipped as non-finite" in out
    before, at, after = states[1:4]  # after steps 2, 3 and 4
    # step included: it counts the updates applied
    assert_trees_equal(*[(x.step, x.params, x.batch_stats, x.opt_state) for x in (at, before)])
    assert int(at.step) == 2 and int(after.step) == 3 and int(final.step) == 4
    assert _max_abs_diff(after.params, at.params) > 0  # the next batch trains again
    assert _max_abs_diff(after.batch_stats, at.batch_stats) > 0
    assert _all_finite(_variables(final))
    with open(tmp_path / "logs" / "metrics.jsonl") as f:
        logged = [json.loads(line) for line in f]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5]
    assert [r.get("skipped_steps", 0) for r in logged] == [0, 0, 1, 1, 1]
    assert np.isnan(logged[2]["loss"]) and np.isfinite(logged[3]["loss"])
    variables, meta = pretrained.load_variables(tmp_path / "export" / "ranker")
    assert _all_finite(variables) and meta["step"] == 4


@pytest.mark.slow  # compiles a step for a NaN loss
def test_non_finite_steps_in_a_row_stop_the_run_and_keep_finite_checkpoints(
    ranker_config, tmp_path, monkeypatch
):
    """With max_nonfinite_steps=2, NaN losses from step 3 on are skipped at steps 3 and 4 and stop
    the run at the third, step 5, with NonFiniteLossError naming steps 3..5, found one step later
    (not at the log_every=10 flush); the latest checkpoint (step 4) holds step 2's finite state and
    nothing is exported. Rerun (with a finite loss), it resumes where the data stopped, at step 4
    (not at the 2 updates applied), and keeps counting the skipped steps."""
    dispatched = _record_steps(monkeypatch)
    config = _smoke(
        ranker_config, num_steps=20, log_every=10, checkpoint_every=4, max_nonfinite_steps=2
    )
    with pytest.raises(
        NonFiniteLossError, match=r"at steps 3\.\.5 \(max_nonfinite_steps=2\)"
    ) as err:
        _run(config, tmp_path, NaNAfterTwoSteps(config))
    assert "\n" not in str(err.value)  # main prints it as one "error: ..." line
    assert len(dispatched) == 6  # step 5's flag is read once step 6 is queued
    manager = loop.checkpoint_manager(str(tmp_path), config)
    assert manager.latest_step() == 4
    manager.close()
    restored = _checkpoint(tmp_path, config, 4)
    assert int(restored.step) == 2
    assert _all_finite((restored.params, restored.batch_stats, restored.opt_state))
    fresh = loop.create_state(RankerTask(config), config, loop.make_mesh())
    assert _max_abs_diff(restored.params, jax.device_get(fresh.params)) > 0  # it did train
    assert not (tmp_path / "export").exists()
    with open(tmp_path / "logs" / "metrics.jsonl") as f:
        logged = [json.loads(line) for line in f]
    assert [(r["step"], r["skipped_steps"]) for r in logged] == [(4, 2)]  # the checkpoint's flush

    config.num_steps = 5
    resumed, out = _run(config, tmp_path)
    assert "resuming at step 4 of 5" in out and int(resumed.step) == 3
    assert _logged(tmp_path, "skipped_steps") == {4: 2, 5: 2}


def test_guard_counts_skipped_steps_and_stops_past_its_limit(capsys):
    """NonFiniteGuard reads flags one step late (all of them with lag=0), counts skipped steps in
    all and in a row (a finite step resets the run), and with max 0 the first one stops."""
    flag = {True: jnp.asarray(True), False: jnp.asarray(False)}
    guard = NonFiniteGuard(max_consecutive=1, skipped=3)
    for step, finite in enumerate([True, False, True, False], 1):
        guard.push(step, flag[finite])
        guard.settle()
    assert guard.skipped == 4 and guard.in_a_row == 0  # step 4 is not read yet
    guard.settle(lag=0)
    assert guard.skipped == 5 and guard.in_a_row == 1
    warning = "warning: step 4: non-finite loss or gradient, update skipped (1 in a row, 5 in all)"
    assert warning in capsys.readouterr().out
    guard.push(5, flag[False])
    with pytest.raises(NonFiniteLossError, match=r"at steps 4\.\.5 \(max_nonfinite_steps=1\)"):
        guard.settle(lag=0)
    strict = NonFiniteGuard(max_consecutive=0)
    strict.push(7, flag[False])
    with pytest.raises(NonFiniteLossError, match=r"at step 7 \(max_nonfinite_steps=0\)"):
        strict.settle(lag=0)


def test_all_finite_looks_at_every_leaf():
    """all_finite, the step's test, is False for an inf in any leaf (here BatchNorm statistics
    with a finite loss) and True for empty trees (a model without BatchNorm)."""
    assert bool(all_finite({"a": jnp.ones(3), "b": {}})) and bool(all_finite({}))
    assert not bool(all_finite((jnp.float32(1.0), {"mean": jnp.array([0.0, jnp.inf])})))


# --- data parallelism -----------------------------------------------------------------------------


def test_batch_not_divisible_by_device_count_raises(ranker_config, tmp_path):
    """With several devices, a batch that does not split evenly is refused before any file is
    written, with a message that names the device count."""
    n = jax.device_count()
    if n == 1:
        pytest.skip("needs several devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)")
    config = _smoke(ranker_config, batch_size=2 * n + 1, num_steps=2)
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=rf"divisible by the number of devices \({n}\)"):
        loop.train_and_evaluate(config, str(workdir), RankerTask(config))
    assert not workdir.exists()


def test_batch_is_sharded_on_the_data_axis(ranker_config, tmp_path, monkeypatch):
    """Each step's global batch is split over all devices along the mesh's 'data' axis, and the
    state stays replicated."""
    n = jax.device_count()
    made = []
    original = jax.make_array_from_process_local_data

    def recording(sharding, local_data, *args, **kwargs):
        array = original(sharding, local_data, *args, **kwargs)
        made.append((array.shape, array.sharding, [s.data.shape for s in array.addressable_shards]))
        return array

    monkeypatch.setattr(jax, "make_array_from_process_local_data", recording)
    config = _smoke(ranker_config, batch_size=2 * n, num_steps=2, log_every=1, checkpoint_every=2)
    state = loop.train_and_evaluate(config, str(tmp_path), RankerTask(config))
    assert int(state.step) == 2
    # two steps and the device prefetch's batches in flight, four arrays each
    assert len(made) == (2 + config.device_prefetch) * 4
    p = config.data.patch_size
    for shape, sharding, shard_shapes in made:
        assert sharding.mesh.axis_names == ("data",) and sharding.mesh.size == n
        assert sharding.spec[0] == "data"
        assert len(shard_shapes) == n
        assert all(s == (2,) + shape[1:] for s in shard_shapes)  # each device: batch / n
    assert {shape for shape, _, _ in made} == {(2 * n, 2, p, p), (2 * n, p, p), (2 * n, 2)}
    for leaf in jax.tree.leaves(state.params):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == n


def _sgd_ranker_batches(ranker_config, monkeypatch, n: int):
    """(task, config, n global batches of 4) of the smoke ranker, trained with SGD (see below)."""
    sgd = optax.inject_hyperparams(optax.sgd)(learning_rate=0.01)
    monkeypatch.setattr(loop, "create_optimizer", lambda optim_cfg: sgd)
    config = _smoke(ranker_config)
    images = load_training_images(config.data)
    source = make_batches(config.data, images, mode="ranker", global_batch=4, start_step=0)
    batches = [next(source) for _ in range(n)]
    source.close()
    return RankerTask(config), config, batches


def _train_on_mesh(task, config, devices, batches):
    """Host copies of the state after each train_step over `batches` on a mesh of `devices`, and
    each step's metrics, compiled as train_and_evaluate compiles them."""
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    state = loop.create_state(task, config, mesh)
    with contextlib.redirect_stdout(io.StringIO()):
        step, _ = loop.compile_step(
            task, config, mesh, state, jax.device_put(batches[0], data), None
        )
    states, metrics = [], []
    for batch in batches:
        state, m = step(state, jax.device_put(batch, data), None)
        states.append(jax.device_get(state))
        metrics.append(jax.device_get(m))
    return states, metrics


@pytest.mark.slow  # compiles two steps (one and several devices)
def test_one_and_several_devices_make_the_same_updates(ranker_config, monkeypatch):
    """Three steps on the same global batches on one device and on all of them (2 in CI) give the
    same losses, parameters and BatchNorm statistics: under jit, a batch sharded over the mesh is
    still one global batch, so BatchNorm's mean and variance are over all of it (per-device
    statistics change the training-mode outputs: a shard_map step with per-device BatchNorm
    moved the first loss by 18 %). Tolerances: float32 sums split into per-device partial sums
    round differently, and the hinge of the margin loss lets the two trajectories drift apart
    (measured: loss 6e-6 relative by the third step, parameters and statistics 4e-7).

    The optimizer is SGD here: sharding does not touch the optimizer (elementwise, on the
    replicated state), and Adam would blur the comparison: a conv bias followed by BatchNorm has a
    gradient of exactly 0 in exact arithmetic, and Adam turns its rounding noise into ±lr steps."""
    if jax.device_count() == 1:
        pytest.skip("needs several devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)")
    task, config, batches = _sgd_ranker_batches(ranker_config, monkeypatch, 3)
    one, one_metrics = _train_on_mesh(task, config, jax.devices()[:1], batches)
    many, many_metrics = _train_on_mesh(task, config, jax.devices(), batches)

    for a, b in zip(one_metrics, many_metrics):
        np.testing.assert_allclose(float(a["loss"]), float(b["loss"]), rtol=5e-5)
        assert float(a["pair_accuracy"]) == float(b["pair_accuracy"])
    for a, b in zip(one, many):
        assert _max_abs_diff(a.params, b.params) <= 1e-5
        assert _max_abs_diff(a.batch_stats, b.batch_stats) <= 1e-5
    initial = jax.device_get(loop.create_state(task, config, loop.make_mesh()))
    assert _max_abs_diff(many[-1].params, initial.params) > 0.05  # they did train
    assert _max_abs_diff(many[-1].batch_stats, initial.batch_stats) > 0.1


def _one_step(task, config, batch, train_options):
    """(state after one step, its metrics, compile_step's timing, what it printed) with
    `devices.CPU_COMPILER_OPTIONS["train"]` set to `train_options` on one device."""
    from cqrnet_jax import devices

    saved = devices.CPU_COMPILER_OPTIONS["train"]
    devices.CPU_COMPILER_OPTIONS["train"] = train_options
    try:
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
        state = loop.create_state(task, config, mesh)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            step, timing = loop.compile_step(task, config, mesh, state, batch, None)
        state, metrics = step(state, batch, None)
    finally:
        devices.CPU_COMPILER_OPTIONS["train"] = saved
    return jax.device_get(state), jax.device_get(metrics), timing, printed.getvalue()


@pytest.mark.slow  # two step compiles: ~20 s on 2 busy cores
def test_cpu_train_options_change_the_kernels_not_the_step(ranker_config, monkeypatch):
    """On a CPU the train step compiles with `devices.CPU_COMPILER_OPTIONS["train"]` (YNNPACK's
    convolutions off: benchmarks/cpu_compiler_options.py), recorded in timing.json's record; its
    step equals the one compiled without options to float rounding (SGD, as in the test above:
    Adam would turn the rounding noise of exactly-zero gradients into +-lr steps); options this
    jaxlib rejects (an unknown fusion kind) make it compile without them, saying so."""
    from cqrnet_jax import devices

    if jax.devices()[0].platform != "cpu":
        pytest.skip("CPU compiler options")
    task, config, (batch,) = _sgd_ranker_batches(ranker_config, monkeypatch, 1)
    chosen = devices.CPU_COMPILER_OPTIONS["train"]
    ours, ours_metrics, timing, _ = _one_step(task, config, batch, chosen)
    assert timing["compiler_options"] == chosen and chosen
    plain, plain_metrics, timing, _ = _one_step(task, config, batch, {})
    assert timing["compiler_options"] == {}
    np.testing.assert_allclose(float(ours_metrics["loss"]), float(plain_metrics["loss"]), rtol=1e-5)
    assert _max_abs_diff(ours.params, plain.params) <= 1e-5
    bogus = {"xla_cpu_experimental_ynn_fusion_type": "NOT_A_FUSION_KIND"}
    fallback, _, timing, printed = _one_step(task, config, batch, bogus)
    assert timing["compiler_options"] == {}
    assert "compiling without ['xla_cpu_experimental_ynn_fusion_type']" in printed
    assert _max_abs_diff(fallback.params, plain.params) == 0.0


# --- the command line -----------------------------------------------------------------------------


@pytest.mark.slow
def test_main_trains_the_smoke_preset_and_prints_progress(tmp_path, compile_cache):
    """`python -m cqrnet_jax.main --config=configs/ranker.py:smoke` exits 0 and prints progress
    lines with the step, steps/s and an ETA, then exports the ranker."""
    env = cached_compile_env(compile_cache)
    cmd = [
        sys.executable,
        "-m",
        "cqrnet_jax.main",
        "--config=configs/ranker.py:smoke",
        f"--workdir={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    progress = re.findall(
        r"^step (\d+)/20 \| .*loss=\S+ .*\| (\d+\.\d+) steps/s \| ETA (\d+m\d\ds|\d+h\d\dm)$",
        proc.stdout,
        re.MULTILINE,
    )
    assert [int(s) for s, _, _ in progress] == [5, 10, 15, 20], proc.stdout
    assert all(float(rate) > 0 for _, rate, _ in progress)
    assert progress[-1][2] == "0m00s"
    assert "done: 20 steps" in proc.stdout
    assert (tmp_path / "export" / "ranker.msgpack").is_file()
    # on a CPU the trainer splits the cores into devices and trains data-parallel over them
    timing = json.loads((tmp_path / "timing.json").read_text())
    if jax.default_backend() == "cpu" and "device_count" not in env.get("XLA_FLAGS", ""):
        from cqrnet_jax.devices import MAX_HOST_DEVICES, host_cores, host_device_count

        assert timing["devices"] == host_device_count(host_cores(), MAX_HOST_DEVICES, 4)


@pytest.mark.slow  # ~15 s on 2 busy cores
def test_blind_preset_adds_the_cross_image_term(ranker_config):
    """`:smoke,blind` = the paper's same-crop loss + 1.0 x the cross-image ranking loss."""
    from cqrnet_jax.losses import cross_image_ranking_loss, margin_ranking_loss

    paper_task = RankerTask(ranker_config("smoke"))
    blind_task = RankerTask(ranker_config("smoke,blind"))
    variables = paper_task.init_variables(jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = dict(
        degraded=rng.integers(0, 256, (4, 2, 32, 32), dtype=np.uint8),
        label=np.array([[1, 3], [2, 1], [3, 2], [1, 2]], np.int32),
        quality=np.array([[4, 25], [12, 9], [30, 17], [2, 20]], np.int32),
    )
    args = (variables["params"], variables["batch_stats"], batch, None)
    base, _ = paper_task.loss_fn(*args)
    blind, _ = blind_task.loss_fn(*args)
    x = batch["degraded"].reshape(8, 32, 32).astype(np.float32) / 255.0
    (scores, _), _ = paper_task.model.apply(variables, x, train=True, mutable=["batch_stats"])
    s, lab = scores.reshape(4, 2), batch["label"]
    assert float(base) == pytest.approx(
        float(margin_ranking_loss(s[:, 0], s[:, 1], lab[:, 0], lab[:, 1])), rel=1e-5
    )
    cross = float(cross_image_ranking_loss(s, lab, 0.5))  # ranked by level
    assert cross > 0 and float(blind) == pytest.approx(float(base) + cross, rel=1e-5)
    quality_config = ranker_config("smoke,blind")
    quality_config.loss.cross_image_labels = "quality"
    by_quality = RankerTask(quality_config)
    exact = float(cross_image_ranking_loss(s, batch["quality"], 0.5))
    assert float(by_quality.loss_fn(*args)[0]) == pytest.approx(float(base) + exact, rel=1e-5)


def test_estimator_preset_fine_tunes_the_shipped_guide(ranker_config):
    """`:cpu,estimator` starts from the shipped stage-1 ranker and continues past its step."""
    from cqrnet_jax import pretrained

    config = ranker_config("cpu,estimator")
    _, meta = pretrained.load_variables(config.init_from)
    assert config.init_from == str(pretrained.shipped(pretrained.GUIDE))
    assert config.loss.cross_image_weight == 1.0 and config.num_steps > meta["step"]
    assert meta["model"]["features"] == list(config.model.features)


def test_cosine_schedule_can_start_late_to_anneal_a_continued_run(ranker_config):
    """decay_begin keeps the rate flat, then decays it to 0 over decay_steps; with decay_begin 0
    the cosine takes over from the warm-up and still reaches 0 at step decay_steps."""
    from cqrnet_jax.train.state import learning_rate_schedule

    optim = ranker_config("smoke").optim
    optim.update(learning_rate=2e-4, schedule="cosine", warmup_steps=300, decay_steps=1000)
    plain = learning_rate_schedule(optim)
    np.testing.assert_allclose(
        [plain(150), plain(300), plain(650), plain(1000), plain(1300)],
        [1e-4, 2e-4, 1e-4, 0.0, 0.0],
        atol=1e-9,
    )
    optim.decay_begin = 2500
    late = learning_rate_schedule(optim)
    np.testing.assert_allclose(
        [late(300), late(2500), late(3000), late(3500)], [2e-4, 2e-4, 1e-4, 0.0], atol=1e-9
    )


@pytest.mark.parametrize("config_file", ["deblock", "ranker"])
def test_a_decaying_preset_ends_at_its_final_rate_at_num_steps(
    config_file, ranker_config, deblock_config
):
    """Steps are absolute: the cpu presets' cosine (decay_steps = num_steps, after a warm-up)
    reaches 0 at their last step, not decay_steps after the warm-up's end."""
    from cqrnet_jax.train.state import learning_rate_schedule

    config = (deblock_config if config_file == "deblock" else ranker_config)("cpu")
    assert config.optim.schedule == "cosine" and config.optim.warmup_steps > 0
    lr = learning_rate_schedule(config.optim)
    peak = config.optim.learning_rate
    assert float(lr(config.optim.warmup_steps)) == pytest.approx(peak)
    assert float(lr(config.num_steps - 1)) == pytest.approx(0.0, abs=peak * 1e-6)
    assert float(lr(config.num_steps)) == 0.0


def test_step_schedule_halves_at_absolute_steps_after_a_warmup(ranker_config):
    from cqrnet_jax.train.state import learning_rate_schedule

    optim = ranker_config("smoke").optim
    optim.update(learning_rate=1e-4, schedule="step", decay_steps=1000, decay_rate=0.5)
    optim.warmup_steps = 100
    lr = learning_rate_schedule(optim)
    np.testing.assert_allclose(
        [lr(50), lr(100), lr(999), lr(1000), lr(2000)], [5e-5, 1e-4, 1e-4, 5e-5, 2.5e-5]
    )


def test_unet_and_gpu_presets_stay_flat_after_the_warmup(deblock_config):
    """Their runs end by a decay set when they stop (decay_begin=S, decay_steps=D,
    num_steps=S+D); until then the rate stays at its peak after the warm-up, also on resume."""
    from cqrnet_jax.train.state import learning_rate_schedule

    for preset in ("unet", "paper,gpu"):
        optim = deblock_config(preset).optim
        lr = learning_rate_schedule(optim)
        peak, warm = optim.learning_rate, optim.warmup_steps
        np.testing.assert_allclose(
            [lr(warm // 2), lr(warm), lr(5_000), lr(10**6)], [peak / 2, peak, peak, peak]
        )
        optim.update(decay_begin=20_000, decay_steps=4_000)
        lr = learning_rate_schedule(optim)
        np.testing.assert_allclose(
            [lr(20_000), lr(22_000), lr(24_000)], [peak, peak / 2, 0.0], atol=peak * 1e-6
        )


# --- continuing from an export keeps the schedule; wall-clock budgets -----------------------------


def _logged(workdir, key):
    with open(os.path.join(workdir, "logs", "metrics.jsonl")) as f:
        return {r["step"]: r[key] for r in map(json.loads, f) if key in r}


@pytest.mark.slow  # a training run: ~30 s on 2 busy cores
def test_init_from_continues_the_schedule_step_for_step(ranker_config, tmp_path):
    """A run continued from an export at step K applies, step for step, the learning rate of an
    uninterrupted run (warm-up and cosine do not restart), and logs the rate its optimizer
    applied: the first update after the restart (fresh Adam moments, so each weight moves by
    ~lr) has the logged size, not the warm-up's restart value of ~0."""
    schedule = {
        "optim.schedule": "cosine",
        "optim.learning_rate": 1e-3,
        "optim.warmup_steps": 3,
        "optim.decay_steps": 2 * K,
        "log_every": 1,
        "checkpoint_every": 2 * K,
    }
    _run(_smoke(ranker_config, num_steps=2 * K, **schedule), tmp_path / "straight")
    first, _ = _run(_smoke(ranker_config, num_steps=K, **schedule), tmp_path / "first")
    prefix = str(tmp_path / "first" / "export" / "ranker")
    cont = _smoke(ranker_config, num_steps=K + 1, init_from=prefix, **schedule)
    one, _ = _run(cont, tmp_path / "cont")
    cont.num_steps = 2 * K
    _run(cont, tmp_path / "cont")  # resumes the continuation from its checkpoint at K + 1

    straight, continued = (
        _logged(tmp_path / "straight", "learning_rate"),
        _logged(tmp_path / "cont", "learning_rate"),
    )
    assert sorted(continued) == list(range(K + 1, 2 * K + 1))
    np.testing.assert_allclose(
        [continued[s] for s in continued], [straight[s] for s in continued], rtol=1e-6
    )
    assert continued[K + 1] > 5e-4  # past the warm-up, near the peak: a restart would give ~0
    # the rate the first continued update applied, seen in the weights it moved
    moved = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(first.params))
    )
    assert moved == pytest.approx(continued[K + 1], rel=0.02)


def test_schedule_step_moves_the_schedule_not_adams_bias_correction(ranker_config):
    """with_schedule_step sets the schedule's counters and leaves Adam's own count at 0, so the
    fresh moments of a continuation are bias-corrected as fresh."""
    import optax

    from cqrnet_jax.train.state import create_optimizer, with_schedule_step

    optim = ranker_config("smoke").optim
    optim.update(schedule="cosine", warmup_steps=5, decay_steps=100, grad_clip=1.0)
    state = with_schedule_step(create_optimizer(optim).init({"w": jnp.zeros(3)}), 40)
    counts = optax.tree_utils.tree_get_all_with_path(state, "count")
    inner = [int(v) for path, v in counts if "inner_state" in str(path)]
    outer = [int(v) for path, v in counts if "inner_state" not in str(path)]
    assert inner == [0] and outer and set(outer) == {40}


def test_zero_turns_checkpoints_and_logging_off(ranker_config, tmp_path):
    """checkpoint_every=0 and log_every=0 (and export_every, eval_every) mean off: the run saves,
    logs and exports its last step only, where a modulo by zero used to stop it."""
    config = _smoke(ranker_config, num_steps=3, checkpoint_every=0, log_every=0, export_every=0)
    assert [loop._due(config, step, 0, last=step == 3) for step in (1, 2, 3)] == [
        set(),
        set(),
        {"save", "log"},
    ]
    state, _ = _run(config, tmp_path)
    assert int(state.step) == 3 and _logged_steps(tmp_path) == [3]
    assert loop.checkpoint_manager(str(tmp_path), config).all_steps() == [3]


def test_train_seconds_ends_the_run_cleanly(ranker_config, tmp_path):
    """With a wall budget the run stops early at the step where it is spent, checkpoints and
    exports that step, and a rerun resumes from it."""
    config = _smoke(ranker_config, num_steps=10_000, train_seconds=1e-9, log_every=100)
    state, out = _run(config, tmp_path)
    assert int(state.step) == 1 and "train_seconds=1e-09 reached" in out
    assert loop.checkpoint_manager(str(tmp_path), config).latest_step() == 1
    _, meta = pretrained.load_variables(tmp_path / "export" / "ranker")
    assert meta["step"] == 1 and _logged_steps(tmp_path) == [1]
    state, out = _run(config, tmp_path)
    assert int(state.step) == 2 and "resuming at step 1" in out


def test_device_prefetch_keeps_order_and_depth():
    """device_prefetch yields every batch in order, `depth` transfers ahead of the consumer."""
    mesh = loop.make_mesh()
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    n = jax.device_count()
    pulled = []

    def source():
        for i in range(5):
            pulled.append(i)
            yield {"x": np.full((n, 3), i, np.float32)}

    out = loop.device_prefetch(source(), sharding, depth=2)
    first = next(out)
    assert pulled == [0, 1, 2] and float(first["x"][0, 0]) == 0
    assert first["x"].sharding == sharding
    assert [float(b["x"][0, 0]) for b in out] == [1, 2, 3, 4]


def test_warmup_can_begin_at_a_continuations_first_step(ranker_config):
    """warmup_begin=S warms up over steps S..S+W and then follows the schedule from there, with
    decay_begin still an absolute step."""
    from cqrnet_jax.train.state import learning_rate_schedule

    optim = ranker_config("smoke").optim
    optim.update(learning_rate=4e-4, schedule="cosine", warmup_steps=100, decay_steps=1000)
    optim.update(warmup_begin=5000, decay_begin=6000)
    lr = learning_rate_schedule(optim)
    np.testing.assert_allclose(
        [lr(5000), lr(5050), lr(5100), lr(6000), lr(6500), lr(7000)],
        [0.0, 2e-4, 4e-4, 4e-4, 2e-4, 0.0],
        atol=1e-9,
    )


def test_exports_go_where_and_when_the_config_says_and_timing_is_recorded(ranker_config, tmp_path):
    """export_every exports during the run (a run cut short still leaves params), export_dir and
    export_split_mb place and split them, and WORKDIR/timing.json records the compile, steps and
    the time spent waiting for input."""
    exported = []

    class Recording(RankerTask):
        def finalize(self, state, workdir):
            exported.append(int(state.step))
            super().finalize(state, workdir)

    config = _smoke(
        ranker_config,
        num_steps=5,
        export_every=2,
        export_dir=str(tmp_path / "out"),
        export_split_mb=0.001,
        log_every=5,
    )
    _run(config, tmp_path / "work", Recording(config))
    assert exported == [2, 4, 5]
    assert len(list((tmp_path / "out").glob("ranker.msgpack.*"))) > 1
    assert pretrained.load_variables(tmp_path / "out" / "ranker")[1]["step"] == 5
    timing = json.loads((tmp_path / "work" / "timing.json").read_text())
    assert timing["steps"] == 5 and timing["end_step"] == 5 and timing["compile_s"] > 0
    assert 0 <= timing["input_wait_s"] < timing["seconds"] and timing["steps_per_s"] > 0
