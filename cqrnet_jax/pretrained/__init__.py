"""Parameter files: shipped weights (inside this folder) and exports from training runs.

A model is two files with one prefix: `PREFIX.msgpack` (Flax variables: params and BatchNorm
statistics, nothing of the optimizer) and `PREFIX.json` (what is needed to rebuild and use it:
the model's config, calibrations, provenance). A large model may be split into byte ranges
`PREFIX.msgpack.00`, `.01`, ... (concatenated, they are `PREFIX.msgpack`) to fit per-file limits.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from cqrnet_jax.errors import InputError, MissingFileError

HERE = Path(__file__).resolve().parent

# Two shipped rankers, one network: GUIDE is stage 1 as the paper trains it (versions of one crop
# ranked against each other); stage 2's losses go through it. ESTIMATOR is GUIDE fine-tuned with
# cross-image pairs as well, so that scores also compare across photos: the blind JPEG-quality
# estimator behind `estimate`, `ranker_eval` and `export --what ranker` by default.
GUIDE = "ranker"
ESTIMATOR = "ranker_blind"


def _weight_files(prefix: Path) -> list[Path]:
    """The split parts PREFIX.msgpack.00, .01, ... that exist, in order."""
    parts = []
    while (part := prefix.with_name(f"{prefix.name}.msgpack.{len(parts):02d}")).is_file():
        parts.append(part)
    return parts


def save_variables(
    prefix: str | os.PathLike, variables, meta: dict, *, split_bytes: int = 0
) -> None:
    """Writes `prefix.msgpack` + `prefix.json` (atomically: temp files, then rename); with
    `split_bytes`, the weights go to parts of at most that many bytes instead (old weight files
    of the prefix, whole or split, are removed so the two can never be mixed up)."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    host = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), variables)
    data = serialization.msgpack_serialize(host)
    whole = prefix.with_name(prefix.name + ".msgpack")
    if split_bytes and len(data) > split_bytes:
        chunks = [data[i : i + split_bytes] for i in range(0, len(data), split_bytes)]
        files = [(f".msgpack.{i:02d}", c) for i, c in enumerate(chunks)]
    else:
        files = [(".msgpack", data)]
    stale = [*_weight_files(prefix), *([whole] if whole.is_file() else [])]
    files.append((".json", json.dumps(meta, indent=2, sort_keys=True).encode()))
    written = set()
    for suffix, content in files:
        target = prefix.with_name(prefix.name + suffix)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(content)
        os.replace(tmp, target)
        written.add(target)
    for path in stale:
        if path not in written:
            path.unlink()


def _weights_sha256(prefix: Path) -> str:
    whole = prefix.with_name(prefix.name + ".msgpack")
    parts = [whole] if whole.is_file() else _weight_files(prefix)
    return hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()


def save_sharing(prefix: str | os.PathLike, variables, meta: dict, shared: dict[str, str]):
    """`save_variables` without the params subtrees that are a shipped model's params: `shared`
    maps a subtree (e.g. a chroma U-Net's "luma") to the shipped model it equals (e.g.
    "deblock"), which `load_variables` puts back, checking that model's weights are the very
    ones the subtree was (their SHA-256), so a model ships without a second copy of another."""
    params = dict(variables["params"])
    refs = {}
    for key, name in shared.items():
        theirs, _ = load_variables(shipped(name))
        same = jax.tree.map(np.array_equal, jax.device_get(params.pop(key)), theirs["params"])
        if not all(jax.tree.leaves(same)):
            raise ValueError(f"params[{key!r}] are not the shipped {name!r} model's")
        refs[key] = {"model": name, "sha256": _weights_sha256(shipped(name))}
    save_variables(prefix, {**variables, "params": params}, {**meta, "shared_params": refs})


def load_variables(prefix: str | os.PathLike):
    """Returns (variables, meta) for a prefix written by `save_variables` (or `save_sharing`,
    the shared params put back); MissingFileError if a file is missing, InputError if one is not
    what `save_variables` writes or a shared model is no longer the one it was saved with."""
    variables, meta = _load_own(prefix)
    for key, ref in meta.get("shared_params", {}).items():
        if _weights_sha256(shipped(ref["model"])) != ref["sha256"]:
            raise InputError(
                f"{prefix}: made with another shipped {ref['model']!r} model than this one; "
                f"save it again with its own params[{key!r}]"
            )
        theirs, _ = _load_own(shipped(ref["model"]))
        variables = {**variables, "params": {**variables["params"], key: theirs["params"]}}
    return variables, meta


def _load_own(prefix: str | os.PathLike):
    prefix = Path(prefix)
    weights, meta = (
        prefix.with_name(prefix.name + ".msgpack"),
        prefix.with_name(prefix.name + ".json"),
    )
    parts = [weights] if weights.is_file() else _weight_files(prefix)
    if not parts or not meta.is_file():
        raise MissingFileError(f"{prefix}: expected {weights.name} and {meta.name}")
    try:
        variables = serialization.msgpack_restore(b"".join(p.read_bytes() for p in parts))
        return variables, json.loads(meta.read_text())
    except ValueError as err:  # msgpack's and json's errors on damaged files
        raise InputError(f"{prefix}: not a parameter file ({err})") from None


def shipped(name: str) -> Path:
    """Prefix of a model shipped with the package ('ranker', 'ranker_blind', 'deblock',
    'deblock_color')."""
    return HERE / name


# Each kind of model: the shipped one that 'default' means, and the name of a training run's
# export (colour de-blockers are trained by the de-blocking task, so they export as "deblock").
# The guide is a ranker too: "default" means GUIDE for stage 2's losses, ESTIMATOR elsewhere.
DEFAULTS = {"deblock": "deblock", "color": "deblock_color", "ranker": ESTIMATOR, "guide": GUIDE}
EXPORTS = {"deblock": "deblock", "color": "deblock", "ranker": "ranker", "guide": "ranker"}


def resolve_model_prefix(spec: str | os.PathLike, kind: str = "deblock") -> Path:
    """The params prefix of a `--model` (or `--ranker`, `--color-model`) value for a model of
    `kind` ('deblock', 'color', 'ranker' or 'guide'): 'default' -> the shipped one (`DEFAULTS`); a
    training workdir -> its export; a `.msgpack` or `.json` file -> its prefix; anything else ->
    itself."""
    if spec == "default":
        return shipped(DEFAULTS[kind])
    path = Path(spec)
    if path.is_dir() and (path / "export" / f"{EXPORTS[kind]}.msgpack").is_file():
        return path / "export" / EXPORTS[kind]
    if path.suffix in (".msgpack", ".json"):
        return path.with_suffix("")
    return path
