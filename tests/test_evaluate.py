"""The evaluator (cqrnet_jax.scoring) and the `cqrnet-jax evaluate` command
(cqrnet_jax.apps.evaluate).

The slow test needs the real test sets: run with CQRNET_DATA_DIR=../shared/data.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import shared_data_dir
from PIL import Image

from cqrnet_jax.apps import cli
from cqrnet_jax.data import datasets
from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.metrics import image_metrics
from cqrnet_jax.scoring import (
    compare_published,
    evaluate_sets,
    format_table,
    format_timing,
    get_restorer,
    identity,
    json_safe,
)

METRICS = ("psnr", "ssim", "psnr_b")


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random image with some edges: JPEG at QF 10-30 is clearly lossy on it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(xx / 5.0 + seed) * np.cos(yy / 7.0) + 30 * (xx > w // 3)
    return np.clip(base + rng.normal(0, 6, (h, w)), 16, 235).astype(np.uint8)


IMAGES = [("a", _photo(48, 64, 0)), ("b", _photo(40, 56, 1))]  # not multiples of 8 on purpose


def test_jpeg_model_scores_the_decoded_jpeg():
    name, restorer = get_restorer("jpeg")
    assert name == "jpeg" and restorer is identity
    out = evaluate_sets(restorer, name, [("synth", IMAGES)], [10, 30], progress=False)
    assert [(r["dataset"], r["quality"], r["n_images"]) for r in out["results"]] == [
        ("synth", 10, 2),
        ("synth", 30, 2),
    ]
    assert len(out["per_image"]) == 4
    for row in out["results"]:
        q = row["quality"]
        expected = [image_metrics(jpeg_degrade(y, q), y) for _, y in IMAGES]
        got = [r for r in out["per_image"] if r["quality"] == q]
        assert [r["image"] for r in got] == ["a", "b"]
        for g, e in zip(got, expected):
            assert {m: g[m] for m in METRICS} == e
        for m in METRICS:  # the table row is the mean of the per-image values
            assert row[m] == pytest.approx(np.mean([e[m] for e in expected]), rel=1e-12)
    assert out["results"][0]["psnr"] < out["results"][1]["psnr"] < 60  # lossy, QF 30 better


def test_perfect_restoration_gives_inf_psnr_written_as_null():
    clean = dict(IMAGES)
    flat = np.full((32, 32), 128, np.uint8)  # no edges: BEF 0, so PSNR-B is inf too
    clean["flat"] = flat

    def oracle(degraded):  # returns the undegraded image whose JPEG it was given
        return next(y for y in clean.values() if y.shape == degraded.shape)

    sets = [("synth", [*IMAGES, ("flat", flat)])]
    out = evaluate_sets(oracle, "oracle", sets, [10], progress=False)
    assert all(r["psnr"] == math.inf and r["ssim"] == pytest.approx(1.0) for r in out["per_image"])
    assert out["per_image"][2]["psnr_b"] == math.inf
    assert out["results"][0]["psnr"] == math.inf
    text = json.dumps(json_safe(out), allow_nan=False)  # strict JSON: inf -> null
    back = json.loads(text)
    assert back["results"][0]["psnr"] is None and back["per_image"][0]["ssim"] == pytest.approx(1)
    assert "inf" in format_table(out["results"])


def test_restorer_must_return_uint8_of_the_same_shape():
    with pytest.raises(ValueError, match="expected uint8 \\(48, 64\\)"):
        evaluate_sets(lambda y: y[:-1], "bad", [("s", IMAGES[:1])], [10], progress=False)
    with pytest.raises(ValueError, match="restorer returned float32"):
        evaluate_sets(
            lambda y: y.astype(np.float32), "bad", [("s", IMAGES[:1])], [10], progress=False
        )


class BatchOracle:
    """A restorer with `restore_batch` that records its calls and returns images shifted by one
    grey level, so that its scores differ from JPEG's."""

    def __init__(self):
        self.calls = []

    def __call__(self, y):
        raise AssertionError("evaluate_sets should use restore_batch")

    def restore_batch(self, images, progress=None):
        self.calls.append([y.shape for y in images])
        if progress is not None:
            progress.update(len(images))
        return [np.minimum(y, 254) + 1 for y in images]


def test_batch_restorers_get_a_whole_set_at_once():
    """A restorer with restore_batch gets all images of a set at a quality in one call, in order,
    and the scores are those of the per-image path."""
    oracle = BatchOracle()
    out = evaluate_sets(oracle, "b", [("synth", IMAGES)], [10, 30], progress=False)
    assert oracle.calls == [[(48, 64), (40, 56)]] * 2
    per_image = evaluate_sets(
        lambda y: oracle.restore_batch([y])[0], "b", [("synth", IMAGES)], [10, 30], progress=False
    )
    assert (out["results"], out["per_image"]) == (per_image["results"], per_image["per_image"])


def test_timing_splits_each_set_and_quality_into_its_phases():
    """Every (set, quality) gets the seconds of its JPEG, restoring and metrics phases; a
    restorer's own time lands in "restore_s", and the one-line summary adds them up."""

    def slow(y):
        time.sleep(0.15)
        return y

    out = evaluate_sets(slow, "slow", [("synth", IMAGES)], [10, 30], progress=False)
    timing = out["timing"]
    assert [(t["dataset"], t["quality"], t["n_images"]) for t in timing] == [
        ("synth", 10, 2),
        ("synth", 30, 2),
    ]
    for t in timing:
        assert t["restore_s"] >= 0.3 and t["jpeg_s"] >= 0 and t["metrics_s"] >= 0
    line = format_timing(timing)
    restore = sum(t["restore_s"] for t in timing)
    assert line.startswith("scored 4 restorations in ")
    assert f"restoring {restore:.0f} s ({restore / 4:.2f} s each)" in line


def test_batch_restorer_must_return_one_image_per_input():
    oracle = BatchOracle()
    oracle.restore_batch = lambda images, progress=None: images[:1]
    with pytest.raises(ValueError, match="returned 1 images for 2"):
        evaluate_sets(oracle, "bad", [("s", IMAGES)], [10], progress=False)


def test_get_restorer_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no de-blocking model found at"):
        get_restorer(str(tmp_path / "nothing"))


def test_table_and_published_comparison():
    row = {"model": "jpeg", "dataset": "Classic5", "quality": 10, "n_images": 5}
    ok = compare_published([{**row, "psnr": 27.8211, "ssim": 0.75952, "psnr_b": 25.2090}])[0]
    off = compare_published([{**row, "psnr": 27.8211, "ssim": 0.75952, "psnr_b": 25.2049}])[0]
    assert ok["matches_to_0.01"] and not off["matches_to_0.01"]
    assert ok["published"] == {"psnr": 27.82, "ssim": 0.760, "psnr_b": 25.21}
    other = compare_published([{**row, "model": "mine", "psnr": 1.0, "ssim": 0, "psnr_b": 0}])
    assert "matches_to_0.01" not in other[0]
    table = format_table([ok])
    assert "| Classic5 | 10 |" in table and "27.82 | 0.760 |  25.21 |" in table


# --- the command --------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A data directory whose Classic5 folder holds the two synthetic images (grey BMP)."""
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    root = tmp_path / "data"
    (root / "Classic5").mkdir(parents=True)
    for name, y in IMAGES:
        Image.fromarray(y).save(root / "Classic5" / f"{name}.bmp")
    return root


def test_cli_writes_json_report(data_dir, tmp_path, capsys):
    out = tmp_path / "res" / "eval.json"
    argv = ["evaluate", "--model", "jpeg", "--data-dir", str(data_dir), "--datasets", "classic5"]
    argv += ["--qualities", "10,30", "--json", str(out), "--per-image", "--no-progress"]
    before = sorted((p.name, p.read_bytes()) for p in (data_dir / "Classic5").iterdir())
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "| jpeg  | Classic5 | 10 |      2 |" in captured.out and "| a " in captured.out
    report = json.loads(out.read_text())
    assert {"command", "versions", "results", "per_image", "timing"} <= report.keys()
    assert [(t["quality"], t["n_images"]) for t in report["timing"]] == [(10, 2), (30, 2)]
    assert "scored 4 restorations in " in captured.err
    # the program name depends on how Python was started (console script or `python -m`)
    assert report["command"].endswith(" ".join(argv))
    assert report["command"].split(" evaluate ")[0] in ("cqrnet-jax", "python -m cqrnet_jax")
    assert {"jax", "pillow"} <= report["versions"].keys()
    assert len(report["results"]) == 2 and len(report["per_image"]) == 4
    # The published JPEG rows are attached by set name; this made-up "Classic5" cannot match them.
    assert len(report["published"]["results"]) == 9
    assert [r["matches_to_0.01"] for r in report["results"]] == [False, False]
    expected = image_metrics(jpeg_degrade(IMAGES[0][1], 10), IMAGES[0][1])
    assert report["per_image"][0]["psnr"] == pytest.approx(expected["psnr"], abs=1e-9)
    assert sorted((p.name, p.read_bytes()) for p in (data_dir / "Classic5").iterdir()) == before


def test_cli_canvas_and_whole_image_reports(data_dir, tiny_model_prefix, tmp_path, capsys):
    """`evaluate` runs a model on canvases by default (step 48, said in the report; batches of 1
    on a CPU) and on whole images with --canvas 0. (Agreement of the scores: test_inference.py;
    on these 48 x 64 images the padded band is a third of the pixels.)"""
    reports = []
    for extra in ([], ["--canvas", "0"]):
        out = tmp_path / f"eval{len(reports)}.json"
        argv = ["evaluate", "--model", tiny_model_prefix, "--data-dir", str(data_dir)]
        argv += ["--datasets", "Classic5"]
        argv += ["--qualities", "10", "--json", str(out), "--no-progress", *extra]
        assert cli.main(argv) == 0
        reports.append(json.loads(out.read_text()))
    capsys.readouterr()
    assert reports[0]["inference"]["canvas"] == 48 and reports[0]["inference"]["tile"] == 0
    assert reports[1]["inference"]["canvas"] == 0
    if reports[0]["versions"]["backend"] == "cpu":
        assert reports[0]["inference"]["max_batch"] == 1
    assert [r["results"][0]["n_images"] for r in reports] == [2, 2]


def test_cli_scores_qualities_above_the_models_limit_as_the_jpeg(
    data_dir, tiny_model_prefix, tmp_path, capsys
):
    """The tiny model (trained on QF 10-30) at QF 20 and 40: QF 40 is scored as the decoded JPEG
    (as deblock leaves such files), marked left_alone, with one stderr line; --force scores the
    model there."""
    argv = ["evaluate", "--model", tiny_model_prefix, "--data-dir", str(data_dir)]
    argv += ["--datasets", "Classic5", "--qualities", "20,40", "--no-progress"]
    reports = []
    for extra in ([], ["--force"]):
        out = tmp_path / f"eval{len(reports)}.json"
        assert cli.main([*argv, "--json", str(out), *extra]) == 0
        reports.append((json.loads(out.read_text()), capsys.readouterr()))
    (default, seen), (forced, _) = reports
    line = "QF 40: above 30, the highest this model is known to improve: scored as the JPEG"
    assert line in seen.err
    images = datasets.load_eval_set("Classic5", data_dir)
    jpeg = {name: image_metrics(jpeg_degrade(y, 40), y)["psnr"] for name, y in images}
    q40 = [r for r in default["per_image"] if r["quality"] == 40]
    assert all(r["left_alone"] for r in q40)
    assert [r["psnr"] for r in q40] == pytest.approx([jpeg[r["image"]] for r in q40], abs=1e-9)
    assert "left_alone" not in default["results"][0]  # QF 20: the model
    assert not any("left_alone" in r for r in forced["results"])
    forced40 = [r["psnr"] for r in forced["per_image"] if r["quality"] == 40]
    assert forced40 != pytest.approx([r["psnr"] for r in q40], abs=1e-6)  # the model's own
    assert "(left alone: JPEG)" in seen.out


@pytest.mark.slow
def test_cli_splits_the_cpu_into_devices_and_scores_the_same(data_dir, tiny_model_prefix, tmp_path):
    """In a fresh process on a CPU of 2+ cores, `evaluate` runs on one device per core (up to
    4; --parallel 1: one) and scores exactly what one device does."""
    import subprocess
    import sys

    from cqrnet_jax.devices import MAX_HOST_DEVICES, host_cores

    if jax.default_backend() != "cpu" or host_cores() < 2:
        pytest.skip("needs a CPU of 2 or more cores")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    reports = []
    for parallel in ([], ["--parallel", "1"]):
        out = tmp_path / f"eval{len(reports)}.json"
        argv = [sys.executable, "-m", "cqrnet_jax", "evaluate", "--model", tiny_model_prefix]
        argv += ["--data-dir", str(data_dir), "--datasets", "Classic5", "--qualities", "10"]
        argv += ["--json", str(out), "--no-progress", *parallel]
        subprocess.run(argv, check=True, env=env, capture_output=True)
        reports.append(json.loads(out.read_text()))
    assert reports[0]["inference"]["devices"] == min(host_cores(), MAX_HOST_DEVICES)
    assert reports[1]["inference"]["devices"] == 1
    assert reports[0]["per_image"] == reports[1]["per_image"]


def test_cli_without_data_dir_uses_builtin_photos(monkeypatch, capsys):
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(datasets, "builtin_photos", lambda: IMAGES)  # fast stand-in
    assert cli.main(["evaluate", "--model", "jpeg", "--qualities", "20", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "| jpeg  | builtin | 20 |      2 |" in captured.out
    notice, timing = captured.err.strip().splitlines()
    assert "built-in photos" in notice and timing.startswith("scored 2 restorations in ")


def _report(argv: list[str], out: Path) -> dict:
    assert cli.main([*argv, "--json", str(out), "--no-progress"]) == 0
    return json.loads(out.read_text())


def test_cli_scores_the_shipped_model_by_default(
    data_dir, tiny_model_prefix, tmp_path, capsys, monkeypatch
):
    """Without --model, `evaluate` scores the shipped de-blocker (here the tiny model stands in
    for it), not the JPEG: the same scores as naming the model, under the name "default"."""
    from cqrnet_jax import pretrained

    argv = ["evaluate", "--data-dir", str(data_dir), "--datasets", "Classic5", "--qualities", "10"]
    named = _report([*argv, "--model", tiny_model_prefix], tmp_path / "named.json")
    jpeg = _report([*argv, "--model", "jpeg"], tmp_path / "jpeg.json")
    monkeypatch.setattr(pretrained, "shipped", lambda name: Path(tiny_model_prefix))
    default = _report(argv, tmp_path / "default.json")
    capsys.readouterr()
    assert [r["model"] for r in default["results"]] == ["default"]
    assert default["inference"] == named["inference"] and default["inference"]["canvas"] == 48
    for m in METRICS:
        assert default["results"][0][m] == named["results"][0][m] != jpeg["results"][0][m]


def test_cli_ensemble_scores_the_self_ensemble(data_dir, tiny_model_prefix, tmp_path, capsys):
    """--ensemble reports the model as NAME+ensemble with "ensemble": 8, and its scores are those
    of `SelfEnsemble` around the same canvas restorer."""
    from cqrnet_jax.ensemble import SelfEnsemble

    argv = ["evaluate", "--model", tiny_model_prefix, "--data-dir", str(data_dir)]
    argv += ["--datasets", "Classic5", "--qualities", "10", "--ensemble"]
    report = _report(argv, tmp_path / "ens.json")
    capsys.readouterr()
    assert report["inference"] == {
        "canvas": 48,
        "max_batch": 1,
        "tile": 0,
        "exact_group": 8,
        "devices": len(jax.devices()),
        "ensemble": 8,
    }
    assert [r["model"] for r in report["results"]] == [f"{tiny_model_prefix}+ensemble"]
    _, restorer = get_restorer(tiny_model_prefix, canvas=48, max_batch=1)
    sets = [("Classic5", IMAGES)]
    kept = dict(progress=False, consistency=True)  # the CLI's default
    expected = evaluate_sets(SelfEnsemble(restorer), "e", sets, [10], **kept)
    plain = evaluate_sets(restorer, "p", sets, [10], **kept)
    for m in METRICS:
        assert report["results"][0][m] == pytest.approx(expected["results"][0][m], abs=1e-9)
        assert report["results"][0][m] != plain["results"][0][m]


@pytest.mark.parametrize(
    "args, status",
    [
        (["evaluate", "--qualities", "0"], 2),
        (["evaluate", "--qualities", "101"], 2),
        (["evaluate", "--qualities", "abc"], 2),
        (["evaluate", "--qualities", ","], 2),
        (["evaluate", "--datasets", "Set14"], 2),
        (["evaluate", "--data-dir", "/nonexistent/cqrnet"], 3),
        (["evaluate", "--datasets", "LIVE1"], 3),  # a data dir with no LIVE1 folder
        (["evaluate", "--model", "default"], 3),
        (["evaluate", "--json", "{data}/Classic5/out.json"], 2),  # never write into the data
        (["evaluate", "--bogus"], 2),
        (["evaluate", "--canvas", "48", "--tile", "64"], 2),
        (["evaluate", "--batch", "0"], 2),
        (["evaluate", "--canvas", "-1"], 2),
        (["evaluate", "--model", "jpeg", "--ensemble"], 2),
        ([], 2),
    ],
)
def test_cli_bad_arguments_exit_with_one_error_line(args, status, data_dir, capsys):
    """A bad flag exits 2, a missing or unreadable data folder 3 (cqrnet_jax/errors.py)."""
    args = [a.replace("{data}", str(data_dir)) for a in args]
    if args and "--data-dir" not in args:
        args += ["--data-dir", str(data_dir)]
    assert cli.main(args) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (data_dir / "Classic5" / "out.json").exists()


def test_cli_no_data_dir_and_a_named_set_is_an_error(monkeypatch, capsys):
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    assert cli.main(["evaluate", "--datasets", "Classic5"]) == 2
    assert capsys.readouterr().err.startswith("error: no data directory")


@pytest.mark.slow
def test_cli_reproduces_published_jpeg_row_classic5(tmp_path, capsys):
    shared_data_dir("Classic5")
    out = tmp_path / "c5.json"
    argv = ["evaluate", "--model", "jpeg", "--datasets", "Classic5", "--qualities", "10"]
    assert cli.main([*argv, "--json", str(out), "--no-progress"]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert (round(row["psnr"], 2), round(row["ssim"], 3), round(row["psnr_b"], 2)) == (
        27.82,
        0.760,
        25.21,
    )
    assert row["n_images"] == 5 and row["matches_to_0.01"] is True


def test_consistency_projects_each_output_and_never_scores_worse():
    """With `consistency`, outputs are projected onto what their JPEG allows: never farther from
    the original than the restorer's own output (up to rounding), and the rows say so."""
    rng = np.random.default_rng(3)

    def noisy(y):  # a poor restorer: the JPEG plus noise
        return np.clip(y + rng.normal(0, 6, y.shape), 0, 255).round().astype(np.uint8)

    raw = evaluate_sets(noisy, "n", [("synth", IMAGES)], [10, 50, 90], progress=False)
    rng = np.random.default_rng(3)
    kept = evaluate_sets(
        noisy, "n", [("synth", IMAGES)], [10, 50, 90], progress=False, consistency=True
    )
    for a, b in zip(raw["results"], kept["results"]):
        assert b["consistency"] and "consistency" not in a
        assert b["psnr"] >= a["psnr"] - 0.01, (a, b)
    assert kept["results"][-1]["psnr"] > raw["results"][-1]["psnr"] + 1  # QF 90: much closer
