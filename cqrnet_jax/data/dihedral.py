"""The 8 flips and rotations of an image (the dihedral group D4), numbered 0..7: training draws
one per patch (`plans.py`), the x8 self-ensemble averages over all of them (`ensemble.py`)."""

from __future__ import annotations

import numpy as np

NUM_TRANSFORMS = 8


def dihedral(y: np.ndarray, index: int) -> np.ndarray:
    """`y` (H, W, ...) turned `index % 4` quarter turns counter-clockwise, then mirrored left-right
    when `index` >= 4; C-contiguous."""
    out = np.rot90(y, int(index) % 4)
    return np.ascontiguousarray(out[:, ::-1] if index >= 4 else out)


def undo_dihedral(y: np.ndarray, index: int) -> np.ndarray:
    """The inverse of `dihedral(., index)`: `undo_dihedral(dihedral(y, i), i)` is `y`."""
    out = y[:, ::-1] if index >= 4 else y
    return np.ascontiguousarray(np.rot90(out, -(int(index) % 4)))
