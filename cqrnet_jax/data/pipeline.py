"""Training input pipeline, shared by both stages: the NumPy backend and the backend choice.

Every step's batch is decided by a *plan* drawn from `np.random.default_rng([seed, 0, step])`:
which image, where to crop, which of the 8 flips/rotations, which JPEG qualities (`plans.py`).
The plan covers the global batch; each process executes its own rows of it, so the processes'
shares, in process order, make up the batch a one-process run draws.
Both backends execute the same plan (crop on the host; transform and JPEG in NumPy+PIL or inside
the tf.data graph), so they produce identical batches, a run is deterministic for a seed, and
resuming at step `s` needs no iterator state: the pipeline simply starts at plan `s`.

A batch is a dict of NumPy arrays for this process's share of the global batch:
  degraded (B, K, P, P) uint8: the crop JPEG-compressed at K qualities (K = 2 ranker, 1 de-blocker)
  clean    (B, P, P) uint8:    the transformed crop itself
  quality  (B, K) int32, label (B, K) int32 (quality level, 1 = worst; ranker only, else 0)
A colour run (data.color, de-blocker only, NumPy backend) has RGB crops: degraded
(B, 1, P, P, 3) and clean (B, P, P, 3) uint8, each crop a colour JPEG by PIL at its quality,
4:4:4 or 4:2:0 as its plan says (`chroma_444`), decoded back to RGB.
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Iterator

import numpy as np

from cqrnet_jax.data.dihedral import dihedral
from cqrnet_jax.data.jpeg import jpeg_degrade, jpeg_degrade_rgb
from cqrnet_jax.data.plans import PlanSampler, quality_levels
from cqrnet_jax.errors import ConfigError


def execute_plan_numpy(plan: dict) -> dict:
    """The NumPy + PIL backend: transform each crop and JPEG it at its qualities (a colour plan's
    crops as colour JPEGs, with the chroma subsampling each one's plan draws)."""
    clean = np.stack([dihedral(p, t) for p, t in zip(plan["patch"], plan["transform"])])
    if "chroma_444" in plan:
        chroma = ["4:4:4" if full else "4:2:0" for full in plan["chroma_444"]]
        degraded = np.stack(
            [
                np.stack([jpeg_degrade_rgb(c, int(q), s) for q in qs])
                for c, qs, s in zip(clean, plan["quality"], chroma)
            ]
        )
    else:
        degraded = np.stack(
            [
                np.stack([jpeg_degrade(c, int(q)) for q in qs])
                for c, qs in zip(clean, plan["quality"])
            ]
        )
    return dict(degraded=degraded, clean=clean, quality=plan["quality"], label=plan["label"])


def numpy_batches(
    sampler: PlanSampler, start_step: int, num_threads: int = 2, prefetch: int = 4
) -> Iterator[dict]:
    """Batches for steps start_step, start_step + 1, ... built by a thread pool, in order."""

    def build(step):
        return execute_plan_numpy(sampler.plan(step))

    with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
        pending = collections.deque(pool.submit(build, start_step + i) for i in range(prefetch))
        step = start_step + prefetch
        while True:
            batch = pending.popleft().result()
            pending.append(pool.submit(build, step))
            step += 1
            yield batch


def make_batches(
    data_cfg,
    images,
    *,
    mode: str,
    global_batch: int,
    start_step: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict]:
    """This process's batches from `start_step` on, with the backend the config asks for: rows
    `process_index * global_batch / process_count` on of each step's global batch."""
    levels = qualities = None
    color = data_cfg.color
    if color and data_cfg.backend not in ("numpy", "auto"):
        raise ConfigError(f"data.color needs data.backend=numpy, not {data_cfg.backend!r}")
    if mode == "ranker":
        levels = quality_levels(*data_cfg.quality_range, data_cfg.num_levels)
    else:
        qualities = tuple(data_cfg.qualities)
    sampler = PlanSampler(
        images,
        patch_size=data_cfg.patch_size,
        global_batch=global_batch,
        seed=data_cfg.seed,
        mode=mode,
        process_index=process_index,
        process_count=process_count,
        levels=levels,
        qualities=qualities,
        quality_ranges=tuple(tuple(r) for r in data_cfg.quality_ranges) if qualities else (),
        quality_weights=tuple(data_cfg.quality_weights) if qualities else (),
        color_444_fraction=float(data_cfg.color_444_fraction) if color else None,
    )
    backend = data_cfg.backend
    if backend in ("numpy", "auto"):  # auto means numpy (saved configs may name it)
        return numpy_batches(sampler, start_step, data_cfg.num_threads, data_cfg.prefetch)
    if backend == "tf":
        from cqrnet_jax.data.tf_pipeline import tensorflow_available, tf_batches

        if not tensorflow_available():
            raise ConfigError(
                "data.backend=tf needs TensorFlow: pip install 'cqrnet-jax[tf]' "
                "(or data.backend=numpy, which gives the same batches)"
            )
        return tf_batches(sampler, start_step, data_cfg.num_threads, data_cfg.prefetch)
    raise ConfigError(f"unknown data.backend {backend!r}; choose numpy or tf")
