"""Parameter files: shipped weights (inside this folder) and exports from training runs.

A model is two files with one prefix: `PREFIX.msgpack` (Flax variables: params and BatchNorm
statistics, nothing of the optimizer) and `PREFIX.json` (what is needed to rebuild and use it:
the model's config, calibrations, provenance).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
from flax import serialization

HERE = Path(__file__).resolve().parent

# Two shipped rankers, one network: GUIDE is stage 1 as the paper trains it (versions of one crop
# ranked against each other); stage 2's losses go through it. ESTIMATOR is GUIDE fine-tuned with
# cross-image pairs as well, so that scores also compare across photos: the blind JPEG-quality
# estimator behind `estimate`, `ranker_eval` and `export --what ranker` by default.
GUIDE = "ranker"
ESTIMATOR = "ranker_blind"


def save_variables(prefix: str | os.PathLike, variables, meta: dict) -> None:
    """Writes `prefix.msgpack` + `prefix.json` (atomically: temp files, then rename)."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    host = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), variables)
    for suffix, data in (
        (".msgpack", serialization.msgpack_serialize(host)),
        (".json", json.dumps(meta, indent=2, sort_keys=True).encode()),
    ):
        tmp = prefix.with_name(prefix.name + suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, prefix.with_name(prefix.name + suffix))


def load_variables(prefix: str | os.PathLike):
    """Returns (variables, meta) for a prefix written by `save_variables`."""
    prefix = Path(prefix)
    weights, meta = (
        prefix.with_name(prefix.name + ".msgpack"),
        prefix.with_name(prefix.name + ".json"),
    )
    if not weights.is_file() or not meta.is_file():
        raise FileNotFoundError(f"{prefix}: expected {weights.name} and {meta.name}")
    variables = serialization.msgpack_restore(weights.read_bytes())
    return variables, json.loads(meta.read_text())


def shipped(name: str) -> Path:
    """Prefix of a model shipped with the package ('ranker', 'ranker_blind', 'deblock')."""
    return HERE / name
