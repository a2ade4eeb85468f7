"""The GPU run behind experiments/gpu_train.sh: train the `paper,gpu` de-blocker for a wall budget
(--budget-s: warm-up or re-warm, a flat rate, then a cosine decay to 0 in its last part), export
as it goes in files of at most --part-mib MiB, evaluate the Table 2 protocol, and write
bench.json. Run it through gpu_train.sh.

Each run continues from the shipped paper-scale model when there is one (cqrnet_jax/pretrained/
deblock_paper), warming up again from its step; docs/training.md "On a GPU" says why.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from cqrnet_jax import pretrained  # noqa: E402
from cqrnet_jax.config_base import load_config_file  # noqa: E402
from cqrnet_jax.data import datasets  # noqa: E402
from cqrnet_jax.inference import load_restorer  # noqa: E402
from cqrnet_jax.scoring import evaluate_sets, json_safe  # noqa: E402
from cqrnet_jax.train import loop  # noqa: E402
from cqrnet_jax.train.deblock_task import DeblockTask  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PEAK_BF16 = {"H200": 790e12, "H100": 790e12}  # dense bf16 tensor-core peak, FLOP/s


def get_config(presets: str):
    return load_config_file(REPO / "configs" / "deblock.py", presets)


def elapsed() -> float:
    return time.perf_counter() - T_START


def build_config(args):
    config = get_config("paper,gpu,smoke" if args.smoke else "paper,gpu")
    config.num_steps = 10**9
    config.export_dir = str(args.out)
    config.export_split_mb = args.part_mib
    config.export_every = 20 if args.smoke else 500
    config.log_every = 1 if args.smoke else 100  # smoke: each step logged (its rate, unaveraged)
    if args.smoke:
        config.batch_size = 4 * jax.device_count()
        config.checkpoint_every = 1000
        config.optim.warmup_steps = 5
        config.data.source = "shared" if os.environ.get(datasets.DATA_DIR_ENV) else "builtin"
    start = pretrained.shipped("deblock_paper")
    if not args.smoke and Path(f"{start}.json").is_file():
        _, meta = pretrained.load_variables(start)
        config.init_from = str(start)
        config.optim.warmup_begin = int(meta["step"])  # re-warm after the last run's decay
        print(f"continuing from {start} (step {meta['step']})", flush=True)
    return config


def plan_decay(optim_cfg, end_a: int, steps_left: int, min_decay_steps: int) -> tuple[int, int]:
    """Phase B's (decay_begin, decay_steps) for a phase A that ended at step `end_a` with time for
    about `steps_left` more steps. The cosine starts at end_a, or at the warm-up's end when phase A
    stopped inside the warm-up (a slow compile on a busy machine): the schedule never decays
    before its warm-up is over, so phase B first finishes the warm-up, then decays to 0 by its
    last step."""
    warmup_end = optim_cfg.warmup_begin + optim_cfg.warmup_steps
    decay_begin = max(end_a, warmup_end)
    return decay_begin, max(min_decay_steps, steps_left - (decay_begin - end_a))


def train(config, args) -> tuple[dict, dict]:
    """Phase A (warm-up + flat rate) until its share of the budget, then phase B (cosine to 0 over
    as many steps as the rest of the budget holds at phase A's speed). Returns both timings."""
    workdir = str(args.workdir)
    train_budget = args.budget_s - args.eval_reserve_s - elapsed()
    if train_budget <= 0:
        sys.exit(f"error: no time left to train ({elapsed():.0f} s spent before training)")
    config.train_seconds = train_budget * (1 - args.decay_fraction)
    loop.train_and_evaluate(config, workdir, DeblockTask(config))
    timing_a = json.loads(Path(workdir, "timing.json").read_text())
    rest = args.budget_s - args.eval_reserve_s - elapsed()
    rate = timing_a.get("steps_per_s") or timing_a["steps"] / timing_a["seconds"]
    end_a = timing_a["end_step"]
    decay_begin, decay_steps = plan_decay(
        config.optim,
        end_a,
        int(rate * max(0.0, rest - timing_a["compile_s"])),
        args.min_decay_steps,
    )
    config.optim.decay_begin = decay_begin
    config.optim.decay_steps = decay_steps
    config.num_steps = decay_begin + decay_steps
    # the decay ends by its step count; this is only a safety net against a much slower phase B
    # (it compiles again first); the allocation's own time limit is the hard one
    config.train_seconds = 2 * max(rest, 1.0) + timing_a["compile_s"] + 30
    if args.smoke:  # a CPU shared with other jobs can run phase B far slower than phase A: the
        config.train_seconds = 0.0  # smoke run always finishes its (few) decay steps
    print(f"decay: steps {decay_begin}-{config.num_steps} to rate 0", flush=True)
    loop.train_and_evaluate(config, workdir, DeblockTask(config))
    timing_b = json.loads(Path(workdir, "timing.json").read_text())
    return timing_a, timing_b


def evaluation_sets(smoke: bool):
    """Classic5, LIVE1 and BSDS500 test; for --smoke, 192 x 192 crops of Classic5 (with a data
    directory) or of the built-in photos."""
    have_data = bool(os.environ.get(datasets.DATA_DIR_ENV))
    if not smoke:
        return [(name, datasets.load_eval_set(name)) for name in datasets.EVAL_SETS]
    name, images = (
        ("Classic5", datasets.load_eval_set("Classic5"))
        if have_data
        else ("builtin", datasets.builtin_photos())
    )
    return [(name, [(n, np.ascontiguousarray(y[:192, :192])) for n, y in images])]


def evaluate(args) -> dict:
    """Table 2 protocol on the exported model, float32 compute, canvases of one compile each."""
    prefix = Path(args.out) / "deblock"
    _, meta = pretrained.load_variables(prefix)
    restorer, _ = load_restorer(str(prefix), canvas=args.canvas, max_batch=args.eval_batch)
    t = time.perf_counter()
    with jax.default_matmul_precision("highest"):
        report = evaluate_sets(restorer, "deblock_paper", evaluation_sets(args.smoke), (10, 20, 30))
    report.update(
        step=meta["step"],
        seconds=time.perf_counter() - t,
        canvas=args.canvas,
        hardware=jax.devices()[0].device_kind,
        command="bash experiments/gpu_train.sh OUTDIR (evaluation of OUTDIR/deblock)",
    )
    (Path(args.out) / "eval.json").write_text(json.dumps(json_safe(report), indent=1) + "\n")
    for row in report["results"]:
        print(
            f"{row['dataset']} q{row['quality']}: PSNR {row['psnr']:.2f} SSIM {row['ssim']:.3f} "
            f"PSNR-B {row['psnr_b']:.2f}",
            flush=True,
        )
    return report


def step_flops(config) -> float:
    """XLA's FLOP count of one train step, from the step lowered with the groups unrolled (its
    cost analysis counts a scan's body once, not once per group); lowered only, not compiled."""
    config = config.copy_and_resolve_references()
    config.model.scan_groups = False
    task = DeblockTask(config)
    state = loop.create_state(task, config, loop.make_mesh())
    b, p = config.batch_size, config.data.patch_size
    batch = {
        "degraded": jax.ShapeDtypeStruct((b, 1, p, p), jnp.uint8),
        "clean": jax.ShapeDtypeStruct((b, p, p), jnp.uint8),
        "quality": jax.ShapeDtypeStruct((b, 1), jnp.int32),
        "label": jax.ShapeDtypeStruct((b, 1), jnp.int32),
    }
    step = jax.jit(functools.partial(loop.train_step, loss_fn=task.loss_fn, seed=config.seed))
    cost = step.lower(state, batch, task.frozen).cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"])


def bench(config, timing_a: dict, timing_b: dict) -> dict:
    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in PEAK_BF16.items() if k in kind), None)
    rate = timing_a.get("steps_per_s")
    pixels = config.batch_size * config.data.patch_size**2
    flops = step_flops(config)
    achieved = flops * rate if flops and rate else None
    return json_safe(
        dict(
            device=kind,
            jax=jax.__version__,
            host=platform.node(),
            batch_size=config.batch_size,
            patch_size=config.data.patch_size,
            dtype=config.model.dtype,
            steps_per_s=rate,
            patches_per_s=rate * config.batch_size if rate else None,
            pixels_per_s=rate * pixels if rate else None,
            compile_s=[timing_a["compile_s"], timing_b["compile_s"]],
            flops_per_step=flops,
            achieved_flops_per_s=achieved,
            peak_flops_per_s=peak,
            fraction_of_peak=achieved / peak if achieved and peak else None,
            input_wait_fraction=[t["input_wait_s"] / t["seconds"] for t in (timing_a, timing_b)],
            peak_bytes_in_use=timing_b.get("peak_bytes_in_use"),
            steps=[timing_a["steps"], timing_b["steps"]],
            end_step=timing_b["end_step"],
            train_seconds=[timing_a["seconds"], timing_b["seconds"]],
            eval_seconds=None,
            total_seconds=elapsed(),
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU, same path")
    parser.add_argument(
        "--budget-s", type=float, default=540.0, help="wall seconds, evaluation included"
    )
    parser.add_argument(
        "--part-mib", type=float, default=15.0, help="params in files of at most this (0: one)"
    )
    parser.add_argument("--eval-reserve-s", type=float, default=150.0)
    parser.add_argument("--decay-fraction", type=float, default=0.2)
    parser.add_argument("--min-decay-steps", type=int, default=1)
    # a rerun on the same machine resumes this workdir (e.g. after a failed evaluation)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir(), "cqrnet_gpu_run")
    )
    parser.add_argument("--canvas", type=int, default=96)
    parser.add_argument("--eval-batch", type=int, default=16)
    args = parser.parse_args()
    if args.smoke:
        args.budget_s = min(args.budget_s, 100.0)
        args.eval_reserve_s = min(args.eval_reserve_s, 35.0)
        args.eval_batch = 4
        args.min_decay_steps = 10
    devices = jax.devices()
    kind, backend = devices[0].device_kind, devices[0].platform
    print(f"{len(devices)} x {kind} ({backend}), jax {jax.__version__}", flush=True)
    if backend != "gpu" and not args.smoke:
        sys.exit("error: no GPU found (use --smoke to run this path on a CPU)")
    args.out.mkdir(parents=True, exist_ok=True)
    config = build_config(args)
    timing_a, timing_b = train(config, args)
    # bench.json before the evaluation, so a run cut short during it still brings it back
    record = bench(config, timing_a, timing_b)
    (args.out / "bench.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record), flush=True)
    report = evaluate(args)
    record.update(eval_seconds=report["seconds"], total_seconds=elapsed())
    (args.out / "bench.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
