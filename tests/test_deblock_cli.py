"""`cqrnet-jax deblock` through `cqrnet_jax.cli.main` with a tiny saved model: grey, colour and
RGBA files, folders and globs, OUTDIR/STEM.png outputs, and per-file errors that never stop the
other files, never print a traceback and never overwrite an input.

Every `main` call builds a fresh Restorer (a fresh jit), so the module turns on JAX's persistent
compilation cache (as test_train.py) and all images have one size: one program, compiled once.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from PIL import Image

from cqrnet_jax import pretrained
from cqrnet_jax.cli import main
from cqrnet_jax.data.color import rgb_to_y
from cqrnet_jax.data.io import load_image
from cqrnet_jax.inference import load_restorer
from cqrnet_jax.train.deblock_task import deblock_from_config

MODEL = dict(features=8, num_local_groups=1, dilations=[1, 2, 4], nl_inner=4, nl_window=16)
H, W = 40, 56  # every test image: one compiled program


@pytest.fixture(scope="module")
def model_prefix(tmp_path_factory):
    """A tiny DeblockNet with every parameter perturbed (not the identity), saved as a prefix."""
    model = deblock_from_config(MODEL)
    key = jax.random.key(0, impl="unsafe_rbg")  # compiles in a third of threefry's time
    variables = jax.device_get(jax.jit(model.init)(key, jnp.zeros((1, 16, 16), jnp.float32)))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(
        lambda a: (a + 0.02 * rng.standard_normal(a.shape)).astype(np.float32), variables
    )
    prefix = tmp_path_factory.mktemp("model") / "tiny"
    pretrained.save_variables(prefix, variables, {"kind": "deblock", "model": MODEL})
    return str(prefix)


@pytest.fixture(scope="module")
def restorer(model_prefix):
    return load_restorer(model_prefix)[0]


def _grey():
    return skimage.data.camera()[200 : 200 + H, 180 : 180 + W]


def _rgb():
    return skimage.data.astronaut()[60 : 60 + H, 200 : 200 + W]


def _save_jpeg(path: Path, pixels) -> Path:
    Image.fromarray(pixels).save(path, format="JPEG", quality=20)
    return path


def _save_rgba(path: Path) -> Path:
    alpha = np.random.default_rng(2).integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(np.dstack([_rgb(), alpha]), mode="RGBA").save(path)
    return path


def _deblock(capsys, model, *args):
    """(exit status, stderr) of `cqrnet-jax deblock ARGS --model MODEL`."""
    capsys.readouterr()
    code = main(["deblock", *map(str, args), "--model", model])
    return code, capsys.readouterr().err


def _error_lines(err: str) -> list[str]:
    """The 'error: ...' lines of stderr, each required to start a line of its own (progress-bar
    redraws, which go through carriage returns, split off)."""
    lines = [line.strip() for line in re.split(r"[\r\n]", err) if "error:" in line]
    assert all(line.startswith("error: ") for line in lines), lines  # not glued to the bar
    return lines


# --- images --------------------------------------------------------------------------------------


@pytest.fixture
def three(tmp_path):
    """A grey JPEG, a colour JPEG and an RGBA PNG in tmp_path/in."""
    src = tmp_path / "in"
    src.mkdir()
    return [
        _save_jpeg(src / "grey.jpg", _grey()),
        _save_jpeg(src / "colour.jpeg", _rgb()),
        _save_rgba(src / "rgba.png"),
    ]


def test_grey_colour_and_rgba_files_are_restored(capsys, model_prefix, restorer, three, tmp_path):
    """Grey JPEG -> grey PNG equal to the restorer's output; colour JPEG -> RGB PNG of the same
    size whose Y is the restorer's Y (within a grey level); RGBA PNG -> RGBA with the alpha
    channel unchanged; all as OUTDIR/STEM.png, exit status 0."""
    out = tmp_path / "out"
    code, err = _deblock(capsys, model_prefix, *three, "-o", out)
    assert code == 0 and not _error_lines(err), err
    assert sorted(p.name for p in out.iterdir()) == ["colour.png", "grey.png", "rgba.png"]

    grey_in = load_image(three[0]).pixels
    grey = load_image(out / "grey.png")
    assert grey.pixels.shape == (H, W) and grey.alpha is None
    np.testing.assert_array_equal(grey.pixels, restorer(grey_in))
    assert np.mean(np.abs(grey.pixels.astype(int) - grey_in)) > 1  # the model did something

    for name, src in (("colour.png", three[1]), ("rgba.png", three[2])):
        loaded, result = load_image(src), load_image(out / name)
        assert result.pixels.shape == (H, W, 3) and result.format == "PNG"
        expected_y = restorer(rgb_to_y(loaded.pixels)).astype(int)
        diff = np.abs(rgb_to_y(result.pixels).astype(int) - expected_y)
        assert np.mean(diff <= 1) >= 0.99 and diff.max() <= 3, (name, diff.max())
    assert load_image(out / "colour.png").alpha is None
    np.testing.assert_array_equal(load_image(out / "rgba.png").alpha, load_image(three[2]).alpha)


def test_folder_and_glob_inputs(capsys, model_prefix, tmp_path):
    """A folder means its image files (other files ignored); a glob its matches."""
    folder = tmp_path / "photos"
    folder.mkdir()
    _save_jpeg(folder / "a.jpg", _grey())
    _save_jpeg(folder / "b.jpg", _rgb())
    _save_rgba(folder / "c.png")
    (folder / "notes.txt").write_text("not an image")
    code, err = _deblock(capsys, model_prefix, folder, "-o", tmp_path / "all")
    assert code == 0 and not _error_lines(err), err
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["a.png", "b.png", "c.png"]
    code, err = _deblock(capsys, model_prefix, f"{folder}/*.jpg", "-o", tmp_path / "jpgs")
    assert code == 0 and not _error_lines(err), err
    assert sorted(p.name for p in (tmp_path / "jpgs").iterdir()) == ["a.png", "b.png"]


# --- errors --------------------------------------------------------------------------------------


def test_existing_output_needs_overwrite(capsys, model_prefix, three, tmp_path):
    """An existing OUTDIR/STEM.png is one error line for that file (left untouched) while the
    other files are written, exit 1; with --overwrite it is replaced, exit 0."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "grey.png").write_bytes(b"keep me")
    code, err = _deblock(capsys, model_prefix, *three, "-o", out)
    assert code == 1
    assert _error_lines(err) == [f"error: {three[0]}: {out / 'grey.png'} exists (use --overwrite)"]
    assert (out / "grey.png").read_bytes() == b"keep me"
    assert (out / "colour.png").is_file() and (out / "rgba.png").is_file()
    code, err = _deblock(capsys, model_prefix, three[0], "-o", out, "--overwrite")
    assert code == 0 and not _error_lines(err), err
    assert load_image(out / "grey.png").pixels.shape == (H, W)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("junk.jpg", b"\x8f\x02 not a picture" * 40, "not an image file"),
        ("empty.png", b"", "empty"),
    ],
)
def test_bad_file_is_one_error_line(capsys, model_prefix, three, tmp_path, name, content, reason):
    """A damaged or empty file gives exactly one 'error: FILE: reason' line, no traceback; the
    good files are still written; exit status 1."""
    bad = three[0].parent / name
    bad.write_bytes(content)
    out = tmp_path / "out"
    code, err = _deblock(capsys, model_prefix, three[0], bad, three[1], "-o", out)
    assert code == 1
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ") and reason in lines[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["colour.png", "grey.png"]


def test_output_folder_holding_the_input_never_overwrites_it(capsys, model_prefix, three):
    """`-o` the input's own folder with a .png input of the same stem is refused, even with
    --overwrite: the input is unchanged, the JPEG inputs are written next to it, exit 1."""
    folder = three[2].parent
    before = three[2].read_bytes()
    for extra in ([], ["--overwrite"]):
        code, err = _deblock(capsys, model_prefix, three[2], three[0], "-o", folder, *extra)
        assert code == 1
        assert _error_lines(err) == [f"error: {three[2]}: output would overwrite the input"]
        assert three[2].read_bytes() == before
    assert (folder / "grey.png").is_file()


def test_missing_model_is_one_error_line_and_status_2(capsys, three, tmp_path):
    """A --model that does not exist: one error line naming it, exit status 2, nothing written."""
    missing = tmp_path / "no_such_model"
    code, err = _deblock(capsys, str(missing), three[0], "-o", tmp_path / "out")
    assert code == 2
    assert err.strip() == f"error: no de-blocking model found at {missing}"
    assert not (tmp_path / "out").exists()


def test_missing_input_is_one_error_line(capsys, model_prefix, three, tmp_path):
    """An input that is neither a file, a folder nor a matching glob is one error line; the
    other inputs are still restored; exit status 1."""
    missing = tmp_path / "gone.jpg"
    code, err = _deblock(capsys, model_prefix, missing, three[0], "-o", tmp_path / "out")
    assert code == 1
    assert _error_lines(err) == [f"error: {missing}: no such file"]
    assert (tmp_path / "out" / "grey.png").is_file()


def test_folder_without_images_is_one_error_line(capsys, model_prefix, three, tmp_path):
    """A folder with no image files is one error line; the other inputs are still restored;
    exit status 1."""
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _deblock(capsys, model_prefix, empty, three[0], "-o", tmp_path / "out")
    assert _error_lines(err) == [f"error: {empty}: folder has no image files"]
    assert (tmp_path / "out" / "grey.png").is_file()
    assert code == 1
