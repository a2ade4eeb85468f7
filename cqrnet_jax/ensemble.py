"""The x8 self-ensemble ("+" results of EDSR and RNAN): restore the 8 flips and rotations of the
input, undo each on its result, and average.

`SelfEnsemble` wraps an `inference.Restorer` and is used as one (`__call__`, `restore_float`,
`restore_batch`, `tiles`, `progress`), so tiles and canvases work unchanged: each transformed
image goes through the wrapped restorer's own mode (a rotation by 90 degrees swaps height and
width, so a canvas or a tile grid is laid out on the rotated image). It costs 8 restorations;
its gain for the shipped model: docs/usage.md "Self-ensemble".

An image whose sides are not multiples of 8 is first padded to them (bottom/right, mirrored), and
cropped back at the end: a flip or rotation then keeps the JPEG's 8x8 block grid at the origin,
where the networks expect it (the U-Net's coarse scales pool whole blocks: a shifted grid costs
its ensemble PSNR-B).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cqrnet_jax.data.dihedral import NUM_TRANSFORMS, dihedral, undo_dihedral
from cqrnet_jax.inference import to_uint8

BLOCK = 8  # the JPEG block grid the transforms keep at the origin


def grid_padded(y: np.ndarray) -> np.ndarray:
    """`y` (H, W) or (H, W, C) padded bottom/right, mirrored, to sides that are multiples of 8."""
    pad = [(0, -y.shape[0] % BLOCK), (0, -y.shape[1] % BLOCK)] + [(0, 0)] * (y.ndim - 2)
    return np.pad(y, pad, mode="symmetric") if any(p for _, p in pad) else y


class _Fraction:
    """Forwards `update(n)` as `update(n / parts)`: each of the passes counts a part of an image."""

    def __init__(self, progress, parts: int):
        self.progress, self.parts = progress, parts

    def update(self, n: int = 1) -> None:
        self.progress.update(n / self.parts)


class SelfEnsemble:
    """A restorer whose output is the mean of `restorer` over the 8 transforms of its input.

    The mean is taken on the unclipped float outputs, then rounded once. `progress` counts the
    wrapped restorer's tiles of all 8 passes in `restore_float` (`tiles` lists them), and images
    in `restore_float_batch` / `restore_batch` (an eighth per pass).
    """

    def __init__(self, restorer):
        self.restorer = restorer
        self.progress = None  # tqdm-like, as Restorer.progress

    # How the wrapped restorer runs, for reports: the same.
    tile = property(lambda self: self.restorer.tile)
    canvas = property(lambda self: self.restorer.canvas)
    max_batch = property(lambda self: self.restorer.max_batch)
    meta = property(lambda self: self.restorer.meta)
    quality_input = property(lambda self: getattr(self.restorer, "quality_input", False))

    def for_quality(self, quality: float):
        """The ensemble of the wrapped restorer told `quality` (`Restorer.for_quality`)."""
        if not self.quality_input:
            return self
        view = SelfEnsemble(self.restorer.for_quality(quality))
        view.progress = self.progress
        return view

    def tiles(self, h: int, w: int):
        """The wrapped restorer's tiles of the 8 passes, each pass on its transformed image."""
        h, w = h + -h % BLOCK, w + -w % BLOCK  # as padded (`grid_padded`)
        for index in range(NUM_TRANSFORMS):
            yield from self.restorer.tiles(*((w, h) if index % 2 else (h, w)))

    def restore_float(self, y, progress=None) -> np.ndarray:
        """Float (H, W) in [0, 1] -> the mean restored float (H, W), unclipped."""
        progress = self.progress if progress is None else progress
        y = np.asarray(y, np.float32)
        padded = grid_padded(y)
        total = np.zeros(padded.shape, np.float64)
        for index in range(NUM_TRANSFORMS):
            out = self.restorer.restore_float(dihedral(padded, index), progress)
            total += undo_dihedral(np.asarray(out), index)
        return (total[: y.shape[0], : y.shape[1]] / NUM_TRANSFORMS).astype(np.float32)

    def restore_float_batch(self, images: Sequence, progress=None) -> list[np.ndarray]:
        """`restore_float` of each image; each pass hands all images to the wrapped restorer's
        `restore_float_batch`, so canvases still batch."""
        progress = self.progress if progress is None else progress
        part = None if progress is None else _Fraction(progress, NUM_TRANSFORMS)
        images = [np.asarray(y, np.float32) for y in images]
        padded = [grid_padded(y) for y in images]
        totals = [np.zeros(p.shape, np.float64) for p in padded]
        for index in range(NUM_TRANSFORMS):
            moved = [dihedral(p, index) for p in padded]
            for total, out in zip(totals, self.restorer.restore_float_batch(moved, part)):
                total += undo_dihedral(np.asarray(out), index)
        return [
            (t[: y.shape[0], : y.shape[1]] / NUM_TRANSFORMS).astype(np.float32)
            for t, y in zip(totals, images)
        ]

    def restore_batch(self, images: Sequence[np.ndarray], progress=None) -> list[np.ndarray]:
        """Y uint8 images (any sizes) -> restored Y uint8 images, in order."""
        floats = [np.asarray(y, np.float32) / 255.0 for y in images]
        return [to_uint8(r) for r in self.restore_float_batch(floats, progress)]

    def __call__(self, y_uint8: np.ndarray) -> np.ndarray:
        return to_uint8(self.restore_float(np.asarray(y_uint8, np.float32) / 255.0))
