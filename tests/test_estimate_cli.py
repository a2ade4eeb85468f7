"""`cqrnet-jax estimate` on real files: what luma is scored, large images, and the same input
handling as `deblock` (files, folders, globs, one error line per bad file, exit 3; a bug keeps its
traceback)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers import photo, png_header_only
from PIL import Image

from cqrnet_jax import quality
from cqrnet_jax.apps.cli import main
from cqrnet_jax.apps.estimate import _estimate_one
from cqrnet_jax.data.color import rgb_to_y
from cqrnet_jax.data.io import load_luma
from cqrnet_jax.quality import scored_region


class _Recorder:
    """A stand-in scorer that records the image it was given."""

    calibration = {"qualities": [1, 95], "scores": [0.0, 1.0]}

    def __call__(self, y):
        self.seen = y
        return 0.5


def test_colour_jpeg_is_scored_on_its_decoders_luma(tmp_path):
    """The ranker sees `load_luma`'s Y: for a colour JPEG the decoder's Y plane, not Y
    recomputed from the decoded RGB (which differs by rounding and clipping)."""
    path = tmp_path / "c.jpg"
    Image.fromarray(photo(64, 80)).save(path, quality=25)
    recorder = _Recorder()
    rec = _estimate_one(recorder, str(path), 10**8)
    assert rec["header_quality"] == 25 and rec["estimated_quality"] == pytest.approx(48.0)
    np.testing.assert_array_equal(recorder.seen, load_luma(path).pixels)
    with Image.open(path) as im:
        recomputed = rgb_to_y(np.asarray(im.convert("RGB")))
    assert not np.array_equal(recorder.seen, recomputed)


def test_large_images_are_scored_on_a_grid_aligned_centre_crop():
    y = np.arange(3000 * 4001, dtype=np.int64).reshape(3000, 4001)
    crop = scored_region(y, 2048)
    assert crop.shape == (2048, 2048)
    top, left = divmod(int(crop[0, 0]), 4001)
    assert top % 16 == 0 and left % 16 == 0
    assert abs(top - (3000 - 2048) / 2) < 16 and abs(left - (4001 - 2048) / 2) < 16
    np.testing.assert_array_equal(scored_region(y[:100, :50], 2048), y[:100, :50])


def _estimate(capsys, ranker, *args):
    capsys.readouterr()
    code = main(["estimate", *map(str, args), "--json", "--ranker", str(ranker)])
    out, err = capsys.readouterr()
    return code, [json.loads(line)["file"] for line in out.splitlines()], err


def test_files_folders_globs_and_bad_inputs(capsys, tiny_ranker, tmp_path):
    """Folders give their images, globs their matches (a file named twice is scored once);
    a pattern without matches, a missing file, a non-image and a decompression bomb are one
    `error: INPUT: reason` line each; the good files are all scored; exit status 3."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        Image.fromarray(photo()).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(12000, 9000))
    missing, nothing = tmp_path / "gone.jpg", f"{tmp_path}/*.tif"
    args = [folder, f"{folder}/*.jpg", missing, nothing, folder / "notes.txt", bomb]
    code, files, err = _estimate(capsys, tiny_ranker, *args)
    assert code == 3
    assert files == [str(folder / "a.jpg"), str(folder / "b.png")]
    lines = err.strip().splitlines()
    assert lines[0] == f"error: {missing}: no such file"
    assert lines[1] == f"error: {nothing}: no file matches this pattern"
    assert lines[2].startswith(f"error: {folder / 'notes.txt'}: not an image file")
    assert re.fullmatch(rf"error: {re.escape(str(bomb))}: image too large: .*", lines[3])
    assert len(lines) == 4 and "Traceback" not in err


def test_max_pixels_flag(capsys, tiny_ranker, tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(photo(48, 64)).save(path)
    code, files, err = _estimate(capsys, tiny_ranker, path, "--max-pixels", 48 * 64)
    assert (code, files) == (0, [str(path)])
    code, files, err = _estimate(capsys, tiny_ranker, path, "--max-pixels", 48 * 64 - 1)
    assert (code, files) == (3, []) and "image too large" in err
    code, files, err = _estimate(capsys, tiny_ranker, path, "--max-pixels", "0")
    assert code == 2 and err.strip() == (
        "error: argument --max-pixels: '0' is not an integer >= 1 (see cqrnet-jax estimate --help)"
    )


def test_a_bug_while_scoring_keeps_its_traceback(capsys, tiny_ranker, tmp_path, monkeypatch):
    """A ValueError from inside the ranker is a bug, not a bad file: it escapes `main` (Python
    prints its traceback) instead of becoming an `error: FILE` line."""

    def broken(self, stack):
        raise ValueError("a shape bug inside the ranker")

    path = tmp_path / "a.png"
    Image.fromarray(photo(48, 64)).save(path)
    monkeypatch.setattr(quality.RankerScorer, "_run", broken)
    with pytest.raises(ValueError, match="a shape bug inside the ranker"):
        _estimate(capsys, tiny_ranker, path)
    assert "error:" not in capsys.readouterr().err


def test_a_png_of_a_jpeg_reports_the_quality_its_pixels_keep(tmp_path):
    """pixel_quality: a colour PNG of a decoded QF-30 JPEG reads 30 from its pixels (no header
    quality); the clean photo reads none; a JPEG reads its own quality from its decoder's Y."""
    import io

    import skimage.data

    clean = skimage.data.astronaut()[64:192, 128:256]
    buf = io.BytesIO()
    Image.fromarray(clean).save(buf, format="JPEG", quality=30)
    (tmp_path / "q30.jpg").write_bytes(buf.getvalue())
    Image.open(io.BytesIO(buf.getvalue())).save(tmp_path / "q30.png")
    Image.fromarray(clean).save(tmp_path / "clean.png")
    recs = {
        f: _estimate_one(_Recorder(), str(tmp_path / f), 10**8)
        for f in ("q30.png", "clean.png", "q30.jpg")
    }
    assert recs["q30.png"]["pixel_quality"] == 30 and recs["q30.png"]["header_quality"] is None
    assert recs["clean.png"]["pixel_quality"] is None
    assert recs["q30.jpg"]["pixel_quality"] == recs["q30.jpg"]["header_quality"] == 30
