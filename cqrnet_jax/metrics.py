"""Image quality metrics of the evaluation protocol (paper §4.2): PSNR, SSIM and PSNR-B on [0, 255].

Inputs are (H, W) or batched (N, H, W) float arrays (integers are cast to float32); each metric
returns a scalar or shape (N,). The exact conventions are written in docs/method.md ("Metrics").

Also the ranker's metrics: Spearman rho between scores and JPEG qualities, and pair-order accuracy
(`ranking_metrics`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cqrnet_jax.losses import block_step_sums, ordered_pairs

PEAK = 255.0
BLOCK = 8  # JPEG block size of PSNR-B
_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5  # 11x11 window = skimage's truncate=3.5 at sigma 1.5
_SSIM_C1 = (0.01 * PEAK) ** 2
_SSIM_C2 = (0.03 * PEAK) ** 2


def _as_float(x) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _check_pair(a, b) -> tuple[jax.Array, jax.Array]:
    a, b = _as_float(a), _as_float(b)
    if a.shape != b.shape or a.ndim not in (2, 3):
        raise ValueError(f"expected two (H, W) or (N, H, W) arrays, got {a.shape} and {b.shape}")
    return a, b


def _mean_hw(x: jax.Array) -> jax.Array:
    return jnp.mean(jnp.mean(x, axis=-1), axis=-1)


def mse(a, b) -> jax.Array:
    """Mean squared error over the last two axes."""
    a, b = _check_pair(a, b)
    return _mean_hw(jnp.square(a - b))


def psnr(a, b) -> jax.Array:
    """PSNR in dB with peak 255: 10 log10(255² / MSE); inf for identical images."""
    return 10.0 * jnp.log10(PEAK**2 / mse(a, b))


def rgb_psnr(a, b) -> float:
    """PSNR in dB (peak 255) of two (H, W, 3) RGB images over all their samples: the mean squared
    error of the three channels together, in float64; inf for identical images."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected two (H, W, 3) arrays, got {a.shape} and {b.shape}")
    err = float(np.mean(np.square(a - b)))
    return math.inf if err == 0 else 10.0 * math.log10(PEAK**2 / err)


def _ssim_weights() -> np.ndarray:
    g = np.exp(-0.5 * (np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1) / _SSIM_SIGMA) ** 2)
    g /= g.sum()
    return np.outer(g, g)


def ssim(a, b) -> jax.Array:
    """SSIM (Wang et al. 2004): 11x11 Gaussian window, σ 1.5, K1 0.01, K2 0.03, L 255.

    Mean of the SSIM map over the valid region (windows inside the image), as skimage with
    `gaussian_weights=True, use_sample_covariance=False` and MATLAB `ssim_index`. Moments are
    taken about each window's centre pixel, summing the 121 weighted offsets directly: the usual
    E[x²] − E[x]² loses ~1e-5 SSIM to float32 cancellation on flat regions (dm-pix's `ssim` does).
    """
    a, b = _check_pair(a, b)
    size = 2 * _SSIM_RADIUS + 1
    h, w = a.shape[-2] - size + 1, a.shape[-1] - size + 1
    if h < 1 or w < 1:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {a.shape}")
    r = _SSIM_RADIUS
    ac, bc = a[..., r : r + h, r : r + w], b[..., r : r + h, r : r + w]
    da = db = saa = sbb = sab = 0.0
    for (i, j), wt in np.ndenumerate(_ssim_weights().astype(np.float32)):
        x = a[..., i : i + h, j : j + w] - ac
        y = b[..., i : i + h, j : j + w] - bc
        da, db = da + wt * x, db + wt * y
        saa, sbb, sab = saa + wt * x * x, sbb + wt * y * y, sab + wt * x * y
    mu_a, mu_b = ac + da, bc + db
    var_a, var_b, cov = saa - da * da, sbb - db * db, sab - da * db
    num = (2 * mu_a * mu_b + _SSIM_C1) * (2 * cov + _SSIM_C2)
    den = (mu_a * mu_a + mu_b * mu_b + _SSIM_C1) * (var_a + var_b + _SSIM_C2)
    return _mean_hw(num / den)


def _boundary_counts(height: int, width: int) -> tuple[float, float]:
    """(N_B, N_Bc) with FBCNN's true-division counts (W/8 - 1, not W//8 - 1): the published
    tables' PSNR-B is reproduced only so when H or W is not a multiple of 8 (docs/method.md)."""
    n_hb = height * (width / BLOCK - 1)
    n_vb = width * (height / BLOCK - 1)
    n_hbc = height * (width - 1) - n_hb
    n_vbc = width * (height - 1) - n_vb
    return n_hb + n_vb, n_hbc + n_vbc


def blocking_effect_factor(img) -> jax.Array:
    """BEF of Yim & Bovik 2011 over 8x8 block boundaries, as FBCNN's `calculate_psnrb`.

    Pair (j, j+1) is a block boundary when j % 8 == 7 (rows and columns alike). BEF =
    η (D_B/N_B − D_Bc/N_Bc), clamped at 0, with η = log2(8) / log2(min(H, W)). Defined 0 when an
    image is too small to have boundaries (N_B <= 0).
    """
    x = _as_float(img)
    height, width = x.shape[-2:]
    n_b, n_bc = _boundary_counts(height, width)
    if n_b <= 0 or n_bc <= 0 or min(height, width) < 2:
        return jnp.zeros(x.shape[:-2], x.dtype)
    d_b, d_bc = block_step_sums(x, BLOCK)
    eta = math.log2(BLOCK) / math.log2(min(height, width))
    return eta * jnp.maximum(d_b / n_b - d_bc / n_bc, 0.0)


def psnr_b(restored, target) -> jax.Array:
    """PSNR-B in dB: 10 log10(255² / (MSE + BEF(restored))); inf when MSE + BEF == 0."""
    restored, target = _check_pair(restored, target)
    return 10.0 * jnp.log10(PEAK**2 / (mse(restored, target) + blocking_effect_factor(restored)))


@jax.jit
def _image_metrics(restored: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
    return {
        "psnr": psnr(restored, target),
        "ssim": ssim(restored, target),
        "psnr_b": psnr_b(restored, target),
    }


def image_metrics(restored_uint8: np.ndarray, target_uint8: np.ndarray) -> dict[str, float]:
    """PSNR, SSIM and PSNR-B of one (H, W) uint8 pair as Python floats (compiled once per shape)."""
    restored, target = np.asarray(restored_uint8), np.asarray(target_uint8)
    if restored.ndim != 2 or restored.shape != target.shape:
        raise ValueError(f"expected two (H, W) images, got {restored.shape} and {target.shape}")
    out = _image_metrics(restored.astype(np.float32), target.astype(np.float32))
    return {k: float(v) for k, v in out.items()}


# --------------------------------------------------------------------------- ranking


def spearman(x, y) -> float:
    """Spearman rho of the flattened arrays (average ranks for ties); nan if one is constant."""
    from scipy.stats import ConstantInputWarning, spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(spearmanr(np.ravel(x), np.ravel(y)).statistic)


def pair_accuracy(scores, labels: Sequence[float]) -> tuple[float, int]:
    """Share of within-image pairs with different labels whose scores are in the same order.

    `scores` is (images, qualities); equal scores count as wrong (`losses.ordered_pairs`, as the
    training metric). Returns (accuracy, pairs).
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, np.float64)
    i, j = np.triu_indices(len(labels), 1)
    keep = labels[i] != labels[j]
    i, j = i[keep], j[keep]
    b_i, b_j = (np.broadcast_to(labels[k], (scores.shape[0], len(k))) for k in (i, j))
    correct, _ = ordered_pairs(scores[:, i], scores[:, j], b_i, b_j)
    correct = np.asarray(correct)
    return float(correct.mean()), int(correct.size)


def level_of(quality: int, levels) -> int:
    """1-based index of the (low, high) QF range of `levels` that holds `quality`."""
    for k, (lo, hi) in enumerate(levels, start=1):
        if lo <= quality <= hi:
            return k
    raise ValueError(f"quality {quality} is outside the levels {levels}")


def ranking_metrics(scores, qualities: Sequence[int], levels=None) -> dict:
    """Spearman (pooled and per-image mean) and pairwise accuracies of an (images, QFs) matrix;
    with `levels`, also the accuracy over pairs of different levels."""
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
