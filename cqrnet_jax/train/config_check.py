"""One check of a training config before anything starts: every choice known, every count in
range, each problem one line naming the setting (a ConfigError), so that a typo stops the run
at once rather than after the data are read or the step is compiled. The defaults and meanings
are in `config_base.py` and `configs/*.py`."""

from __future__ import annotations

from cqrnet_jax.data.datasets import check_color_train_sets
from cqrnet_jax.data.plans import check_color_data
from cqrnet_jax.data.sources import SOURCES
from cqrnet_jax.errors import ConfigError
from cqrnet_jax.models.build import check_deblock_model

TASKS = ("ranker", "deblock")
SCHEDULES = ("constant", "step", "cosine")
OPTIMIZERS = ("adam", "adamw")
BACKENDS = ("numpy", "tf", "auto")  # auto: numpy (accepted so saved configs naming it load)
PIXEL_LOSSES = ("mae", "mse")
CROSS_IMAGE_LABELS = ("level", "quality")


def _choice(name: str, value, known) -> None:
    if value not in known:
        raise ConfigError(f"{name}: one of {', '.join(known)}, not {value!r}")


def _at_least(config, names: str, low) -> None:
    for name in names.split():
        node = config
        for part in name.split("."):
            node = node[part]
        if node < low:
            raise ConfigError(f"{name} must be {low} or more, got {node}")


def check_config(config) -> None:
    """ConfigError (one line) for the first setting of `config` that is out of range."""
    _choice("task", config.task, TASKS)
    _choice("optim.schedule", config.optim.schedule, SCHEDULES)
    _choice("optim.name", config.optim.name, OPTIMIZERS)
    _choice("data.backend", config.data.backend, BACKENDS)
    _choice("data.source", config.data.source, SOURCES)
    _at_least(config, "batch_size num_steps keep_checkpoints data.patch_size", 1)
    _at_least(config, "host_devices log_every log_first_steps eval_every checkpoint_every", 0)
    _at_least(config, "export_every max_nonfinite_steps device_prefetch train_seconds", 0)
    _at_least(config, "optim.warmup_steps optim.warmup_begin optim.decay_begin", 0)
    _at_least(config, "optim.learning_rate", 0.0)
    if config.optim.schedule != "constant":
        _at_least(config, "optim.decay_steps", 1)
    if config.task == "deblock":
        check_deblock_model(config.model)
        _choice("loss.pixel", config.loss.pixel, PIXEL_LOSSES)
        _at_least(config, "loss.alpha loss.beta loss.boundary loss.blocking loss.chroma", 0.0)
        if config.loss.ranker == "shipped":  # the value's name before "default"
            raise ConfigError("loss.ranker: the shipped guide is now called 'default'")
        check_color(config)
    elif config.data.color:
        raise ConfigError("data.color trains a de-blocker only (the ranker is grey)")
    else:
        _choice("loss.cross_image_labels", config.loss.cross_image_labels, CROSS_IMAGE_LABELS)


def check_color(config) -> None:
    """A de-blocker config's colour settings agree: data.color with model.channels=3 (the U-Net),
    the NumPy backend, patches on 4:2:0 JPEG blocks, colour training sets, no ranker terms."""
    color, channels = bool(config.data.color), config.model.channels
    if not color:
        if channels != 1:
            raise ConfigError(f"model.channels={channels} needs data.color=True (RGB batches)")
        if config.loss.chroma:
            raise ConfigError("loss.chroma weighs the colour of RGB output: it needs data.color")
        return
    if channels != 3:
        raise ConfigError(f"data.color needs model.channels=3, not {channels}")
    if config.data.backend not in ("numpy", "auto"):
        raise ConfigError(f"data.color needs data.backend=numpy, not {config.data.backend!r}")
    check_color_data(config.data.patch_size, config.data.color_444_fraction)
    if config.loss.alpha or config.loss.beta:
        raise ConfigError(
            "data.color: the ranker's losses are grey; set loss.alpha=0 and loss.beta=0 "
            f"(got {config.loss.alpha}, {config.loss.beta})"
        )
    if config.loss.boundary or config.loss.blocking:
        raise ConfigError("data.color: loss.boundary and loss.blocking work on Y; set them to 0")
    if config.model.arch == "chroma" and not config.init_from:
        raise ConfigError(
            "model.arch=chroma keeps a grey U-Net's Y: set --config.init_from to its export"
        )
    if config.data.source == "shared":
        check_color_train_sets(tuple(config.data.train_sets))
