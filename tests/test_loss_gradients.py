"""The ranker-guided losses train the de-blocker (paper §3.3): L_Q's and L_F's gradients reach M's
parameters through the frozen ranker, as the chain rule says (M's Jacobian applied to the term's
gradient at the restored image), and point elsewhere than L_MAE's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.train.deblock_task import DeblockTask

TERMS = ("l_mae", "l_q", "l_f")
pytestmark = pytest.mark.slow  # one compile of M and the ranker, 15-30 s on 2 CPU cores


@pytest.fixture(scope="module")
def gradients(deblock_config, tiny_ranker):
    """({term: gradient of the unweighted term with respect to M's parameters},
    {term: the chain-rule reference}) for the smoke task guided by the tiny ranker (24x24
    windows), random parameters (every group active) and two JPEG q10 crops of the camera man."""
    config = deblock_config("smoke")
    config.model.nl_window = 24
    config.loss.ranker = str(tiny_ranker)
    task = DeblockTask(config)
    abstract = jax.eval_shape(task.init_variables, jax.random.key(0))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: 0.05 * rng.standard_normal(a.shape, np.float32), abstract)
    photo = skimage.data.camera()
    clean = np.stack([photo[200:224, 240:264], photo[100:124, 300:324]]) / np.float32(255)
    x = np.stack([jpeg_degrade(y, 10) for y in (clean * 255).astype(np.uint8)]) / np.float32(255)
    layers = tuple(config.loss.feature_layers)

    def ranker_terms(restored):  # L_Q and L_F (paper Eq. 4, 5), each image through the ranker alone
        scores, maps = task.ranker.apply(task.ranker_variables, restored, train=False)
        _, maps_y = task.ranker.apply(task.ranker_variables, clean, train=False)
        l_f = sum(jnp.mean(jnp.abs(maps[i] - maps_y[i])) for i in layers)
        return jnp.mean(jax.nn.sigmoid(-scores)), l_f

    @jax.jit
    def both(params):
        terms = jax.jacrev(lambda p: jnp.stack([task.loss_terms(p, x, clean)[k] for k in TERMS]))
        got = terms(params)
        restored, pullback = jax.vjp(lambda p: task.model.apply({"params": p}, x), params)
        d_q, d_f = jax.jacrev(lambda r: jnp.stack(ranker_terms(r)))(restored)
        ref = {"l_q": pullback(d_q)[0], "l_f": pullback(d_f)[0]}
        return {k: jax.tree.map(lambda g, i=i: g[i], got) for i, k in enumerate(TERMS)}, ref

    return jax.device_get(both(params))


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(a) for a in jax.tree.leaves(tree)]).astype(np.float64)


@pytest.mark.parametrize("term", ["l_q", "l_f"])
def test_ranker_terms_reach_the_deblocker_by_the_chain_rule(gradients, term):
    """The gradient of L_Q (L_F) with respect to M's parameters is non-zero and equals M's
    Jacobian applied to the term's gradient at the restored image: the frozen ranker passes
    the gradient back into the de-blocker (a stop_gradient on the restored image zeroes it)."""
    got, ref = gradients
    g, expected = _flat(got[term]), _flat(ref[term])
    assert np.linalg.norm(expected) > 0
    np.testing.assert_allclose(g, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("term", ["l_q", "l_f"])
def test_ranker_terms_are_not_multiples_of_the_mae_gradient(gradients, term):
    """L_Q's and L_F's gradients are not multiples of L_MAE's: more than 1% of each lies
    orthogonal to it, a direction of their own in the training gradient."""
    got, _ = gradients
    g, g_mae = _flat(got[term]), _flat(got["l_mae"])
    orthogonal = g - (g @ g_mae) / (g_mae @ g_mae) * g_mae
    assert np.linalg.norm(orthogonal) > 0.01 * np.linalg.norm(g)
