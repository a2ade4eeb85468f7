"""`cqrnet-jax demo` through `cqrnet_jax.apps.cli.main`, on a 64x64 region of a bundled photo with
a tiny saved model: the figure holds JPEG | restored | original side by side, the printed scores
are the protocol's (Y channel) and the gain is their difference, and an existing file is never
replaced without --overwrite."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from cqrnet_jax.apps.cli import main
from cqrnet_jax.apps.demo import DETAIL_CENTRES, compress, cut, load_photo, square_around
from cqrnet_jax.data.color import rgb_to_y
from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.inference import load_restorer
from cqrnet_jax.metrics import image_metrics
from cqrnet_jax.photo import restore_image

SIZE, CROP = 64, 32
PAD = 8  # the figure's margin at this size: max(8, width // 64)
RED = np.array([220, 30, 30], np.uint8)  # the detail outline


def _demo(capsys, *args):
    """(exit status, stdout, stderr) of `cqrnet-jax demo ARGS` on a small region."""
    capsys.readouterr()
    code = main(["demo", "--size", str(SIZE), "--crop", str(CROP), *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _row(out: str, name: str) -> list[float]:
    """The three numbers (PSNR, SSIM, PSNR-B) of the printed table row `name`."""
    match = re.search(rf"^{name}\s+([-+\d.]+)\s+([-+\d.]+)\s+([-+\d.]+)$", out, re.MULTILINE)
    assert match, out
    return [float(v) for v in match.groups()]


def _find_rows(figure: np.ndarray, panel: np.ndarray, x: int) -> list[int]:
    """Rows y where `panel` sits in `figure` at column x (the red outline pixels excepted)."""
    h, w = panel.shape[:2]
    found = []
    for y in range(figure.shape[0] - h + 1):
        window = figure[y : y + h, x : x + w]
        keep = ~np.all(window == RED, axis=-1)
        if keep.mean() > 0.8 and np.array_equal(window[keep], panel[keep]):
            found.append(y)
    return found


def test_figure_holds_jpeg_restored_original_and_scores_are_the_protocols(
    capsys, tiny_model_prefix, tmp_path
):
    out = tmp_path / "figure.png"
    code, stdout, err = _demo(capsys, "--model", tiny_model_prefix, "-o", out)
    assert code == 0, err
    photo = load_photo("astronaut")
    original = cut(photo, square_around(photo.shape, DETAIL_CENTRES["astronaut"], SIZE))
    loaded = compress(original, 10)
    jpeg = loaded.pixels
    restored = restore_image(load_restorer(tiny_model_prefix)[0], loaded)

    figure = np.asarray(Image.open(out).convert("RGB"))
    assert figure.shape[1] == 3 * SIZE + 4 * PAD  # three panels side by side
    for i, panel in enumerate((jpeg, restored, original)):
        assert _find_rows(figure, panel, PAD + i * (SIZE + PAD)), f"panel {i} not in the figure"

    # Scores: on Y (BT.601 studio swing) against the original; gain = restored - JPEG.
    ref = image_metrics(rgb_to_y(jpeg), rgb_to_y(original))
    got_jpeg, got_restored, gain = (
        _row(stdout, "JPEG"),
        _row(stdout, "restored"),
        _row(stdout, "gain"),
    )
    assert got_jpeg == pytest.approx([ref["psnr"], ref["ssim"], ref["psnr_b"]], abs=0.006)
    assert gain[0] == pytest.approx(got_restored[0] - got_jpeg[0], abs=0.011)
    assert f"wrote {out}" in stdout


def test_grey_photo_gets_the_protocol_jpeg(capsys, tiny_model_prefix, tmp_path):
    """camera (grey): the JPEG is the protocol's `jpeg_degrade`, scored as evaluate does."""
    code, stdout, err = _demo(
        capsys,
        "--photo",
        "camera",
        "--quality",
        "20",
        "--model",
        tiny_model_prefix,
        "-o",
        tmp_path / "g.png",
    )
    assert code == 0, err
    photo = load_photo("camera")
    assert photo.ndim == 2
    original = cut(photo, square_around(photo.shape, DETAIL_CENTRES["camera"], SIZE))
    ref = image_metrics(jpeg_degrade(original, 20), original)
    assert _row(stdout, "JPEG")[0] == pytest.approx(ref["psnr"], abs=0.006)
    assert "grey" in stdout


def test_existing_output_is_refused_without_overwrite(capsys, tiny_model_prefix, tmp_path):
    out = tmp_path / "taken.png"
    out.write_bytes(b"mine")
    code, _, err = _demo(capsys, "--model", tiny_model_prefix, "-o", out)
    assert code == 2 and err.strip().startswith("error: ") and "--overwrite" in err
    assert out.read_bytes() == b"mine"
    code, _, err = _demo(capsys, "--model", tiny_model_prefix, "-o", out, "--overwrite")
    assert code == 0, err
    assert Image.open(out).size[0] == 3 * SIZE + 4 * PAD


@pytest.mark.parametrize(
    "args, message",
    [
        (["--quality", "0"], "quality"),
        (["--photo", "lena"], "invalid choice"),
        (["--size", "8"], "--size"),
        (["-o", "figure.txt"], "suffix"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = _demo(capsys, *args)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert err.count("\n") == 1


def test_a_quality_above_the_models_limit_is_shown_unrestored_unless_forced(
    capsys, tiny_model_prefix, tmp_path
):
    """The tiny model (trained on QF 10-30) at QF 60: one line says so, the 'restored' panel is
    the JPEG itself (gain 0); --force restores it."""
    args = ["--photo", "camera", "--quality", "60", "--model", tiny_model_prefix]
    code, stdout, err = _demo(capsys, *args, "-o", tmp_path / "a.png")
    assert code == 0, err
    assert "JPEG quality 60 is above 30, the highest this model is known to improve" in err
    assert _row(stdout, "restored") == _row(stdout, "JPEG") and "left alone" in stdout
    code, stdout, err = _demo(capsys, *args, "--force", "-o", tmp_path / "b.png")
    assert code == 0 and "above 30" not in err
    assert _row(stdout, "restored") != _row(stdout, "JPEG")
