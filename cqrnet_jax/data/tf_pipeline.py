"""The tf.data backend of `pipeline.py`: the same plans, with the flips/rotations and the JPEG at a
per-example quality done inside the graph (`tf.image.adjust_jpeg_quality`, accurate integer IDCT,
bit-identical to PIL)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from cqrnet_jax.data.plans import PlanSampler


def import_tensorflow():
    """Imports TensorFlow quietly and hides GPUs from it so it never takes memory from JAX."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    return tf


def tensorflow_available() -> bool:
    try:
        import_tensorflow()
    except ImportError:
        return False
    return True


def _graph_degrade(tf, patch, transform, quality):
    img = tf.image.rot90(patch[..., None], transform % 4)  # `dihedral.dihedral` in graph ops
    img = tf.cond(transform >= 4, lambda: tf.image.flip_left_right(img), lambda: img)
    degraded = tf.map_fn(
        lambda q: tf.image.adjust_jpeg_quality(img, q, dct_method="INTEGER_ACCURATE"),
        quality,
        fn_output_signature=tf.uint8,
    )
    return degraded[..., 0], img[..., 0]


def tf_dataset(sampler: PlanSampler, start_step: int, num_threads: int = 2, prefetch: int = 4):
    """A tf.data.Dataset of the batches for steps start_step, start_step + 1, ..., in order."""
    tf = import_tensorflow()
    p, k = sampler.patch, 2 if sampler.mode == "ranker" else 1

    def examples():
        step = start_step
        while True:
            plan = sampler.plan(step)
            for i in range(sampler.batch):
                yield (
                    plan["patch"][i],
                    np.int32(plan["transform"][i]),
                    plan["quality"][i],
                    plan["label"][i],
                )
            step += 1

    signature = (
        tf.TensorSpec((p, p), tf.uint8),
        tf.TensorSpec((), tf.int32),
        tf.TensorSpec((k,), tf.int32),
        tf.TensorSpec((k,), tf.int32),
    )

    def degrade(patch, transform, quality, label):
        degraded, clean = _graph_degrade(tf, patch, transform, quality)
        return dict(degraded=degraded, clean=clean, quality=quality, label=label)

    ds = tf.data.Dataset.from_generator(examples, output_signature=signature)
    ds = ds.map(degrade, num_parallel_calls=max(1, num_threads), deterministic=True)
    ds = ds.batch(sampler.batch, drop_remainder=True)
    options = tf.data.Options()
    options.threading.private_threadpool_size = max(1, num_threads)
    return ds.with_options(options).prefetch(prefetch)


def tf_batches(
    sampler: PlanSampler, start_step: int, num_threads: int = 2, prefetch: int = 4
) -> Iterator[dict]:
    yield from tf_dataset(sampler, start_step, num_threads, prefetch).as_numpy_iterator()
