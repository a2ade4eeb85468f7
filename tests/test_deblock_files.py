"""`cqrnet-jax deblock` on the files people really have: EXIF-rotated photos, palette, animated,
CMYK, 16-bit, progressive, grey+alpha and 1-bit files, images smaller than a JPEG block,
colour profiles, truncated files and decompression bombs (tiny saved model of
test_deblock_cli.py; all images H x W so one program is compiled, except the tiny sizes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import H, W, deblock, error_lines, grey, png_header_only, rgb
from PIL import Image

from cqrnet_jax.data.io import load_image


@pytest.fixture
def jpeg(tmp_path):
    path = tmp_path / "good.jpg"
    Image.fromarray(rgb()).save(path, quality=20)
    return path


def _exif_rotated(path: Path) -> Path:
    """rgb() stored turned by 90 degrees with EXIF orientation 6, as a camera writes it."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.ascontiguousarray(np.rot90(rgb(), 1))
    Image.fromarray(stored).save(path, quality=90, exif=exif)
    return path


def _palette_with_transparency(path: Path) -> Path:
    im = Image.fromarray(rgb()).quantize(16)
    im.save(path, transparency=0)
    return path


def _gif_two_frames(path: Path) -> Path:
    frames = [Image.fromarray(grey()).convert("P"), Image.fromarray(255 - grey()).convert("P")]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


def _cmyk_jpeg(path: Path) -> Path:
    Image.fromarray(rgb()).convert("CMYK").save(path, quality=40)
    return path


def _sixteen_bit(path: Path) -> Path:
    Image.fromarray(grey().astype(np.uint16) * 257).save(path)
    return path


def _progressive(path: Path) -> Path:
    Image.fromarray(rgb()).save(path, quality=20, progressive=True)
    return path


def _la(path: Path) -> Path:
    Image.fromarray(np.dstack([grey(), grey()[::-1]]), mode="LA").save(path)
    return path


def _bilevel(path: Path) -> Path:
    Image.fromarray(grey() > 128).save(path)
    return path


def test_every_kind_of_file_is_restored_upright(capsys, tiny_model_prefix, tiny_restorer, tmp_path):
    """EXIF-rotated, palette with transparency, 2-frame GIF (its first frame), CMYK JPEG,
    16-bit grey PNG, progressive JPEG, grey+alpha and 1-bit files: all written, upright, with
    the input's size, alpha kept; grey ones as the restorer's output of the loaded pixels."""
    src = tmp_path / "in"
    src.mkdir()
    makers = dict(rotated=_exif_rotated, palette=_palette_with_transparency, anim=_gif_two_frames,
                  cmyk=_cmyk_jpeg, deep=_sixteen_bit, progressive=_progressive, la=_la,
                  bits=_bilevel)  # fmt: skip
    suffix = dict(palette=".png", anim=".gif", deep=".png", la=".png", bits=".png")
    files = {k: make(src / f"{k}{suffix.get(k, '.jpg')}") for k, make in makers.items()}
    out = tmp_path / "out"
    code, err = deblock(capsys, tiny_model_prefix, src, "-o", out, "--force")  # all qualities
    assert code == 0 and not error_lines(err), err
    for name, path in files.items():
        loaded, result = load_image(path), load_image(out / f"{name}.png")
        assert result.pixels.shape[:2] == (H, W), name  # upright: the stored file is W x H
        assert (result.alpha is None) == (loaded.alpha is None), name
        if loaded.alpha is not None:
            np.testing.assert_array_equal(result.alpha, loaded.alpha)
        if loaded.is_grey and loaded.alpha is None:
            np.testing.assert_array_equal(result.pixels, tiny_restorer(loaded.pixels))
    anim = load_image(out / "anim.png").pixels
    assert np.abs(anim.astype(int) - tiny_restorer(grey())).mean() < 3  # the first frame, not 255-x
    rotated = load_image(out / "rotated.png").pixels
    assert np.abs(rotated.astype(int) - rgb()).mean() < 10  # wrong turn: ~ 60


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (3, 2, 3), (7, 5, 3)])
def test_tiny_and_odd_sized_images(capsys, tiny_model_prefix, tiny_restorer, tmp_path, shape):
    """Images smaller than a JPEG block, of odd sizes, grey or colour, come out at their size."""
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "tiny.png"
    Image.fromarray(pixels).save(path)
    code, err = deblock(capsys, tiny_model_prefix, path, "-o", tmp_path / "out")
    assert code == 0 and not error_lines(err), err
    result = load_image(tmp_path / "out" / "tiny.png").pixels
    assert result.shape == shape
    if len(shape) == 2:
        np.testing.assert_array_equal(result, tiny_restorer(pixels))


def test_colour_profile_is_carried_over(capsys, tiny_model_prefix, tmp_path):
    """An RGB input's ICC profile is written into the output (colours keep their meaning)."""
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "tagged.jpg"
    Image.fromarray(rgb()).save(path, quality=30, icc_profile=icc)
    for fmt in ("png", "jpg", "webp", "tiff"):
        code, err = deblock(capsys, tiny_model_prefix, path, "-o", tmp_path / fmt, "--format", fmt)
        assert code == 0, err
        written = next((tmp_path / fmt).iterdir())
        with Image.open(written) as im:
            assert im.info.get("icc_profile") == icc, fmt


def test_decompression_bombs_and_max_pixels_are_refused(capsys, tiny_model_prefix, jpeg, tmp_path):
    """A 70-byte PNG claiming 12000 x 9000 pixels is refused before decoding, as is any image
    over --max-pixels; one error line each, the other files are written, exit 3."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(12000, 9000))
    code, err = deblock(capsys, tiny_model_prefix, bomb, jpeg, "-o", tmp_path / "out")
    assert code == 3
    assert error_lines(err) == [
        f"error: {bomb}: image too large: 108000000 pixels > limit 100000000 (decompression bomb?)"
    ]
    assert (tmp_path / "out" / "good.png").is_file()
    limit = ["--max-pixels", str(H * W - 1)]
    code, err = deblock(capsys, tiny_model_prefix, jpeg, "-o", tmp_path / "small", *limit)
    assert code == 3 and f"> limit {H * W - 1}" in error_lines(err)[0]


def test_truncated_jpeg_is_one_error_line(capsys, tiny_model_prefix, jpeg, tmp_path):
    data = jpeg.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    code, err = deblock(capsys, tiny_model_prefix, cut, jpeg, "-o", tmp_path / "out")
    assert code == 3
    assert error_lines(err) == [f"error: {cut}: truncated image data"]
    assert (tmp_path / "out" / "good.png").is_file()


# --- files the model was not trained for ---------------------------------------------------------


def _warnings(err: str) -> list[str]:
    return [line.strip() for line in err.splitlines() if line.strip().startswith("warning: ")]


@pytest.fixture
def qualities(tmp_path):
    """JPEGs at IJG quality 20 (trained range) and 40, one with Photoshop's "web_high" tables
    (not IJG's: ~86), and a PNG, in tmp_path/in."""
    src = tmp_path / "in"
    src.mkdir()
    files = {}
    for name, quality in (("q20", 20), ("q40", 40), ("web", "web_high")):
        files[name] = src / f"{name}.jpg"
        Image.fromarray(rgb()).save(files[name], quality=quality)
    files["png"] = src / "png.png"
    Image.fromarray(rgb()).save(files["png"])
    return files


def test_jpegs_above_the_models_limit_are_left_alone_by_default(
    capsys, tiny_model_prefix, qualities, tmp_path
):
    """By default the JPEGs above the model's limit (trained on QF 10-30, no measured limit: 30)
    get one 'left alone' line each, in input order, and no output; the QF 20 JPEG is restored
    quietly, the PNG with a warning; exit 0; the summary counts the skipped."""
    out = tmp_path / "out"
    code, err = deblock(capsys, tiny_model_prefix, *qualities.values(), "-o", out)
    assert code == 0 and not error_lines(err), err
    assert sorted(p.name for p in out.iterdir()) == ["png.png", "q20.png"]
    limit = "is above 30, the highest this model is known to improve (--force restores it)"
    assert _warnings(err) == [
        f"warning: {qualities['q40']}: left alone: JPEG quality 40 (from its quantization "
        f"table) {limit}",
        f"warning: {qualities['web']}: left alone: JPEG quality ~86 (nearest IJG quality to its "
        f"own quantization table) {limit}",
        f"warning: {qualities['png']}: not a JPEG (PNG): quality unknown; the model removes the "
        "artifacts of JPEG quality 10-30 and only smooths an image that has none (restored "
        "anyway)",
    ]
    assert err.strip().endswith(f"deblock: 2 written to {out}, 2 skipped, 0 failed")


def test_force_restores_every_file_with_a_warning_above_the_limit(
    capsys, tiny_model_prefix, qualities, tmp_path
):
    """--force restores all four files; the two above the limit get a warning saying so."""
    out = tmp_path / "out"
    code, err = deblock(capsys, tiny_model_prefix, *qualities.values(), "-o", out, "--force")
    assert code == 0 and not error_lines(err), err
    assert sorted(p.name for p in out.iterdir()) == ["png.png", "q20.png", "q40.png", "web.png"]
    forced = [line for line in _warnings(err) if "--force" in line]
    assert forced == [
        f"warning: {qualities['q40']}: JPEG quality 40 (from its quantization table) is above "
        "30, the highest this model is known to improve: it may lose detail (restored because "
        "of --force)",
        f"warning: {qualities['web']}: JPEG quality ~86 (nearest IJG quality to its own "
        "quantization table) is above 30, the highest this model is known to improve: it may "
        "lose detail (restored because of --force)",
    ]


def test_skip_above_moves_the_limit(capsys, tiny_model_prefix, qualities, tmp_path):
    """--skip-above 50 restores the QF 40 JPEG and leaves the ~86 one; 90 restores all four."""
    files = qualities.values()
    out = tmp_path / "out"
    code, err = deblock(capsys, tiny_model_prefix, *files, "-o", out, "--skip-above", "50")
    assert code == 0 and not error_lines(err), err
    assert sorted(p.name for p in out.iterdir()) == ["png.png", "q20.png", "q40.png"]
    assert [line for line in _warnings(err) if "left alone" in line] == [
        f"warning: {qualities['web']}: left alone: JPEG quality ~86 (nearest IJG quality to its "
        "own quantization table) is above 50, the highest this model is known to improve "
        "(--force restores it)"
    ]
    code, err = deblock(
        capsys, tiny_model_prefix, *files, "-o", tmp_path / "all", "--skip-above", 90
    )
    assert code == 0 and len(list((tmp_path / "all").iterdir())) == 4


def test_restore_limit_is_the_measured_one_else_the_top_of_training():
    """The shipped model records its measured limits (90 with the projection and without); a
    model trained on QF ranges restores up to their top, one on fixed QFs up to the highest."""
    from cqrnet_jax import pretrained
    from cqrnet_jax.apps.input_quality import restore_limit, trained_qualities

    _, meta = pretrained.load_variables(pretrained.shipped("deblock"))
    assert restore_limit(meta) == 90  # measured with the JPEG-consistency projection
    assert restore_limit(meta, consistency=False) == 90
    ranges = {"config": {"data": {"quality_ranges": [[5, 60], [5, 95]], "qualities": [10]}}}
    assert trained_qualities(ranges) == (5, 95) and restore_limit(ranges) == 95
    assert restore_limit({"config": {"data": {"qualities": [10, 20, 30]}}}) == 30


def test_nearest_ijg_quality_of_ijg_and_other_tables():
    """Every IJG table reads back as its own quality; Photoshop's (Pillow's presets) as the IJG
    quality of about the same coarseness."""
    import io

    from cqrnet_jax.apps.input_quality import trained_qualities
    from cqrnet_jax.data.jpeg import ijg_luma_table, nearest_ijg_quality

    assert [nearest_ijg_quality(ijg_luma_table(q)) for q in range(1, 101)] == list(range(1, 101))
    found = {}
    for preset in ("web_low", "web_medium", "web_high", "web_maximum"):
        buf = io.BytesIO()
        Image.fromarray(rgb()).save(buf, "JPEG", quality=preset)
        found[preset] = nearest_ijg_quality(Image.open(buf).quantization[0])
    assert found == {"web_low": 43, "web_medium": 67, "web_high": 86, "web_maximum": 99}
    assert trained_qualities({}) == (10, 30)  # params saved without a config: the defaults
    assert trained_qualities({"config": {"data": {"qualities": [5, 15]}}}) == (5, 15)


def test_a_sixteen_bit_input_is_said_to_be_written_with_8_bits(capsys, tiny_model_prefix, tmp_path):
    """A 16-bit grey PNG is restored with one warning line saying the output has 8 bits."""
    path = _sixteen_bit(tmp_path / "deep.png")
    code, err = deblock(capsys, tiny_model_prefix, path, "-o", tmp_path / "out")
    assert code == 0 and not error_lines(err), err
    assert any("a 16-bit image: restored and written with 8 bits" in w for w in _warnings(err))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused_before_any_restoration(
    capsys, tiny_model_prefix, qualities, tmp_path
):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    code, err = deblock(capsys, tiny_model_prefix, qualities["q20"], "-o", out)
    assert code == 2 and "cannot write into the folder" in err and "deblock:" not in err


def test_a_jpegs_luma_is_kept_consistent_with_the_file_unless_told_not_to(
    capsys, tiny_model_prefix, tiny_restorer, tmp_path
):
    """By default the restored luma keeps every DCT coefficient inside the file's quantization
    interval; `--no-consistency` writes the network's output as it is."""
    from cqrnet_jax.data.consistency import project

    path = tmp_path / "grey.jpg"
    Image.fromarray(grey()).save(path, quality=30)
    loaded = load_image(path)
    for flags, folder in (((), "on"), (("--no-consistency",), "off")):
        code, err = deblock(capsys, tiny_model_prefix, path, "-o", tmp_path / folder, *flags)
        assert code == 0 and not error_lines(err), err
    on, off = (load_image(tmp_path / f / "grey.png").pixels for f in ("on", "off"))
    np.testing.assert_array_equal(off, tiny_restorer(loaded.pixels))
    restored = tiny_restorer.restore_float(loaded.pixels / np.float32(255)) * 255.0
    expected = project(restored, loaded.pixels, loaded.jpeg_luma.table)
    np.testing.assert_array_equal(on, np.clip(np.round(expected), 0, 255).astype(np.uint8))
    assert not np.array_equal(on, off)
