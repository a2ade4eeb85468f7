"""Full-image inference (`cqrnet_jax.inference`): tiled restoration equals whole-image restoration
within one grey level, the tiles partition the image, canvas restoration (padded, batched, cropped
back) agrees with whole-image restoration and compiles once per canvas, and models load from every
kind of path.

The Restorer compiles once per distinct tile shape, so this module turns on JAX's persistent
compilation cache (as test_train.py) and keeps the photo small.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color
import skimage.data
from flax import linen as nn
from helpers import shared_data_dir

from cqrnet_jax import pretrained
from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.inference import Restorer, balanced_batches, load_restorer, to_uint8
from cqrnet_jax.models.build import attention_settings, deblock_from_config
from cqrnet_jax.models.layers import WindowedNonLocal

MODEL = dict(features=8, num_local_groups=1, dilations=[1, 2, 4], nl_inner=4, nl_window=16)


@pytest.fixture(scope="module")
def tiny():
    """(model, variables) of a tiny DeblockNet (windows of 16) whose every parameter, the
    zero-initialised ones included, is perturbed by N(0, 0.02^2) noise, and the non-local blocks'
    by N(0, 0.3^2) so that attention matters: not the identity."""
    model = deblock_from_config(MODEL)
    key = jax.random.key(0, impl="unsafe_rbg")  # compiles in a third of threefry's time
    variables = jax.device_get(jax.jit(model.init)(key, jnp.zeros((1, 16, 16), jnp.float32)))
    rng = np.random.default_rng(0)

    def perturb(path, a):
        scale = 0.3 if "non_local" in jax.tree_util.keystr(path) else 0.02
        return (a + scale * rng.standard_normal(a.shape)).astype(np.float32)

    return model, jax.tree_util.tree_map_with_path(perturb, variables)


@pytest.fixture(scope="module")
def photo():
    """A 120 x 104 crop of the camera man (sizes not multiples of the window), JPEG q10."""
    return jpeg_degrade(skimage.data.camera()[100:220, 150:254], 10)


@pytest.fixture(scope="module")
def untiled(tiny, photo):
    """(uint8, float) whole-image restorations of the photo."""
    restorer = Restorer(*tiny)
    return restorer(photo), restorer.restore_float(photo / 255.0)


@pytest.fixture(scope="module")
def saved_model(tiny, tmp_path_factory):
    """The tiny model written by `save_variables` as WORKDIR/export/deblock: (workdir, prefix)."""
    workdir = tmp_path_factory.mktemp("workdir")
    prefix = workdir / "export" / "deblock"
    meta = {"kind": "deblock", "model": MODEL, "step": 7}
    pretrained.save_variables(prefix, tiny[1], meta)
    return workdir, prefix


# --- tiles -----------------------------------------------------------------------------------


def test_model_is_not_the_identity(untiled, photo):
    """The perturbed model changes the photo by several grey levels (the tiling test has teeth)."""
    assert np.mean(np.abs(untiled[0].astype(int) - photo)) > 2


@pytest.mark.parametrize(
    "tile, margin",
    [  # the first two ~12 s each on 2 busy cores; the other two cover both margins
        pytest.param(32, 16, marks=pytest.mark.slow),
        pytest.param(48, 32, marks=pytest.mark.slow),
        (64, 16),
        (80, 32),
    ],
)
def test_tiled_equals_untiled_within_one_grey_level(tiny, photo, untiled, tile, margin):
    """Tiled restoration of a real JPEG photo equals the whole-image one within one grey level;
    before rounding, within 0.1 level with a 16-pixel margin and 0.001 with 32 (tiles whose
    windows were not aligned with the image's would differ by ~0.02 even with a 32 margin)."""
    restorer = Restorer(*tiny, tile=tile, margin=margin)
    assert len(list(restorer.tiles(*photo.shape))) > 1
    tiled_float = restorer.restore_float(photo / 255.0)
    float_diff = 255.0 * float(np.max(np.abs(tiled_float - untiled[1])))
    # the uint8 result is the float one rounded: the same float run serves both comparisons
    tiled = np.clip(np.round(tiled_float * 255.0), 0, 255).astype(np.uint8)
    diff = int(np.max(np.abs(tiled.astype(int) - untiled[0].astype(int))))
    print(f"tile {tile} margin {margin}: max |tiled - untiled| {diff} (float {float_diff:.4f})")
    assert diff <= 1, f"tile {tile}, margin {margin}: {diff} grey levels"
    bound = 0.1 if margin < 32 else 1e-3
    assert float_diff < bound, f"tile {tile}, margin {margin}: {float_diff} grey levels"


@pytest.mark.parametrize(
    "h, w, tile, margin", [(101, 67, 32, 16), (101, 67, 40, 48), (33, 200, 32, 32), (20, 30, 32, 0)]
)
def test_tiles_partition_the_image(tiny, h, w, tile, margin):
    """The output boxes cover every pixel exactly once; each input box is its output box grown
    by the margin (clipped to the image), starting at a multiple of the window."""
    restorer = Restorer(*tiny, tile=tile, margin=margin)
    window = MODEL["nl_window"]
    assert restorer.tile % window == 0 and restorer.tile >= tile
    assert restorer.margin % window == 0 and restorer.margin >= margin
    count = np.zeros((h, w), int)
    for (a0, a1, b0, b1), (c0, c1, d0, d1) in restorer.tiles(h, w):
        assert 0 <= a0 < a1 <= h and 0 <= b0 < b1 <= w
        count[a0:a1, b0:b1] += 1
        m = restorer.margin
        assert (c0, c1, d0, d1) == (max(0, a0 - m), min(h, a1 + m), max(0, b0 - m), min(w, b1 + m))
        assert a0 % window == b0 % window == c0 % window == d0 % window == 0
    np.testing.assert_array_equal(count, 1)


def test_uint8_result_is_the_float_one_rounded_and_one_tile_is_the_whole_image(tiny):
    """Restorer(...)(y) on an odd-sized uint8 image is its float restoration rounded to uint8;
    tiles whose input boxes each span the whole image give exactly the whole-image result."""
    y = np.random.default_rng(1).integers(0, 256, (23, 31), dtype=np.uint8)
    whole = Restorer(*tiny)
    expected = to_uint8(whole.restore_float(y.astype(np.float32) / 255.0))
    assert np.mean(np.abs(expected.astype(int) - y)) > 2  # the model changes the image
    for restorer in (whole, Restorer(*tiny, tile=16, margin=16)):
        np.testing.assert_array_equal(restorer(y), expected)


@pytest.mark.slow
def test_shipped_model_in_default_tiles_equals_the_whole_image():
    """The shipped model with the deblock app's default tile (1024, a multiple of its 128-pixel
    windows) restores a 100 x 1200 strip (the coffee photo and its mirror image; no side a
    multiple of 128: the last windows are partial, in the whole image as in the last tile)
    within one grey level of the whole image; before rounding within 0.25 (measured 0.13)."""
    from cqrnet_jax.apps.deblock import DEFAULT_TILE

    y = skimage.color.rgb2gray(skimage.data.coffee()[150:250])
    y = np.concatenate([y, y[:, ::-1]], axis=1)  # 100 x 1200
    y = jpeg_degrade(np.round(255 * y).astype(np.uint8), 10)
    whole, _ = load_restorer("default")
    tiled = Restorer(whole.model, whole.variables, tile=DEFAULT_TILE)
    # the shipped model is told the file's JPEG quality, as `deblock` tells it
    whole, tiled = whole.for_quality(10), tiled.for_quality(10)
    assert len(list(tiled.tiles(*y.shape))) == 2
    a, b = whole.restore_float(y / 255.0), tiled.restore_float(y / 255.0)
    float_diff = 255 * float(np.max(np.abs(a - b)))
    print(f"shipped model, tile {tiled.tile}: max |tiled - whole| {float_diff:.4f} grey levels")
    rounded = [np.clip(np.round(255 * r), 0, 255) for r in (a, b)]
    assert np.max(np.abs(rounded[0] - rounded[1])) <= 1 and float_diff < 0.25
    assert np.mean(np.abs(rounded[0] - y)) > 1  # the model does restore


# --- canvases -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos():
    """QF-10 JPEGs of three scikit-image photos cropped to odd sizes: two share the 192 x 256
    canvas of step 32, the third has its own (128 x 160)."""
    crops = [
        skimage.data.camera()[40:221, 100:343],  # 181 x 243
        skimage.data.coins()[:170, 30:280],  # 170 x 250
        skimage.data.moon()[200:297, 150:280],  # 97 x 130
    ]
    return [jpeg_degrade(np.ascontiguousarray(y), 10) for y in crops]


@pytest.fixture(scope="module")
def whole_restorations(tiny, photos):
    """Whole-image float restorations of the photos."""
    restorer = Restorer(*tiny)
    return [restorer.restore_float(y / 255.0) for y in photos]


def _psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


@pytest.mark.parametrize("pad_mode", ["symmetric", "reflect", "edge"])
def test_canvas_agrees_with_whole_image(tiny, photos, whole_restorations, pad_mode):
    """A canvas restoration equals the whole-image one (to float rounding) farther than two
    windows from the bottom/right edges, and differs on the band next to them by less than one
    grey level on average. Padding top/left instead would shift the windows: 0.4 levels apart
    deep inside (measured)."""
    restorer = Restorer(*tiny, canvas=32, pad_mode=pad_mode)
    far = 2 * MODEL["nl_window"]
    for y, whole in zip(photos, whole_restorations):
        got = restorer.restore_float(y / 255.0)
        assert got.shape == y.shape
        diff = 255 * np.abs(got - whole)
        print(f"{pad_mode} {y.shape}: mean {diff.mean():.3f}, PSNR {_psnr(got, whole):.1f} dB")
        assert diff[:-far, :-far].max() < 1e-3
        assert diff.mean() < 1.0 and _psnr(got, whole) > 35  # measured: 0.2-0.5, 39-43 dB


def test_one_compile_per_canvas(tiny, photos):
    """Three photos of three sizes on two canvases: two programs, also when batches of two leave
    a short one (padded, not compiled anew), and none more on a second pass. Whole images: three."""
    canvas = Restorer(*tiny, canvas=32, max_batch=2)
    shapes = {canvas.canvas_shape(*y.shape) for y in photos}
    assert shapes == {(192, 256), (128, 160)}
    images = [photos[0], photos[1], photos[0], photos[2]]  # three on (192, 256): batches 2 + 1
    canvas.restore_batch(images)
    assert canvas.traces == 2
    canvas.restore_batch(images[::-1])
    assert canvas.traces == 2
    whole = Restorer(*tiny)
    whole.restore_batch(images)
    assert whole.traces == 3


def test_batched_equals_one_by_one(tiny, photos):
    """restore_batch with batches of up to 3 returns, in order, exactly what one-image calls do."""
    images = [photos[0], photos[2], photos[1], photos[0]]
    batched = Restorer(*tiny, canvas=32, max_batch=3).restore_batch(images)
    single = Restorer(*tiny, canvas=32, max_batch=1)
    for got, y in zip(batched, images):
        assert got.dtype == np.uint8 and got.shape == y.shape
        np.testing.assert_array_equal(got, single(y))


class _NonLocalOnly(nn.Module):
    """A stand-in de-blocker that is one windowed non-local block (max-pooled keys, as the shipped
    model): without convolutions, every mode must give the same output wherever it attends to the
    same keys, so any padding that reaches the attention shows."""

    alignment: int = 16  # its windows' side, which tiles and canvases align to

    @nn.compact
    def __call__(self, x, valid=None):
        settings = attention_settings(dict(nl_inner=4, nl_window=self.alignment, nl_subsample=2))
        block = WindowedNonLocal(settings, name="non_local")
        return block(x[..., None], valid)[..., 0]


def test_canvases_tiles_and_whole_images_attend_to_the_same_keys(photos):
    """With the non-local block alone, canvases (one batch of two sizes), tiles and whole images
    give the same restoration to float rounding: each call tells the network the real extent of
    its images, so no canvas padding is attended to (without it the canvas was up to 2.3 grey
    levels off on an eighth of the pixels, those of its partial windows)."""
    net = _NonLocalOnly()
    x = jnp.zeros((1, 16, 16), jnp.float32)
    rng = np.random.default_rng(3)
    variables = jax.tree.map(
        lambda a: 0.5 * rng.standard_normal(a.shape).astype(np.float32),
        jax.eval_shape(net.init, jax.random.key(0), x),
    )
    images = [photos[0][:60, :100] / 255.0, photos[1][:50, :110] / 255.0]  # one 64 x 128 canvas
    whole = Restorer(net, variables).restore_float_batch(images)
    tiles = Restorer(net, variables, tile=64, margin=16)  # two tiles each
    for restorer in (Restorer(net, variables, canvas=32), tiles):
        for got, expected in zip(restorer.restore_float_batch(images), whole):
            np.testing.assert_allclose(255 * got, 255 * expected, atol=1e-3)
    assert 255 * np.max(np.abs(whole[0] - images[0])) > 10  # attention changes the photo


def test_balanced_batches():
    """The fewest batches of at most max_batch; all of the first batch's size but the last."""
    assert balanced_batches([], 4) == []
    assert balanced_batches(list(range(9)), 8) == [[0, 1, 2, 3, 4], [5, 6, 7, 8]]
    assert balanced_batches(list(range(8)), 8) == [list(range(8))]
    assert [len(b) for b in balanced_batches(list(range(17)), 4)] == [4, 4, 4, 4, 1]
    assert [len(b) for b in balanced_batches(list(range(3)), 1)] == [1, 1, 1]


def test_restorer_options(tiny):
    """Canvas steps round up to the model's alignment; tiles and canvases exclude each other;
    the variables go to each device once (not re-uploaded per call)."""
    assert Restorer(*tiny, canvas=20).canvas == 32
    with pytest.raises(ValueError, match="exclude each other"):
        Restorer(*tiny, tile=64, canvas=32)
    with pytest.raises(ValueError, match="max_batch"):
        Restorer(*tiny, canvas=32, max_batch=0)
    restorer = Restorer(*tiny)
    assert restorer.devices == [jax.devices()[0]]
    on_device = restorer._variables_on(restorer.devices[0])
    assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(on_device))
    assert restorer._variables_on(restorer.devices[0]) is on_device
    restorer.variables = tiny[1]  # new variables (training's evaluation): uploaded anew
    assert restorer._variables_on(restorer.devices[0]) is not on_device
    assert Restorer(tiny[0], None).variables is None


def test_sizes_many_images_share_get_programs_of_their_own(tiny, photos, whole_restorations):
    """With exact_group=2, a size two images share runs at exactly that size (so equal to the
    whole image to float rounding, no canvas padding), the others on their canvases; one program
    per group."""
    restorer = Restorer(*tiny, canvas=32, exact_group=2)
    shapes = [photos[0].shape, photos[1].shape, photos[0].shape, photos[2].shape]
    assert restorer.canvas_groups(shapes) == {(181, 243): [0, 2], (192, 256): [1], (128, 160): [3]}
    canvases = {(192, 256): [0, 1, 2], (128, 160): [3]}
    assert Restorer(*tiny, canvas=32).canvas_groups(shapes) == canvases
    images = [photos[0], photos[1], photos[0], photos[2]]
    got = restorer.restore_float_batch([y / 255.0 for y in images])
    assert restorer.traces == 3
    for i in (0, 2):
        np.testing.assert_allclose(got[i], whole_restorations[0], atol=1e-6)
    canvas = Restorer(*tiny, canvas=32).restore_float_batch([photos[1] / 255.0, photos[2] / 255.0])
    np.testing.assert_array_equal(got[1], canvas[0])
    np.testing.assert_array_equal(got[3], canvas[1])


@pytest.mark.parametrize(
    "mode",
    [
        dict(),
        pytest.param(dict(tile=64, margin=16), marks=pytest.mark.slow),  # ~40 s on 2 busy cores
        pytest.param(dict(canvas=32, max_batch=2), marks=pytest.mark.slow),  # ~15 s
    ],
)
def test_several_devices_give_each_image_its_own_result_in_order(tiny, photos, mode):
    """Jobs spread over several devices (here the one CPU device listed three times: the
    dispatch-ahead and collection order are what is tested) give every image, tile and batch
    the result one device gives, in order."""
    images = [photos[0], photos[2], photos[1], photos[0], photos[2]]
    device = jax.devices()[0]
    one = Restorer(*tiny, **mode).restore_batch(images)
    many = Restorer(*tiny, **mode, devices=[device] * 3)
    for got, expected in zip(many.restore_batch(images), one, strict=True):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(many(photos[1]), one[2])  # one image alone


# --- loading -------------------------------------------------------------------------------------


def test_load_restorer_resolves_every_kind_of_path(saved_model, tiny):
    """A params prefix, its .msgpack or .json file, and a workdir with export/deblock all load the
    same model and variables, with the saved meta."""
    workdir, prefix = saved_model
    specs = [str(prefix), f"{prefix}.msgpack", f"{prefix}.json", str(workdir)]
    for spec in specs:
        assert pretrained.resolve_model_prefix(spec) == prefix
        restorer, meta = load_restorer(spec, tile=48)
        assert meta["kind"] == "deblock" and meta["step"] == 7
        assert restorer.model == tiny[0] and restorer.tile == 48
        for a, b in zip(jax.tree.leaves(restorer.variables), jax.tree.leaves(tiny[1])):
            np.testing.assert_array_equal(np.asarray(a), b)


def test_load_restorer_on_a_missing_model_names_the_path(tmp_path):
    """A prefix with no files raises FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match="no de-blocking model found at .*nothing"):
        load_restorer(str(tmp_path / "nothing"))


@pytest.mark.slow
def test_canvas_agrees_with_whole_image_on_classic5_with_the_shipped_model():
    """Canvas evaluation (step 48, the CLI default) of the shipped model on Classic5 at QF 10
    gives the whole-image mean PSNR within 0.01 dB (benchmarks/canvas_eval.py: all sets)."""
    from cqrnet_jax.data.datasets import load_eval_set
    from cqrnet_jax.scoring import evaluate_sets

    shared_data_dir("Classic5")
    sets = [("Classic5", load_eval_set("Classic5"))]
    whole, _ = load_restorer("default")
    canvas = Restorer(whole.model, whole.variables, canvas=48)
    means = [
        evaluate_sets(r, "default", sets, [10], progress=False)["results"][0]["psnr"]
        for r in (whole, canvas)
    ]
    print(f"Classic5 QF 10 PSNR: whole {means[0]:.4f}, canvas {means[1]:.4f}")
    assert abs(means[1] - means[0]) < 0.01


@pytest.mark.slow
def test_shipped_model_beats_jpeg_on_a_photo():
    """`--model default` loads the shipped params, and restoring a QF-10 JPEG of a real photo it
    never trained on raises PSNR and PSNR-B (the evaluator's metrics)."""
    from cqrnet_jax.metrics import image_metrics

    restorer, meta = load_restorer("default")
    assert meta["kind"] == "deblock"
    restorer = restorer.for_quality(10)  # told the quality, as `evaluate` tells it each QF's
    clean = skimage.data.camera()[128:320, 160:352]
    jpeg = jpeg_degrade(clean, 10)
    before, after = image_metrics(jpeg, clean), image_metrics(restorer(jpeg), clean)
    assert after["psnr"] > before["psnr"] + 0.2
    assert after["psnr_b"] > before["psnr_b"] + 1.0


def test_host_device_count():
    """One device per core, at most the maximum, and a count that divides the batch."""
    from cqrnet_jax.devices import host_device_count

    assert host_device_count(2, 4) == 2 and host_device_count(16, 4) == 4
    assert host_device_count(1, 4) == 1 and host_device_count(8, 4, divides=6) == 3
    assert host_device_count(4, 4, divides=7) == 1 and host_device_count(2, 4, divides=16) == 2


def test_split_host_cores_before_and_after_jax_starts():
    """With JAX imported but not started, the split makes one CPU device per core; once JAX has
    started it changes nothing and says so (0). Fresh processes, two cores, no XLA_FLAGS."""
    import subprocess
    import sys

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a CPU of 2 or more cores")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    split = "from cqrnet_jax.devices import split_host_cores\nprint(split_host_cores(2))\n"
    count = "print(len(jax.devices()))\n"
    for code, expected in ((split + count, ["2", "2"]), (count + split + count, ["1", "0", "1"])):
        run = [sys.executable, "-c", "import jax\n" + code]
        done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == expected, code
