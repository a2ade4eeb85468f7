"""One check of a training config before the run starts (train/config_check.py): every preset of
both configs passes it, and each bad setting is one line naming the setting."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from cqrnet_jax.errors import ConfigError
from cqrnet_jax.models.build import attention_settings, deblock_from_config
from cqrnet_jax.train.config_check import check_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["ranker", "deblock"])
def test_every_preset_passes(name):
    spec = importlib.util.spec_from_file_location(f"_presets_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for preset in module.PRESETS:
        check_config(module.get_config(preset))


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("optim.schedule", "cosin", "optim.schedule: one of constant, step, cosine, not 'cosin'"),
        ("data.backend", "torch", "data.backend: one of numpy, tf, auto, not 'torch'"),
        ("model.nl_attention", "flash", "model.nl_attention: one of chunked, xla, cudnn, not"),
        ("model.arch", "rnan", "model.arch: one of cqr, unet, chroma, arcnn, dncnn, not 'rnan'"),
        ("loss.pixel", "l1", "loss.pixel: one of mae, mse, not 'l1'"),
        ("log_every", -5, "log_every must be 0 or more, got -5"),
        ("batch_size", 0, "batch_size must be 1 or more, got 0"),
        ("optim.decay_steps", 0, "optim.decay_steps must be 1 or more, got 0"),
        ("loss.boundary", -0.1, "loss.boundary must be 0.0 or more, got -0.1"),
        ("loss.blocking", -1.0, "loss.blocking must be 0.0 or more, got -1.0"),
        ("loss.ranker", "shipped", "loss.ranker: the shipped guide is now called 'default'"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(setting, value, message, deblock_config):
    config = deblock_config("smoke")
    node, *path = [config, *setting.split(".")]
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as caught:
        check_config(config)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_model_config_without_newer_keys_gets_the_defaults():
    """An export written before a key existed (the shipped model's has no nl_chunk, nl_attention,
    arch, ...) is rebuilt with the defaults of config_base.deblock_model_defaults."""
    old = dict(features=8, num_local_groups=1, dilations=[1, 2, 4], nl_inner=4, nl_window=16)
    model = deblock_from_config(old)
    assert model.attention == attention_settings(old)
    assert (model.attention.chunk, model.attention.implementation) == (16, "chunked")
    assert deblock_from_config(old, attention="xla").attention.implementation == "xla"
