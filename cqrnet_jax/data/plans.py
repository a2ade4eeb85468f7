"""The per-step plans of the training input (`pipeline.py`): which image, where to crop, which of
the 8 flips/rotations, which JPEG qualities, drawn from `np.random.default_rng([seed, process,
step])`. Both input backends (NumPy and tf.data) execute these plans, so they agree batch for
batch and a resumed run needs no iterator state."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cqrnet_jax.errors import ConfigError


def quality_levels(qmin: int, qmax: int, num_levels: int) -> list[tuple[int, int]]:
    """Splits [qmin, qmax] into `num_levels` ranges: (1, 30, 3) -> [1,10], [11,20], [21,30]."""
    if not 1 <= qmin <= qmax <= 100 or not 2 <= num_levels <= qmax - qmin + 1:
        raise ConfigError(f"bad quality range [{qmin}, {qmax}] with {num_levels} levels")
    return [(int(c[0]), int(c[-1])) for c in np.array_split(np.arange(qmin, qmax + 1), num_levels)]


def plan_rng(seed: int, process_index: int, step: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(process_index), int(step)])


def sample_crops(rng, shapes: Sequence[tuple[int, int]], batch: int, patch: int) -> dict:
    """Image index, top-left corner and dihedral transform (0..7) for each example."""
    index = rng.integers(len(shapes), size=batch)
    hw = np.array([shapes[i] for i in index])
    y0 = rng.integers(hw[:, 0] - patch + 1)
    x0 = rng.integers(hw[:, 1] - patch + 1)
    transform = rng.integers(8, size=batch)
    return dict(index=index, y0=y0, x0=x0, transform=transform)


def sample_ranker_qualities(rng, batch: int, levels: Sequence[tuple[int, int]]):
    """Two qualities per example from two different levels; labels are level numbers (1 = worst)."""
    n = len(levels)
    la = rng.integers(n, size=batch)
    lb = (la + rng.integers(1, n, size=batch)) % n
    labels = np.stack([la, lb], axis=1)
    lo = np.array([lv[0] for lv in levels])[labels]
    hi = np.array([lv[1] for lv in levels])[labels]
    quality = rng.integers(lo, hi + 1)
    return quality.astype(np.int32), (labels + 1).astype(np.int32)


def sample_deblock_qualities(rng, batch: int, qualities: Sequence[int]):
    """One quality per example; every batch holds the configured QFs in equal shares (as far as the
    batch size allows), shuffled."""
    quality = rng.permutation(np.resize(np.asarray(qualities), batch))[:, None]
    return quality.astype(np.int32), np.zeros_like(quality, np.int32)


def dihedral(patch: np.ndarray, transform: int) -> np.ndarray:
    """Transform 0..7: rotate 90° counter-clockwise `transform % 4` times, then mirror if >= 4."""
    out = np.rot90(patch, int(transform) % 4)
    return np.ascontiguousarray(out[:, ::-1] if transform >= 4 else out)


class PlanSampler:
    """Draws the per-step plans (crops + untransformed patches + qualities) for one process."""

    def __init__(
        self,
        images,
        *,
        patch_size,
        local_batch,
        seed,
        process_index,
        mode,
        levels=None,
        qualities=None,
    ):
        small = [i for i, im in enumerate(images) if min(im.shape) < patch_size]
        if small:
            raise ConfigError(f"{len(small)} training image(s) smaller than patch {patch_size}")
        if mode not in ("ranker", "deblock"):
            raise ValueError(f"unknown pipeline mode {mode!r}")
        self.images = images
        self.shapes = [im.shape for im in images]
        self.patch, self.batch, self.mode = patch_size, local_batch, mode
        self.seed, self.process_index = seed, process_index
        self.levels, self.qualities = levels, qualities

    def plan(self, step: int) -> dict:
        rng = plan_rng(self.seed, self.process_index, step)
        plan = sample_crops(rng, self.shapes, self.batch, self.patch)
        if self.mode == "ranker":
            plan["quality"], plan["label"] = sample_ranker_qualities(rng, self.batch, self.levels)
        else:
            plan["quality"], plan["label"] = sample_deblock_qualities(
                rng, self.batch, self.qualities
            )
        p = self.patch
        plan["patch"] = np.stack(
            [
                self.images[i][y : y + p, x : x + p]
                for i, y, x in zip(plan["index"], plan["y0"], plan["x0"])
            ]
        )
        return plan
