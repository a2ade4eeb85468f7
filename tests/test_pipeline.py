"""The training input pipeline: plans (qualities, crops, flips), determinism, resumption, and the
NumPy and tf.data backends producing identical batches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import skimage.data

from cqrnet_jax.config_base import train_defaults
from cqrnet_jax.data.dihedral import dihedral, undo_dihedral
from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.data.pipeline import execute_plan_numpy, make_batches, numpy_batches
from cqrnet_jax.data.plans import PlanSampler, quality_levels

LEVELS = quality_levels(1, 30, 3)
KEYS = ("degraded", "clean", "quality", "label")


def _images():
    """Small real crops of different sizes (odd ones too) and a noise image."""
    cam = skimage.data.camera()
    noise = np.random.default_rng(0).integers(0, 256, (41, 67), dtype=np.uint8)
    return [cam[:64, :80], cam[200:250, 100:171], cam[300:391, 300:345], noise]


IMAGES = _images()


def _sampler(mode="ranker", *, seed=0, process_index=0, process_count=1, batch=4, patch=24):
    kw = dict(levels=LEVELS) if mode == "ranker" else dict(qualities=(10, 20, 30))
    return PlanSampler(
        IMAGES,
        patch_size=patch,
        global_batch=batch,
        seed=seed,
        mode=mode,
        process_index=process_index,
        process_count=process_count,
        **kw,
    )


def _take(iterator, n):
    out = list(itertools.islice(iterator, n))
    close = getattr(iterator, "close", None)
    if close:
        close()
    return out


def _assert_batches_equal(a, b):
    assert set(a) == set(b) == set(KEYS)
    for k in KEYS:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _level_of(q):
    return next(i + 1 for i, (lo, hi) in enumerate(LEVELS) if lo <= q <= hi)


def test_quality_levels():
    """[1, 30] in 3 levels is [1,10], [11,20], [21,30]; levels tile the range; bad input raises."""
    assert quality_levels(1, 30, 3) == [(1, 10), (11, 20), (21, 30)]
    assert quality_levels(1, 30, 2) == [(1, 15), (16, 30)]
    levels = quality_levels(5, 95, 4)
    assert levels[0][0] == 5 and levels[-1][1] == 95
    assert all(a[1] + 1 == b[0] for a, b in zip(levels, levels[1:]))
    for bad in [(0, 30, 3), (1, 101, 3), (30, 1, 3), (1, 30, 1), (1, 3, 4)]:
        with pytest.raises(ValueError):
            quality_levels(*bad)


def test_ranker_plans_pair_two_different_levels():
    """Each pair holds two qualities from two different levels, and labels are those levels."""
    sampler = _sampler("ranker", batch=16)
    seen = set()
    for step in range(50):
        plan = sampler.plan(step)
        q, label = plan["quality"], plan["label"]
        assert q.shape == label.shape == (16, 2) and q.dtype == label.dtype == np.int32
        assert np.all((q >= 1) & (q <= 30))
        assert np.all(label[:, 0] != label[:, 1])
        np.testing.assert_array_equal(label, np.vectorize(_level_of)(q))
        seen.update(map(tuple, label.tolist()))
    assert seen == {(a, b) for a in (1, 2, 3) for b in (1, 2, 3) if a != b}  # every ordered pair


def test_deblock_plans_mix_the_qualities_in_equal_shares():
    """Every batch of 16 at QF (10, 20, 30) holds each QF 5 or 6 times, in shuffled order."""
    sampler = _sampler("deblock", batch=16)
    orders = set()
    for step in range(50):
        plan = sampler.plan(step)
        q = plan["quality"]
        assert q.shape == (16, 1) and q.dtype == np.int32
        counts = {v: int(np.sum(q == v)) for v in (10, 20, 30)}
        assert sum(counts.values()) == 16 and set(counts.values()) <= {5, 6}, counts
        np.testing.assert_array_equal(plan["label"], 0)
        orders.add(tuple(q[:, 0].tolist()))
    assert len(orders) > 40


def test_crops_lie_inside_their_image():
    """Each planned patch is the image's crop at (y0, x0), fully inside the image."""
    sampler = _sampler("ranker", batch=8, patch=32)
    for step in range(20):
        plan = sampler.plan(step)
        assert plan["patch"].shape == (8, 32, 32) and plan["patch"].dtype == np.uint8
        for i, y, x, patch in zip(plan["index"], plan["y0"], plan["x0"], plan["patch"]):
            h, w = IMAGES[i].shape
            assert 0 <= y <= h - 32 and 0 <= x <= w - 32
            np.testing.assert_array_equal(patch, IMAGES[i][y : y + 32, x : x + 32])
        assert set(plan["transform"].tolist()) <= set(range(8))


def test_dihedral_gives_the_eight_distinct_transforms_and_undoes_them():
    """dihedral(x, 0..7) is the identity, the rotations and the mirrored rotations: 8 distinct;
    undo_dihedral turns each back (the self-ensemble's inverse)."""
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    outs = [dihedral(x, t) for t in range(8)]
    assert len({(o.shape, o.tobytes()) for o in outs}) == 8
    expected = [np.rot90(x, k) for k in range(4)] + [np.rot90(x, k)[:, ::-1] for k in range(4)]
    for t, (o, e) in enumerate(zip(outs, expected)):
        np.testing.assert_array_equal(o, e)
        assert o.flags.c_contiguous
        back = undo_dihedral(o, t)
        np.testing.assert_array_equal(back, x)
        assert back.flags.c_contiguous
    np.testing.assert_array_equal(outs[0], x)
    np.testing.assert_array_equal(outs[4], x[:, ::-1])


def test_plans_are_deterministic_and_vary_with_step_and_seed():
    """A plan depends only on (seed, step): equal when repeated, different otherwise."""
    a, b = _sampler(), _sampler()
    for step in (0, 1, 17):
        pa, pb = a.plan(step), b.plan(step)
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k])

    def key(plan):
        return tuple(plan[k].tobytes() for k in ("index", "y0", "x0", "transform", "quality"))

    base = key(a.plan(3))
    assert key(a.plan(4)) != base
    assert key(_sampler(seed=1).plan(3)) != base
    assert len({key(a.plan(s)) for s in range(20)}) == 20


def test_numpy_backend_executes_the_plan():
    """The NumPy batch is the transformed crop, JPEG'd at exactly the planned qualities."""
    for mode, k in (("ranker", 2), ("deblock", 1)):
        plan = _sampler(mode).plan(5)
        batch = execute_plan_numpy(plan)
        assert batch["degraded"].shape == (4, k, 24, 24) and batch["degraded"].dtype == np.uint8
        assert batch["clean"].shape == (4, 24, 24) and batch["clean"].dtype == np.uint8
        for i in range(4):
            clean = dihedral(plan["patch"][i], plan["transform"][i])
            np.testing.assert_array_equal(batch["clean"][i], clean)
            for j in range(k):
                expected = jpeg_degrade(clean, int(plan["quality"][i, j]))
                np.testing.assert_array_equal(batch["degraded"][i, j], expected)


@pytest.mark.parametrize("mode", ["ranker", "deblock"])
def test_numpy_and_tf_backends_give_identical_batches(tf, mode):
    """Same sampler, same start step: the tf.data batches equal the NumPy ones, bit for bit."""
    from cqrnet_jax.data.tf_pipeline import tf_batches

    sampler = _sampler(mode)
    ours = _take(numpy_batches(sampler, 3, num_threads=2, prefetch=2), 3)
    theirs = _take(tf_batches(sampler, 3, num_threads=2, prefetch=2), 3)
    for a, b in zip(ours, theirs, strict=True):
        _assert_batches_equal(a, b)
    # not vacuous: the batches differ from step to step and use rotations and mirrors
    assert not np.array_equal(ours[0]["clean"], ours[1]["clean"])
    transforms = {int(t) for s in range(3, 6) for t in sampler.plan(s)["transform"]}
    assert len(transforms) >= 5 and min(transforms) < 4 <= max(transforms)


@pytest.mark.parametrize("backend", [None, "auto"])
def test_numpy_is_the_default_backend_and_autos_choice(backend, monkeypatch):
    """The faster NumPy backend unless a config says tf (benchmarks/train_throughput.sh); an
    older config's "auto" is NumPy too, also where TensorFlow is installed."""
    from cqrnet_jax.data import tf_pipeline

    def no_tf(*args, **kwargs):
        raise AssertionError("tf.data used")

    monkeypatch.setattr(tf_pipeline, "tf_batches", no_tf)
    monkeypatch.setattr(tf_pipeline, "tensorflow_available", lambda: True)
    cfg = train_defaults().data
    assert cfg.backend == "numpy"
    cfg.backend, cfg.patch_size = backend or cfg.backend, 24
    batch = next(make_batches(cfg, IMAGES, mode="deblock", global_batch=4, start_step=2))
    expected = next(numpy_batches(_sampler("deblock"), 2, num_threads=1, prefetch=1))
    _assert_batches_equal(batch, expected)


@pytest.mark.parametrize("backend", ["numpy", "tf"])
def test_resuming_at_step_s_gives_the_batches_of_a_run_from_zero(request, backend):
    """make_batches(start_step=s) yields exactly what a run from step 0 yields from its s-th on."""
    if backend == "tf":
        request.getfixturevalue("tf")
    cfg = train_defaults().data
    cfg.backend, cfg.patch_size, cfg.prefetch = backend, 24, 2
    for mode in ("ranker", "deblock"):
        kw = dict(mode=mode, global_batch=4)
        from_zero = _take(make_batches(cfg, IMAGES, start_step=0, **kw), 5)
        resumed = _take(make_batches(cfg, IMAGES, start_step=3, **kw), 2)
        for a, b in zip(from_zero[3:], resumed, strict=True):
            _assert_batches_equal(a, b)


@pytest.mark.parametrize("mode", ["ranker", "deblock"])
def test_process_shares_make_up_the_one_process_batch(mode):
    """With 2 or 4 processes each gets global/N examples, different from the others', and the
    shares in process order are the batch a one-process run gets at the same step: the global
    batch does not depend on the process count (a multi-process run trains on a one-process
    run's data)."""
    cfg = train_defaults().data
    cfg.backend, cfg.patch_size, cfg.prefetch = "numpy", 24, 1

    def batches(index=0, count=1):
        kw = dict(mode=mode, global_batch=8, start_step=5)
        return _take(make_batches(cfg, IMAGES, process_index=index, process_count=count, **kw), 2)

    whole = batches()
    for count in (2, 4):
        shares = [batches(i, count) for i in range(count)]
        for step in range(2):
            parts = [share[step] for share in shares]
            assert all(p["degraded"].shape[0] == 8 // count for p in parts)
            assert not np.array_equal(parts[0]["clean"], parts[1]["clean"])
            joined = {k: np.concatenate([p[k] for p in parts]) for k in KEYS}
            _assert_batches_equal(joined, whole[step])


def test_one_process_plans_are_those_drawn_before_processes_shared_a_plan():
    """The one-process batch is still drawn from default_rng([seed, 0, step]) over the whole batch,
    as when each process drew its own plan: earlier runs resume on the same data."""
    plan = _sampler(batch=6).plan(7)
    rng = np.random.default_rng([0, 0, 7])
    index = rng.integers(len(IMAGES), size=6)
    np.testing.assert_array_equal(plan["index"], index)
    shares = [_sampler(batch=6, process_index=i, process_count=3).plan(7) for i in range(3)]
    np.testing.assert_array_equal(np.concatenate([s["index"] for s in shares]), index)


def test_patch_bigger_than_an_image_raises():
    """A training image smaller than the patch is refused up front."""
    with pytest.raises(ValueError, match="smaller than patch"):
        _sampler(patch=42)  # the noise image is 41 pixels high
    plan = _sampler(patch=41, batch=64).plan(0)  # a patch as big as an image is fine
    assert np.all(plan["y0"][plan["index"] == 3] == 0)
    cfg = train_defaults().data
    cfg.patch_size = 100
    with pytest.raises(ValueError, match="smaller than patch"):
        make_batches(cfg, IMAGES, mode="deblock", global_batch=4, start_step=0)


def test_make_batches_rejects_batch_not_divisible_by_process_count():
    """A global batch that does not split evenly across processes raises ValueError."""
    cfg = train_defaults().data
    cfg.patch_size = 24
    with pytest.raises(ValueError, match="does not divide"):
        make_batches(cfg, IMAGES, mode="ranker", global_batch=5, start_step=0, process_count=2)


def test_make_batches_rejects_unknown_mode_and_backend():
    """Unknown pipeline mode or backend names raise ValueError."""
    cfg = train_defaults().data
    cfg.patch_size = 24
    with pytest.raises(ValueError, match="mode"):
        make_batches(cfg, IMAGES, mode="ranking", global_batch=4, start_step=0)
    cfg.backend = "torch"
    with pytest.raises(ValueError, match="backend"):
        make_batches(cfg, IMAGES, mode="ranker", global_batch=4, start_step=0)
