"""The multi-scale CPU de-blocker (models/unet.py) and the QF-range training mix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cqrnet_jax.data.plans import check_quality_mix, plan_rng, sample_quality_mix
from cqrnet_jax.errors import ConfigError
from cqrnet_jax.inference import Restorer
from cqrnet_jax.models.build import deblock_from_config, size_alignment

SMALL = dict(arch="unet", widths=(4, 8, 8), blocks=(1, 1, 1), dilations=(1, 2, 4), nl_inner=4,
             nl_window=4)  # fmt: skip


def _model_and_variables(seed=0):
    model = deblock_from_config(SMALL)
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 16, 16)))
    # the tail starts at zero (identity); perturb it so the tests see the whole network
    leaves, tree = jax.tree.flatten(variables)
    rng = np.random.default_rng(seed)
    leaves = [leaf + 0.05 * rng.standard_normal(leaf.shape).astype(leaf.dtype) for leaf in leaves]
    return model, jax.tree.unflatten(tree, leaves)


def test_starts_as_the_identity_at_any_size():
    model = deblock_from_config(SMALL)
    x = jnp.asarray(np.random.default_rng(0).random((2, 21, 30)), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    np.testing.assert_array_equal(model.apply(variables, x), x)


@pytest.mark.slow  # ~15 s on 2 busy cores
def test_tiles_agree_with_the_whole_image():
    """Tiles on multiples of the alignment (scale x window) see the whole image's windows; the
    margin absorbs the convolutions' borders: within one grey level."""
    model, variables = _model_and_variables()
    assert size_alignment(model) == 4 * 4
    y = np.random.default_rng(1).integers(0, 256, (70, 90), dtype=np.uint8)
    whole = Restorer(model, variables)(y)
    tiled = Restorer(model, variables, tile=32, margin=32)(y)
    assert whole.shape == y.shape and not np.array_equal(whole, y)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_quality_mix_draws_within_its_ranges_by_weight():
    quality, label = sample_quality_mix(plan_rng(0, 3), 4000, ((5, 60), (80, 95)), (0.75, 0.25))
    q = quality[:, 0]
    assert q.min() >= 5 and q.max() <= 95 and not ((q > 60) & (q < 80)).any()
    assert 0.72 < (q <= 60).mean() < 0.78 and (label == 0).all()
    assert {5, 60, 80, 95} <= set(q.tolist())  # both ends inclusive


@pytest.mark.parametrize(
    "ranges, weights",
    [(((5, 60),), (1.0, 1.0)), (((60, 5),), (1.0,)), (((0, 50),), (1.0,)), (((5, 9),), (0.0,))],
)
def test_a_bad_quality_mix_is_a_config_error(ranges, weights):
    with pytest.raises(ConfigError):
        check_quality_mix(ranges, weights)


def test_a_quality_conditioned_unet_reads_the_quality():
    """quality_input: the head reads quality / 100 as a plane; the output depends on it, a call
    without one is refused, and `fixed_quality` stands in for it (a QF fixed at build)."""
    model = deblock_from_config({**SMALL, "quality_input": True})
    x = jnp.asarray(np.random.default_rng(0).random((2, 16, 16)), jnp.float32)
    variables = model.init(jax.random.key(0), x, quality=jnp.array([10.0, 90.0]))
    assert variables["params"]["head"]["kernel"].shape[2] == 2  # Y and the quality plane
    leaves, tree = jax.tree.flatten(variables)
    variables = jax.tree.unflatten(tree, [leaf + 0.05 for leaf in leaves])
    low = model.apply(variables, x, quality=jnp.array([10.0, 10.0]))
    high = model.apply(variables, x, quality=jnp.array([90.0, 90.0]))
    assert low.shape == x.shape and not np.allclose(low, high)
    fixed = model.clone(fixed_quality=10.0).apply(variables, x)
    np.testing.assert_array_equal(fixed, low)
    with pytest.raises(ValueError, match="needs the JPEG quality"):
        model.apply(variables, x)


def test_quality_input_is_only_for_the_grey_unet():
    with pytest.raises(ConfigError, match="quality_input"):
        deblock_from_config({**SMALL, "quality_input": True, "channels": 3})
    with pytest.raises(ConfigError, match="quality_input"):
        deblock_from_config({"arch": "dncnn", "quality_input": True})
