"""A quality-conditioned de-blocker (model.quality_input) in the tools: each image is restored
told its JPEG quality, read from the file's tables (`deblock`, `serve`, `demo`), else from the
trace of a JPEG's block grid in a PNG's pixels, else the top of the range; `evaluate` tells each
QF; `export` takes the quality as a second input. One program serves every quality (it is an
input)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from helpers import deblock, error_lines, grey, save_perturbed_deblocker
from PIL import Image

from cqrnet_jax import photo
from cqrnet_jax.apps.cli import main
from cqrnet_jax.data.io import load_image
from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.ensemble import SelfEnsemble
from cqrnet_jax.inference import load_restorer
from cqrnet_jax.quality import blind_quality
from cqrnet_jax.scoring import evaluate_sets

CONDITIONED = dict(arch="unet", widths=(4, 8), blocks=(1, 1), dilations=(1, 2, 4), nl_inner=4,
                   nl_window=4, quality_input=True)  # fmt: skip


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conditioned")
    return save_perturbed_deblocker(CONDITIONED, (1, 16, 16), folder / "qmodel", 0.05)


@pytest.fixture(scope="module")
def restorer(prefix):
    return load_restorer(prefix)[0]


def _restored_told(restorer, y, quality):
    return restorer.for_quality(quality)(y)


def test_one_program_serves_every_quality(restorer):
    """`for_quality` views share the compiled program; the output follows the quality, and is
    what the network computes told it; a blind restorer ignores it."""
    y = grey()
    before = restorer.traces
    low, high = _restored_told(restorer, y, 10), _restored_told(restorer, y, 90)
    assert restorer.traces - before <= 1 and not np.array_equal(low, high)
    x = jnp.asarray(y, jnp.float32)[None] / 255.0
    direct = restorer.model.apply(restorer.variables, x, quality=jnp.array([10.0]))
    want = np.clip(np.round(np.asarray(direct)[0] * 255.0), 0, 255)
    assert np.abs(low.astype(int) - want).max() <= 1
    with pytest.raises(ValueError, match="for_quality"):
        restorer(y)
    with pytest.raises(ValueError, match=r"\[1, 100\]"):
        restorer.for_quality(0)
    ensemble = SelfEnsemble(restorer)
    assert ensemble.quality_input and ensemble.for_quality(30).restorer.quality == 30.0


def test_a_blind_restorer_needs_no_quality(tiny_restorer):
    assert not tiny_restorer.quality_input and tiny_restorer.for_quality(20) is tiny_restorer


def test_deblock_tells_each_jpeg_its_quality(capsys, prefix, restorer, tmp_path):
    """Two JPEGs of one photo at QF 10 and 25: each restored told its own quality (from its
    tables), with no warning."""
    src = tmp_path / "in"
    src.mkdir()
    for q in (10, 25):
        Image.fromarray(grey()).save(src / f"q{q}.jpg", quality=q)
    code, err = deblock(capsys, prefix, src, "-o", tmp_path / "out", "--no-consistency")
    assert code == 0 and "warning" not in err, err
    for q in (10, 25):
        loaded = load_image(src / f"q{q}.jpg")
        got = np.asarray(Image.open(tmp_path / "out" / f"q{q}.png"))
        want = photo.restore_image(restorer, loaded, consistency=False, quality=q)
        np.testing.assert_array_equal(got, want)
        other = photo.restore_image(restorer, loaded, consistency=False, quality=35 - q)
        assert not np.array_equal(got, other)


def test_a_png_of_a_jpeg_is_told_the_quality_its_pixels_keep(capsys, prefix, restorer, tmp_path):
    """PNGs of decoded QF-30 JPEGs (128 x 128, grey and colour): their 8x8 DCT lattice says 30,
    and the warning says so."""
    crops = (skimage.data.camera(), skimage.data.astronaut())
    for name, pixels in zip(("grey", "colour"), (c[64:192, 128:256] for c in crops)):
        decoded = np.asarray(Image.open(_jpeg_bytes(pixels, 30)))
        Image.fromarray(decoded).save(tmp_path / f"{name}.png")
    code, err = deblock(capsys, prefix, tmp_path / "grey.png", tmp_path / "colour.png", "-o",
                        tmp_path / "out", "--color-model", "none")  # fmt: skip
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(notes) == 2 and all("decoded JPEG of quality 30" in n for n in notes), err
    loaded = load_image(tmp_path / "grey.png")
    want = photo.restore_image(restorer, loaded, quality=30)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "grey.png")), want)


def test_a_clean_png_is_told_the_top_quality(capsys, prefix, restorer, tmp_path):
    """No JPEG grid in the pixels: the model is told UNKNOWN_QUALITY (95), which changes a clean
    image least, and the warning says so."""
    clean = skimage.data.camera()[64:192, 128:256]
    Image.fromarray(clean).save(tmp_path / "clean.png")
    code, err = deblock(capsys, prefix, tmp_path / "clean.png", "-o", tmp_path / "out")
    assert code == 0 and not error_lines(err)
    assert "restored as JPEG quality 95, which changes a clean image least" in err
    want = photo.restore_image(restorer, load_image(tmp_path / "clean.png"), quality=95)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "clean.png")), want)


def test_the_blind_estimate_reads_low_quality_low():
    """The shipped ranker through its calibration, clipped to [5, 95]: a QF-10 JPEG of the
    camera photo reads lower than the photo itself."""
    import skimage.data

    y = skimage.data.camera()[:256, :256]
    low, clean = blind_quality(jpeg_degrade(y, 10)), blind_quality(y)
    assert 5.0 <= low < clean <= 95.0


def test_evaluate_tells_each_quality(restorer):
    """`evaluate_sets` tells a conditioned model each QF, as `for_quality` does by hand."""
    images = [("a", grey())]
    rows = evaluate_sets(restorer, "q", [("set", images)], [10, 40], progress=False)
    psnr = {row["quality"]: row["psnr"] for row in rows["per_image"]}
    for q in (10, 40):
        restored = restorer.for_quality(q)(jpeg_degrade(grey(), q))
        manual = evaluate_sets(
            lambda d, out=restored: out, "m", [("set", images)], [q], progress=False
        )["per_image"][0]
        assert psnr[q] == pytest.approx(manual["psnr"])
    assert psnr[10] != psnr[40]


def test_export_takes_the_quality_as_a_second_input(prefix, restorer, tmp_path):
    """stablehlo: the artifact maps (y, quality) to what the model computes told each image's
    quality; export.json names both inputs."""
    out = tmp_path / "hlo"
    args = ["export", "-o", os.fspath(out), "--format", "stablehlo", "--model", prefix,
            "--height", "32", "--width", "48", "--platforms", "cpu"]  # fmt: skip
    assert main(args) == 0
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["quality_input"]["name"] == "quality"
    assert manifest["quality_input"]["shape"] == ["b"] and "y, quality" in manifest["run"]
    exported = jax.export.deserialize(bytearray((out / manifest["file"]).read_bytes()))
    y = np.stack([jpeg_degrade(grey()[:32, :48], q) for q in (10, 70)]).astype(np.float32) / 255
    quality = np.array([10.0, 70.0], np.float32)
    got = np.asarray(exported.call(y, quality))
    want = np.stack([restorer.for_quality(q).restore_float(im) for q, im in zip(quality, y)])
    assert np.abs(got - want).max() <= 1e-4


def _jpeg_bytes(pixels, quality):
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return buf


@pytest.mark.slow  # a TF SavedModel: ~20 s
def test_a_savedmodel_takes_the_quality_too(prefix, restorer, tmp_path, tf):
    out = tmp_path / "saved"
    args = ["export", "-o", os.fspath(out), "--format", "savedmodel", "--model", prefix,
            "--height", "32", "--width", "48", "--platforms", "cpu"]  # fmt: skip
    assert main(args) == 0
    serve = tf.saved_model.load(os.fspath(out)).signatures["serving_default"]
    assert serve.structured_input_signature[1]["quality"].shape.as_list() == [None]
    y = np.stack([jpeg_degrade(grey()[:32, :48], q) for q in (10, 70)]).astype(np.float32) / 255
    quality = np.array([10.0, 70.0], np.float32)
    got = serve(y=tf.constant(y), quality=tf.constant(quality))["restored"].numpy()
    want = np.stack([restorer.for_quality(q).restore_float(im) for q, im in zip(quality, y)])
    assert np.abs(got - want).max() <= 1e-4


def test_a_colour_model_with_a_conditioned_y_is_told_the_files_quality(capsys, tmp_path):
    """model.arch=chroma with quality_input: its Y model is the conditioned U-Net. `deblock
    --color-model` tells it a colour JPEG's quality, as `for_quality` does by hand."""
    cfg = dict(CONDITIONED, arch="chroma", channels=3, chroma_widths=(4, 8), chroma_blocks=(1, 1))
    prefix = save_perturbed_deblocker(cfg, (1, 16, 16, 3), tmp_path / "qcolour", 0.05)
    colour = load_restorer(prefix, channels=3)[0]
    assert colour.quality_input
    Image.fromarray(skimage.data.astronaut()[:48, :64]).save(tmp_path / "c.jpg", quality=15)
    loaded = load_image(tmp_path / "c.jpg")
    want = photo.restore_image(None, loaded, consistency=False, colour=colour, quality=15)
    other = photo.restore_image(None, loaded, consistency=False, colour=colour, quality=80)
    assert not np.array_equal(want, other)
    code, err = deblock(capsys, "default", tmp_path / "c.jpg", "-o", tmp_path / "out",
                        "--color-model", prefix, "--no-consistency")  # fmt: skip
    assert code == 0, err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "c.png")), want)


def test_a_blind_colour_model_gains_the_quality_planes_unchanged():
    """`add_chroma_quality_input`: a blind chroma U-Net's params, with zero slices for the Y
    model's and the chroma branch's quality planes, compute what they did at every quality;
    training then starts there (`init_from_params`, experiments/graft_color_y.py)."""
    from cqrnet_jax.models.build import deblock_from_config
    from cqrnet_jax.models.unet import add_chroma_quality_input

    cfg = dict(CONDITIONED, arch="chroma", channels=3, chroma_widths=(4, 8), chroma_blocks=(1, 1))
    blind = deblock_from_config({**cfg, "quality_input": False})
    told = deblock_from_config(cfg)
    x = jnp.asarray(skimage.data.astronaut()[:32, :48], jnp.float32)[None] / 255.0
    params = blind.init(jax.random.key(0), x)["params"]
    leaves, tree = jax.tree.flatten(params)
    noise = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, noise)]
    params = tree.unflatten(noisy)
    want = blind.apply({"params": params}, x)
    conditioned = add_chroma_quality_input(jax.device_get(params))
    assert np.shape(conditioned["chroma"]["head"]["kernel"])[2] == 17
    for q in (10.0, 90.0):
        got = told.apply({"params": conditioned}, x, quality=jnp.array([q]))
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    with pytest.raises(ValueError, match="without a quality plane"):
        add_chroma_quality_input(conditioned)
