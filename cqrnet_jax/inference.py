"""Full-image inference of the de-blocking network at any size, with bounded memory.

Large images go through in tiles with an overlapping margin of context. The non-local windows
are anchored at the image's top-left corner and every tile's origin is a multiple of the window,
so a tile sees exactly the windows the whole image would; the margin absorbs the convolutions'
border effects (tests/test_inference.py bounds the difference to one grey level).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import jax
import numpy as np

from cqrnet_jax import pretrained


def _align(model) -> int:
    window = getattr(model, "nl_window", 1)
    return window * 2 // math.gcd(window, 2)  # whole windows, and even for the stride-2 mask


class Restorer:
    """Callable: JPEG-decoded Y uint8 (H, W) -> restored Y uint8 (H, W)."""

    def __init__(self, model, variables, *, tile: int = 0, margin: int = 48):
        self.model, self.variables = model, variables
        align = _align(model)
        self.tile = -(-tile // align) * align if tile else 0
        self.margin = -(-margin // align) * align
        self.progress = None  # tqdm-like, `update(1)` per tile when restore_float is given none
        self._apply = jax.jit(lambda v, x: model.apply(v, x))

    def tiles(self, h: int, w: int):
        """(output box, input box) pairs covering an (h, w) image: boxes are (y0, y1, x0, x1)."""
        t, m = self.tile, self.margin
        if not t or (h <= t and w <= t):
            yield (0, h, 0, w), (0, h, 0, w)
            return
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                out = (y0, min(h, y0 + t), x0, min(w, x0 + t))
                yield out, (max(0, y0 - m), min(h, y0 + t + m), max(0, x0 - m), min(w, x0 + t + m))

    def restore_float(self, y, progress=None) -> np.ndarray:
        """Float (H, W) image in [0, 1] -> restored float (H, W), unclipped."""
        progress = self.progress if progress is None else progress
        y = np.asarray(y, np.float32)
        out = np.empty_like(y)
        for (a0, a1, b0, b1), (c0, c1, d0, d1) in self.tiles(*y.shape):
            res = np.asarray(self._apply(self.variables, y[None, c0:c1, d0:d1]))[0]
            out[a0:a1, b0:b1] = res[a0 - c0 : a1 - c0, b0 - d0 : b1 - d0]
            if progress is not None:
                progress.update(1)
        return out

    def __call__(self, y_uint8: np.ndarray) -> np.ndarray:
        restored = self.restore_float(np.asarray(y_uint8, np.float32) / 255.0)
        return np.clip(np.round(restored * 255.0), 0, 255).astype(np.uint8)


def resolve_model_prefix(spec: str) -> Path:
    """'default' -> the shipped model; a workdir -> its exported params; else a params prefix."""
    if spec == "default":
        return pretrained.shipped("deblock")
    path = Path(spec)
    if path.is_dir() and (path / "export" / "deblock.msgpack").is_file():
        return path / "export" / "deblock"
    if path.suffix in (".msgpack", ".json"):
        return path.with_suffix("")
    return path


def load_restorer(spec: str = "default", *, tile: int = 0) -> tuple[Restorer, dict]:
    """A Restorer for 'default', a training workdir or a params prefix, and the model's meta."""
    from cqrnet_jax.train.deblock_task import deblock_from_config

    prefix = resolve_model_prefix(spec)
    try:
        variables, meta = pretrained.load_variables(prefix)
    except FileNotFoundError:
        where = "the package's shipped model" if spec == "default" else os.fspath(prefix)
        raise FileNotFoundError(f"no de-blocking model found at {where}") from None
    model = deblock_from_config(meta["model"])
    return Restorer(model, jax.tree.map(np.asarray, variables), tile=tile), meta
