"""Shared test helpers: the training config presets loaded from configs/, and TensorFlow (skipped
when it is not installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
