"""How good is the quality ranker (SPEC §1), and what quality does a score mean.

- `load_ranker`: a scorer for Y uint8 images of any size (jit, batched by shape).
- `header_quality`: the IJG quality a JPEG was saved at, read from its luma quantization table.
- `fit_calibration` / `estimate_quality`: score -> QF, fitted on training images only and stored
  with the weights (`calibrate_and_store`).
- `evaluate_ranker` / `ranking_metrics`: Spearman rho(score, QF) and pairwise order accuracy on
  images the ranker never trained on. `python -m cqrnet_jax.ranker_eval` runs the evaluation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cqrnet_jax.data.jpeg import jpeg_degrade

LOW_QUALITIES = tuple(range(1, 31))  # the paper's training range, every QF
HIGH_QUALITIES = (31, *range(35, 96, 5))  # beyond the paper: 31, 35, 40, ..., 95
CALIBRATION_QUALITIES = LOW_QUALITIES + HIGH_QUALITIES[1:]  # 1..30, 35, 40, ..., 95
LEVELS = ((1, 10), (11, 20), (21, 30))  # the ranker's training levels (SPEC §1)

# ITU T.81 Annex K.1 luminance table, natural (row-major) order: what libjpeg scales by quality.
_STD_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.int64,
)  # fmt: skip
# Zigzag scan position k -> natural index (JPEG files store tables in zigzag order).
_ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34,
     27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44,
     51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63],
)  # fmt: skip


# --------------------------------------------------------------------------- scoring


class RankerScorer:
    """Scores Y uint8 images with a trained ranker: higher = better quality.

    Call with one (H, W) image (-> a NumPy float), an (N, H, W) array or a list of (H, W)
    images of any sizes (-> (N,) float64). Images of one size go through the network together, in
    batches of at most `batch_size` and `max_batch_pixels` pixels, padded to a power of two so
    only a few shapes are ever compiled.
    """

    def __init__(self, model, variables, meta: dict, batch_size=32, max_batch_pixels=1 << 22):
        import jax
        import jax.numpy as jnp

        self.model, self.meta = model, meta
        self.variables = jax.device_put(variables)  # once, not on every call
        self.batch_size, self.max_batch_pixels = int(batch_size), int(max_batch_pixels)
        self._apply = jax.jit(
            lambda v, x: model.apply(v, x.astype(jnp.float32) / 255.0, train=False)[0]
        )

    @property
    def calibration(self) -> dict | None:
        return self.meta.get("calibration")

    def _run(self, stack: np.ndarray) -> np.ndarray:
        n = len(stack)
        padded = 1 << (n - 1).bit_length()
        if padded > n:
            stack = np.concatenate([stack, np.repeat(stack[-1:], padded - n, axis=0)])
        return np.asarray(self._apply(self.variables, stack), np.float64)[:n]

    def __call__(self, images) -> np.ndarray:
        if isinstance(images, np.ndarray) and images.ndim == 2:
            return self([images])[0]
        images = [np.asarray(y) for y in images]
        for y in images:
            if y.ndim != 2 or y.dtype != np.uint8:
                raise ValueError(f"expected (H, W) uint8 Y images, got {y.dtype} {y.shape}")
        out = np.empty(len(images), np.float64)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, y in enumerate(images):
            by_shape.setdefault(y.shape, []).append(i)
        for (h, w), idx in by_shape.items():
            per = max(1, min(self.batch_size, self.max_batch_pixels // max(1, h * w)))
            per = 1 << (per.bit_length() - 1)  # a power of two: full chunks need no padding
            for start in range(0, len(idx), per):
                chunk = idx[start : start + per]
                out[chunk] = self._run(np.stack([images[i] for i in chunk]))
        return out


def load_ranker(prefix: str | os.PathLike | None = None, **kw) -> RankerScorer:
    """The ranker at `prefix` (default: the shipped estimator); FileNotFoundError if missing."""
    from cqrnet_jax import pretrained
    from cqrnet_jax.train.ranker_task import load_ranker_model

    module, variables, meta = load_ranker_model(prefix or pretrained.shipped(pretrained.ESTIMATOR))
    return RankerScorer(module, variables, meta, **kw)


# --------------------------------------------------------------------------- JPEG header


def ijg_luma_table(quality: int, force_baseline: bool = True) -> np.ndarray:
    """libjpeg's luminance table at `quality` (jpeg_quality_scaling + jpeg_add_quant_table)."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return np.clip((_STD_LUMA * scale + 50) // 100, 1, 255 if force_baseline else 32767)


def header_quality(quantization: dict | None) -> int | None:
    """IJG quality 1..100 whose scaled luma table equals the file's table 0, else None.

    `quantization` is PIL's `im.quantization` (natural order in Pillow >= 8.3; zigzag order in
    older Pillow is accepted too). All 100 IJG tables differ, so a match is unique. Tables built
    without libjpeg's baseline clamp (16-bit entries > 255) are recognised as well.
    """
    if not quantization or 0 not in quantization:
        return None
    table = np.asarray(list(quantization[0]), np.int64)
    if table.shape != (64,):
        return None
    natural_from_zigzag = np.empty(64, np.int64)
    natural_from_zigzag[_ZIGZAG] = table
    for candidate in (table, natural_from_zigzag):  # natural order first: Pillow >= 8.3
        for q in range(1, 101):
            if any(np.array_equal(candidate, ijg_luma_table(q, b)) for b in (True, False)):
                return q
    return None


# --------------------------------------------------------------------------- calibration


def _isotonic(values: Sequence[float]) -> np.ndarray:
    """Least-squares non-decreasing fit (pool adjacent violators, equal weights)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, c2), (m1, c1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    return np.concatenate([np.full(int(c), m) for m, c in blocks])


def fit_calibration(scores_by_quality: dict[int, Sequence[float]]) -> dict:
    """Per-QF median score, made non-decreasing in QF: {'qualities': [...], 'scores': [...]}."""
    qualities = sorted(int(q) for q in scores_by_quality)
    if len(qualities) < 2:
        raise ValueError("a calibration needs scores at two or more qualities")
    medians = [float(np.median(np.asarray(scores_by_quality[q], np.float64))) for q in qualities]
    monotone = _isotonic(medians)
    return {
        "qualities": qualities,
        "scores": [round(float(s), 6) for s in monotone],
        "statistic": "median score per QF, isotonic (non-decreasing) in QF",
    }


def estimate_quality(score, calibration: dict):
    """Piecewise-linear inverse of the calibration: score -> QF, clipped to its QF range.

    Calibration points with equal scores (flat runs of the monotone fit) are merged into one
    point at their mean QF, so the inverse is a function. Returns a float (or an array).
    """
    q = np.asarray(calibration["qualities"], np.float64)
    s = np.asarray(calibration["scores"], np.float64)
    uniq, inverse = np.unique(s, return_inverse=True)
    q_mean = np.bincount(inverse, weights=q) / np.bincount(inverse)
    out = np.interp(np.asarray(score, np.float64), uniq, q_mean)
    return float(out) if np.ndim(out) == 0 else out


def center_crop(y: np.ndarray, size: int | None) -> np.ndarray:
    if not size:
        return y
    h, w = y.shape
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return y[top : top + size, left : left + size]


def calibration_images(data_dir, num_images: int = 60, crop: int | None = 320):
    """`num_images` training images spread evenly over the sorted training list, centre-cropped."""
    from cqrnet_jax.data.datasets import list_train_images
    from cqrnet_jax.data.io import load_y

    files = list_train_images(data_dir)
    idx = np.unique(np.linspace(0, len(files) - 1, min(num_images, len(files))).round().astype(int))
    return [(files[i].name, center_crop(load_y(files[i]), crop)) for i in idx]


def calibrate_and_store(
    prefix, data_dir=None, num_images=60, crop=320, qualities=CALIBRATION_QUALITIES,
    scorer=None, progress=True,
) -> dict:  # fmt: skip
    """Fits the score -> QF calibration on training images; writes it into PREFIX.json.

    The .json is rewritten atomically (temp file + rename); its other keys are kept.
    """
    scorer = scorer or load_ranker(prefix)
    images = calibration_images(data_dir, num_images, crop)
    scores = score_matrix(scorer, images, qualities, progress=progress)
    calibration = fit_calibration({q: scores[:, j] for j, q in enumerate(qualities)})
    calibration.update(images=len(images), crop=crop, sets="BSDS500 train+val, Urban100_gray")
    path = Path(str(prefix) + ".json")
    meta = json.loads(path.read_text())
    meta["calibration"] = calibration
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, path)
    scorer.meta["calibration"] = calibration
    return calibration


# --------------------------------------------------------------------------- metrics


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]  # tied values share their mean rank


def spearman(x, y) -> float:
    """Spearman rho with average ranks for ties (as scipy.stats.spearmanr); nan if constant."""
    rx, ry = _average_ranks(np.ravel(x)), _average_ranks(np.ravel(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def pair_accuracy(scores: np.ndarray, labels: Sequence[float]) -> tuple[float, int]:
    """Share of within-image pairs with different labels whose scores are in the same order.

    `scores` is (images, qualities); equal scores count as wrong. Returns (accuracy, pairs).
    """
    labels = np.asarray(labels, np.float64)
    higher = labels[:, None] > labels[None, :]  # (i, j): i should score above j
    diff = scores[:, :, None] - scores[:, None, :]
    correct = diff[:, higher] > 0
    return float(correct.mean()), int(correct.size)


def level_of(quality: int, levels=LEVELS) -> int:
    for k, (lo, hi) in enumerate(levels, start=1):
        if lo <= quality <= hi:
            return k
    raise ValueError(f"quality {quality} is outside the levels {levels}")


def ranking_metrics(scores: np.ndarray, qualities: Sequence[int], levels=None) -> dict:
    """Spearman (pooled and per-image mean) and pairwise accuracies of an (images, QFs) matrix."""
    scores = np.asarray(scores, np.float64)
    q = np.asarray(qualities)
    per_image = [spearman(row, q) for row in scores]
    acc_all, n_all = pair_accuracy(scores, q)
    out = {
        "qualities": [int(v) for v in q],
        "images": int(scores.shape[0]),
        "spearman_pooled": spearman(scores, np.broadcast_to(q, scores.shape)),
        "spearman_mean_per_image": float(np.nanmean(per_image)),
        "pair_accuracy_all": acc_all,
        "pairs_all": n_all,
    }
    if levels:
        acc, n = pair_accuracy(scores, [level_of(int(v), levels) for v in q])
        out.update(levels=[list(lv) for lv in levels], pair_accuracy_levels=acc, pairs_levels=n)
    return out


def score_matrix(
    scorer: Callable, images, qualities, degrade=jpeg_degrade, progress=False
) -> np.ndarray:
    """(images, qualities) scores of each image JPEG-degraded at each quality."""
    from tqdm.auto import tqdm

    rows = []
    for _, y in tqdm(images, desc="scoring", unit="img", disable=not progress, leave=False):
        rows.append(np.asarray(scorer([degrade(y, int(q)) for q in qualities]), np.float64))
    return np.stack(rows) if rows else np.zeros((0, len(qualities)))


def evaluate_ranker(
    scorer: Callable, images, qualities, levels=None, degrade=jpeg_degrade, progress=False
) -> dict:
    """Scores every (image, QF) and returns `ranking_metrics` of it."""
    return ranking_metrics(
        score_matrix(scorer, images, qualities, degrade, progress), qualities, levels
    )


# --------------------------------------------------------------------------- command line


def _parse_args(argv):
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m cqrnet_jax.ranker_eval",
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
        "command": shlex.join(["python", "-m", "cqrnet_jax.ranker_eval", *argv]),
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
