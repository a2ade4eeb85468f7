"""Losses of both stages (SPEC §1, §3), pure functions of arrays."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def margin_ranking_loss(s_i, s_j, b_i, b_j, margin: float = 0.5):
    """Mean of max(0, (s_i - s_j) * eta + margin), eta = +1 if b_i < b_j, -1 if b_i > b_j.

    `b` are quality levels (higher = better); the loss pushes the better image's score above the
    worse one's by at least `margin`. Pairs with equal labels carry no signal and are excluded.
    """
    eta = jnp.sign(jnp.asarray(b_j, jnp.float32) - jnp.asarray(b_i, jnp.float32))
    per_pair = jnp.maximum(0.0, (s_i - s_j) * eta + margin)
    valid = (eta != 0).astype(jnp.float32)
    return jnp.sum(per_pair * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def pair_order_accuracy(s_i, s_j, b_i, b_j):
    """Fraction of pairs with different labels whose scores are ordered like the labels."""
    eta = jnp.sign(jnp.asarray(b_j, jnp.float32) - jnp.asarray(b_i, jnp.float32))
    correct = (jnp.sign(s_j - s_i) == eta) & (eta != 0)
    return jnp.sum(correct) / jnp.maximum(jnp.sum(eta != 0), 1)


def mae_loss(restored, target):
    """L_MAE = mean |M(x) - y|."""
    return jnp.mean(jnp.abs(restored - target))


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
