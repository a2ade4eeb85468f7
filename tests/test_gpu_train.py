"""experiments/gpu_train.sh, the script for short GPU allocations: --prepare packs a folder
anywhere (or says in one line why not), and --smoke runs the GPU run's whole path (wheels check,
two training phases with the decay, exports split into parts, evaluation, bench.json) on CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cqrnet_jax import pretrained

REPO = Path(__file__).resolve().parents[1]


SCRIPT = REPO / "experiments" / "gpu_train.sh"
DATA_FOLDERS = ("Classic5", "LIVE1_color", "BSDS500/test", "BSDS500/train", "BSDS500/val")


def _fake_data(root: Path) -> Path:
    """A data directory with two small images in each folder gpu_pack.py reads."""
    rng = np.random.default_rng(0)
    for folder in (*DATA_FOLDERS, "Urban100_gray"):
        (root / folder).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"im{i}.png")
    return root


def _prepare(args: list[str], cwd: Path, env_data: str | None = None):
    env = {k: v for k, v in os.environ.items() if k != "CQRNET_DATA_DIR"}
    env["PYTHON"] = os.environ.get("PYTHON", "python")
    if env_data:
        env["CQRNET_DATA_DIR"] = env_data
    return subprocess.run(
        ["bash", str(SCRIPT), "--prepare", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_prepare_packs_a_folder_outside_the_repository(tmp_path):
    """A relative PACK is the caller's, outside the repository: every test image and, under a
    generous --limit-mib, every training image lands there, listed in the manifest."""
    data = _fake_data(tmp_path / "data")
    wheels = tmp_path / "pack" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / "ml_collections-1.1.0-py3-none-any.whl").write_bytes(b"")  # no download
    proc = _prepare(["pack", "--data-dir", str(data), "--limit-mib", "4096"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    assert sorted(t["set"] for t in manifest["tests"]) == sorted(
        ["Classic5", "LIVE1", "BSDS500"] * 2
    )
    assert manifest["training_images"] == {"BSDS500/train": 2, "BSDS500/val": 2, "Urban100_gray": 2}
    for entry in manifest["tests"] + manifest["train"]:
        assert (tmp_path / "pack" / "data" / entry["file"]).is_file()
    # Classic5 and LIVE1 travel as their Y: grey PNGs
    assert Image.open(tmp_path / "pack" / "data" / "LIVE1_color" / "im0.png").mode == "L"


@pytest.mark.parametrize(
    "case, message",
    [
        ("inside_not_ignored", "inside the repository but not ignored by git"),
        ("no_data_dir", "no data directory: pass --data-dir DIR or set CQRNET_DATA_DIR"),
        ("missing_set", "does not exist"),
        ("limit_too_small", "no room for training images under --limit-mib 1"),
    ],
)
def test_prepare_fails_with_one_error_line(tmp_path, case, message):
    data = _fake_data(tmp_path / "data")
    pack = tmp_path / "pack"
    (pack / "wheels").mkdir(parents=True)
    (pack / "wheels" / "ml_collections-1.1.0-py3-none-any.whl").write_bytes(b"")
    args = [str(pack), "--data-dir", str(data)]
    if case == "inside_not_ignored":
        pack = REPO / "experiments" / f"pack_{os.getpid()}"
        args = [str(pack), "--data-dir", str(data)]
    elif case == "no_data_dir":
        args = [str(pack)]
    elif case == "missing_set":
        (data / "Classic5" / "im0.png").unlink()
        (data / "Classic5" / "im1.png").unlink()
        (data / "Classic5").rmdir()
    elif case == "limit_too_small":
        args += ["--limit-mib", "1"]
    proc = _prepare(args, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
    if case == "inside_not_ignored":
        assert not pack.exists()  # refused before anything is written


@pytest.mark.slow
def test_gpu_script_smoke_run_trains_decays_exports_and_evaluates(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "CQRNET_DATA_DIR"}  # built-in photos
    env["PYTHON"] = os.environ.get("PYTHON", "python")
    proc = subprocess.run(
        ["bash", "experiments/gpu_train.sh", "--smoke", str(out), str(tmp_path / "no_pack")],
        cwd=REPO,
        env={**env, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (out / "train.log").read_text()
    assert "compiled the train step" in log and "decay: steps" in log
    bench = json.loads((out / "bench.json").read_text())
    variables, meta = pretrained.load_variables(out / "deblock")
    assert meta["step"] == bench["end_step"] == sum(bench["steps"]) and bench["steps"][1] >= 1
    assert meta["model"]["dtype"] == "bfloat16" and meta["model"]["scan_groups"] is True
    assert bench["flops_per_step"] > 0 and len(bench["compile_s"]) == 2
    report = json.loads((out / "eval.json").read_text())
    assert report["step"] == meta["step"]
    assert {(r["dataset"], r["quality"]) for r in report["results"]} == {
        ("builtin", q) for q in (10, 20, 30)
    }
    assert all(r["psnr"] > 20 for r in report["results"])
    # the learning rate decayed to ~0 at the last step
    rates = [
        json.loads(line)["learning_rate"]
        for line in (tmp_path / "cqrnet_gpu_run" / "logs" / "metrics.jsonl").open()
    ]
    assert rates[-1] < 0.2 * max(rates)
    # a handful of files to bring back: params (parts), eval.json, bench.json, train.log
    assert len(list(out.iterdir())) <= 8


@pytest.mark.parametrize(
    "end_a, steps_left, expect",
    [
        (800, 300, (800, 300)),  # phase A passed the warm-up: the cosine starts where it stopped
        (1, 0, (5, 10)),  # stopped inside the warm-up, no time left: finish it, then the minimum
        (2, 20, (5, 17)),  # inside the warm-up: its 3 remaining steps come out of phase B's share
    ],
)
def test_phase_b_decays_to_zero_even_when_phase_a_stopped_inside_the_warm_up(
    deblock_config, end_a, steps_left, expect
):
    """A busy CPU once ended the smoke run's phase A at step 1 of a 5-step warm-up; phase B then
    decayed from the warm-up's end, not from step 1, and stopped at half the peak rate."""
    import importlib.util

    from cqrnet_jax.train.state import learning_rate_schedule

    spec = importlib.util.spec_from_file_location(
        "gpu_train", REPO / "experiments" / "gpu_train.py"
    )
    gpu_train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_train)
    optim = deblock_config("paper,gpu,smoke").optim
    optim.warmup_steps = 5
    begin, steps = gpu_train.plan_decay(optim, end_a, steps_left, min_decay_steps=10)
    assert (begin, steps) == expect
    optim.decay_begin, optim.decay_steps = begin, steps
    rate = learning_rate_schedule(optim)
    assert float(rate(begin + steps)) < 1e-3 * optim.learning_rate
    assert float(rate(max(begin - 1, 0))) > 0.5 * optim.learning_rate
