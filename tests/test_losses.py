"""Losses of both stages (paper Eq. 2-6) on hand-computed cases and against reformulations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cqrnet_jax.losses import (
    block_boundary_loss,
    blocking_excess_loss,
    chroma_loss,
    feature_matching_loss,
    mae_loss,
    margin_ranking_loss,
    pair_order_accuracy,
    quality_loss,
)


def _f(*xs):
    return [jnp.asarray(x, jnp.float32) for x in xs]


@pytest.mark.parametrize(
    "s_i, s_j, b_i, b_j, expected",
    [
        (1.0, 0.0, 1, 2, 1.5),  # worse image scored higher: max(0, 1 * 1 + 0.5)
        (0.0, 1.0, 1, 2, 0.0),  # ordered right by more than the margin: max(0, -1 + 0.5)
        (0.0, 0.3, 1, 3, 0.2),  # ordered right, inside the margin: max(0, -0.3 + 0.5)
        (1.0, 0.0, 2, 1, 0.0),  # b_i > b_j flips eta: max(0, 1 * -1 + 0.5)
        (0.0, 1.0, 3, 1, 1.5),  # b_i > b_j, wrong order: max(0, -1 * -1 + 0.5)
        (2.0, 2.0, 1, 2, 0.5),  # a tie costs the margin
    ],
)
def test_margin_ranking_loss_hand_cases(s_i, s_j, b_i, b_j, expected):
    """L_R = max(0, (s_i - s_j) * eta + 0.5), eta = +1 if b_i < b_j else -1."""
    loss = margin_ranking_loss(*_f([s_i], [s_j]), jnp.array([b_i]), jnp.array([b_j]))
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_margin_ranking_loss_margin_argument():
    """The margin is the loss of a tie."""
    s = jnp.zeros(3)
    b_i, b_j = jnp.array([1, 2, 3]), jnp.array([2, 3, 1])
    assert float(margin_ranking_loss(s, s, b_i, b_j, margin=2.0)) == pytest.approx(2.0)
    assert float(margin_ranking_loss(s, s, b_i, b_j, margin=0.0)) == 0.0


def test_margin_ranking_loss_mean_excludes_equal_labels():
    """Pairs with equal labels neither add loss nor count in the mean; all-equal gives 0."""
    s_i, s_j = _f([1.0, 0.0, 5.0, -3.0], [0.0, 0.3, 0.0, 7.0])
    b_i, b_j = jnp.array([1, 1, 2, 3]), jnp.array([2, 3, 2, 3])
    # pairs 0, 1 count: (1.5 + 0.2) / 2; pairs 2, 3 have equal labels
    assert float(margin_ranking_loss(s_i, s_j, b_i, b_j)) == pytest.approx(0.85, abs=1e-6)
    same = jnp.array([2, 2, 2, 2])
    assert float(margin_ranking_loss(s_i, s_j, same, same)) == 0.0


def test_margin_ranking_loss_equals_torch_formulation_on_random_data():
    """Equals torch's MarginRankingLoss(s_i, s_j, y=-eta, margin) = mean(max(0, -y(s_i-s_j)+m))."""
    rng = np.random.default_rng(0)
    n = 257
    s_i, s_j = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    b_i = rng.integers(1, 4, size=n)
    b_j = (b_i - 1 + rng.integers(1, 3, size=n)) % 3 + 1  # always a different level
    assert np.all(b_i != b_j)
    y = -np.sign(b_j - b_i)
    for margin in (0.5, 0.1, 1.0):
        expected = np.mean(np.maximum(0.0, -y * (s_i - s_j) + margin))
        got = margin_ranking_loss(s_i, s_j, b_i, b_j, margin)
        assert float(got) == pytest.approx(expected, rel=1e-5)
        jitted = jax.jit(margin_ranking_loss, static_argnums=4)(s_i, s_j, b_i, b_j, margin)
        assert float(jitted) == pytest.approx(expected, rel=1e-5)


def test_margin_ranking_loss_gradient_raises_the_better_score():
    """Inside the margin, descending the loss raises the better image's score, lowers the worse."""
    g_i, g_j = jax.grad(margin_ranking_loss, argnums=(0, 1))(
        *_f([0.0, 0.0], [0.0, 0.0]), jnp.array([1, 3]), jnp.array([2, 1])
    )
    # pair 0: j is better; pair 1: i is better. Gradient is -+1/2 per pair (mean over 2).
    np.testing.assert_allclose(g_i, [0.5, -0.5])
    np.testing.assert_allclose(g_j, [-0.5, 0.5])


def test_pair_order_accuracy():
    """Fraction of different-label pairs whose scores order like the labels; ties are wrong."""
    s_i, s_j = _f([0.0, 1.0, 0.0, 2.0, 9.0], [1.0, 0.0, 0.0, 1.0, 0.0])
    b_i, b_j = jnp.array([1, 1, 1, 3, 2]), jnp.array([2, 2, 3, 1, 2])
    # right, wrong, tie (wrong), right (b_i > b_j and s_i > s_j); the last pair is excluded
    assert float(pair_order_accuracy(s_i, s_j, b_i, b_j)) == pytest.approx(0.5)
    same = jnp.ones(5, jnp.int32)
    assert float(pair_order_accuracy(s_i, s_j, same, same)) == 0.0


def test_pair_order_accuracy_on_random_data():
    """Equals the share of different-label pairs with sign(s_j - s_i) == sign(b_j - b_i)."""
    rng = np.random.default_rng(1)
    s_i, s_j = rng.normal(size=100).astype(np.float32), rng.normal(size=100).astype(np.float32)
    b_i, b_j = rng.integers(1, 4, size=100), rng.integers(1, 4, size=100)
    valid = b_i != b_j
    right = np.sign(s_j - s_i) == np.sign(b_j - b_i)
    expected = right[valid].mean()
    assert float(pair_order_accuracy(s_i, s_j, b_i, b_j)) == pytest.approx(expected)


def test_mae_loss():
    """L_MAE = mean |x - y| over all elements."""
    assert float(mae_loss(*_f([1.0, 2.0], [0.0, 4.0]))) == pytest.approx(1.5)
    x, y = _f([[0.25, 0.5], [1.0, 0.0]], [[0.0, 0.5], [0.0, 1.0]])
    assert float(mae_loss(x, y)) == pytest.approx(2.25 / 4)
    assert float(mae_loss(x, x)) == 0.0


def test_block_boundary_loss_counts_steps_at_block_edges_only():
    """A step between columns 7 and 8 (a JPEG block edge) costs its height over the number of
    boundary pairs; the same step between columns 3 and 4 costs nothing, nor does the target's."""
    target = np.zeros((16, 16), np.float32)
    assert float(block_boundary_loss(*_f(target, target))) == 0.0
    at_edge = target.copy()
    at_edge[:, 8:] = 0.5
    # boundary pairs: 16 rows x 1 column edge + 16 columns x 1 row edge = 32; 16 of them step 0.5
    assert float(block_boundary_loss(*_f(at_edge, target))) == pytest.approx(16 * 0.5 / 32)
    assert float(block_boundary_loss(*_f(at_edge, at_edge))) == 0.0
    inside = target.copy()
    inside[:, 4:] = 0.5
    assert float(block_boundary_loss(*_f(inside, target))) == 0.0
    batch = np.stack([at_edge, target])  # (N, H, W): the mean over the batch's pairs
    assert float(block_boundary_loss(*_f(batch, np.zeros_like(batch)))) == pytest.approx(0.25 / 2)


def test_blocking_excess_loss_is_psnr_b_blocking_factor_over_the_clean_image():
    """On 8-multiple images against a target with no blocking excess, 255² η L_BEF is the
    metric's BEF; the target's own excess is subtracted, and an output smoother at block edges
    than inside costs nothing."""
    from cqrnet_jax.metrics import blocking_effect_factor

    rng = np.random.default_rng(0)
    blocky = np.kron(rng.uniform(0, 1, (2, 4, 5)), np.ones((8, 8))).astype(np.float32)
    blocky += 0.01 * rng.standard_normal(blocky.shape).astype(np.float32)  # (2, 32, 40)
    flat = np.full_like(blocky, 0.5)
    eta = 3 / np.log2(32)
    bef = np.asarray(blocking_effect_factor(255.0 * blocky))
    loss = float(blocking_excess_loss(*_f(blocky, flat)))
    assert loss * 255**2 * eta == pytest.approx(bef.mean(), rel=1e-4) and loss > 0
    assert float(blocking_excess_loss(*_f(blocky, blocky))) == 0.0
    ramp = (np.arange(32)[:, None] + np.arange(32)) / np.float32(64)  # every step 1/64
    assert float(blocking_excess_loss(*_f(ramp[None], flat[:1, :, :32]))) == pytest.approx(
        0.0, abs=1e-7
    )
    smooth_edges = rng.uniform(0, 1, (2, 32, 40)).astype(np.float32)
    smooth_edges[:, :, 8::8] = smooth_edges[:, :, 7:-1:8]  # no step across column edges
    smooth_edges[:, 8::8, :] = smooth_edges[:, 7:-1:8, :]
    assert float(blocking_excess_loss(*_f(smooth_edges, flat))) == 0.0


def test_quality_loss():
    """L_Q = mean sigmoid(-s): 0.5 at s = 0, 1/4 at s = log 3, -> 0 for large scores."""
    assert float(quality_loss(jnp.zeros(4))) == pytest.approx(0.5)
    assert float(quality_loss(jnp.array([np.log(3.0)]))) == pytest.approx(0.25)
    assert float(quality_loss(jnp.array([0.0, np.log(3.0)]))) == pytest.approx(0.375)
    assert float(quality_loss(jnp.array([50.0]))) < 1e-20
    assert float(quality_loss(jnp.array([-50.0]))) == pytest.approx(1.0)


def test_feature_matching_loss():
    """L_F = sum over maps of the mean |a - b| of each map (maps of different sizes)."""
    a = [jnp.zeros((2, 2)), jnp.zeros((1, 3))]
    b = [jnp.ones((2, 2)), jnp.array([[3.0, 0.0, 0.0]])]
    # map 0: mean 1; map 1: mean 3/3 = 1
    assert float(feature_matching_loss(a, b)) == pytest.approx(2.0)
    c = [jnp.full((2, 2), 0.5), jnp.zeros((1, 3))]
    assert float(feature_matching_loss(a, c)) == pytest.approx(0.5)
    assert float(feature_matching_loss(b, b)) == 0.0


def test_feature_matching_loss_needs_matching_map_lists():
    """A different number of maps on the two sides is an error, not a silent truncation."""
    with pytest.raises(ValueError):
        feature_matching_loss([jnp.zeros(2)], [jnp.zeros(2), jnp.zeros(2)])


def test_cross_image_ranking_loss_ranks_every_pair_of_different_crops():
    """All version pairs of different crops count; same-crop pairs and equal labels do not."""
    from cqrnet_jax.losses import cross_image_ranking_loss

    scores = jnp.array([[0.0, 1.0], [2.0, 0.5]])
    labels = jnp.array([[1, 3], [2, 1]])
    # cross pairs (i<j, each counted both ways with the same hinge):
    # (0 vs 2, lab 1<2): max(0, (0-2)+.5)=0      (0 vs .5, lab 1=1): excluded
    # (1 vs 2, lab 3>2): max(0, -(1-2)+.5)=1.5   (1 vs .5, lab 3>1): max(0, -(1-.5)+.5)=0
    expected = 2 * (0.0 + 1.5 + 0.0) / 6
    assert float(cross_image_ranking_loss(scores, labels, 0.5)) == pytest.approx(expected)


def test_chroma_loss_counts_colour_not_brightness():
    """L_C: 0 for equal images and for a change of R, G and B alike (a grey change: Cb and Cr
    stay); a change of red alone by d costs (37.797 + 112) / 2 / 255 d, the rows of rgb2ycbcr."""
    rng = np.random.default_rng(0)
    rgb = jnp.asarray(rng.random((2, 8, 8, 3)), jnp.float32)
    assert float(chroma_loss(rgb, rgb)) == 0.0
    assert float(chroma_loss(rgb + 0.1, rgb)) == pytest.approx(0.0, abs=1e-6)
    red = rgb.at[..., 0].add(0.1)
    assert float(chroma_loss(red, rgb)) == pytest.approx((37.797 + 112.0) / 2 / 255 * 0.1, rel=1e-5)
    grad = jax.grad(chroma_loss)(red, rgb)
    assert float(jnp.abs(grad).sum()) > 0
