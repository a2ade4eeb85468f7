"""`cqrnet-jax ranker-eval`: how well the quality ranker orders JPEG qualities on test images.

Spearman rho(score, QF) and pairwise order accuracy on BSDS500 test and LIVE1, for QF 1-30 (every
QF) and 31-95 (31, 35, 40, ..., 95); with --calibrate, first fits score -> QF on training images
and stores it in PREFIX.json. The library behind it is `cqrnet_jax.quality`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cqrnet_jax.metrics import ranking_metrics
from cqrnet_jax.quality import (
    HIGH_QUALITIES,
    LEVELS,
    LOW_QUALITIES,
    calibrate_and_store,
    estimate_quality,
    load_ranker,
    score_matrix,
)


def _parse_args(argv):
    import argparse

    p = argparse.ArgumentParser(
        prog="cqrnet-jax ranker-eval",
        description="Evaluates the quality ranker on test images (BSDS500 test, LIVE1): Spearman "
        "rho(score, QF) and pairwise order accuracy for QF 1-30 (every QF) and 31-95 (31, 35, "
        "40, ..., 95). --calibrate first fits score -> QF on training images and stores it in "
        "PREFIX.json.",
    )
    p.add_argument(
        "--ranker", metavar="PREFIX", help="weights prefix (default: the shipped estimator)"
    )
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default $CQRNET_DATA_DIR)")
    p.add_argument(
        "--json", metavar="OUT", default="experiments/results/ranker_blind_estimator.json"
    )
    p.add_argument("--calibrate", action="store_true", help="fit + store the calibration first")
    p.add_argument("--calibration-images", type=int, default=60, metavar="N")
    p.add_argument("--calibration-crop", type=int, default=320, metavar="PX")
    p.add_argument("--sets", default="BSDS500,LIVE1", help="comma-separated evaluation sets")
    p.add_argument("--limit", type=int, default=0, metavar="N", help="first N images per set")
    p.add_argument("--batch-size", type=int, default=32)
    return p.parse_args(argv)


def _set_metrics(scores: np.ndarray, calibration: dict | None) -> dict:
    """Metrics of one set's (images, LOW + HIGH) score matrix, per QF range."""
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


def _print_table(results: dict) -> None:
    head = f"{'set':<9}{'QF':<7}{'imgs':>5}{'rho':>8}{'rho/img':>9}{'acc lvl':>9}{'acc all':>9}"
    print(head + f"{'QF MAE':>8}")
    for name, per in results.items():
        for key, m in per.items():
            lvl = m.get("pair_accuracy_levels")
            print(
                f"{name:<9}{key[3:].replace('_', '-'):<7}{m['images']:>5}"
                f"{m['spearman_pooled']:>8.4f}{m['spearman_mean_per_image']:>9.4f}"
                f"{'' if lvl is None else f'{lvl:.4f}':>9}{m['pair_accuracy_all']:>9.4f}"
                f"{m.get('estimated_quality_mae', float('nan')):>8.2f}"
            )


def _target(results: dict) -> dict | None:
    """The issue's bar: BSDS500 test, QF 1-30: pooled rho >= 0.95 and >= 98% level pairs right."""
    bsds = results.get("BSDS500", {}).get("qf_1_30")
    if not bsds:
        return None
    rho_ok = bsds["spearman_pooled"] >= 0.95
    acc_ok = bsds["pair_accuracy_levels"] >= 0.98
    return {
        "set": "BSDS500 test, QF 1-30",
        "spearman_pooled >= 0.95": rho_ok,
        "pair_accuracy_levels >= 0.98": acc_ok,
        "met": rho_ok and acc_ok,
    }


def _report(argv, prefix, meta: dict, results: dict, limit: int, seconds: float) -> dict:
    import shlex

    import jax

    return {
        "command": shlex.join(["cqrnet-jax", "ranker-eval", *argv]),
        "ranker": {
            "prefix": str(prefix),
            "step": meta.get("step"),
            "model": meta.get("model"),
            "calibration": meta.get("calibration"),
        },
        "protocol": "Y (BT.601 studio) of each test image, grey baseline JPEG at each QF (PIL), "
        "full image scored. Pair accuracies over within-image pairs; equal scores count as wrong. "
        "'levels' pairs: QFs from different training levels [1,10], [11,20], [21,30]. "
        "QF 31-95 = 31, 35, 40, ..., 95.",
        "results": results,
        "target": _target(results),
        "limit_per_set": limit or None,
        "seconds": round(seconds, 1),
        "backend": jax.default_backend(),
    }


def main(argv=None) -> int:
    import sys
    import time

    from cqrnet_jax import pretrained
    from cqrnet_jax.data.datasets import load_eval_set

    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse_args(argv)
    prefix = args.ranker or pretrained.shipped(pretrained.ESTIMATOR)
    try:
        scorer = load_ranker(prefix, batch_size=args.batch_size)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: cannot load the ranker: {err}", file=sys.stderr)
        return 2
    start = time.time()
    if args.calibrate:
        cal = calibrate_and_store(
            prefix, args.data_dir, args.calibration_images, args.calibration_crop, scorer=scorer
        )
        print("calibration (QF: median score):", dict(zip(cal["qualities"], cal["scores"])))
    results = {}
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        images = load_eval_set(name, args.data_dir)[: args.limit or None]
        scores = score_matrix(scorer, images, LOW_QUALITIES + HIGH_QUALITIES, progress=True)
        results[name] = _set_metrics(scores, scorer.calibration)
    _print_table(results)
    report = _report(argv, prefix, scorer.meta, results, args.limit, time.time() - start)
    if report["target"] is not None:
        print(
            f"target (BSDS500, QF 1-30: rho >= 0.95, acc >= 98%): met = {report['target']['met']}"
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
