"""`cqrnet-jax ranker-eval`: how well the quality ranker orders JPEG qualities on test images.

Spearman rho(score, QF) and pairwise order accuracy on BSDS500 test and LIVE1 (`--sets`), for
QF 1-30 (every QF) and 31-95 (31, 35, 40, ..., 95), and the calibrated estimate's QF error. It
writes only where it is told: the report with `--json OUT`, a calibration fitted on training
images with `--calibrate OUT` (which `estimate --calibration OUT` and `--calibration` here load),
never into the ranker's own files. The library behind it is `cqrnet_jax.quality`.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

from cqrnet_jax.apps.common import (
    UsageError,
    add_ranker_argument,
    environment,
    int_in_range,
    write_json,
)

DEFAULT_SETS = "BSDS500,LIVE1"


def add_ranker_eval_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ranker-eval",
        help="how well a ranker orders JPEG qualities (test sets)",
        description="Scores every test image (Y) JPEG-compressed at QF 1-30 and 31, 35, ..., 95 "
        "and prints Spearman rho(score, QF), pairwise order accuracy and, with a calibration, "
        "the estimated QF's mean error, per set and QF range. Writes files only where told "
        "(--json, --calibrate).",
    )
    add_ranker_argument(p)
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default: $CQRNET_DATA_DIR)")
    p.add_argument(
        "--sets", default=DEFAULT_SETS, help=f"comma-separated test sets (default: {DEFAULT_SETS})"
    )
    p.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT")
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--calibrate",
        metavar="OUT",
        help="first fit score -> QF on training images, write it to OUT (JSON) and use it",
    )
    how.add_argument(
        "--calibration",
        metavar="FILE",
        help="use this calibration (written by --calibrate) instead of the ranker's own",
    )
    p.add_argument(
        "--calibration-images",
        type=int_in_range(2),
        default=60,
        metavar="N",
        help="training images the calibration is fitted on (default: 60)",
    )
    p.add_argument(
        "--calibration-crop",
        type=int_in_range(0),
        default=320,
        metavar="PX",
        help="their centre crop's side, 0 for whole images (default: 320)",
    )
    p.add_argument(
        "--limit", type=int_in_range(0), default=0, metavar="N", help="first N images per set"
    )
    p.add_argument(
        "--batch-size",
        type=int_in_range(1),
        default=32,
        metavar="N",
        help="images per ranker call (default: 32)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return p


def _set_metrics(scores, calibration: dict | None) -> dict:
    """Metrics of one set's (images, LOW + HIGH) score matrix, per QF range."""
    import numpy as np

    from cqrnet_jax.metrics import ranking_metrics
    from cqrnet_jax.quality import HIGH_QUALITIES, LEVELS, LOW_QUALITIES, estimate_quality

    out = {}
    for key, qs, levels, cols in (
        ("qf_1_30", LOW_QUALITIES, LEVELS, slice(0, len(LOW_QUALITIES))),
        ("qf_31_95", HIGH_QUALITIES, None, slice(len(LOW_QUALITIES), None)),
    ):
        m = ranking_metrics(scores[:, cols], qs, levels)
        if calibration:
            est = estimate_quality(scores[:, cols], calibration)
            m["estimated_quality_mae"] = float(np.mean(np.abs(est - np.asarray(qs))))
        out[key] = m
    return out


def _number(value, spec: str, width: int) -> str:
    """`value` formatted, or a dash where there is none (no calibration, no level pairs, NaN)."""
    if value is None or not math.isfinite(value):
        return f"{'-':>{width}}"
    return f"{value:>{width}{spec}}"


def format_table(results: dict) -> str:
    rows = [f"{'set':<9}{'QF':<7}{'imgs':>5}{'rho':>8}{'rho/img':>9}{'acc lvl':>9}{'acc all':>9}"]
    rows[0] += f"{'QF MAE':>8}"
    for name, per in results.items():
        for key, m in per.items():
            rows.append(
                f"{name:<9}{key[3:].replace('_', '-'):<7}{m['images']:>5}"
                + _number(m["spearman_pooled"], ".4f", 8)
                + _number(m["spearman_mean_per_image"], ".4f", 9)
                + _number(m.get("pair_accuracy_levels"), ".4f", 9)
                + _number(m["pair_accuracy_all"], ".4f", 9)
                + _number(m.get("estimated_quality_mae"), ".2f", 8)
            )
    return "\n".join(rows)


def _calibration(args, scorer, prefix, data_dir) -> dict | None:
    """The calibration to use: fitted and written (--calibrate), read (--calibration), or the
    ranker's own (None if it has none)."""
    from cqrnet_jax.quality import calibrate, load_calibration

    if args.calibration:
        return load_calibration(args.calibration)
    if not args.calibrate:
        return scorer.calibration
    out = Path(args.calibrate).expanduser()
    if out.is_dir():
        raise UsageError(f"--calibrate: {out} is a folder; give a file name such as cal.json")
    cal = calibrate(
        scorer, data_dir, args.calibration_images, args.calibration_crop or None,
        progress=not args.no_progress,
    )  # fmt: skip
    write_json(out, {**cal, "ranker": str(prefix)})
    print(f"wrote {out} (calibration: {len(cal['qualities'])} qualities)", file=sys.stderr)
    return cal


def run_ranker_eval(args) -> int:
    from cqrnet_jax import pretrained
    from cqrnet_jax.data.datasets import load_eval_set, resolve_data_dir
    from cqrnet_jax.quality import HIGH_QUALITIES, LOW_QUALITIES, load_ranker, score_matrix

    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    if not names:
        raise UsageError("--sets: give at least one test set, e.g. BSDS500,LIVE1")
    out = Path(args.json).expanduser() if args.json else None
    if out is not None and out.is_dir():
        raise UsageError(f"--json: {out} is a folder")
    data_dir = resolve_data_dir(args.data_dir)
    prefix = pretrained.resolve_model_prefix(args.ranker, "ranker")
    scorer = load_ranker(prefix, batch_size=args.batch_size)
    start = time.time()
    calibration = _calibration(args, scorer, prefix, data_dir)
    results = {}
    for name in names:
        images = load_eval_set(name, data_dir)[: args.limit or None]
        scores = score_matrix(
            scorer, images, LOW_QUALITIES + HIGH_QUALITIES, progress=not args.no_progress
        )
        results[name] = _set_metrics(scores, calibration)
    print(format_table(results))
    if out is not None:
        report = {
            "command": shlex.join(["cqrnet-jax", *getattr(args, "argv", [])]),
            "ranker": {"prefix": str(prefix), "step": scorer.meta.get("step")},
            "model": scorer.meta.get("model"),
            "calibration": calibration,
            "protocol": "Y (BT.601 studio) of each test image, grey baseline JPEG at each QF "
            "(PIL), full image scored. Pair accuracies over within-image pairs; equal scores "
            "count as wrong. 'levels' pairs: QFs from different training levels [1,10], "
            "[11,20], [21,30]. QF 31-95 = 31, 35, 40, ..., 95.",
            "results": results,
            "limit_per_set": args.limit or None,
            "seconds": round(time.time() - start, 1),
            "versions": environment(),
        }
        write_json(out, report)
        print(f"wrote {out}", file=sys.stderr)
    return 0
