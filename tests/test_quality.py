"""The ranker as a quality estimator (cqrnet_jax.quality) and `estimate`: header quality,
calibration, ranking metrics, the CLI's output."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest
from helpers import photo
from PIL import Image

from cqrnet_jax import pretrained
from cqrnet_jax.apps.estimate import add_estimate_parser, run_estimate
from cqrnet_jax.data.jpeg import header_quality
from cqrnet_jax.metrics import pair_accuracy, spearman
from cqrnet_jax.quality import (
    LEVELS,
    LOW_QUALITIES,
    estimate_quality,
    evaluate_ranker,
    fit_calibration,
    load_ranker,
)


def _jpeg_tables(array, **save_kw):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", **save_kw)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return im.quantization


@pytest.mark.parametrize("colour", [False, True])
def test_header_quality_recovers_every_ijg_quality(colour):
    # All 100 IJG luma tables differ, so every quality is recoverable.
    img = photo(colour=colour)
    for q in range(1, 101):
        assert header_quality(_jpeg_tables(img, quality=q)) == q


def test_header_quality_none_for_non_ijg_or_non_jpeg():
    custom = [[(i % 7) + 3 for i in range(64)]]  # not a scaled Annex K table
    assert header_quality(_jpeg_tables(photo(colour=False), qtables=custom)) is None
    assert header_quality(None) is None
    assert header_quality({}) is None


def test_header_quality_accepts_zigzag_order():
    from cqrnet_jax.data.jpeg import _ZIGZAG, ijg_luma_table

    assert header_quality({0: list(ijg_luma_table(37)[_ZIGZAG])}) == 37


def test_calibration_is_monotone_and_inverts_on_its_points():
    rng = np.random.default_rng(0)
    qs = [1, 5, 10, 20, 30, 50, 80, 95]
    by_q = {q: list(0.1 * q + rng.normal(0, 0.01, 9)) for q in qs}
    by_q[20] = [9.0] * 9  # a violation (above QF 30's scores): the fit must smooth it out
    cal = fit_calibration(by_q)
    assert cal["qualities"] == qs
    assert np.all(np.diff(cal["scores"]) >= 0)
    clean = fit_calibration({q: [float(q) ** 0.5] for q in qs})
    for q, s in zip(clean["qualities"], clean["scores"]):
        assert estimate_quality(s, clean) == pytest.approx(q, abs=1e-3)
    assert estimate_quality(-100.0, clean) == 1 and estimate_quality(100.0, clean) == 95
    flat = {"qualities": [10, 20, 30], "scores": [0.0, 1.0, 1.0]}
    assert estimate_quality(1.0, flat) == pytest.approx(25.0)  # a tie maps to its mean QF


def _fake_degrade(y, q):
    return np.full_like(y, q)  # encodes the QF in the pixels so a scorer can read it back


def test_evaluate_perfect_and_reversed_scorers():
    images = [(f"i{k}", np.zeros((8, 8), np.uint8)) for k in range(3)]

    def perfect(batch):
        return np.array([float(b.mean()) for b in batch])

    def reverse(batch):
        return -perfect(batch)

    good = evaluate_ranker(perfect, images, LOW_QUALITIES, LEVELS, degrade=_fake_degrade)
    assert good["spearman_pooled"] == pytest.approx(1.0)
    assert good["spearman_mean_per_image"] == pytest.approx(1.0)
    assert good["pair_accuracy_levels"] == 1.0 and good["pair_accuracy_all"] == 1.0
    assert good["pairs_levels"] == 3 * 300 and good["pairs_all"] == 3 * 435
    bad = evaluate_ranker(reverse, images, (40, 60, 90), degrade=_fake_degrade)
    assert bad["spearman_pooled"] == pytest.approx(-1.0)
    assert bad["pair_accuracy_all"] == 0.0 and "pair_accuracy_levels" not in bad


def test_spearman_pools_matrices_and_is_nan_for_a_constant():
    """(images, QFs) matrices are pooled, not correlated column by column: rows that each rise
    with QF but sit at different levels give a pooled rho below 1 (ties get average ranks)."""
    q = np.broadcast_to([10, 20, 30], (2, 3))
    # ranks 1..6 against (1.5, 3.5, 5.5) twice: covariance 8, variances 17.5 and 16
    assert spearman(np.array([[1.0, 2, 3], [4, 5, 6]]), q) == pytest.approx(8 / 280**0.5)
    assert spearman([1.0, 2.0, 2.0, 4.0], [1, 2, 3, 4]) == pytest.approx(4.5 / 22.5**0.5)
    assert np.isnan(spearman([3.0, 3.0, 3.0], [1, 2, 3]))


def test_pair_accuracy_counts_ties_as_wrong():
    acc, n = pair_accuracy(np.array([[1.0, 1.0, 2.0]]), [1, 2, 3])
    assert n == 3 and acc == pytest.approx(2 / 3)


def test_scorer_batches_match_single_images(tiny_ranker):
    scorer = load_ranker(tiny_ranker)
    a, b = photo(colour=False), photo(40, 24, colour=False, seed=3)
    together = scorer([a, b, a])
    assert together.shape == (3,)
    assert together[0] == pytest.approx(float(scorer(a)), abs=1e-5)
    assert together[1] == pytest.approx(float(scorer(b)), abs=1e-5)


def _run_cli(argv):
    parser = argparse.ArgumentParser()
    add_estimate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_estimate_json_lines_and_errors(tiny_ranker, tmp_path, capsys):
    jpg = tmp_path / "good.jpg"
    Image.fromarray(photo()).save(jpg, quality=37)
    png = tmp_path / "good.png"
    Image.fromarray(photo(colour=False)).save(png)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    missing = tmp_path / "missing.jpg"
    argv = ["estimate", str(jpg), str(text), str(png), str(missing), "--json"]
    code = _run_cli([*argv, "--ranker", str(tiny_ranker)])
    out, err = capsys.readouterr()
    assert code == 3
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in recs] == [str(jpg), str(png)]
    for r in recs:
        assert set(r) == {"file", "score", "estimated_quality", "header_quality", "pixel_quality"}
        assert isinstance(r["score"], float) and isinstance(r["estimated_quality"], float)
    assert recs[0]["header_quality"] == 37 and recs[1]["header_quality"] is None
    errors = err.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {text}: ") and errors[1].startswith(f"error: {missing}: ")


def test_estimate_text_mode_and_folders(tiny_ranker, tmp_path, capsys):
    Image.fromarray(photo(colour=False)).save(tmp_path / "a.jpg", quality=90)
    assert (
        run_estimate(argparse.Namespace(files=[str(tmp_path)], json=False, ranker=tiny_ranker)) == 0
    )
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(tmp_path / "a.jpg") + "  score=")
    assert "estimated_quality=" in line  # the photo is too small for its pixels to be read:
    assert line.endswith("header_quality=90 pixel_quality=none")


def test_estimate_missing_ranker_is_one_line_exit_3(tmp_path, capsys):
    from cqrnet_jax.apps.cli import main

    missing = tmp_path / "nothing"
    assert main(["estimate", "x.jpg", "--json", "--ranker", str(missing)]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"error: no usable ranker weights at {missing} (")
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("name", [pretrained.GUIDE, pretrained.ESTIMATOR])
def test_shipped_rankers_order_a_real_photos_versions(name):
    """Both shipped rankers load with a calibration and order a real photo's JPEG versions; the
    estimator's (the default of `estimate`) QF estimates follow the true QF."""
    from skimage import data

    from cqrnet_jax.data.jpeg import jpeg_degrade

    y = data.camera()[128:384, 128:384]
    qualities = [5, 10, 20, 30, 50]
    scorer = load_ranker(pretrained.shipped(name))
    scores = scorer([jpeg_degrade(y, q) for q in qualities])
    assert np.all(np.diff(scores) > 0), scores
    estimates = np.array([estimate_quality(s, scorer.calibration) for s in scores])
    assert np.all(np.diff(estimates) > 0) and 1 <= estimates.min() and estimates.max() <= 95
    if name == pretrained.ESTIMATOR:  # measured 4.9, 9.1, 15.8, 21.0 for 5, 10, 20, 30
        assert np.abs(estimates[:2] - qualities[:2]).max() <= 2, estimates
