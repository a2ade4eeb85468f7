"""`cqrnet-jax export`: every artifact, run without this package (`jax.export.deserialize`,
`tf.saved_model.load`, onnxruntime), reproduces the JAX model's output on a real JPEG-degraded
photo within 1e-4; the command refuses to replace a folder that holds no export.

The ONNX test runs only where the optional extra is installed (`pip install cqrnet-jax[onnx]`;
CI does not install it, see docs/export.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest
import skimage.data
from PIL import Image

from cqrnet_jax import pretrained
from cqrnet_jax.apps.cli import main
from cqrnet_jax.artifacts import size_multiple
from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.inference import load_restorer
from cqrnet_jax.models.build import load_ranker_model

H, W = 96, 128
TOL = 1e-4
# The photos' JPEG qualities: the shipped de-blocker is told each image's (its `quality` input).
QUALITIES = (10, 30)
QUALITY = np.array(QUALITIES, np.float32)


def _export(out, *flags) -> int:
    return main(["export", "-o", os.fspath(out), *flags])


def _manifest(out) -> dict:
    return json.loads((out / "export.json").read_text())


@pytest.fixture(scope="module")
def photos():
    """(2, H, W) float32 in [0, 1]: a crop of the camera photo (grey = Y), JPEG at QF 10 and 30."""
    y = skimage.data.camera()[120 : 120 + H, 200 : 200 + W]
    return np.stack([jpeg_degrade(y, q) for q in QUALITIES]).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def restorer():
    return load_restorer("default")[0]


@pytest.fixture(scope="module")
def reference(restorer, photos):
    """The shipped de-blocker's output through the package's own inference path, told each
    photo's quality."""
    assert restorer.quality_input  # the artifacts below take `quality` beside `y`
    return np.stack([restorer.for_quality(q).restore_float(im) for q, im in zip(QUALITIES, photos)])


def _check_restored(restored, photos, reference):
    assert restored.shape == photos.shape and restored.dtype == np.float32
    assert np.abs(restored - reference).max() <= TOL
    assert np.abs(restored - photos).max() > 0.02  # the model does change the JPEG


@pytest.mark.slow
def test_stablehlo_reproduces_jax(tmp_path, photos, reference):
    out = tmp_path / "hlo"
    assert _export(out, "--format", "stablehlo", "--height", str(H), "--width", str(W)) == 0
    manifest = _manifest(out)
    assert manifest["input"]["shape"] == ["b", H, W]
    assert manifest["quality_input"]["shape"] == ["b"]
    shipped_meta = pretrained.load_variables(pretrained.shipped("deblock"))[1]
    assert manifest["model"]["step"] == shipped_meta["step"]
    assert set(manifest["platforms"]) == {"cpu", "cuda"}
    exported = jax.export.deserialize(bytearray((out / manifest["file"]).read_bytes()))
    _check_restored(np.asarray(exported.call(photos, QUALITY)), photos, reference)


@pytest.mark.slow
def test_savedmodel_reproduces_jax(tmp_path, photos, reference, tf):
    out = tmp_path / "saved"
    assert _export(out, "--format", "savedmodel", "--height", str(H), "--width", str(W)) == 0
    serve = tf.saved_model.load(os.fspath(out)).signatures["serving_default"]
    assert serve.structured_input_signature[1]["y"].shape.as_list() == [None, H, W]
    restored = serve(y=tf.constant(photos), quality=tf.constant(QUALITY))["restored"].numpy()
    _check_restored(restored, photos, reference)


@pytest.mark.slow
def test_onnx_reproduces_jax(tmp_path, photos, reference):
    pytest.importorskip("jax2onnx", reason="the onnx extra is not installed")
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    out = tmp_path / "onnx"
    assert _export(out, "--format", "onnx", "--height", str(H), "--width", str(W)) == 0
    manifest = _manifest(out)
    assert manifest["input"]["shape"] == [1, H, W]  # jax2onnx: a fixed shape for the de-blocker
    session = ort.InferenceSession(
        os.fspath(out / manifest["file"]), providers=["CPUExecutionProvider"]
    )
    restored = np.concatenate(
        [
            session.run(None, {"y": im[None], "quality": q[None]})[0]
            for im, q in zip(photos, QUALITY)
        ]
    )
    _check_restored(restored, photos, reference)


def test_onnx_without_the_extra_is_a_usage_error(tmp_path, capsys):
    if importlib.util.find_spec("jax2onnx") is not None:
        pytest.skip("the onnx extra is installed")
    out = tmp_path / "onnx"
    assert _export(out, "--format", "onnx", "--height", str(H), "--width", str(W)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "pip install 'cqrnet-jax[onnx]'" in err
    assert "\n" not in err and not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["stablehlo", "savedmodel"])
def test_symbolic_size(tmp_path, request, restorer, fmt):
    """Without --height/--width the de-blocker's input is (b, M*h, M*w), M its size multiple (the
    span of its attention windows): one artifact restores any batch of images whose height and
    width are multiples of M, as the JAX model does (batches of one and of two images)."""
    m = size_multiple("deblock", restorer.model)
    out = tmp_path / fmt
    assert _export(out, "--format", fmt) == 0
    assert _manifest(out)["input"]["shape"] == ["b", f"{m}*h", f"{m}*w"]
    if fmt == "stablehlo":
        exported = jax.export.deserialize(bytearray((out / "deblock.jax_export").read_bytes()))
        assert str(exported.in_avals[0].shape) == f"(b, {m}*h, {m}*w)"

        def run(x, q):
            return np.asarray(exported.call(x, q))
    else:
        tf = request.getfixturevalue("tf")
        serve = tf.saved_model.load(os.fspath(out)).signatures["serving_default"]
        assert serve.structured_input_signature[1]["y"].shape.as_list() == [None, None, None]

        def run(x, q):
            return serve(y=tf.constant(x), quality=tf.constant(q))["restored"].numpy()

    y = jpeg_degrade(skimage.data.camera(), 10).astype(np.float32) / 255.0
    two = np.stack([y[:m, : 2 * m], y[256 : 256 + m, 128 : 128 + 2 * m]])
    for x in (two, y[None, 16 : 16 + 2 * m, 8 : 8 + 3 * m]):
        q = np.full(len(x), 10.0, np.float32)
        restored = run(x, q)
        assert restored.shape == x.shape and restored.dtype == np.float32
        expected = np.stack([restorer.for_quality(10).restore_float(im) for im in x])
        assert np.abs(restored - expected).max() <= TOL
        assert np.abs(restored - x).max() > 0.02


@pytest.mark.slow
def test_colour_model_with_symbolic_batch_and_size(tmp_path):
    """`--what color` exports the shipped colour model: (b, M*h, M*w, 3) RGB in and out, the
    JAX model's output within TOL on a colour JPEG (the network alone: `deblock`'s mean-colour
    shift and projection are not in it, docs/export.md)."""
    from cqrnet_jax.data.jpeg import jpeg_degrade_rgb

    restorer = load_restorer("default", channels=3)[0]
    m = size_multiple("color", restorer.model)
    out = tmp_path / "color"
    assert _export(out, "--format", "stablehlo", "--what", "color") == 0
    manifest = _manifest(out)
    assert manifest["input"]["shape"] == ["b", f"{m}*h", f"{m}*w", 3]
    assert manifest["input"]["name"] == "rgb" and manifest["model"]["config"]["channels"] == 3
    exported = jax.export.deserialize(bytearray((out / manifest["file"]).read_bytes()))
    rgb = jpeg_degrade_rgb(skimage.data.astronaut()[:m, : 2 * m], 20)
    x = (rgb.astype(np.float32) / 255.0)[None]
    got = np.asarray(exported.call(x, np.array([20.0], np.float32)))
    assert got.shape == x.shape and got.dtype == np.float32
    assert np.abs(got[0] - restorer.for_quality(20).restore_float(x[0])).max() <= TOL
    assert np.abs(got - x).max() > 0.02


@pytest.mark.slow
def test_ranker_with_symbolic_batch_and_size(tmp_path, photos):
    out = tmp_path / "ranker"
    assert _export(out, "--format", "stablehlo", "--what", "ranker") == 0
    assert _manifest(out)["input"]["shape"] == ["b", "h", "w"]
    exported = jax.export.deserialize(bytearray((out / "ranker.jax_export").read_bytes()))
    # the default ranker to export is the shipped blind estimator, not stage 2's guide
    model, variables, _ = load_ranker_model(pretrained.shipped(pretrained.ESTIMATOR))
    score = jax.jit(lambda x: model.apply(variables, x, train=False)[0])
    for x in (photos, photos[:1, 5:66, 7:90]):
        got = np.asarray(exported.call(x))
        assert got.shape == (len(x),)
        assert np.abs(got - np.asarray(score(x))).max() <= TOL
        if len(x) == 2:
            assert got[1] > got[0]  # QF 30 looks better than QF 10


def test_refuses_a_non_empty_folder_that_is_not_an_export(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for flags in ((), ("--overwrite",)):
        assert _export(out, "--format", "stablehlo", "--what", "ranker", *flags) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: -o: ") and err.count("\n") == 1
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_overwrite_replaces_an_earlier_export(tmp_path, capsys):
    out = tmp_path / "ranker"
    out.mkdir()
    (out / "export.json").write_text("{}")
    (out / "stale.bin").write_text("old")
    assert _export(out, "--format", "stablehlo", "--what", "ranker", "--height", "64") == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert _export(out, "--format", "stablehlo", "--what", "ranker", "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "ranker.jax_export"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_wrong_model_kind_is_an_input_error(tmp_path, capsys):
    """A --model file that is not the kind asked for: exit status 3, as a missing one."""
    deblock = os.fspath(pretrained.shipped("deblock"))
    assert (
        _export(tmp_path / "x", "--format", "stablehlo", "--what", "ranker", "--model", deblock)
        == 3
    )
    assert "is not a ranker model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("what", "model", "says"),
    [("deblock", "deblock_color", "--what color"), ("color", "deblock", "--what deblock")],
)
def test_colour_and_grey_models_are_not_mixed_up(tmp_path, capsys, what, model, says):
    """A colour model given to --what deblock (or a Y model to --what color): one line naming
    the flag to use, exit status 3, nothing written."""
    prefix = os.fspath(pretrained.shipped(model))
    out = tmp_path / "x"
    assert _export(out, "--format", "stablehlo", "--what", what, "--model", prefix) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --model: ") and says in err and "\n" not in err
    assert not out.exists()


def _doc_code(marker: str) -> str:
    """The ```python block of docs/export.md that contains `marker`."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    (block,) = [b for b in blocks if marker in b]
    return block


def test_the_colour_recipe_in_the_docs_is_the_packages():
    """docs/export.md's `rebuild_rgb` (decoded RGB + the artifact's Y -> RGB) gives what
    `cqrnet_jax.photo` gives before its chroma filter, for a restorer that changes Y."""
    from cqrnet_jax.data.color import rgb_to_ycbcr, ycbcr_to_rgb
    from cqrnet_jax.photo import restore_y

    class Brighter:  # stands in for the artifact / the Restorer: any change of Y will do
        def restore_float(self, y):
            return 0.9 * y + 0.08 + 0.02 * np.sin(20 * y)

    rgb = skimage.data.astronaut()[100:148, 200:264]
    space = {"np": np}
    exec(_doc_code("def rebuild_rgb"), space)
    y8 = np.round(rgb_to_ycbcr(rgb)[..., 0])  # the artifact's input, as `jpeg_y` makes it
    got = space["rebuild_rgb"](rgb, Brighter().restore_float(y8 / 255))
    ycbcr = rgb_to_ycbcr(rgb)
    ycbcr[..., 0] = restore_y(Brighter(), ycbcr[..., 0])
    expected = ycbcr_to_rgb(ycbcr)
    assert got.dtype == np.uint8 and got.shape == rgb.shape
    np.testing.assert_array_equal(got, expected)
    assert np.abs(got.astype(int) - rgb).mean() > 5  # Y did change
    unchanged = space["rebuild_rgb"](rgb, y8 / 255)  # Y as it was: the photo comes back
    np.testing.assert_array_equal(unchanged, rgb)


def test_the_quality_reader_in_the_docs_is_the_packages(tmp_path):
    """docs/export.md's standalone `jpeg_quality` gives what `deblock` tells the shipped model
    (`table_quality`): IJG files at every quality, and a file with its own (non-IJG) table."""
    from cqrnet_jax.data.jpeg import table_quality

    space = {"np": np, "Image": Image}
    exec(_doc_code("def jpeg_quality").split("\ny = jpeg_y(")[0], space)  # the functions
    y = skimage.data.camera()[:64, :64]
    for q in (1, 5, 10, 37, 50, 51, 75, 90, 95, 100):
        path = tmp_path / f"q{q}.jpg"
        Image.fromarray(y).save(path, quality=q)
        with Image.open(path) as im:
            assert space["jpeg_quality"](path) == table_quality(im.quantization) == q
    own = [max(1, min(255, int(v * 0.7) + 3)) for v in range(10, 74)]  # a camera's own table
    Image.fromarray(y).save(tmp_path / "own.jpg", qtables=[own])
    with Image.open(tmp_path / "own.jpg") as im:
        assert space["jpeg_quality"](tmp_path / "own.jpg") == table_quality(im.quantization)
