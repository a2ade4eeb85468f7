"""Table 2's learned baselines (models/baselines.py) as their papers give them, and trained through
the same task, loop, export and inference as the CQR network (configs/deblock.py:arcnn, :dncnn)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cqrnet_jax.errors import ConfigError
from cqrnet_jax.models.baselines import ARCNN, DnCNN
from cqrnet_jax.models.build import deblock_from_config


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_parameter_counts_follow_the_papers_layers():
    """ARCNN: 9x9x1x64, 7x7x64x32, 1x1x32x16, 5x5x16x1 convs with biases. DnCNN-3: a 3x3x1x64
    conv with bias, 18 3x3x64x64 convs without bias each with BatchNorm's scale and offset, a
    3x3x64x1 conv with bias."""
    arcnn = (81 * 64 + 64) + (49 * 64 * 32 + 32) + (32 * 16 + 16) + (25 * 16 + 1)
    dncnn = (9 * 64 + 64) + 18 * (9 * 64 * 64 + 2 * 64) + (9 * 64 + 1)
    x = jnp.zeros((1, 32, 32))
    assert _count(ARCNN().init(jax.random.key(0), x)["params"]) == arcnn == 106_561
    variables = DnCNN(depth=20, features=64, residual_init="zeros").init(jax.random.key(0), x)
    assert _count(variables["params"]) == dncnn == 667_073
    assert _count(variables["batch_stats"]) == 18 * 2 * 64


def test_arcnn_sees_a_19_pixel_window():
    """Receptive field 9 + 7 + 1 + 5 - 3 = 19: one output pixel depends on exactly the 19 x 19
    input pixels around it (the gradient is nonzero there and zero outside)."""
    model = ARCNN()
    x = jax.random.uniform(jax.random.key(1), (1, 41, 41))
    variables = model.init(jax.random.key(2), x)
    grad = jax.grad(lambda v: model.apply(variables, v)[0, 20, 20])(x)[0]
    rows, cols = np.nonzero(np.asarray(grad))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (11, 29, 11, 29)


def test_dncnn_subtracts_its_output_from_the_input():
    model = DnCNN(depth=4, features=8, residual_init="zeros")
    x = jax.random.uniform(jax.random.key(3), (2, 24, 24))
    variables = model.init(jax.random.key(4), x)
    params = jax.tree.map(lambda a: a, variables["params"])
    last = params["conv3"]
    params["conv3"] = {k: jnp.zeros_like(v) for k, v in last.items()}
    same = model.apply({**variables, "params": params}, x)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(x))
    params["conv3"] = {"kernel": jnp.zeros_like(last["kernel"]), "bias": last["bias"] + 0.25}
    shifted = model.apply({**variables, "params": params}, x)
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(x) - 0.25, atol=1e-6)


def test_dncnn_batchnorm_uses_batch_statistics_only_in_training():
    """In training each image's output depends on the others in the batch and the running
    statistics move; in inference an image's output is the same alone or in a batch."""
    model = DnCNN(depth=4, features=8, residual_init="he")  # a zero last conv hides the middle
    x = jax.random.uniform(jax.random.key(5), (3, 16, 16))
    variables = model.init(jax.random.key(6), x)
    alone = model.apply(variables, x[:1])
    batched = model.apply(variables, x)
    np.testing.assert_allclose(np.asarray(batched[:1]), np.asarray(alone), atol=1e-6)
    trained, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    trained_alone, _ = model.apply(variables, x[:1], train=True, mutable=["batch_stats"])
    assert not np.allclose(np.asarray(trained[:1]), np.asarray(trained_alone), atol=1e-4)
    moved = jax.tree.map(
        lambda a, b: float(jnp.abs(a - b).max()), updates["batch_stats"], variables["batch_stats"]
    )
    assert max(jax.tree.leaves(moved)) > 0


def test_dncnn_starts_at_the_identity_unless_asked_for_the_papers_he_start(deblock_config):
    """Its last conv starts at zero, so the untrained net returns its input (an identity start;
    the paper's He start predicts a ~unit-RMS residual that 1 200 steps spend unlearning)."""
    x = jax.random.uniform(jax.random.key(7), (2, 24, 24))
    config = deblock_config("dncnn")
    for start, identity in (("zeros", True), ("he", False)):
        config.model.residual_init = start
        model = deblock_from_config(config.model)
        out = model.apply(model.init(jax.random.key(8), x), x)
        assert np.array_equal(np.asarray(out), np.asarray(x)) == identity
        if not identity:
            assert float(jnp.sqrt(jnp.mean((out - x) ** 2))) > 0.1
    config.model.residual_init = "ones"
    with pytest.raises(ConfigError, match="model.residual_init: one of zeros, he, not 'ones'"):
        deblock_from_config(config.model)


@pytest.mark.parametrize("arch", ["arcnn", "dncnn"])
def test_builder_makes_the_baselines(arch, deblock_config):
    config = deblock_config(arch)
    assert config.loss.pixel == "mse" and config.loss.alpha == config.loss.beta == 0
    model = deblock_from_config(config.model)
    assert isinstance(model, ARCNN if arch == "arcnn" else DnCNN)


@pytest.mark.slow
def test_dncnn_trains_exports_and_restores(deblock_config, tmp_path):
    """`:dncnn,smoke` through the loop: the MSE goes down on the built-in photos, the export
    holds the BatchNorm statistics, and `load_restorer` restores with the running ones."""
    from cqrnet_jax import pretrained
    from cqrnet_jax.inference import load_restorer
    from cqrnet_jax.train.loop import train_and_evaluate
    from cqrnet_jax.train.tasks import get_task

    config = deblock_config("dncnn,smoke")
    config.num_steps = 30
    config.log_every = 10
    config.checkpoint_every = 30
    config.optim.learning_rate = 1e-3
    import json

    train_and_evaluate(config, str(tmp_path), get_task(config))
    lines = (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()
    history = [json.loads(line)["l_mse"] for line in lines if "l_mse" in line]
    assert history[-1] < history[0], history
    variables, meta = pretrained.load_variables(tmp_path / "export" / "deblock")
    assert set(variables) == {"params", "batch_stats"} and meta["model"]["arch"] == "dncnn"
    restorer, _ = load_restorer(str(tmp_path))
    y = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 251).astype(np.uint8)
    out = restorer(y)
    assert out.shape == y.shape and out.dtype == np.uint8
