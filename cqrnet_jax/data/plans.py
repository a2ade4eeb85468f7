"""The per-step plans of the training input (`pipeline.py`): which image, where to crop, which of
the 8 flips/rotations, which JPEG qualities (and in a colour run, which chroma subsampling),
drawn from `np.random.default_rng([seed, 0, step])`.
Both input backends (NumPy and tf.data) execute these plans, so they agree batch for batch and a
resumed run needs no iterator state.

A plan is drawn for the whole global batch and each process executes its own rows of it (process
i: rows i*B/N to (i+1)*B/N), so the global batch of a step depends on the seed and the step only,
not on how many processes share it: N processes train on the batches of a one-process run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cqrnet_jax.data.dihedral import NUM_TRANSFORMS
from cqrnet_jax.errors import ConfigError


def quality_levels(qmin: int, qmax: int, num_levels: int) -> list[tuple[int, int]]:
    """Splits [qmin, qmax] into `num_levels` ranges: (1, 30, 3) -> [1,10], [11,20], [21,30]."""
    if not 1 <= qmin <= qmax <= 100 or not 2 <= num_levels <= qmax - qmin + 1:
        raise ConfigError(f"bad quality range [{qmin}, {qmax}] with {num_levels} levels")
    return [(int(c[0]), int(c[-1])) for c in np.array_split(np.arange(qmin, qmax + 1), num_levels)]


def plan_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of step `step`'s crops and qualities, the same on every process; the fixed 0
    in the seed keeps one-process runs drawing the batches their records were made with."""
    return np.random.default_rng([int(seed), 0, int(step)])


def sample_crops(rng, shapes: Sequence[tuple[int, int]], batch: int, patch: int) -> dict:
    """Image index, top-left corner and flip/rotation (`dihedral`, 0..7) for each example."""
    index = rng.integers(len(shapes), size=batch)
    hw = np.array([shapes[i] for i in index])
    y0 = rng.integers(hw[:, 0] - patch + 1)
    x0 = rng.integers(hw[:, 1] - patch + 1)
    transform = rng.integers(NUM_TRANSFORMS, size=batch)
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


def sample_quality_mix(rng, batch: int, ranges, weights):
    """One quality per example: a range drawn with probabilities `weights`, then a QF uniformly
    within it (inclusive), e.g. ranges ((5, 60), (5, 95)) weights (0.75, 0.25): most examples at
    the low qualities where artifacts are worst, every quality up to 95 seen."""
    p = np.asarray(weights, np.float64)
    which = rng.choice(len(ranges), size=batch, p=p / p.sum())
    lo = np.array([r[0] for r in ranges])[which]
    hi = np.array([r[1] for r in ranges])[which]
    quality = rng.integers(lo, hi + 1)[:, None]
    return quality.astype(np.int32), np.zeros_like(quality, np.int32)


# Colour crops' JPEG chroma subsampling: 4:2:0 MCUs are 16x16, so colour patches are multiples
COLOR_PATCH_MULTIPLE = 16


def sample_chroma_444(rng, batch: int, fraction: float) -> np.ndarray:
    """Whether each colour example's JPEG keeps full-resolution chroma (4:4:4, with probability
    `fraction`) rather than 4:2:0; drawn after everything else, so that grey plans, which draw
    nothing here, are those of a run before colour existed."""
    return rng.random(batch) < fraction


def check_color_data(patch_size: int, fraction: float) -> None:
    """ConfigError (one line) unless a colour run's patches sit on 4:2:0 JPEG blocks and its
    4:4:4 fraction is a probability."""
    if patch_size % COLOR_PATCH_MULTIPLE:
        raise ConfigError(
            f"data.patch_size {patch_size}: data.color needs a multiple of "
            f"{COLOR_PATCH_MULTIPLE} (4:2:0 JPEG blocks)"
        )
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"data.color_444_fraction must be in [0, 1], got {fraction}")


def check_quality_mix(ranges, weights) -> None:
    """ConfigError unless `ranges` are (lo, hi) QF pairs in [1, 100], one weight each."""
    if len(ranges) != len(weights):
        raise ConfigError(
            f"data.quality_ranges has {len(ranges)} ranges but data.quality_weights "
            f"{len(weights)} weights"
        )
    for r in ranges:
        if len(r) != 2 or not 1 <= r[0] <= r[1] <= 100:
            raise ConfigError(f"data.quality_ranges: {tuple(r)} is not a (low, high) QF range")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"data.quality_weights {tuple(weights)}: non-negative, not all zero")


class PlanSampler:
    """Draws the per-step plans of the global batch and keeps one process's rows of them (crops,
    untransformed patches, qualities); `batch` is the number of rows this process executes."""

    def __init__(
        self,
        images,
        *,
        patch_size,
        global_batch,
        seed,
        mode,
        process_index=0,
        process_count=1,
        levels=None,
        qualities=None,
        quality_ranges=(),
        quality_weights=(),
        color_444_fraction=None,
    ):
        """`color_444_fraction`: None for Y images (H, W); a probability for a colour run, whose
        images are RGB (H, W, 3) and whose plans draw each crop's chroma subsampling."""
        self.color = color_444_fraction is not None
        if self.color:
            check_color_data(patch_size, color_444_fraction)
            if mode != "deblock":
                raise ConfigError("data.color trains a de-blocker only (the ranker is grey)")
        want = 3 if self.color else 2
        shaped = [im for im in images if im.ndim != want or (want == 3 and im.shape[-1] != 3)]
        if shaped:
            kind = "RGB (H, W, 3)" if self.color else "Y (H, W)"
            raise ValueError(f"training images must be {kind}, got shape {shaped[0].shape}")
        small = [i for i, im in enumerate(images) if min(im.shape[:2]) < patch_size]
        if small:
            raise ConfigError(f"{len(small)} training image(s) smaller than patch {patch_size}")
        if mode not in ("ranker", "deblock"):
            raise ValueError(f"unknown pipeline mode {mode!r}")
        if global_batch % process_count:
            raise ConfigError(
                f"batch size {global_batch} does not divide by {process_count} processes"
            )
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        self.images = images
        self.shapes = [im.shape[:2] for im in images]
        self.color_444_fraction = color_444_fraction
        self.patch, self.mode, self.seed = patch_size, mode, seed
        self.global_batch = global_batch
        self.batch = global_batch // process_count
        self.rows = slice(process_index * self.batch, (process_index + 1) * self.batch)
        self.levels, self.qualities = levels, qualities
        if quality_ranges:
            check_quality_mix(quality_ranges, quality_weights)
        self.quality_mix = (tuple(quality_ranges), tuple(quality_weights))

    def plan(self, step: int) -> dict:
        rng = plan_rng(self.seed, step)
        n = self.global_batch
        plan = sample_crops(rng, self.shapes, n, self.patch)
        if self.mode == "ranker":
            plan["quality"], plan["label"] = sample_ranker_qualities(rng, n, self.levels)
        elif self.quality_mix[0]:
            plan["quality"], plan["label"] = sample_quality_mix(rng, n, *self.quality_mix)
        else:
            plan["quality"], plan["label"] = sample_deblock_qualities(rng, n, self.qualities)
        if self.color:
            plan["chroma_444"] = sample_chroma_444(rng, n, self.color_444_fraction)
        plan = {k: v[self.rows] for k, v in plan.items()}  # this process's share
        p = self.patch
        plan["patch"] = np.stack(
            [
                self.images[i][y : y + p, x : x + p]
                for i, y, x in zip(plan["index"], plan["y0"], plan["x0"])
            ]
        )
        return plan
