"""Stage 2 as a training task (paper §3.3) on the `smoke` preset, guided by a tiny saved ranker: the
loss is L_MAE + α L_Q + β L_F, the ranker is a constant, the loss goes down, the ablations that
drop the ranker never load it, and a run exports and resumes.

The fixed-batch steps are jitted exactly as `train_and_evaluate` jits them, and the module turns
on JAX's persistent compilation cache (as test_train.py), so the runs reuse those programs.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_equal
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cqrnet_jax import pretrained
from cqrnet_jax.data.pipeline import make_batches
from cqrnet_jax.data.sources import load_training_images
from cqrnet_jax.errors import ConfigError
from cqrnet_jax.losses import (
    block_boundary_loss,
    blocking_excess_loss,
    feature_matching_loss,
    mae_loss,
    quality_loss,
)
from cqrnet_jax.models.build import ranker_from_config
from cqrnet_jax.train import loop
from cqrnet_jax.train.deblock_task import DeblockTask, load_frozen_ranker

STEPS = 15


@pytest.fixture(scope="module", autouse=True)
def fast_prng():
    """The PRNG whose initialisers compile in a third of threefry's time; restored afterwards."""
    saved = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", "unsafe_rbg")
    yield
    jax.config.update("jax_default_prng_impl", saved)


@pytest.fixture(scope="module")
def ranker_prefix(ranker_config, tmp_path_factory):
    """A tiny QualityRanker (the ranker smoke preset) saved with `save_variables`, with random
    BatchNorm statistics so that using batch statistics instead would show."""
    model_cfg = ranker_config("smoke").model
    model = ranker_from_config(model_cfg)
    init = jax.jit(functools.partial(model.init, train=False))
    variables = init(jax.random.key(0), jnp.zeros((1, 32, 32)))
    rng = np.random.default_rng(0)

    def random_stat(path, a):
        if path[-1].key == "var":
            return rng.uniform(0.5, 2.0, a.shape).astype(np.float32)
        return rng.normal(0.0, 0.3, a.shape).astype(np.float32)

    stats = jax.tree_util.tree_map_with_path(random_stat, variables["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": stats}
    prefix = tmp_path_factory.mktemp("ranker") / "ranker"
    meta = {"kind": "ranker", "model": model_cfg.to_dict()}
    pretrained.save_variables(prefix, variables, meta)
    return str(prefix)


def _config(deblock_config, ranker_prefix, presets="smoke"):
    """The presets with lr 1e-3, the NumPy pipeline, the tiny ranker, and 24x24 patches (and
    non-local windows) for speed."""
    config = deblock_config(presets)
    config.data.backend = "numpy"
    config.data.patch_size = config.model.nl_window = 24
    config.optim.learning_rate = 1e-3
    config.loss.ranker = ranker_prefix
    return config


@pytest.fixture(scope="module")
def setup(deblock_config, ranker_prefix):
    """The smoke task, its initial state (host copy) and one fixed batch of the pipeline."""
    config = _config(deblock_config, ranker_prefix)
    task = DeblockTask(config)
    mesh = loop.make_mesh()
    state = jax.device_get(loop.create_state(task, config, mesh))
    images = load_training_images(config.data)
    batches = make_batches(config.data, images, mode="deblock", global_batch=4, start_step=0)
    batch = next(batches)
    batches.close()
    return dict(config=config, task=task, mesh=mesh, state=state, batch=batch)


@pytest.fixture(scope="module")
def trained(setup):
    """STEPS train_steps on the fixed batch, jitted as in `train_and_evaluate`."""
    task, mesh, config = setup["task"], setup["mesh"], setup["config"]
    ranker_before = jax.device_get(task.ranker_variables)
    data_sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    step = jax.jit(
        functools.partial(loop.train_step, loss_fn=task.loss_fn, seed=config.seed),
        in_shardings=(replicated, data_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    batch = jax.device_put(setup["batch"], data_sharding)
    state = jax.device_put(setup["state"], replicated)
    history = []
    for _ in range(STEPS):
        state, metrics = step(state, batch)
        history.append(jax.device_get(metrics))
    return dict(state=jax.device_get(state), history=history, ranker_before=ranker_before)


# --- the loss ----------------------------------------------------------------------------------


def test_loss_is_mae_plus_weighted_quality_and_feature_terms(setup, ranker_prefix):
    """L = L_MAE + 0.01 L_Q + 0.9 L_F, recomputed from M's output with the saved ranker in
    inference mode (running BatchNorm statistics) and its feature maps 1, 3, 5."""
    config, task, state, batch = setup["config"], setup["task"], setup["state"], setup["batch"]
    assert (config.loss.alpha, config.loss.beta) == (0.01, 0.9)
    assert tuple(config.loss.feature_layers) == (1, 3, 5)
    variables, meta = pretrained.load_variables(ranker_prefix)
    ranker = ranker_from_config(meta["model"])

    def independent(params):
        x = jnp.asarray(batch["degraded"][:, 0], jnp.float32) / 255.0
        y = jnp.asarray(batch["clean"], jnp.float32) / 255.0
        restored = task.model.apply({"params": params}, x)
        scores, maps_r = ranker.apply(variables, restored, train=False)
        _, maps_y = ranker.apply(variables, y, train=False)
        l_mae = mae_loss(restored, y)
        l_q = quality_loss(scores)
        l_f = feature_matching_loss([maps_r[i] for i in (1, 3, 5)], [maps_y[i] for i in (1, 3, 5)])
        return l_mae + 0.01 * l_q + 0.9 * l_f, dict(l_mae=l_mae, l_q=l_q, l_f=l_f)

    expected, parts = jax.jit(independent)(state.params)
    total, (metrics, batch_stats) = jax.jit(task.loss_fn)(
        state.params, state.batch_stats, batch, jax.random.key(0)
    )
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-5)
    for name in ("l_mae", "l_q", "l_f"):
        np.testing.assert_allclose(float(metrics[name]), float(parts[name]), rtol=1e-5)
    assert float(parts["l_q"]) > 0 and float(parts["l_f"]) > 0
    assert float(total) > float(parts["l_mae"])  # the ranker terms are really added
    assert jax.tree.leaves(batch_stats) == []  # M has no BatchNorm; nothing else is carried


def test_loss_goes_down_on_a_fixed_batch(trained):
    """STEPS jitted Adam steps (lr 1e-3) on one repeated batch clearly lower the total loss."""
    losses = [float(m["loss"]) for m in trained["history"]]
    assert all(bool(m["finite"]) for m in trained["history"])
    assert int(trained["state"].step) == STEPS
    assert losses[-1] < 0.6 * losses[0], losses
    assert float(trained["history"][-1]["l_mae"]) < float(trained["history"][0]["l_mae"])


def test_ranker_variables_are_constants(setup, trained, ranker_prefix):
    """The ranker's weights and BatchNorm statistics in the task are bit for bit the saved ones
    after training; they are not part of the trained state at all."""
    task = setup["task"]
    saved, _ = pretrained.load_variables(ranker_prefix)
    assert_trees_equal(jax.device_get(task.ranker_variables), trained["ranker_before"])
    assert_trees_equal(jax.device_get(task.ranker_variables), saved)
    state = trained["state"]
    assert jax.tree.leaves(state.batch_stats) == []
    groups = {"group_nl_low", "group_local0", "group_nl_high"}
    assert set(state.params) == {"head", "body_conv", "tail"} | groups  # M's parameters only


def test_load_frozen_ranker_returns_the_saved_variables(ranker_prefix, ranker_config, setup):
    """load_frozen_ranker rebuilds the saved model and gives back its exact variables."""
    module, variables, prefix = load_frozen_ranker(setup["config"].loss)
    assert prefix == ranker_prefix
    assert module == ranker_from_config(ranker_config("smoke").model)
    assert_trees_equal(variables, pretrained.load_variables(ranker_prefix)[0])


# --- ablations and errors -----------------------------------------------------------------------


def test_no_cqr_never_loads_the_ranker_and_its_loss_is_mae(
    deblock_config, tmp_path, setup, monkeypatch
):
    """no_cqr (α = β = 0): a non-existent ranker path is fine, nothing is loaded, L = L_MAE."""

    def refuse(prefix):
        raise AssertionError(f"the ranker was loaded from {prefix}")

    monkeypatch.setattr(pretrained, "load_variables", refuse)
    config = _config(deblock_config, str(tmp_path / "no" / "ranker"), "smoke,no_cqr")
    task = DeblockTask(config)
    assert task.ranker is None and task.ranker_variables is None and not task.uses_ranker
    state, batch = setup["state"], setup["batch"]
    total, (metrics, _) = jax.jit(task.loss_fn)(state.params, {}, batch, jax.random.key(0))
    x = jnp.asarray(batch["degraded"][:, 0], jnp.float32) / 255.0
    y = jnp.asarray(batch["clean"], jnp.float32) / 255.0
    expected = mae_loss(task.model.apply({"params": state.params}, x), y)
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-5)
    assert set(metrics) == {"l_mae"}


@pytest.mark.parametrize(
    "weight, key, term",
    [("boundary", "l_b", block_boundary_loss), ("blocking", "l_bef", blocking_excess_loss)],
)
def test_an_edge_term_weight_adds_its_term(deblock_config, tmp_path, setup, weight, key, term):
    """loss.boundary / loss.blocking = w > 0: L = L_MAE + w L_B / L_BEF, logged unweighted."""
    config = _config(deblock_config, str(tmp_path / "no" / "ranker"), "smoke,no_cqr")
    config.loss[weight] = 0.5
    task = DeblockTask(config)
    state, batch = setup["state"], setup["batch"]
    total, (metrics, _) = jax.jit(task.loss_fn)(state.params, {}, batch, jax.random.key(0))
    x = jnp.asarray(batch["degraded"][:, 0], jnp.float32) / 255.0
    y = jnp.asarray(batch["clean"], jnp.float32) / 255.0
    restored = task.model.apply({"params": state.params}, x)
    value = term(restored, y)
    assert set(metrics) == {"l_mae", key}
    np.testing.assert_allclose(float(metrics[key]), float(value), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(float(total), float(mae_loss(restored, y) + 0.5 * value), rtol=1e-5)
    if weight == "boundary":
        assert float(value) > 0


def test_a_quality_conditioned_unet_trains_on_each_crops_quality(deblock_config, tmp_path, setup):
    """model.quality_input: the loss restores each crop told its own JPEG quality (the batch's
    `quality`), as the network applied by hand with those qualities."""
    config = _config(deblock_config, str(tmp_path / "no" / "ranker"), "smoke,no_cqr")
    config.model.update(arch="unet", widths=(4, 8), blocks=(1, 1), quality_input=True)
    config.model.nl_window = 4
    task = DeblockTask(config)
    params = task.init_variables(jax.random.key(0))["params"]
    params = jax.tree.map(lambda a: a + 0.05, params)  # the tail starts at zero
    batch = dict(setup["batch"])
    x = jnp.asarray(batch["degraded"][:, 0], jnp.float32) / 255.0
    y = jnp.asarray(batch["clean"], jnp.float32) / 255.0
    losses = []
    for q in (10, 90):
        batch["quality"] = np.full_like(np.asarray(batch["quality"]), q)
        total, _ = jax.jit(task.loss_fn)(params, {}, batch, jax.random.key(0))
        quality = jnp.full((x.shape[0],), float(q))
        restored = task.model.apply({"params": params}, x, quality=quality)
        np.testing.assert_allclose(float(total), float(mae_loss(restored, y)), rtol=1e-5)
        losses.append(float(total))
    assert losses[0] != losses[1]


def test_a_quality_conditioned_unet_starts_from_an_unconditioned_export(
    deblock_config, tmp_path, setup
):
    """init_from an unconditioned U-Net's export: the head gains a zero slice for the quality
    plane, so the conditioned network starts as that model (to float rounding), at its step."""
    config = _config(deblock_config, str(tmp_path / "no" / "ranker"), "smoke,no_cqr")
    config.model.update(arch="unet", widths=(4, 8), blocks=(1, 1), nl_window=4)
    plain = DeblockTask(config)
    params = jax.tree.map(lambda a: a + 0.05, plain.init_variables(jax.random.key(1))["params"])
    meta = {"kind": "deblock", "step": 700, "model": config.model.to_dict()}
    pretrained.save_variables(tmp_path / "plain", {"params": params}, meta)
    config.model.quality_input = True
    task = DeblockTask(config)
    state = loop.create_state(task, config, setup["mesh"])
    state = jax.device_get(loop.init_from_params(state, str(tmp_path / "plain"), 1, True))
    assert int(state.step) == 700
    np.testing.assert_array_equal(state.params["head"]["kernel"][:, :, 1], 0)
    x = jnp.asarray(np.random.default_rng(0).random((2, 24, 24)), jnp.float32)
    want = plain.model.apply({"params": params}, x)
    for q in (10.0, 90.0):
        got = task.model.apply({"params": state.params}, x, quality=jnp.full((2,), q))
        np.testing.assert_allclose(got, want, rtol=1e-6)  # a 2-channel conv sums in its order
    # the other way round (a blind config from a conditioned export) is one clear line
    pretrained.save_variables(tmp_path / "told", {"params": state.params}, {**meta, "model": {
        **meta["model"], "quality_input": True}})  # fmt: skip
    blind = loop.create_state(plain, config, setup["mesh"])
    with pytest.raises(ConfigError, match="quality_input=True"):
        loop.init_from_params(blind, str(tmp_path / "told"), 1, False)


def test_init_from_a_model_of_other_widths_names_the_setting(deblock_config, tmp_path, setup):
    """A saved U-Net whose widths differ from the config's: one line naming the setting and
    both values (e.g. continuing the shipped colour model with the `:chroma` preset's widths)."""
    config = _config(deblock_config, str(tmp_path / "no" / "ranker"), "smoke,no_cqr")
    config.model.update(arch="unet", widths=(4, 8), blocks=(1, 1), nl_window=4)
    task = DeblockTask(config)
    params = task.init_variables(jax.random.key(1))["params"]
    meta = {"kind": "deblock", "step": 10, "model": config.model.to_dict()}
    pretrained.save_variables(tmp_path / "wide", {"params": params}, meta)
    config.model.widths = (4, 6)
    state = loop.create_state(DeblockTask(config), config, setup["mesh"])
    with pytest.raises(ConfigError, match=r"model\.widths=\(4, 8\) \(the config: \(4, 6\)\)"):
        loop.init_from_params(state, str(tmp_path / "wide"), 1, False, config.model.to_dict())


@pytest.mark.parametrize("presets", ["smoke", "smoke,no_lq", "smoke,no_lf"])
def test_missing_ranker_with_a_ranker_term_names_the_path(deblock_config, tmp_path, presets):
    """With α > 0 or β > 0, a missing ranker prefix is a FileNotFoundError naming the path."""
    missing = tmp_path / "nowhere" / "ranker"
    config = _config(deblock_config, str(missing), presets)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        DeblockTask(config)


# --- a run ----------------------------------------------------------------------------------------


def _run(config, workdir):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        state = loop.train_and_evaluate(config, str(workdir), DeblockTask(config))
    return jax.device_get(state), out.getvalue()


@pytest.mark.slow  # two training runs: ~25 s on 2 busy cores
def test_run_exports_deblock_params_and_resumes(deblock_config, ranker_prefix, tmp_path):
    """train_and_evaluate writes export/deblock.{msgpack,json} (params only; meta kind 'deblock',
    the model config, step, ranker); rerun with more steps it resumes and re-exports."""
    overrides = dict(log_every=1, checkpoint_every=2)
    config = _config(deblock_config, ranker_prefix)
    config.update(dict(num_steps=2, **overrides))
    first, out = _run(config, tmp_path)
    assert "starting step 0 of 2" in out
    for suffix in ("msgpack", "json"):
        assert (tmp_path / "export" / f"deblock.{suffix}").is_file()
    variables, meta = pretrained.load_variables(tmp_path / "export" / "deblock")
    assert set(variables) == {"params"}
    assert_trees_equal(variables["params"], first.params)
    assert meta["kind"] == "deblock" and meta["step"] == 2
    assert meta["model"] == json.loads(config.model.to_json())
    assert meta["ranker"] == ranker_prefix

    config.num_steps = 4
    resumed, out = _run(config, tmp_path)
    assert "resuming at step 2 of 4" in out
    assert int(resumed.step) == 4
    variables, meta = pretrained.load_variables(tmp_path / "export" / "deblock")
    assert meta["step"] == 4
    assert_trees_equal(variables["params"], resumed.params)


@pytest.mark.slow  # three short runs
def test_resumed_run_equals_a_straight_run(deblock_config, ranker_prefix, tmp_path):
    """4 steps straight and 2 steps + a resume to 4 end in the same parameters and optimizer
    state, bit for bit: the checkpoint restores the state exactly, the pipeline restarts at plan
    3, and the resumed run executes the same compiled step on the same inputs (the frozen ranker
    included)."""
    config = _config(deblock_config, ranker_prefix)
    config.update(num_steps=4, log_every=2, checkpoint_every=2)
    straight, _ = _run(config, tmp_path / "straight")
    config.num_steps = 2
    _run(config, tmp_path / "resumed")
    config.num_steps = 4
    resumed, out = _run(config, tmp_path / "resumed")
    assert "resuming at step 2 of 4" in out
    assert int(resumed.step) == int(straight.step) == 4
    assert_trees_equal((resumed.params, resumed.opt_state), (straight.params, straight.opt_state))
    initial = jax.device_get(
        loop.create_state(DeblockTask(config), config, loop.make_mesh()).params
    )
    moved = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(initial))
    )
    assert moved > 1e-3  # four Adam steps at lr 1e-3 did move the weights


# --- mixed precision and the step's program -----------------------------------------------------


def _losses(task, config, state, batch, mesh, steps):
    """Losses of `steps` train_steps on a fixed batch, jitted as train_and_evaluate jits them."""
    data_sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    step = jax.jit(
        functools.partial(loop.train_step, loss_fn=task.loss_fn, seed=config.seed),
        in_shardings=(replicated, data_sharding, replicated),
        out_shardings=(replicated, replicated),
    )
    batch = jax.device_put(batch, data_sharding)
    state = jax.device_put(state, replicated)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch, task.frozen)
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state)


@pytest.mark.slow  # bfloat16 and float32 training runs: ~30 s on 2 busy cores
def test_bfloat16_training_follows_float32(setup, deblock_config, ranker_prefix):
    """model.dtype=bfloat16 computes the de-blocker and the ranker inside the loss in bfloat16
    and keeps parameters, optimizer state and losses in float32; over 8 steps from the same
    initial state its first loss is within 1 % of float32's (forward rounding alone: 0.6 %
    measured) and the next ones within 5 % (the two trajectories drift apart under lr 1e-3:
    2.4 % at step 8 measured). bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9 per
    operation); an error in the casts (the float32 long skip dropped, logits or losses in
    bfloat16) shows as a first loss off by more, a loss that does not go down, or bfloat16 state."""
    config = _config(deblock_config, ranker_prefix)
    config.model.dtype = "bfloat16"
    task16 = DeblockTask(config)
    assert task16.model.dtype == jnp.bfloat16 and task16.ranker.dtype == jnp.bfloat16
    x = jnp.asarray(setup["batch"]["degraded"][:, 0], jnp.float32) / 255.0
    jaxpr = str(jax.make_jaxpr(task16.loss_fn)(setup["state"].params, {}, setup["batch"], None))
    assert "bf16" in jaxpr and task16.model.apply({"params": setup["state"].params}, x).dtype == (
        jnp.float32
    )
    f32, _ = _losses(
        setup["task"], setup["config"], setup["state"], setup["batch"], setup["mesh"], 8
    )
    b16, state16 = _losses(task16, config, setup["state"], setup["batch"], setup["mesh"], 8)
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(state16.params))
    assert all(leaf.dtype != jnp.bfloat16 for leaf in jax.tree.leaves(state16.opt_state))
    np.testing.assert_allclose(b16[0], f32[0], rtol=0.01)
    np.testing.assert_allclose(b16, f32, rtol=0.05)
    assert b16[-1] < 0.8 * b16[0] and f32[-1] < 0.8 * f32[0]


@pytest.mark.slow  # ~15 s on 2 busy cores
def test_ranker_variables_are_arguments_of_the_step(setup):
    """The guiding ranker's variables enter the compiled step as an argument: one compiled
    program scores with whatever ranker it is given (the loss changes with them, no recompile),
    and its text holds none of their values."""
    task, config = setup["task"], setup["config"]
    step = jax.jit(functools.partial(loop.train_step, loss_fn=task.loss_fn, seed=config.seed))
    state, batch = setup["state"], setup["batch"]
    other = jax.tree.map(lambda a: a * 1.5, task.frozen)
    _, m1 = step(state, batch, task.frozen)
    _, m2 = step(state, batch, other)
    assert step._cache_size() == 1
    assert abs(float(m1["l_f"]) - float(m2["l_f"])) > 1e-4
    # baked in as constants (frozen=None: the task's own), the program text grows by their bytes
    as_argument = len(step.lower(state, batch, task.frozen).as_text())
    as_constants = len(step.lower(state, batch).as_text())
    ranker_bytes = sum(np.asarray(a).nbytes for a in jax.tree.leaves(task.frozen))
    assert as_constants - as_argument > ranker_bytes, (as_constants, as_argument, ranker_bytes)


def test_the_ranker_runs_once_per_loss(setup, monkeypatch):
    """L_Q and L_F come from one ranker pass over the restored and the clean batch together."""
    task = setup["task"]
    calls = []
    original = type(task.ranker).apply

    def counting(self, *args, **kwargs):
        calls.append(args[1].shape)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(task.ranker), "apply", counting)
    jax.make_jaxpr(task.loss_fn)(setup["state"].params, {}, setup["batch"], None)
    n = setup["batch"]["clean"].shape[0]
    assert len(calls) == 1 and calls[0][0] == 2 * n


def test_evaluation_reads_its_set_once_and_only_the_images_it_uses(deblock_config, tmp_path):
    """`load_evaluation` reads the first eval_max_images files of the set (a broken file after
    them is never opened), once; `evaluate` then scores them without reading anything."""
    from types import SimpleNamespace

    from PIL import Image

    folder = tmp_path / "data" / "Classic5"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(folder / f"{name}.png")
    (folder / "c.png").write_bytes(b"not a png")
    config = deblock_config("no_cqr,smoke")
    config.data.data_dir = str(tmp_path / "data")
    config.eval_set, config.eval_max_images, config.eval_qualities = "Classic5", 2, (10,)
    task = DeblockTask(config)
    task.load_evaluation()
    assert [name for name, _ in task._eval_cache[1]] == ["a", "b"]
    (folder / "a.png").unlink()  # read already: evaluate needs no file
    variables = jax.jit(task.init_variables)(jax.random.key(0))
    state = SimpleNamespace(params=variables["params"], batch_stats={})
    scores = task.evaluate(state)
    assert set(scores) == {"eval/Classic5_q10_psnr", "eval/Classic5_q10_psnr_gain"}
    assert all(np.isfinite(v) for v in scores.values())


def test_a_quality_conditioned_evaluation_compiles_once(deblock_config, tmp_path):
    """Every evaluation QF goes through one program (told the QF as an input), built once per
    run: a second evaluation traces nothing again, and the QFs score differently."""
    from types import SimpleNamespace

    from PIL import Image

    folder = tmp_path / "data" / "Classic5"
    folder.mkdir(parents=True)
    image = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    Image.fromarray(image).save(folder / "a.png")
    config = deblock_config("no_cqr,smoke")
    config.model.update(arch="unet", widths=(4, 8), blocks=(1, 1), nl_window=4, quality_input=True)
    config.data.data_dir = str(tmp_path / "data")
    config.eval_set, config.eval_max_images, config.eval_qualities = "Classic5", 1, (10, 50)
    task = DeblockTask(config)
    leaves, tree = jax.tree.flatten(task.init_variables(jax.random.key(0))["params"])
    rng = np.random.default_rng(1)  # the tail starts at zero: perturb every parameter
    leaves = [a + 0.02 * rng.standard_normal(a.shape).astype(a.dtype) for a in leaves]
    state = SimpleNamespace(params=jax.tree.unflatten(tree, leaves), batch_stats={})
    first, second = task.evaluate(state), task.evaluate(state)
    assert first == pytest.approx(second)
    assert first["eval/Classic5_q10_psnr"] != first["eval/Classic5_q50_psnr"]
    restorer, _ = task._eval_cache
    assert set(first) == {f"eval/Classic5_q{q}_psnr{g}" for q in (10, 50) for g in ("", "_gain")}
    assert restorer.quality_input
    assert restorer.traces == 1  # the quality is an input of the one program
