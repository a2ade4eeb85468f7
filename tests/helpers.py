"""Helpers shared by several test modules (images, files, command runs); fixtures that several
modules use are in conftest.py."""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest
import skimage.data
from PIL import Image

from cqrnet_jax.apps.cli import main
from cqrnet_jax.data.datasets import DATA_DIR_ENV


def photo(h=48, w=64, colour=True, seed=0):
    """Smooth gradient plus noise: real JPEG work at every quality."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([3 * xx, 4 * yy, 2 * xx + 2 * yy], axis=-1) + rng.normal(0, 12, (h, w, 3))
    rgb = base.clip(0, 255).astype(np.uint8)
    return rgb if colour else rgb[..., 1]


def png_header_only(width, height):
    """A PNG claiming width x height whose pixel data is one empty zlib stream (~70 bytes)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat, end = zlib.compress(b""), b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", end)


H, W = 40, 56  # every test image: one compiled program


def grey():
    return skimage.data.camera()[200 : 200 + H, 180 : 180 + W]


def rgb():
    return skimage.data.astronaut()[60 : 60 + H, 200 : 200 + W]


def save_jpeg(path: Path, pixels) -> Path:
    Image.fromarray(pixels).save(path, format="JPEG", quality=20)
    return path


def save_rgba(path: Path) -> Path:
    alpha = np.random.default_rng(2).integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(np.dstack([rgb(), alpha]), mode="RGBA").save(path)
    return path


def deblock(capsys, model, *args):
    """(exit status, stderr) of `cqrnet-jax deblock ARGS --model MODEL`."""
    capsys.readouterr()
    code = main(["deblock", *map(str, args), "--model", model])
    return code, capsys.readouterr().err


def error_lines(err: str) -> list[str]:
    """The 'error: ...' lines of stderr, each required to start a line of its own (progress-bar
    redraws, which go through carriage returns, split off)."""
    lines = [line.strip() for line in re.split(r"[\r\n]", err) if "error:" in line]
    assert all(line.startswith("error: ") for line in lines), lines  # not glued to the bar
    return lines


def assert_trees_equal(a, b):
    """Two pytrees of arrays with the same structure and bit-identical leaves."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def cached_compile_env(cache_dir: str) -> dict:
    """os.environ for a subprocess that shares the tests' persistent compilation cache."""
    env = dict(os.environ)
    env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def shared_data_dir(*folders: str) -> Path:
    """The data folder CQRNET_DATA_DIR names, or a skip saying so (in pytest's summary: -rs) when
    it is unset or lacks one of `folders`."""
    root = os.environ.get(DATA_DIR_ENV)
    if not root:
        pytest.skip(f"needs {DATA_DIR_ENV}: the evaluation sets (cqrnet-jax fetch-data)")
    missing = [f for f in folders if not (Path(root) / f).is_dir()]
    if missing:
        pytest.skip(f"needs {DATA_DIR_ENV} with {', '.join(missing)}: {root} lacks it")
    return Path(root)


def save_perturbed_deblocker(model_cfg: dict, input_shape, prefix, scale: float) -> str:
    """A de-blocker of `model_cfg` with every parameter perturbed by N(0, scale^2) (not the
    identity), saved as a params prefix that `--model` accepts; returns the prefix."""
    import jax.numpy as jnp

    from cqrnet_jax import pretrained
    from cqrnet_jax.models.build import deblock_from_config

    model = deblock_from_config(model_cfg)
    key = jax.random.key(0, impl="unsafe_rbg")  # compiles in a third of threefry's time
    x = jnp.zeros(input_shape, jnp.float32)
    if model_cfg.get("quality_input"):  # a quality-conditioned U-Net is built told a quality
        init = jax.jit(lambda k, x: model.init(k, x, quality=jnp.full(x.shape[:1], 50.0)))
    else:
        init = jax.jit(model.init)
    variables = jax.device_get(init(key, x))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(
        lambda a: (a + scale * rng.standard_normal(a.shape)).astype(np.float32), variables
    )
    pretrained.save_variables(prefix, variables, {"kind": "deblock", "model": model_cfg})
    return str(prefix)
