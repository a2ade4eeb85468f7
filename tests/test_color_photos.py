"""Colour photos through a colour model in the product: `photo.restore_image` and `deblock
--color-model` (a tiny perturbed colour U-Net; the shipped one where the package has it)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import deblock, error_lines, rgb, save_perturbed_deblocker
from PIL import Image

from cqrnet_jax.data.io import load_image, load_image_bytes
from cqrnet_jax.inference import has_color_model, load_color_restorer, load_restorer
from cqrnet_jax.photo import restore_image

COLOUR = dict(arch="unet", widths=(4, 8), blocks=(1, 1), dilations=(1, 2, 4), nl_inner=4,
              nl_window=4, channels=3)  # fmt: skip
CHROMA = dict(COLOUR, arch="chroma", chroma_widths=(4, 8), chroma_blocks=(1, 1))


@pytest.fixture(scope="module", params=[COLOUR, CHROMA], ids=["unet", "chroma"])
def colour_prefix(tmp_path_factory, request) -> str:
    """A tiny colour model (the RGB U-Net; the chroma U-Net), every parameter perturbed (not the
    identity), saved as a params prefix."""
    prefix = tmp_path_factory.mktemp("colour") / "colour"
    return save_perturbed_deblocker(request.param, (1, 16, 16, 3), prefix, 0.05)


def _jpeg(pixels: np.ndarray, quality: int = 20, mode: str = "RGB"):
    buf = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buf, "JPEG", quality=quality)
    return load_image_bytes(buf.getvalue(), "photo.jpg")


def test_a_colour_model_restores_colour_and_keeps_neutral_photos_neutral(
    colour_prefix, tiny_restorer
):
    colour = load_color_restorer(colour_prefix)
    photo = _jpeg(rgb())
    out = restore_image(tiny_restorer, photo, colour=colour)
    assert out.shape == photo.pixels.shape and out.dtype == np.uint8
    guided = restore_image(tiny_restorer, photo)  # without a colour model: Y model + filter
    assert np.abs(out.astype(int) - guided).mean() > 1  # the colour model did the work
    grey = np.repeat(rgb()[..., :1], 3, axis=-1)  # R = G = B
    for consistency in (True, False):
        neutral = restore_image(tiny_restorer, _jpeg(grey), consistency, colour=colour)
        assert np.array_equal(neutral[..., 0], neutral[..., 1]), consistency
        assert np.array_equal(neutral[..., 0], neutral[..., 2]), consistency
    # a grey file keeps the Y model
    grey_file = _jpeg(grey[..., 0], mode="L")
    np.testing.assert_array_equal(
        restore_image(tiny_restorer, grey_file, colour=colour),
        restore_image(tiny_restorer, grey_file),
    )


def test_deblock_sends_colour_files_to_the_colour_model(
    capsys, tiny_model_prefix, colour_prefix, tmp_path
):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rgb()).save(src / "photo.jpg", quality=20)
    alpha = np.random.default_rng(2).integers(0, 256, rgb().shape[:2], dtype=np.uint8)
    Image.fromarray(np.dstack([rgb(), alpha]), mode="RGBA").save(src / "clear.png")
    runs = {}
    for name in ("none", colour_prefix):
        out = tmp_path / ("guided" if name == "none" else "colour")
        code, err = deblock(capsys, tiny_model_prefix, src, "-o", out, "--color-model", name)
        assert code == 0 and not error_lines(err), err
        runs[name] = load_image(out / "photo.png").pixels
        clear = load_image(out / "clear.png")
        np.testing.assert_array_equal(clear.alpha, alpha)  # RGBA keeps its alpha
    photo = load_image(src / "photo.jpg")
    colour = load_color_restorer(colour_prefix, tile=512)
    np.testing.assert_array_equal(
        runs[colour_prefix],
        restore_image(load_restorer(tiny_model_prefix)[0], photo, colour=colour),
    )
    assert not np.array_equal(runs[colour_prefix], runs["none"])


@pytest.mark.slow  # 8 transforms x tiles compiled for each colour model: ~30 s each
def test_colour_models_tile_and_self_ensemble_as_grey_ones(
    capsys, tiny_model_prefix, colour_prefix, tmp_path
):
    """`deblock --ensemble --tile` on a colour photo bigger than the tile: the colour model's
    8-transform mean, tiled, as the library gives it."""
    from cqrnet_jax.ensemble import SelfEnsemble

    big = np.tile(rgb(), (2, 2, 1))
    Image.fromarray(big).save(tmp_path / "photo.jpg", quality=20)
    args = ("-o", tmp_path / "out", "--color-model", colour_prefix, "--ensemble", "--tile", 64)
    code, err = deblock(capsys, tiny_model_prefix, tmp_path / "photo.jpg", *args)
    assert code == 0 and not error_lines(err), err
    colour = load_color_restorer(colour_prefix, tile=64)
    grey = SelfEnsemble(load_restorer(tiny_model_prefix, tile=64)[0])
    want = restore_image(grey, load_image(tmp_path / "photo.jpg"), colour=SelfEnsemble(colour))
    np.testing.assert_array_equal(load_image(tmp_path / "out/photo.png").pixels, want)
    assert big.shape[0] > 64 and big.shape[1] > 64  # more than one tile


@pytest.mark.parametrize("which", ["model", "color-model"])
def test_a_model_of_the_wrong_kind_is_one_error_line(
    capsys, tiny_model_prefix, colour_prefix, tmp_path, which
):
    Image.fromarray(rgb()).save(tmp_path / "photo.jpg", quality=20)
    if which == "model":  # a colour model as the Y model
        model, args = colour_prefix, ("--color-model", "none")
        want = f"error: {colour_prefix}: a colour (RGB) model; give it as --color-model"
    else:  # a Y model as the colour model
        model, args = tiny_model_prefix, ("--color-model", tiny_model_prefix)
        want = f"error: {tiny_model_prefix}: a Y (grey) model, not a colour one; give it as --model"
    code, err = deblock(capsys, model, tmp_path / "photo.jpg", "-o", tmp_path / "out", *args)
    assert code == 3 and error_lines(err) == [want], err
    assert not (tmp_path / "out").exists()


def test_a_colour_model_restores_only_up_to_its_recorded_quality(colour_prefix, tiny_restorer):
    """Above a colour model's `color_up_to`, a JPEG goes the Y model's way (as without one);
    up to it, and for files without tables, through the colour model."""
    from cqrnet_jax.ensemble import SelfEnsemble
    from cqrnet_jax.photo import colour_model_pays

    colour = load_color_restorer(colour_prefix)
    colour.meta = {**colour.meta, "color_up_to": 50}
    for quality, pays in ((40, True), (50, True), (60, False)):
        photo = _jpeg(rgb(), quality)
        assert colour_model_pays(colour, photo) is pays
        assert colour_model_pays(SelfEnsemble(colour), photo) is pays
        out = restore_image(tiny_restorer, photo, colour=colour)
        assert np.array_equal(out, restore_image(tiny_restorer, photo)) is not pays, quality
    png = load_image_bytes(_png(rgb()), "photo.png")
    assert colour_model_pays(colour, png)


def _png(pixels) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def test_the_default_colour_model_goes_with_the_default_y_model_only(tiny_model_prefix):
    """The shipped colour model carries the shipped Y model: with another --model, colour
    photos get that model on Y and the guided filter, as with --color-model none."""
    assert load_color_restorer("default", tiny_model_prefix) is None
    assert load_color_restorer("none") is None
    if has_color_model():
        assert load_color_restorer("default", "default").channels == 3


@pytest.mark.slow  # the shipped colour model on every built-in photo at four qualities
@pytest.mark.skipif(not has_color_model(), reason="the package ships no colour model")
def test_the_shipped_colour_model_keeps_the_mean_colour_within_one_level():
    """No colour shift: on the built-in colour photos at QF 10-40 the restored image's mean R,
    G and B are each within one level of the JPEG's."""
    from cqrnet_jax.data.datasets import builtin_color_photos

    grey, _ = load_restorer("default", tile=512)
    colour = load_color_restorer("default", tile=512)
    for name, photo in builtin_color_photos():
        for quality in (10, 20, 30, 40):
            loaded = _jpeg(photo, quality)
            out = restore_image(grey, loaded, colour=colour)
            shift = out.mean((0, 1)) - loaded.pixels.mean((0, 1))
            assert np.abs(shift).max() <= 1.0, (name, quality, shift)


def test_the_web_page_restores_colour_uploads_with_the_colour_model(
    colour_prefix, tiny_restorer, tmp_path
):
    """`serve`'s worker gives a colour upload to the colour model, as `deblock` does."""
    from cqrnet_jax.apps.serve_jobs import DONE, JobQueue

    colour = load_color_restorer(colour_prefix)
    jobs = JobQueue(
        tiny_restorer, None, tmp_path, limit=90, trained=(5, 95), max_pixels=10**6, colour=colour
    )
    job = jobs.new_job("photo.jpg", force=False)
    Image.fromarray(rgb()).save(job.upload, format="JPEG", quality=20)
    jobs.admit(job)
    jobs._run(job)
    assert job.state == DONE, job.message
    want = restore_image(tiny_restorer, load_image(job.upload), colour=colour)
    np.testing.assert_array_equal(load_image(job.folder / "after.png").pixels, want)
