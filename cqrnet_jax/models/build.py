"""Networks from their configs, and trained ones from parameter files.

A config's (or an export's `.json`) `model` dict rebuilds the Flax module; `load_*_model` read a
prefix written by `pretrained.save_variables` (the shipped models, a training run's exports).
Inference, export, evaluation and training all build their networks here.
"""

from __future__ import annotations

import os

import jax.numpy as jnp

from cqrnet_jax import pretrained
from cqrnet_jax.config_base import deblock_model_defaults
from cqrnet_jax.errors import ConfigError, InputError
from cqrnet_jax.models.baselines import ARCNN, DnCNN
from cqrnet_jax.models.deblock import DeblockNet
from cqrnet_jax.models.layers import ATTENTION, AttentionSettings
from cqrnet_jax.models.ranker import QualityRanker
from cqrnet_jax.models.unet import ChromaUNet, UNetDeblocker

ARCHITECTURES = ("cqr", "unet", "chroma", "arcnn", "dncnn")  # model.arch of a de-blocker config
CHANNELS = (1, 3)  # model.channels: Y (every arch but chroma) | RGB (unet and chroma)


def deblock_from_config(model_cfg, dtype: str | None = None, attention: str | None = None):
    """The de-blocker of a config's (or an export's) `model`, its missing keys at their defaults
    (`config_base.deblock_model_defaults`): `DeblockNet` (`arch` "cqr"), `UNetDeblocker`,
    `ChromaUNet` or a Table 2 baseline (`ARCNN`, `DnCNN`); `dtype` overrides its compute dtype
    (e.g. float32 inference of a model trained in bfloat16: the parameters are float32 either
    way) and `attention` its attention's implementation (e.g. "chunked" for whole photos)."""
    cfg = {**deblock_model_defaults(), **model_cfg}
    check_deblock_model(cfg)
    arch, compute = cfg["arch"], jnp.dtype(dtype or cfg["dtype"])
    if arch == "arcnn":
        return ARCNN(dtype=compute)
    if arch == "dncnn":
        return DnCNN(
            depth=cfg["depth"],
            features=cfg["features"],
            residual_init=cfg["residual_init"],
            dtype=compute,
        )
    settings = attention_settings(cfg, attention)
    if arch == "unet":
        return UNetDeblocker(
            features=tuple(cfg["widths"]),
            blocks=tuple(cfg["blocks"]),
            dilations=tuple(cfg["dilations"]),
            attention=settings,
            dtype=compute,
            channels=int(cfg["channels"]),
            quality_input=bool(cfg["quality_input"]),
        )
    if arch == "chroma":
        return ChromaUNet(
            luma_features=tuple(cfg["widths"]),
            luma_blocks=tuple(cfg["blocks"]),
            features=tuple(cfg["chroma_widths"]),
            blocks=tuple(cfg["chroma_blocks"]),
            dilations=tuple(cfg["dilations"]),
            attention=settings,
            dtype=compute,
            quality_input=bool(cfg["quality_input"]),
        )
    return DeblockNet(
        features=cfg["features"],
        num_local_groups=cfg["num_local_groups"],
        dilations=tuple(cfg["dilations"]),
        attention=settings,
        dtype=compute,
        scan_groups=cfg["scan_groups"],
        remat=cfg["remat"],
    )


def attention_settings(model_cfg, implementation: str | None = None) -> AttentionSettings:
    """The non-local attention's settings of a config's `model` (missing keys at their
    defaults), with `implementation` in place of its own if given."""
    cfg = {**deblock_model_defaults(), **model_cfg}
    return AttentionSettings(
        inner=cfg["nl_inner"],
        window=cfg["nl_window"],
        subsample=cfg["nl_subsample"],
        chunk=cfg["nl_chunk"],
        implementation=implementation or cfg["nl_attention"],
    )


def check_deblock_model(model_cfg) -> None:
    """ConfigError (one line naming the key) unless the de-blocker's choices are known ones (and
    3 channels, colour, only with the U-Nets; the chroma U-Net only in colour)."""
    choices = dict(arch=ARCHITECTURES, nl_attention=ATTENTION, residual_init=("zeros", "he"))
    choices["dtype"] = ("float32", "bfloat16")
    choices["channels"] = CHANNELS
    for key, known in choices.items():
        if key in model_cfg and model_cfg[key] not in known:
            known = ", ".join(str(k) for k in known)
            raise ConfigError(f"model.{key}: one of {known}, not {model_cfg[key]!r}")
    cfg = {**deblock_model_defaults(), **model_cfg}
    channels, arch = cfg["channels"], cfg["arch"]
    if channels != 1 and arch not in ("unet", "chroma"):
        raise ConfigError(f"model.channels={channels} needs model.arch=unet, not {arch!r}")
    if arch == "chroma" and channels != 3:
        raise ConfigError(f"model.arch=chroma is a colour model: model.channels=3, not {channels}")
    if cfg["quality_input"] and not (arch == "chroma" or (arch == "unet" and channels == 1)):
        raise ConfigError(
            "model.quality_input needs the grey U-Net (model.arch=unet, channels=1) or the "
            "chroma U-Net (model.arch=chroma, whose Y model it conditions)"
        )


def size_alignment(model) -> int:
    """What image sides (and tile origins) must be multiples of for a de-blocker to see the same
    attention windows as the whole image: 1 for the networks without attention."""
    return getattr(model, "alignment", 1)


def ranker_from_config(model_cfg) -> QualityRanker:
    return QualityRanker(
        features=tuple(model_cfg["features"]),
        strides=tuple(model_cfg["strides"]),
        hidden=model_cfg["hidden"],
        negative_slope=model_cfg["negative_slope"],
    )


class NotAModelError(InputError):
    """A parameter file that is not the kind of model asked for."""


def _load(prefix: str | os.PathLike, kind: str):
    variables, meta = pretrained.load_variables(prefix)
    if "model" not in meta or meta.get("kind", kind) != kind:
        raise NotAModelError(
            f"{prefix} is not a {kind} model (kind {meta.get('kind')!r}"
            + ("" if "model" in meta else ", no 'model' config")
            + ")"
        )
    return variables, meta


def load_ranker_model(prefix: str | os.PathLike):
    """(module, variables, meta) of a ranker written by `save_variables`; FileNotFoundError if
    it is missing, NotAModelError if it is not a ranker."""
    variables, meta = _load(prefix, "ranker")
    return ranker_from_config(meta["model"]), variables, meta


def load_deblock_model(
    prefix: str | os.PathLike, dtype: str | None = None, attention: str | None = None
):
    """(module, variables, meta) of a de-blocker written by `save_variables`, computing in
    `dtype` with `attention` (default: as it was trained); errors as `load_ranker_model`. A
    quality-conditioned U-Net (`quality_input`) is called with each image's JPEG quality
    (`inference.Restorer.for_quality`)."""
    variables, meta = _load(prefix, "deblock")
    return deblock_from_config(meta["model"], dtype, attention), variables, meta
