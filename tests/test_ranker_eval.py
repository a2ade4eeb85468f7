"""`cqrnet-jax ranker-eval` on a tiny data folder with a tiny ranker: it writes only where told
(no report without --json, a calibration only to --calibrate's file, never into the ranker's
own files), `estimate --calibration` reads that file back, its JSON has null where a metric is
undefined (never NaN), and a bad argument is one line, exit status 2, as in every command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import photo
from PIL import Image

from cqrnet_jax import quality
from cqrnet_jax.apps.cli import main
from cqrnet_jax.data.io import load_luma


@pytest.fixture
def data_dir(tmp_path):
    """Classic5 (the test set) and the three training folders, two small photos each."""
    root = tmp_path / "data"
    for i, folder in enumerate(("Classic5", "BSDS500/train", "BSDS500/val", "Urban100_gray")):
        (root / folder).mkdir(parents=True)
        for j in range(2):
            y = photo(48, 48, colour=False, seed=2 * i + j)
            Image.fromarray(y).save(root / folder / f"im{j}.png")
    return root


def _files(folder) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(capsys, tiny_ranker, data_dir, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    argv = ["ranker-eval", "--ranker", str(tiny_ranker), "--data-dir", str(data_dir)]
    code = main([*argv, "--sets", "Classic5", "--no-progress", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _strict_json(path):
    """The file's JSON, refusing the NaN / Infinity that Python's json would accept."""

    def refuse(name):
        raise ValueError(f"{path}: {name} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_without_json_it_writes_nothing(capsys, tiny_ranker, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    code, out, err = _run(capsys, tiny_ranker, data_dir)
    assert code == 0, err
    assert out.splitlines()[0].split() == [
        *("set", "QF", "imgs", "rho", "rho/img", "acc", "lvl", "acc", "all", "QF", "MAE")
    ]
    assert [line.split()[:3] for line in out.splitlines()[1:]] == [
        ["Classic5", "1-30", "2"],
        ["Classic5", "31-95", "2"],
    ]
    assert "target" not in (out + err).lower()
    assert _files(tmp_path) == before


def test_calibrate_writes_its_file_only_and_estimate_reads_it(
    capsys, tiny_ranker, data_dir, tmp_path
):
    """The fitted calibration goes to the file named, not into the ranker's PREFIX.json; the
    report records it; `estimate --calibration` maps scores with it, not the ranker's own."""
    ranker_files = _files(tiny_ranker.parent)
    cal_file, report_file = tmp_path / "out" / "cal.json", tmp_path / "out" / "report.json"
    code, _, err = _run(
        capsys, tiny_ranker, data_dir, "--calibrate", cal_file, "--json", report_file
    )
    assert code == 0, err
    assert _files(tiny_ranker.parent) == ranker_files
    cal = _strict_json(cal_file)
    assert cal["qualities"] == list(quality.CALIBRATION_QUALITIES) and cal["images"] == 6
    assert cal["ranker"] == str(tiny_ranker) and np.all(np.diff(cal["scores"]) >= 0)
    report = _strict_json(report_file)
    assert report["calibration"]["scores"] == cal["scores"] and "target" not in report
    assert report["results"]["Classic5"]["qf_1_30"]["images"] == 2

    image = tmp_path / "a.png"
    Image.fromarray(photo(48, 48, colour=False)).save(image)
    records = []
    for extra in ([], ["--calibration", str(cal_file)]):
        capsys.readouterr()
        assert main(["estimate", str(image), "--json", "--ranker", str(tiny_ranker), *extra]) == 0
        records.append(json.loads(capsys.readouterr().out))
    score = quality.load_ranker(tiny_ranker)(load_luma(image).pixels)  # not rounded
    own = {"qualities": [1, 50, 95], "scores": [-1e3, 0.0, 1e3]}  # conftest's tiny_ranker
    expected = [round(quality.estimate_quality(score, c), 1) for c in (own, cal)]
    assert [r["estimated_quality"] for r in records] == expected
    assert expected[0] != expected[1]


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_undefined_metrics_are_null_in_json_and_a_dash_in_the_table(
    capsys, tiny_ranker, data_dir, tmp_path, monkeypatch
):
    """A ranker that scores every image alike has no Spearman rho: NaN in NumPy, null in JSON."""
    monkeypatch.setattr(quality.RankerScorer, "_run", lambda self, stack: np.zeros(len(stack)))
    report_file = tmp_path / "report.json"
    code, out, err = _run(capsys, tiny_ranker, data_dir, "--json", report_file)
    assert code == 0, err
    metrics = _strict_json(report_file)["results"]["Classic5"]["qf_1_30"]
    assert metrics["spearman_pooled"] is None and metrics["spearman_mean_per_image"] is None
    assert "nan" not in out.lower() and out.splitlines()[1].split()[3] == "-"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--limit", "-1"], "argument --limit: '-1' is not an integer >= 0"),
        (["--calibrate", "a.json", "--calibration", "b.json"], "not allowed with argument"),
        (["--sets", ","], "--sets: give at least one test set"),
        (["--sets", "Set14"], "unknown evaluation set 'Set14'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_a_bad_argument_is_one_line_exit_status_2(capsys, tiny_ranker, data_dir, args, message):
    code, out, err = _run(capsys, tiny_ranker, data_dir, *args)
    assert code == 2 and out == "", err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_a_bad_calibration_file_is_one_line_exit_status_3(capsys, tiny_ranker, tmp_path):
    bad = tmp_path / "cal.json"
    bad.write_text(json.dumps({"qualities": [10, 5], "scores": [0.0, math.pi]}))
    image = tmp_path / "a.png"
    Image.fromarray(photo(48, 48, colour=False)).save(image)
    capsys.readouterr()
    code = main(["estimate", str(image), "--ranker", str(tiny_ranker), "--calibration", str(bad)])
    err = capsys.readouterr().err
    assert code == 3 and err == (
        f"error: calibration {bad}: needs two or more increasing qualities, a score each\n"
    )


def test_an_unwritable_report_is_one_line_exit_status_3(capsys, tiny_ranker, data_dir, tmp_path):
    """A --json path under a file cannot be written: one line naming it, exit status 3."""
    (tmp_path / "a_file").write_text("mine")
    out = tmp_path / "a_file" / "report.json"
    code, _, err = _run(capsys, tiny_ranker, data_dir, "--json", out)
    assert code == 3 and err.startswith(f"error: cannot write {out}: ") and err.count("\n") == 1
    assert (tmp_path / "a_file").read_text() == "mine"
