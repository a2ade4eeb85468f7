"""benchmarks/torch_twin.py: the PyTorch twin of the de-blocker, loaded with a JAX model's
parameters, gives the JAX model's output (odd sizes: reflect padding, pooled and masked keys).
Needs torch (the `bench` extra); skipped without it."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cqrnet_jax.models.build import deblock_from_config

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from torch_twin import check_equal, from_flax  # noqa: E402

MODEL = dict(
    features=8, num_local_groups=1, dilations=(1, 2, 4), nl_inner=4, nl_window=16, nl_subsample=2
)


def test_twin_equals_the_jax_model():
    model = deblock_from_config(MODEL, "float32", "chunked")
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, 16), jnp.float32))
    rng = np.random.default_rng(0)  # every parameter non-zero (fusions and outputs start at 0)
    variables = jax.tree.map(lambda a: a + 0.1 * rng.standard_normal(a.shape), variables)
    variables = jax.tree.map(lambda a: np.asarray(a, np.float32), variables)
    net = from_flax(variables["params"], MODEL).eval()
    worst = check_equal(model, variables, net, [(2, 32, 32), (1, 37, 45)], atol=1e-5)
    assert worst < 1e-5
    with torch.no_grad():  # and the check can fail: a changed weight shows
        net.tail.bias += 0.01
    with pytest.raises(AssertionError, match="differ"):
        check_equal(model, variables, net, [(1, 37, 45)], atol=1e-5)
