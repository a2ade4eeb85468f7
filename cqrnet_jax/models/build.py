"""Networks from their configs, and trained ones from parameter files.

A config's (or an export's `.json`) `model` dict rebuilds the Flax module; `load_*_model` read a
prefix written by `pretrained.save_variables` (the shipped models, a training run's exports).
Inference, export, evaluation and training all build their networks here.
"""

from __future__ import annotations

import math
import os

import jax.numpy as jnp

from cqrnet_jax import pretrained
from cqrnet_jax.errors import ConfigError, InputError
from cqrnet_jax.models.baselines import ARCNN, DnCNN
from cqrnet_jax.models.deblock import DeblockNet
from cqrnet_jax.models.ranker import QualityRanker
from cqrnet_jax.models.unet import UNetDeblocker

ARCHITECTURES = ("cqr", "unet", "arcnn", "dncnn")  # model.arch of a de-blocker config


def deblock_from_config(model_cfg, dtype: str | None = None, attention: str | None = None):
    """The de-blocker of a config's (or an export's) `model`: `DeblockNet` (`arch` "cqr", the
    default), or a Table 2 baseline (`ARCNN`, `DnCNN`); `dtype` overrides its compute dtype (e.g.
    float32 inference of a model trained in bfloat16: the parameters are float32 either way) and
    `attention` DeblockNet's `nl_attention` (e.g. "chunked" for whole photos)."""
    arch = model_cfg.get("arch", "cqr")
    compute = jnp.dtype(dtype or model_cfg.get("dtype", "float32"))
    if arch == "arcnn":
        return ARCNN(dtype=compute)
    if arch == "dncnn":
        if (start := model_cfg.get("residual_init", "zeros")) not in ("zeros", "he"):
            raise ConfigError(f"model.residual_init: zeros or he, not {start!r}")
        return DnCNN(
            depth=model_cfg.get("depth", 20),
            features=model_cfg["features"],
            residual_init=start,
            dtype=compute,
        )
    if arch == "unet":
        return UNetDeblocker(
            features=tuple(model_cfg["widths"]),
            blocks=tuple(model_cfg["blocks"]),
            dilations=tuple(model_cfg["dilations"]),
            nl_inner=model_cfg["nl_inner"],
            nl_window=model_cfg["nl_window"],
            nl_chunk=model_cfg.get("nl_chunk", 16),
            dtype=compute,
        )
    if arch != "cqr":
        raise ConfigError(f"model.arch: one of {', '.join(ARCHITECTURES)}, not {arch!r}")
    return DeblockNet(
        features=model_cfg["features"],
        num_local_groups=model_cfg["num_local_groups"],
        dilations=tuple(model_cfg["dilations"]),
        nl_inner=model_cfg["nl_inner"],
        nl_window=model_cfg["nl_window"],
        nl_subsample=model_cfg.get("nl_subsample", 1),
        nl_chunk=model_cfg.get("nl_chunk", 16),
        nl_attention=attention or model_cfg.get("nl_attention", "chunked"),
        dtype=compute,
        scan_groups=model_cfg.get("scan_groups", False),
        remat=model_cfg.get("remat", False),
    )


def size_alignment(model) -> int:
    """What image sides (and tile origins) must be multiples of for a de-blocker to see the same
    attention windows as the whole image: 1 for the networks without attention."""
    if hasattr(model, "alignment"):
        return model.alignment
    window = getattr(model, "nl_window", None)
    return math.lcm(window, 2) if window else 1  # whole windows, even for the stride-2 mask


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
    `dtype` with `attention` (default: as it was trained); errors as `load_ranker_model`."""
    variables, meta = _load(prefix, "deblock")
    return deblock_from_config(meta["model"], dtype, attention), variables, meta
