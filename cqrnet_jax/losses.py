"""Losses of both stages (paper Eq. 2-6), pure functions of arrays."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cqrnet_jax.data.color import RGB_TO_YCBCR


def _order(b_i, b_j):
    """eta = +1 where j is better than i (higher label), -1 where worse, 0 where equal."""
    return jnp.sign(jnp.asarray(b_j, jnp.float32) - jnp.asarray(b_i, jnp.float32))


def _mean_hinge(s_i, s_j, eta, margin: float, valid):
    """Mean over `valid` pairs of max(0, (s_i - s_j) * eta + margin): the margin ranking hinge."""
    per_pair = jnp.maximum(0.0, (s_i - s_j) * eta + margin)
    valid = valid.astype(jnp.float32)
    return jnp.sum(per_pair * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def margin_ranking_loss(s_i, s_j, b_i, b_j, margin: float = 0.5):
    """Mean of max(0, (s_i - s_j) * eta + margin), eta = +1 if b_i < b_j, -1 if b_i > b_j.

    `b` are quality levels (higher = better); the loss pushes the better image's score above the
    worse one's by at least `margin`. Pairs with equal labels carry no signal and are excluded.
    """
    eta = _order(b_i, b_j)
    return _mean_hinge(s_i, s_j, eta, margin, eta != 0)


def cross_image_ranking_loss(scores, labels, margin: float):
    """Margin ranking loss over every pair of versions of *different* crops in the batch.

    `scores` and `labels` are (B, 2); labels are levels or, better for a blind estimator, the
    JPEG qualities themselves. Not in the paper (its pairs are one crop at two QFs): it makes
    scores comparable across images. Same-crop pairs (the paper's term) and equal labels are
    left out; the mean is over the remaining pairs."""
    b = scores.shape[0]
    s = scores.reshape(-1)
    lab = jnp.asarray(labels, jnp.float32).reshape(-1)
    crop = jnp.repeat(jnp.arange(b), 2)
    eta = _order(lab[:, None], lab[None, :])
    valid = (crop[:, None] != crop[None, :]) & (eta != 0)
    return _mean_hinge(s[:, None], s[None, :], eta, margin, valid)


def ordered_pairs(s_i, s_j, b_i, b_j):
    """(correct, valid) per pair: valid where the labels differ, correct where the scores are
    ordered like the labels (equal scores are wrong)."""
    eta = _order(b_i, b_j)
    valid = eta != 0
    return (jnp.sign(s_j - s_i) == eta) & valid, valid


def pair_order_accuracy(s_i, s_j, b_i, b_j):
    """Fraction of pairs with different labels whose scores are ordered like the labels."""
    correct, valid = ordered_pairs(s_i, s_j, b_i, b_j)
    return jnp.sum(correct) / jnp.maximum(jnp.sum(valid), 1)


def mae_loss(restored, target):
    """L_MAE = mean |M(x) - y|."""
    return jnp.mean(jnp.abs(restored - target))


def mse_loss(restored, target):
    """Mean squared error: the pixel loss of the Table 2 baselines (ARCNN and DnCNN train on it)."""
    return jnp.mean(jnp.square(restored - target))


def block_boundary_loss(restored, target, block: int = 8):
    """Mean |Δ restored − Δ target| over neighbour pairs that straddle a JPEG block boundary
    (columns and rows j, j+1 with j % block == block − 1): the steps PSNR-B's blocking factor
    counts, pulled towards the clean image's own steps there. Images (..., H, W)."""

    def steps(x):
        across_cols = x[..., :, block::block] - x[..., :, block - 1 : -1 : block]
        across_rows = x[..., block::block, :] - x[..., block - 1 : -1 : block, :]
        return across_cols, across_rows

    (oc, orow), (tc, trow) = steps(restored), steps(target)
    n = oc.size + orow.size
    return (jnp.sum(jnp.abs(oc - tc)) + jnp.sum(jnp.abs(orow - trow))) / n


def block_step_sums(x, block: int = 8):
    """(D_B, D_Bc) of images (..., H, W): sums of squared neighbour steps across block edges (pair
    (j, j+1) with j % block == block - 1, rows and columns alike) and between all other
    neighbours. Rows are summed first: short float32 sums stay accurate on whole photos."""

    def sum_hw(v):
        return jnp.sum(jnp.sum(v, axis=-1), axis=-1)

    d_h = jnp.square(x[..., :, 1:] - x[..., :, :-1])  # (.., H, W-1): pair (j, j+1)
    d_v = jnp.square(x[..., 1:, :] - x[..., :-1, :])  # (.., H-1, W): pair (i, i+1)
    col_b = np.arange(x.shape[-1] - 1) % block == block - 1
    row_b = (np.arange(x.shape[-2] - 1) % block == block - 1)[:, None]
    d_b = sum_hw(jnp.where(col_b, d_h, 0.0)) + sum_hw(jnp.where(row_b, d_v, 0.0))
    d_bc = sum_hw(jnp.where(col_b, 0.0, d_h)) + sum_hw(jnp.where(row_b, 0.0, d_v))
    return d_b, d_bc


def blocking_excess_loss(restored, target, block: int = 8):
    """Batch mean of max(0, E(restored) − E(target)), E = D_B/N_B − D_Bc/N_Bc: the mean squared
    step across 8x8 block edges less that between other neighbours, the quantity PSNR-B's
    blocking factor counts (`metrics.blocking_effect_factor`). Images (N, H, W) in [0, 1]."""
    height, width = restored.shape[-2:]
    n_b = (width - 1) // block * height + (height - 1) // block * width  # exact pair counts
    n_c = height * (width - 1) + width * (height - 1) - n_b

    def excess(x):
        d_b, d_bc = block_step_sums(x, block)
        return d_b / n_b - d_bc / n_c

    return jnp.mean(jax.nn.relu(excess(restored) - excess(target)))


# Cb and Cr rows of MATLAB rgb2ycbcr for RGB in [0, 1], giving Cb, Cr in [0, 1] less 128/255.
_CBCR_RGB = RGB_TO_YCBCR[1:] / 255.0


def chroma_loss(restored, target):
    """L_C = mean |Cb − Cb'| and |Cr − Cr'| of RGB images (..., 3) in [0, 1], on the protocol's
    (MATLAB rgb2ycbcr) scale: the colour that RGB MAE weighs little beside luma."""
    diff = (restored - target) @ jnp.asarray(_CBCR_RGB.T, restored.dtype)
    return jnp.mean(jnp.abs(diff))


def quality_loss(scores):
    """L_Q = mean sigmoid(-CQR(M(x))): small when the ranker finds the restored image good."""
    return jnp.mean(jax.nn.sigmoid(-scores))


def feature_matching_loss(maps_restored: Sequence, maps_target: Sequence):
    """L_F = sum_i mean |CQR_i(M(x)) - CQR_i(y)| over the given feature maps (in float32)."""
    f32 = jnp.float32
    return sum(
        jnp.mean(jnp.abs(a.astype(f32) - b.astype(f32)))
        for a, b in zip(maps_restored, maps_target, strict=True)
    )
