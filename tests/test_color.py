"""Colour de-blocking (issue 27): the U-Net with 3 channels, the colour training pipeline (RGB
crops as colour JPEGs, 4:2:0 or 4:4:4 chroma drawn by the plan), its config checks, and a short
colour training run that exports a model `load_deblock_model` rebuilds in colour."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cqrnet_jax.data.color import RGB_TO_YCBCR, rgb_to_ycbcr
from cqrnet_jax.data.datasets import builtin_color_photos
from cqrnet_jax.data.jpeg import jpeg_degrade_rgb
from cqrnet_jax.data.pipeline import execute_plan_numpy, make_batches
from cqrnet_jax.data.plans import PlanSampler
from cqrnet_jax.data.sources import load_training_images, training_files
from cqrnet_jax.errors import ConfigError
from cqrnet_jax.inference import Restorer
from cqrnet_jax.metrics import rgb_psnr
from cqrnet_jax.models.build import deblock_from_config, load_deblock_model
from cqrnet_jax.train.config_check import check_config

SMALL = dict(arch="unet", widths=(4, 8, 8), blocks=(1, 1, 1), dilations=(1, 2, 4), nl_inner=4,
             nl_window=4)  # fmt: skip
# The grey SMALL U-Net's parameter tree, (path, shape) per leaf, as the model had it before it
# had channels (commit d92f159): 52 leaves, head kernel (3, 3, 1, 4), tail kernel (3, 3, 4, 1).
GREY_TREE_SHA256 = "57c60fe1d6118b80ae2c4699911d386f3073e4c2744e2222895c682c32fc4a3d"


def _tree(model, x):
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return {
        jax.tree_util.keystr(path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]
    }


# --- the model ----------------------------------------------------------------------------------


def test_grey_unet_keeps_its_parameter_tree():
    """channels=1 (the default, and a config or export without the key) builds the parameter
    tree the grey models were trained with, so they load unchanged."""
    for cfg in (SMALL, {**SMALL, "channels": 1}):
        tree = _tree(deblock_from_config(cfg), jnp.zeros((1, 16, 16)))
        text = "\n".join(f"{path} {shape}" for path, shape in tree.items())
        assert hashlib.sha256(text.encode()).hexdigest() == GREY_TREE_SHA256, text
    assert tree["['params']['head']['kernel']"] == (3, 3, 1, 4)
    assert tree["['params']['tail']['kernel']"] == (3, 3, 4, 1)


@pytest.mark.slow  # a colour U-Net compiled three times
def test_colour_unet_maps_rgb_to_rgb_and_starts_as_the_identity():
    model = deblock_from_config({**SMALL, "channels": 3})
    x = jnp.asarray(np.random.default_rng(0).random((2, 21, 30, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    tree = _tree(model, x)
    assert tree["['params']['head']['kernel']"] == (3, 3, 3, 4)
    assert tree["['params']['tail']['kernel']"] == (3, 3, 4, 3)
    out = model.apply(variables, x)
    assert out.shape == (2, 21, 30, 3)
    np.testing.assert_array_equal(out, x)
    # perturbed, it is no longer the identity, and still RGB in, RGB out, any size
    leaves, tree_def = jax.tree.flatten(variables)
    rng = np.random.default_rng(1)
    leaves = [a + 0.05 * rng.standard_normal(a.shape).astype(a.dtype) for a in leaves]
    out = model.apply(jax.tree.unflatten(tree_def, leaves), x)
    assert out.shape == x.shape and not np.allclose(out, x)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        model.apply(variables, x[..., 0])
    # whole-image inference (the training loop's evaluation) restores RGB images
    rgb = np.random.default_rng(2).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Restorer(model, variables)(rgb), rgb)


def _perturbed(variables, seed=1, scale=0.05):
    leaves, tree_def = jax.tree.flatten(variables)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(
        tree_def, [a + scale * rng.standard_normal(a.shape).astype(a.dtype) for a in leaves]
    )


def test_a_colour_unet_from_a_grey_one_corrects_y_as_it_and_keeps_the_chroma():
    """colour_from_grey: on RGB the colour model changes the protocol's Y as the grey model
    changes that Y, and leaves Cb, Cr exactly as they were. (Y not exactly: the Y offset enters
    the head as a bias, which the grey model's zero padding does not see; that differs most at
    the border and reaches inwards a little through the U-Net.)"""
    from cqrnet_jax.models.unet import colour_from_grey

    grey = deblock_from_config(SMALL)
    grey_vars = _perturbed(grey.init(jax.random.key(0), jnp.zeros((1, 16, 16))))
    colour = deblock_from_config({**SMALL, "channels": 3})
    colour_vars = {"params": colour_from_grey(grey_vars["params"])}
    rgb = np.random.default_rng(2).random((1, 40, 48, 3)).astype(np.float32)
    to_ycbcr = RGB_TO_YCBCR.T / 255.0  # RGB in [0, 1] -> YCbCr in [0, 1], less the offsets
    y = rgb @ to_ycbcr[:, 0] + 16.0 / 255.0
    out = np.asarray(colour.apply(colour_vars, jnp.asarray(rgb)))
    want_dy = np.asarray(grey.apply(grey_vars, jnp.asarray(y))) - y
    got, base = out @ to_ycbcr, rgb @ to_ycbcr
    assert np.abs(want_dy).mean() > 0.02  # the grey model does change Y
    error = np.abs(got[..., 0] - base[..., 0] - want_dy)
    assert error.mean() < 0.05 * np.abs(want_dy).mean(), (error.mean(), np.abs(want_dy).mean())
    np.testing.assert_allclose(got[..., 1:], base[..., 1:], atol=1e-6)
    with pytest.raises(ValueError, match="not a grey"):
        colour_from_grey(colour_vars["params"])


CHROMA = {**SMALL, "arch": "chroma", "channels": 3, "chroma_widths": (4, 8),
          "chroma_blocks": (1, 1)}  # fmt: skip


@pytest.mark.slow  # a chroma U-Net, its forward pass and gradients compiled
def test_the_chroma_unet_keeps_the_grey_models_y_and_learns_only_the_chroma():
    """ChromaUNet: its Y is the grey model's on the (rounded) protocol Y, no gradient reaches
    that model, and it starts with the decoded Cb, Cr; any size, RGB in and out."""
    from cqrnet_jax.models.unet import ChromaUNet

    model = deblock_from_config(CHROMA)
    assert isinstance(model, ChromaUNet) and model.channels == 3
    rgb = np.random.default_rng(2).random((1, 37, 46, 3)).astype(np.float32)
    variables = model.init(jax.random.key(0), jnp.asarray(rgb))
    np.testing.assert_allclose(model.apply(variables, rgb), rgb, atol=2e-6)  # the identity

    grey = deblock_from_config(SMALL)
    grey_vars = _perturbed(grey.init(jax.random.key(0), jnp.zeros((1, 16, 16))))
    params = {**variables["params"], "luma": grey_vars["params"]}
    out = np.asarray(model.apply({"params": params}, rgb))
    to_ycbcr = RGB_TO_YCBCR.T / 255.0
    y = rgb @ to_ycbcr[:, 0] + 16.0 / 255.0
    y8 = np.round(y * 255.0) / 255.0
    want_y = np.asarray(grey.apply(grey_vars, jnp.asarray(y8))) + (y - y8)
    got, base = out @ to_ycbcr, rgb @ to_ycbcr
    assert np.abs(want_y - y).mean() > 0.02  # the grey model does change Y
    np.testing.assert_allclose(got[..., 0] + 16.0 / 255.0, want_y, atol=2e-5)
    np.testing.assert_allclose(got[..., 1:], base[..., 1:], atol=2e-5)

    def loss(p):
        return jnp.mean(jnp.abs(model.apply({"params": p}, rgb) - 0.5))

    grads = jax.grad(loss)(_perturbed({"params": params})["params"])
    assert all(not np.any(g) for g in jax.tree.leaves(grads["luma"]))
    assert any(np.any(g) for g in jax.tree.leaves(grads["chroma"]))


# --- the data -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def colour_images():
    return [rgb for _, rgb in builtin_color_photos()]


def _sampler(images, **kw):
    settings = dict(patch_size=32, global_batch=8, seed=0, mode="deblock", qualities=(10, 30))
    return PlanSampler(images, **{**settings, "color_444_fraction": 0.25, **kw})


def test_colour_batches_have_the_documented_shapes_and_are_deterministic(colour_images):
    assert colour_images and all(im.ndim == 3 and im.shape[-1] == 3 for im in colour_images)
    sampler = _sampler(colour_images)
    batch = execute_plan_numpy(sampler.plan(5))
    assert batch["degraded"].shape == (8, 1, 32, 32, 3) and batch["degraded"].dtype == np.uint8
    assert batch["clean"].shape == (8, 32, 32, 3) and batch["clean"].dtype == np.uint8
    assert batch["quality"].shape == (8, 1) and batch["quality"].dtype == np.int32
    again = execute_plan_numpy(_sampler(colour_images).plan(5))
    for key in batch:
        np.testing.assert_array_equal(batch[key], again[key])
    assert not np.array_equal(batch["clean"], execute_plan_numpy(sampler.plan(6))["clean"])
    # each crop is the colour JPEG of its clean crop, with the subsampling its plan drew
    plan = sampler.plan(5)
    for i, (clean, q, full) in enumerate(zip(batch["clean"], plan["quality"], plan["chroma_444"])):
        expected = jpeg_degrade_rgb(clean, int(q[0]), "4:4:4" if full else "4:2:0")
        np.testing.assert_array_equal(batch["degraded"][i, 0], expected)


def test_the_plan_draws_4_4_4_for_its_fraction_of_crops(colour_images):
    sampler = _sampler(colour_images, global_batch=64)
    full = np.concatenate([sampler.plan(s)["chroma_444"] for s in range(40)])
    assert full.dtype == bool and 0.21 < full.mean() < 0.29
    assert not _sampler(colour_images, color_444_fraction=0.0).plan(0)["chroma_444"].any()


def test_grey_plans_draw_no_chroma_and_are_unchanged(colour_images):
    grey = [im[..., 1].copy() for im in colour_images]
    settings = dict(patch_size=32, global_batch=8, seed=0, mode="deblock", qualities=(10, 30))
    grey_plan = PlanSampler(grey, **settings).plan(3)
    colour_plan = _sampler(colour_images).plan(3)
    assert "chroma_444" not in grey_plan
    for key in ("index", "y0", "x0", "transform", "quality"):  # chroma is drawn last
        np.testing.assert_array_equal(grey_plan[key], colour_plan[key])


def test_4_2_0_crops_lose_more_chroma_than_4_4_4(colour_images):
    plan = _sampler(colour_images, global_batch=16).plan(0)
    plan["quality"][:] = 50

    def chroma_error(full: bool):
        batch = execute_plan_numpy({**plan, "chroma_444": np.full(16, full)})
        diff = rgb_to_ycbcr(batch["degraded"][:, 0]) - rgb_to_ycbcr(batch["clean"])
        return np.sqrt(np.mean(np.square(diff[..., 1:]))), batch["degraded"]

    err_420, degraded_420 = chroma_error(False)
    err_444, degraded_444 = chroma_error(True)
    assert not np.array_equal(degraded_420, degraded_444)
    assert err_420 > 1.15 * err_444  # 4.03 against 3.14 here


def test_the_dihedral_transforms_act_on_rgb_crops_channel_by_channel(colour_images):
    from cqrnet_jax.data.dihedral import dihedral, undo_dihedral

    crop = colour_images[0][:32, :48]
    for t in range(8):
        out = dihedral(crop, t)
        assert out.shape[-1] == 3 and out.flags.c_contiguous
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], dihedral(crop[..., c], t))
        np.testing.assert_array_equal(undo_dihedral(out, t), crop)


# --- config errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "presets, change, message",
    [
        ("unet,color,holdout", {}, "'Urban100_gray' is grey"),
        ("unet,color", {"model.arch": "cqr"}, "model.channels=3 needs model.arch=unet"),
        ("unet", {"model.channels": 3}, "model.channels=3 needs data.color=True"),
        ("unet", {"model.channels": 2}, "model.channels: one of 1, 3, not 2"),
        ("unet,color", {"model.channels": 1}, "data.color needs model.channels=3"),
        ("unet,color", {"data.patch_size": 40}, "multiple of 16"),
        ("unet,color", {"data.backend": "tf"}, "data.color needs data.backend=numpy"),
        ("unet,color", {"loss.beta": 0.9}, "the ranker's losses are grey"),
        ("unet,color", {"data.color_444_fraction": 1.5}, "color_444_fraction"),
        ("unet,color", {"loss.boundary": 1.0}, "loss.boundary and loss.blocking work on Y"),
        ("unet,color", {"loss.blocking": 1.0}, "loss.boundary and loss.blocking work on Y"),
        ("unet", {"loss.chroma": 1.0}, "loss.chroma weighs the colour of RGB output"),
        ("unet,color", {"loss.chroma": -1.0}, "loss.chroma"),
        ("unet,chroma", {"model.channels": 1}, "model.arch=chroma is a colour model"),
        ("unet,chroma", {"config.init_from": ""}, "keeps a grey U-Net's Y"),
    ],
)
def test_colour_config_errors_are_one_line(deblock_config, presets, change, message):
    config = deblock_config(presets)
    for key, value in change.items():
        section, name = key.split(".")
        (config if section == "config" else config[section])[name] = value
    with pytest.raises(ConfigError, match=message) as err:
        check_config(config)
    assert "\n" not in str(err.value)


def test_colour_sources_refuse_grey_sets_and_images(deblock_config, tmp_path):
    config = deblock_config("unet,allqf,holdout,color")
    assert config.data.train_sets == ("BSDS500/train", "Urban100_color_half")
    assert config.eval_set == "BSDS500val" and config.model.channels == 3
    config.data.train_sets = ("BSDS500/train", "Urban100_gray")
    with pytest.raises(ConfigError, match="Urban100_gray"):
        training_files(config.data)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "grey.png")
    config.data.source, config.data.files = "folder", str(tmp_path)
    with pytest.raises(ConfigError, match="grey.png: a grey image") as err:
        load_training_images(config.data)
    assert "\n" not in str(err.value)
    config.data.backend = "tf"
    images = [np.zeros((64, 64, 3), np.uint8)]
    with pytest.raises(ConfigError, match="data.color needs data.backend=numpy"):
        make_batches(config.data, images, mode="deblock", global_batch=2, start_step=0)


# --- a short colour run -------------------------------------------------------------------------


def _save_colour_images(folder, n, size, seed):
    """Smooth colour images with some texture, as PNG."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    for i in range(n):
        phase = rng.uniform(0, 6, 3)
        rgb = 127.5 + 90 * np.sin(6 * (xx[..., None] + yy[..., None] * (i + 1)) + phase)
        rgb += rng.normal(0, 8, rgb.shape)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"im{i}.png")


@pytest.mark.slow  # compiles a train step and an evaluation: ~20 s on 2 busy cores
@pytest.mark.parametrize("arch", ["unet", "chroma"])
def test_a_short_colour_run_exports_a_colour_model(deblock_config, tmp_path, arch):
    from cqrnet_jax.train import loop
    from cqrnet_jax.train.deblock_task import DeblockTask

    _save_colour_images(tmp_path / "train", 3, (72, 88), seed=0)
    _save_colour_images(tmp_path / "data" / "BSDS500" / "val", 3, (40, 56), seed=1)
    config = deblock_config("unet,color,smoke" if arch == "unet" else "unet,chroma,smoke")
    assert config.model.arch == arch
    config.update(num_steps=5, log_every=5, checkpoint_every=5, eval_every=5)
    config.model.update(widths=(4, 8), blocks=(1, 1), nl_inner=4, nl_window=4)
    config.model.update(chroma_widths=(4, 8), chroma_blocks=(1, 1))
    config.data.update(source="folder", files=str(tmp_path / "train"), patch_size=32)
    config.data.data_dir = str(tmp_path / "data")
    config.update(eval_set="BSDS500val", eval_max_images=2, eval_qualities=(10,))
    config.optim.warmup_steps = 0
    config.loss.chroma = 0.5  # L_C on top of the RGB MAE
    # it starts from a blind grey U-Net's export (at its step 700), at step 0: colour_from_grey
    # for the colour U-Net, the frozen Y model of the chroma U-Net (which `:chroma` makes
    # quality-conditioned, as the shipped grey model is: the blind Y gains a zero-weight plane)
    from cqrnet_jax import pretrained
    from cqrnet_jax.models.unet import add_quality_input

    assert config.model.quality_input == (arch == "chroma")
    grey_cfg = dict(config.model, channels=1, arch="unet", quality_input=False)
    grey = deblock_from_config(grey_cfg)
    grey_vars = _perturbed(grey.init(jax.random.key(0), jnp.zeros((1, 32, 32))))
    grey_meta = {"kind": "deblock", "step": 700, "model": grey_cfg}
    pretrained.save_variables(tmp_path / "grey/deblock", grey_vars, grey_meta)
    config.init_from = str(tmp_path / "grey/deblock")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        loop.train_and_evaluate(config, str(tmp_path / "run"), DeblockTask(config))
    assert "initialised from" in out.getvalue() and "at step 0" in out.getvalue()
    log = [json.loads(line) for line in (tmp_path / "run/logs/metrics.jsonl").open()]
    last = log[-1]
    assert last["step"] == 5 and np.isfinite(last["l_mae"]) and last["l_c"] > 0
    assert np.isfinite(last["eval/BSDS500val_q10_rgb_psnr"])
    assert np.isfinite(last["eval/BSDS500val_q10_rgb_psnr_gain"])
    assert "eval/BSDS500val_q10_rgb_psnr=" in out.getvalue()

    model, variables, meta = load_deblock_model(tmp_path / "run/export/deblock")
    assert meta["model"]["channels"] == 3 and model.channels == 3
    assert meta["config"]["data"]["color"] is True and meta["model"]["arch"] == arch
    x = np.random.default_rng(3).random((1, 24, 40, 3)).astype(np.float32)
    quality = {"quality": np.float32(20.0)} if arch == "chroma" else {}
    assert model.apply(variables, x, **quality).shape == (1, 24, 40, 3)
    if arch == "chroma":  # five steps of Adam left the Y model exactly as it was
        luma = variables["params"]["luma"]
        jax.tree.map(np.testing.assert_array_equal, luma, add_quality_input(grey_vars["params"]))


def test_rgb_psnr_is_over_all_three_channels():
    a = np.zeros((4, 5, 3), np.uint8)
    b = a.copy()
    b[..., 0] = 3  # MSE over all samples: 9 / 3
    assert rgb_psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 3))
    assert rgb_psnr(a, a) == np.inf
