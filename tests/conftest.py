"""Shared test helpers: a persistent compilation cache for the session, the training config
presets loaded from configs/, TensorFlow (skipped when it is not installed) and a tiny saved
de-blocker for the command-line tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A DeblockNet small enough to compile in seconds; windows of 16 so attention spans several.
TINY_DEBLOCK = dict(features=8, num_local_groups=1, dilations=[1, 2, 4], nl_inner=4, nl_window=16)
_CACHE_OPTIONS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory):
    """JAX's persistent compilation cache in a temporary folder for the whole session (each
    program compiles once, also across runs and subprocesses); yields the folder."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    saved = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    path = str(tmp_path_factory.mktemp("jax_cache"))
    compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield path
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def _load_config_module(name: str):
    spec = importlib.util.spec_from_file_location(
        f"_configs_{name}", REPO / "configs" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ranker_config():
    """`ranker_config('smoke')` is configs/ranker.py's `get_config('smoke')`, fresh each call."""
    module = _load_config_module("ranker")
    return module.get_config


@pytest.fixture(scope="session")
def deblock_config():
    """`deblock_config('smoke')` is configs/deblock.py's `get_config('smoke')`, fresh each call."""
    module = _load_config_module("deblock")
    return module.get_config


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, imported quietly with GPUs hidden (as the tf.data backend does), or a skip."""
    from cqrnet_jax.data.tf_pipeline import import_tensorflow

    try:
        return import_tensorflow()
    except ImportError:
        pytest.skip("tensorflow is not installed")


@pytest.fixture(scope="session")
def tiny_model_prefix(tmp_path_factory) -> str:
    """TINY_DEBLOCK with every parameter perturbed by N(0, 0.02^2) (not the identity), saved as
    a params prefix that `--model` accepts."""
    from helpers import save_perturbed_deblocker

    prefix = tmp_path_factory.mktemp("tiny_model") / "tiny"
    return save_perturbed_deblocker(TINY_DEBLOCK, (1, 16, 16), prefix, 0.02)


@pytest.fixture(scope="session")
def tiny_restorer(tiny_model_prefix):
    """A Restorer of the tiny saved de-blocker (whole images)."""
    from cqrnet_jax.inference import load_restorer

    return load_restorer(tiny_model_prefix)[0]


TINY_RANKER = dict(features=[4, 4, 8, 8, 8, 8, 8, 8, 8, 8], strides=[1, 2] * 5, hidden=8)
TINY_RANKER["negative_slope"] = 0.2


@pytest.fixture(scope="session")
def tiny_ranker(tmp_path_factory):
    """A tiny untrained ranker saved as a params prefix, with a calibration (scores -1e3, 0, 1e3
    at QF 1, 50, 95)."""
    import json

    import jax
    import jax.numpy as jnp

    from cqrnet_jax import pretrained
    from cqrnet_jax.models.ranker import QualityRanker

    model = QualityRanker(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_RANKER.items()}
    )
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16)))
    prefix = tmp_path_factory.mktemp("ranker") / "ranker"
    cal = {"qualities": [1, 50, 95], "scores": [-1e3, 0.0, 1e3]}
    meta = {"kind": "ranker", "model": TINY_RANKER, "step": 0}
    pretrained.save_variables(prefix, variables, meta)
    meta_path = prefix.with_name("ranker.json")
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "calibration": cal}))
    return prefix
