"""The quality ranker as a blind JPEG-quality estimator (paper §3.1): scores, and what they mean.

- `load_ranker`: a scorer for Y uint8 images of any size (jit, batched by shape).
- `fit_calibration` / `estimate_quality`: score -> QF, fitted on training images only
  (`calibrate`); kept with the weights (PREFIX.json) or in a file of its own (`load_calibration`).
- `evaluate_ranker`: `metrics.ranking_metrics` (Spearman rho(score, QF), pairwise order accuracy)
  of every test image at every QF. `cqrnet-jax ranker-eval` runs the evaluation.

The IJG quality written in a JPEG file's own tables is `data.jpeg.header_quality`.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.optimize import isotonic_regression

from cqrnet_jax.data.color import rgb_to_ycbcr, round_to_uint8
from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.metrics import ranking_metrics

LOW_QUALITIES = tuple(range(1, 31))  # the paper's training range, every QF
HIGH_QUALITIES = (31, *range(35, 96, 5))  # beyond the paper: 31, 35, 40, ..., 95
CALIBRATION_QUALITIES = LOW_QUALITIES + HIGH_QUALITIES[1:]  # 1..30, 35, 40, ..., 95
LEVELS = ((1, 10), (11, 20), (21, 30))  # the ranker's training levels (paper §4.1)

# Larger images are scored on a centred 2048 x 2048 crop: the ranker's memory and time grow with
# the pixels scored, so the crop bounds both whatever the image's size.
MAX_SCORED_SIDE = 2048


def scored_region(y: np.ndarray, side: int = MAX_SCORED_SIDE) -> np.ndarray:
    """`y`, or its centred `side` x `side` crop when larger, with offsets that are multiples of
    16 so the crop keeps the JPEG block grid (8 x 8 luma, 16 x 16 with 4:2:0 chroma)."""
    h, w = y.shape
    top = (max(0, h - side) // 2) // 16 * 16
    left = (max(0, w - side) // 2) // 16 * 16
    return y[top : top + side, left : left + side]


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
    """The ranker at `prefix`: 'default' or None (the shipped estimator), a training workdir or a
    params prefix; FileNotFoundError if missing."""
    from cqrnet_jax import pretrained
    from cqrnet_jax.models.build import load_ranker_model

    where = pretrained.resolve_model_prefix(prefix or "default", "ranker")
    module, variables, meta = load_ranker_model(where)
    return RankerScorer(module, variables, meta, **kw)


# The blind estimate is clipped to the qualities a conditioned model was trained to be told.
BLIND_QUALITY_RANGE = (5.0, 95.0)


@functools.lru_cache(maxsize=1)
def _estimator():
    return load_ranker("default")  # the shipped blind estimator, with its calibration


def blind_quality(pixels: np.ndarray) -> float:
    """The JPEG quality an image looks compressed at, by the shipped quality ranker: its score
    of the image's Y (a centred 2048² crop of a larger one) through the ranker's calibration,
    clipped to BLIND_QUALITY_RANGE. Coarse above QF 30 (cqrnet_jax/pretrained/ranker_blind.md),
    and only an image that was never re-encoded after its JPEG reads near its quality."""
    y = pixels if pixels.ndim == 2 else round_to_uint8(rgb_to_ycbcr(pixels[..., :3])[..., 0])
    scorer = _estimator()
    score = float(scorer(scored_region(np.asarray(y, np.uint8))))
    return float(np.clip(estimate_quality(score, scorer.calibration), *BLIND_QUALITY_RANGE))


# --------------------------------------------------------------------------- calibration


def fit_calibration(scores_by_quality: dict[int, Sequence[float]]) -> dict:
    """Per-QF median score, made non-decreasing in QF: {'qualities': [...], 'scores': [...]}."""
    qualities = sorted(int(q) for q in scores_by_quality)
    if len(qualities) < 2:
        raise ValueError("a calibration needs scores at two or more qualities")
    medians = [float(np.median(np.asarray(scores_by_quality[q], np.float64))) for q in qualities]
    monotone = isotonic_regression(medians).x  # least squares, non-decreasing, equal weights
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


def calibrate(
    scorer, data_dir=None, num_images=60, crop=320, qualities=CALIBRATION_QUALITIES,
    progress=True,
) -> dict:  # fmt: skip
    """The score -> QF calibration of `scorer`, fitted on training images (`fit_calibration`);
    the caller decides where it is kept (`load_calibration` reads it back)."""
    images = calibration_images(data_dir, num_images, crop)
    scores = score_matrix(scorer, images, qualities, progress=progress)
    calibration = fit_calibration({q: scores[:, j] for j, q in enumerate(qualities)})
    calibration.update(images=len(images), crop=crop, sets="BSDS500 train+val, Urban100_gray")
    return calibration


def load_calibration(path: str | os.PathLike) -> dict:
    """A calibration file written by `cqrnet-jax ranker-eval --calibrate`; InputError (naming
    the file) if it is missing or holds no increasing qualities with a score each."""
    from cqrnet_jax.errors import InputError

    path = Path(path).expanduser()
    try:
        cal = json.loads(path.read_text())
        qualities, scores = cal["qualities"], cal["scores"]
        ok = len(qualities) == len(scores) >= 2 and all(map(np.isfinite, scores))
        ok = ok and all(a < b for a, b in zip(qualities, qualities[1:]))
    except FileNotFoundError:
        raise InputError(f"calibration {path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError) as err:  # unreadable, not JSON, wrong shape
        raise InputError(f"calibration {path}: not a calibration file ({err})") from None
    if not ok:
        raise InputError(
            f"calibration {path}: needs two or more increasing qualities, a score each"
        )
    return cal


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
