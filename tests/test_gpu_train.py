"""experiments/gpu_train.sh --smoke: the GPU run's whole path (wheels check, two training phases
with the decay, exports split as for the device tool, evaluation, bench.json) on CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from cqrnet_jax import pretrained

REPO = Path(__file__).resolve().parents[1]


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
    assert len(list(out.iterdir())) <= 8  # the device tool brings back at most 8 files


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
