"""The JPEG quality an image was decoded from, read from its pixels (`grid_quality`).

A decoded JPEG saved losslessly (a PNG of a JPEG, a screenshot of one at 100 %) has lost its
quantization tables, but not their trace: every 8×8 block of its luma, transformed again by the
DCT, has coefficients within rounding noise of whole multiples of the table's steps. For each IJG
quality we count, at every DCT position, the coefficients that are not quantized to zero
(|C| > T/2, T the step) and lie within HIT_DISTANCE of a multiple of T, correct that rate for
chance (2·HIT_DISTANCE / T) and average over positions. The decoded quality's table scores near
1 (0.5-1 from colour conversion and clipping noise); a table whose steps divide it scores as high,
a coarser or unrelated table near 0, so the answer is the lowest quality within TIE of the best
score. An image never JPEG-compressed on this grid (clean, cropped off the grid, resized) scores
near 0 everywhere: None; so does an image of fewer than MIN_BLOCKS blocks, or one whose best
scores stand fewer than MIN_Z standard deviations above chance.

Measured on scikit-image's camera, astronaut, coffee and chelsea at IJG qualities 5-95 (grey,
and colour through 4:2:0 and back to RGB): the exact quality or one below (QF 49 or 39 for
50 or 40, whose tables share their low steps), and None for the clean photos and for a JPEG
cropped off its block grid. On 128 x 128 crops of 15 of its photos at QF 5-95, 10 of 304 read
wrong, every one too high (71-92 for QF 5-70; benchmarks/jpeg_history_crops.py,
experiments/results/jpeg_history_crops.txt): a model told too high a quality restores too
gently, not too hard. tests/test_jpeg_history.py checks the full-size photos.
"""

from __future__ import annotations

import numpy as np

from .consistency import _D, _blocks
from .jpeg import ijg_luma_table

HIT_DISTANCE = 1.0  # a coefficient within this of a multiple of the step is on the lattice
MIN_SCORE = 0.25  # the best table's score below this: no JPEG history on this grid
MIN_Z = 8.0  # nor when its hits stand fewer standard deviations above chance (small images)
TIE = 0.05  # tables within this of the best score explain the image as well: the coarsest wins
MIN_COUNT = 20  # DCT positions with fewer non-zero coefficients say nothing
MIN_BLOCKS = 256  # smaller images (under 128 x 128 pixels) say too little: None
MAX_SIDE = 1024  # larger images are read on a centred, grid-aligned crop of this side

_TABLES = np.stack([ijg_luma_table(q).reshape(64).astype(np.float64) for q in range(1, 101)])


def jfif_luma(pixels: np.ndarray) -> np.ndarray:
    """The luma a JPEG encoder computes (JFIF, full range) of (H, W) grey or (H, W, 3+) RGB."""
    pixels = np.asarray(pixels, np.float64)
    if pixels.ndim == 2:
        return pixels
    return pixels[..., :3] @ np.array([0.299, 0.587, 0.114])


def _crop(y: np.ndarray, side: int) -> np.ndarray:
    """`y`'s centred crop of at most `side` a side, on the block grid, cut to whole blocks."""
    h, w = y.shape[:2]
    top, left = (max(0, h - side) // 2) // 8 * 8, (max(0, w - side) // 2) // 8 * 8
    y = y[top : top + side, left : left + side]
    return y[: y.shape[0] // 8 * 8, : y.shape[1] // 8 * 8]


def lattice_scores(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, z), each (100,): how well each IJG quality's luma table explains the DCT
    coefficients of `y`'s 8×8 blocks (the grid at its top-left corner), 1 for a perfect fit,
    about 0 for none, and how many standard deviations of chance its hits stand above chance;
    NaN where the table leaves too few non-zero coefficients to judge."""
    y = _crop(np.asarray(y, np.float64), MAX_SIDE)  # a no-op on `grid_quality`'s crop
    out, z = np.full(len(_TABLES), np.nan), np.full(len(_TABLES), np.nan)
    if y.size == 0:
        return out, z
    coef = (_D @ _blocks(y - 128.0) @ _D.T).reshape(-1, 64)
    for i, step in enumerate(_TABLES):
        nonzero = np.abs(coef) > step / 2
        off = np.abs(coef - step * np.round(coef / step))
        counted = nonzero.sum(axis=0)
        hits = (nonzero & (off < HIT_DISTANCE)).sum(axis=0)
        usable = (counted >= MIN_COUNT) & (step > 2 * HIT_DISTANCE)
        if not usable.any():
            continue
        chance = 2 * HIT_DISTANCE / step[usable]
        n, k = counted[usable], hits[usable]
        out[i] = np.average((k / n - chance) / (1 - chance), weights=n)
        z[i] = (k.sum() - (n * chance).sum()) / np.sqrt((n * chance * (1 - chance)).sum())
    return out, z


def grid_quality(pixels: np.ndarray) -> int | None:
    """The IJG quality (1-100) of the JPEG that `pixels` ((H, W) grey or (H, W, 3) RGB, uint8)
    were decoded from, with its block grid at the top-left corner; None when they carry no such
    trace (never a JPEG, cropped off the grid, resized, or every table too fine to judge)."""
    pixels = _crop(np.asarray(pixels), MAX_SIDE)
    if pixels.shape[0] * pixels.shape[1] < MIN_BLOCKS * 64:
        return None
    scores, z = lattice_scores(jfif_luma(pixels))
    if np.all(np.isnan(scores)):
        return None
    best = np.nanmax(scores)
    explains = np.flatnonzero((scores >= best - TIE) & (z >= MIN_Z))  # NaN compares False
    if best < MIN_SCORE or not explains.size:
        return None
    return int(explains[0]) + 1
