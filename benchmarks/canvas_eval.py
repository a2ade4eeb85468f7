"""Canvas vs whole-image evaluation of the shipped de-blocker: agreement of the scores, wall time.

Runs `evaluate_sets` (the Table 2 protocol) twice per (set, QF): whole images (one compile per
image size) and canvases (each image padded bottom/right to sides that are multiples of --canvas,
one compile per canvas, cropped back), once per padding mode. Reports per (set, QF) the mean
PSNR / SSIM / PSNR-B of both, their differences, the largest per-image PSNR difference, the
largest pixel difference (overall and farther than 16 px from the bottom/right edges, where the
padding is), the wall time and the number of compiled programs.

  CQRNET_DATA_DIR=DATA python benchmarks/canvas_eval.py --sets Classic5:10,20,30 LIVE1:10 \\
      --pad-modes reflect,symmetric,edge,constant --cache /tmp/canvas_cache \\
      --out experiments/results/canvas_pad_modes.json
  CQRNET_DATA_DIR=DATA python benchmarks/canvas_eval.py --pad-modes symmetric \\
      --sets Classic5:10,20,30 LIVE1:10,20,30 BSDS500:10 --cache /tmp/canvas_cache \\
      --batch-timing 1,4,8 --out experiments/results/canvas_eval.json

--cache keeps each (set, QF, mode) run's outputs, scores and time, so the second command reuses
what the first measured. --batch-timing times batches of 8 images on one canvas, each size in its
own process (peak RSS). Results and timings: the JSON files named by --out.

A summary of both records: experiments/results/canvas_eval_summary.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shlex
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from cqrnet_jax.data.datasets import load_eval_set
from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.inference import Restorer, load_restorer
from cqrnet_jax.scoring import METRICS, evaluate_sets

EDGE = 16  # pixels from the bottom/right edges: "interior" differences are measured beyond this


class Capture:
    """Wraps a Restorer for `evaluate_sets` and keeps what it returned."""

    def __init__(self, restorer: Restorer, outputs=None):
        self.restorer, self.outputs = restorer, [] if outputs is None else outputs
        self.quality_input = restorer.quality_input

    def for_quality(self, quality):  # a quality-conditioned model is told each QF
        return Capture(self.restorer.for_quality(quality), self.outputs)

    def restore_batch(self, images, progress=None):
        out = self.restorer.restore_batch(images, progress)
        self.outputs.extend(out)
        return out

    def __call__(self, y):
        return self.restore_batch([y])[0]


def run(restorer: Restorer, set_name: str, images, quality: int, cache: Path | None, key: str):
    """(per-image rows, outputs, seconds, compiles) of one evaluation, from the cache if there."""
    path = cache / f"{set_name}_q{quality}_{key}.pkl" if cache else None
    if path is not None and path.is_file():
        return {**pickle.loads(path.read_bytes()), "cached": True}
    capture, traces = Capture(restorer), restorer.traces
    start = time.perf_counter()
    scores = evaluate_sets(capture, key, [(set_name, images)], [quality], progress=False)
    entry = {
        "per_image": scores["per_image"],
        "outputs": capture.outputs,
        "seconds": time.perf_counter() - start,
        "compiles": restorer.traces - traces,
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(entry))
    return {**entry, "cached": False}


def compare(whole: dict, canvas: dict) -> dict:
    """Score and pixel differences canvas - whole of one (set, QF)."""
    mean = {m: float(np.mean([r[m] for r in canvas["per_image"]])) for m in METRICS}
    ref = {m: float(np.mean([r[m] for r in whole["per_image"]])) for m in METRICS}
    dpsnr = [c["psnr"] - w["psnr"] for c, w in zip(canvas["per_image"], whole["per_image"])]
    diffs = [np.abs(c.astype(int) - w) for c, w in zip(canvas["outputs"], whole["outputs"])]
    return {
        "mean": mean,
        "mean_minus_whole": {m: mean[m] - ref[m] for m in METRICS},
        "max_abs_image_psnr_diff": float(np.max(np.abs(dpsnr))),
        "max_abs_pixel_diff": int(max(d.max() for d in diffs)),
        f"max_abs_pixel_diff_beyond_{EDGE}px": int(max(d[:-EDGE, :-EDGE].max() for d in diffs)),
        "seconds": round(canvas["seconds"], 1),
        "compiles": canvas["compiles"],
        "cached": canvas["cached"],
    }


def time_batch(model: str, batch: int, n: int = 8) -> dict:
    """Seconds (after the compile, fastest of three) and peak RSS of restoring n QF-10 JPEGs of
    BSDS500 test's 321 x 481 images on their 336 x 528 canvas, `batch` images per call."""
    images = [jpeg_degrade(y, 10) for _, y in load_eval_set("BSDS500") if y.shape == (321, 481)]
    restorer, _ = load_restorer(model, canvas=48, max_batch=batch)
    restorer = restorer.for_quality(10)  # a conditioned model is told the QF; others ignore it
    restorer.restore_batch(images[:batch])
    seconds = []
    for _ in range(3):  # the fastest of three: the cores are shared
        start = time.perf_counter()
        restorer.restore_batch(images[:n])
        seconds.append(time.perf_counter() - start)
    seconds = min(seconds)
    return {"batch": batch, "images": n, "seconds": round(seconds, 1), "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> int:
    """This process's peak resident memory: VmHWM, which (unlike ru_maxrss) does not count the
    parent's memory that a forked child held before its exec."""
    status = dict(ln.split(":", 1) for ln in Path("/proc/self/status").read_text().splitlines())
    return round(int(status["VmHWM"].split()[0]) / 1024)  # kB -> MB


def batch_timings(model: str, batches: list[int]) -> list[dict]:
    """`time_batch` of each batch size, each in a fresh process (peak RSS is per process)."""
    out = []
    for b in batches:
        child = subprocess.run(
            [sys.executable, __file__, "--model", model, "--time-batch", str(b)],
            check=True,
            capture_output=True,
            text=True,
        )
        out.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(out[-1]), flush=True)
    return out


def parse_sets(specs: list[str]) -> list[tuple[str, list[int]]]:
    """["Classic5:10,20,30", ...] -> [("Classic5", [10, 20, 30]), ...]."""
    out = []
    for spec in specs:
        name, _, qualities = spec.partition(":")
        out.append((name, [int(q) for q in qualities.split(",")]))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="as `evaluate --model`")
    parser.add_argument("--sets", nargs="+", default=["Classic5:10,20,30", "LIVE1:10,20,30"])
    parser.add_argument("--pad-modes", default="symmetric", help="numpy.pad modes, comma-separated")
    parser.add_argument("--canvas", type=int, default=48)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--cache", type=Path, help="folder keeping each run (not committed)")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/canvas_eval.json"))
    parser.add_argument("--batch-timing", help="also time these batch sizes, e.g. 1,4,8")
    parser.add_argument("--time-batch", type=int, help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args()
    if args.time_batch:
        print(json.dumps(time_batch(args.model, args.time_batch)))
        return
    modes = args.pad_modes.split(",")

    whole, meta = load_restorer(args.model)
    step = meta.get("step")
    canvases = {
        m: Restorer(
            whole.model, whole.variables, canvas=args.canvas, max_batch=args.batch, pad_mode=m
        )
        for m in modes
    }
    rows, shapes = [], set()
    for set_name, qualities in parse_sets(args.sets):
        images = load_eval_set(set_name)
        shapes |= {y.shape for _, y in images}
        for q in qualities:
            ref = run(whole, set_name, images, q, args.cache, f"step{step}_whole")
            row = {
                "dataset": set_name,
                "quality": q,
                "n_images": len(images),
                "whole": {
                    "mean": {m: float(np.mean([r[m] for r in ref["per_image"]])) for m in METRICS},
                    "seconds": round(ref["seconds"], 1),
                    "compiles": ref["compiles"],
                    "cached": ref["cached"],
                },
            }
            for mode, restorer in canvases.items():
                key = f"canvas{restorer.canvas}_{mode}"
                entry = run(restorer, set_name, images, q, args.cache, f"step{step}_{key}")
                row[key] = compare(ref, entry)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for mode, restorer in canvases.items():
        key = f"canvas{restorer.canvas}_{mode}"
        summary[key] = {
            "max_abs_mean_psnr_diff": max(abs(r[key]["mean_minus_whole"]["psnr"]) for r in rows),
            "max_abs_mean_ssim_diff": max(abs(r[key]["mean_minus_whole"]["ssim"]) for r in rows),
            "max_abs_mean_psnr_b_diff": max(
                abs(r[key]["mean_minus_whole"]["psnr_b"]) for r in rows
            ),
            "max_abs_image_psnr_diff": max(r[key]["max_abs_image_psnr_diff"] for r in rows),
            "seconds": round(sum(r[key]["seconds"] for r in rows), 1),
            "programs": len({restorer.canvas_shape(*shape) for shape in shapes}),
        }
        summary[key]["mean_psnr_within_0.01dB"] = summary[key]["max_abs_mean_psnr_diff"] < 0.01
    summary["whole"] = {
        "seconds": round(sum(r["whole"]["seconds"] for r in rows), 1),
        "programs": len(shapes),
    }
    report = {
        "command": shlex.join(["python", "benchmarks/canvas_eval.py", *sys.argv[1:]]),
        "model": {"spec": args.model, "step": step},
        "note": (
            f"CPU ({os.cpu_count()} cores) shared with a training run: times are indicative. "
            "Times include compiles; whole and canvas runs alternate, so both see the same load. "
            "'cached' rows were measured by an earlier run with the same --cache; 'compiles' "
            "counts new programs in the process that measured the row, 'programs' in the summary "
            "those one process needs for all rows (distinct image sizes, or canvases)."
        ),
        "versions": {"jax": jax.__version__, "backend": jax.default_backend()},
        "summary": summary,
        "results": rows,
    }
    if args.batch_timing:
        batches = [int(b) for b in args.batch_timing.split(",")]
        report["batch_timing"] = batch_timings(args.model, batches)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
