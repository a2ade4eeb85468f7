"""`cqrnet-jax deblock` through `cqrnet_jax.apps.cli.main` with a tiny saved model: grey, colour and
RGBA files, folders and globs, OUTDIR/STEM.png outputs, and per-file errors that never stop the
other files, never print a traceback and never overwrite an input.

Every `main` call builds a fresh Restorer (a fresh jit), so the module turns on JAX's persistent
compilation cache (as test_train.py) and all images have one size: one program, compiled once.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import H, W, deblock, error_lines, grey, rgb, save_jpeg, save_rgba
from PIL import Image

from cqrnet_jax import inference
from cqrnet_jax.data.color import rgb_to_y
from cqrnet_jax.data.io import load_image
from cqrnet_jax.errors import UserError

# --- images --------------------------------------------------------------------------------------


@pytest.fixture
def three(tmp_path):
    """A grey JPEG, a colour JPEG and an RGBA PNG in tmp_path/in."""
    src = tmp_path / "in"
    src.mkdir()
    return [
        save_jpeg(src / "grey.jpg", grey()),
        save_jpeg(src / "colour.jpeg", rgb()),
        save_rgba(src / "rgba.png"),
    ]


def test_grey_colour_and_rgba_files_are_restored(
    capsys, tiny_model_prefix, tiny_restorer, three, tmp_path
):
    """Grey JPEG -> grey PNG equal to the restorer's output; colour JPEG -> RGB PNG of the same
    size whose Y is the restorer's Y (within a grey level); RGBA PNG -> RGBA with the alpha
    channel unchanged; all as OUTDIR/STEM.png, exit status 0. (The network's own output:
    the JPEG-consistency projection is tested in test_deblock_files.py.)"""
    out = tmp_path / "out"
    code, err = deblock(capsys, tiny_model_prefix, *three, "-o", out, "--no-consistency")
    assert code == 0 and not error_lines(err), err
    assert sorted(p.name for p in out.iterdir()) == ["colour.png", "grey.png", "rgba.png"]

    grey_in = load_image(three[0]).pixels
    grey = load_image(out / "grey.png")
    assert grey.pixels.shape == (H, W) and grey.alpha is None
    np.testing.assert_array_equal(grey.pixels, tiny_restorer(grey_in))
    assert np.mean(np.abs(grey.pixels.astype(int) - grey_in)) > 1  # the model did something

    for name, src in (("colour.png", three[1]), ("rgba.png", three[2])):
        loaded, result = load_image(src), load_image(out / name)
        assert result.pixels.shape == (H, W, 3) and result.format == "PNG"
        expected_y = tiny_restorer(rgb_to_y(loaded.pixels)).astype(int)
        diff = np.abs(rgb_to_y(result.pixels).astype(int) - expected_y)
        assert np.mean(diff <= 1) >= 0.99 and diff.max() <= 3, (name, diff.max())
    assert load_image(out / "colour.png").alpha is None
    np.testing.assert_array_equal(load_image(out / "rgba.png").alpha, load_image(three[2]).alpha)


def test_folder_and_glob_inputs(capsys, tiny_model_prefix, tmp_path):
    """A folder means its image files (other files ignored); a glob its matches."""
    folder = tmp_path / "photos"
    folder.mkdir()
    save_jpeg(folder / "a.jpg", grey())
    save_jpeg(folder / "b.jpg", rgb())
    save_rgba(folder / "c.png")
    (folder / "notes.txt").write_text("not an image")
    code, err = deblock(capsys, tiny_model_prefix, folder, "-o", tmp_path / "all")
    assert code == 0 and not error_lines(err), err
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["a.png", "b.png", "c.png"]
    code, err = deblock(capsys, tiny_model_prefix, f"{folder}/*.jpg", "-o", tmp_path / "jpgs")
    assert code == 0 and not error_lines(err), err
    assert sorted(p.name for p in (tmp_path / "jpgs").iterdir()) == ["a.png", "b.png"]


def test_expand_inputs(tmp_path):
    """Folders give their image files (not recursive, hidden ones skipped); a file named as such
    is taken whatever its suffix; glob matches are taken as if named (a matched folder gives
    its images; `**` crosses folders); a file named twice, also through a link, is kept once."""
    from cqrnet_jax.data.datasets import expand_inputs

    (tmp_path / "sub").mkdir()
    for name in ("b.jpg", "a.GIF", "c.jfif", ".hidden.png", "notes.txt", "sub/d.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "b.jpg")
    items = expand_inputs([tmp_path, tmp_path / "notes.txt", tmp_path / "link.jpg"])
    names = [Path(p).relative_to(tmp_path).as_posix() for p, _ in items]
    assert names == ["a.GIF", "b.jpg", "c.jfif", "notes.txt"] and all(e is None for _, e in items)
    found = expand_inputs([f"{tmp_path}/s*", f"{tmp_path}/**/*.png", f"{tmp_path}/b.jpg"])
    assert found == [(str(tmp_path / "sub" / "d.png"), None), (str(tmp_path / "b.jpg"), None)]


# --- errors --------------------------------------------------------------------------------------


def test_existing_output_needs_overwrite(capsys, tiny_model_prefix, three, tmp_path):
    """An existing OUTDIR/STEM.png is one error line for that file (left untouched) while the
    other files are written, exit 3; with --overwrite it is replaced, exit 0."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "grey.png").write_bytes(b"keep me")
    code, err = deblock(capsys, tiny_model_prefix, *three, "-o", out)
    assert code == 3
    assert error_lines(err) == [f"error: {three[0]}: {out / 'grey.png'} exists (use --overwrite)"]
    assert (out / "grey.png").read_bytes() == b"keep me"
    assert (out / "colour.png").is_file() and (out / "rgba.png").is_file()
    code, err = deblock(capsys, tiny_model_prefix, three[0], "-o", out, "--overwrite")
    assert code == 0 and not error_lines(err), err
    assert load_image(out / "grey.png").pixels.shape == (H, W)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("junk.jpg", b"\x8f\x02 not a picture" * 40, "not an image file"),
        ("empty.png", b"", "empty"),
    ],
)
def test_bad_file_is_one_error_line(
    capsys, tiny_model_prefix, three, tmp_path, name, content, reason
):
    """A damaged or empty file gives exactly one 'error: FILE: reason' line, no traceback; the
    good files are still written; exit status 3."""
    bad = three[0].parent / name
    bad.write_bytes(content)
    out = tmp_path / "out"
    code, err = deblock(capsys, tiny_model_prefix, three[0], bad, three[1], "-o", out)
    assert code == 3
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ") and reason in lines[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["colour.png", "grey.png"]


def _mismatched_forward(self, variables, x, valid, quality=None):
    """A shape bug inside the network: JAX raises a ValueError while tracing."""
    return x + jnp.einsum("ij,jk->", jnp.ones((2, 3)), jnp.ones((4, 2)))


def test_a_bug_inside_the_network_is_not_a_file_error(
    capsys, tiny_model_prefix, three, tmp_path, monkeypatch
):
    """A ValueError from JAX inside the model is a bug, not a bad file: it escapes `main`
    (Python prints its traceback, exit status 1) after the bad file before it got its line."""
    bad = three[0].parent / "junk.jpg"
    bad.write_bytes(b"not a picture" * 20)
    monkeypatch.setattr(inference.Restorer, "_forward", _mismatched_forward)
    with pytest.raises(ValueError, match="Size of label 'j'") as caught:
        deblock(capsys, tiny_model_prefix, bad, three[0], "-o", tmp_path / "out", "--parallel", 1)
    assert not isinstance(caught.value, UserError)
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: not an image file"), lines


def test_output_folder_holding_the_input_never_overwrites_it(capsys, tiny_model_prefix, three):
    """`-o` the input's own folder with a .png input of the same stem is refused, even with
    --overwrite: the input is unchanged, the JPEG inputs are written next to it, exit 3."""
    folder = three[2].parent
    before = three[2].read_bytes()
    for extra in ([], ["--overwrite"]):
        code, err = deblock(capsys, tiny_model_prefix, three[2], three[0], "-o", folder, *extra)
        assert code == 3
        assert error_lines(err) == [f"error: {three[2]}: output would overwrite the input"]
        assert three[2].read_bytes() == before
    assert (folder / "grey.png").is_file()


def test_missing_model_is_one_error_line_and_status_3(capsys, three, tmp_path):
    """A --model that does not exist: one error line naming it, exit status 3, nothing written."""
    missing = tmp_path / "no_such_model"
    code, err = deblock(capsys, str(missing), three[0], "-o", tmp_path / "out")
    assert code == 3
    assert err.strip() == f"error: no de-blocking model found at {missing}"
    assert not (tmp_path / "out").exists()


def test_missing_input_is_one_error_line(capsys, tiny_model_prefix, three, tmp_path):
    """An input that is neither a file, a folder nor a matching glob is one error line; the
    other inputs are still restored; exit status 3."""
    missing = tmp_path / "gone.jpg"
    code, err = deblock(capsys, tiny_model_prefix, missing, three[0], "-o", tmp_path / "out")
    assert code == 3
    assert error_lines(err) == [f"error: {missing}: no such file"]
    assert (tmp_path / "out" / "grey.png").is_file()


def test_folder_without_images_is_one_error_line(capsys, tiny_model_prefix, three, tmp_path):
    """A folder with no image files is one error line; the other inputs are still restored;
    exit status 3."""
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = deblock(capsys, tiny_model_prefix, empty, three[0], "-o", tmp_path / "out")
    assert error_lines(err) == [f"error: {empty}: folder has no image files"]
    assert (tmp_path / "out" / "grey.png").is_file()
    assert code == 3


def test_glob_matching_nothing_is_one_error_line(capsys, tiny_model_prefix, three, tmp_path):
    """A pattern with no match is one error line naming the pattern; exit status 3."""
    pattern = f"{tmp_path}/nothing*.jpg"
    code, err = deblock(capsys, tiny_model_prefix, pattern, three[0], "-o", tmp_path / "out")
    assert code == 3
    assert error_lines(err) == [f"error: {pattern}: no file matches this pattern"]
    assert (tmp_path / "out" / "grey.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "gif"], "'gif': choose from png, jpg, webp, tiff, bmp"),
        (["--tile", "-1"], "'-1' is not an integer >= 0"),
        (["--quality", "0"], "'0' is not an integer in [1, 100]"),
        (["--max-pixels", "many"], "'many' is not an integer >= 1"),
    ],
)
def test_bad_flags_are_usage_errors(capsys, tiny_model_prefix, three, tmp_path, args, message):
    """A bad flag value is one error line and exit status 2; nothing is written."""
    code, err = deblock(capsys, tiny_model_prefix, three[0], "-o", tmp_path / "out", *args)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert args[0] in err and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_output_that_is_a_file_is_a_usage_error(capsys, tiny_model_prefix, three, tmp_path):
    (tmp_path / "taken").write_bytes(b"data")
    code, err = deblock(capsys, tiny_model_prefix, three[0], "-o", tmp_path / "taken")
    assert code == 2
    assert err.strip() == f"error: -o {tmp_path / 'taken'}: exists and is not a folder"
    assert (tmp_path / "taken").read_bytes() == b"data"


# --- output formats and names -------------------------------------------------------------------


def test_formats_name_the_output_by_the_input_stem(
    capsys, tiny_model_prefix, tiny_restorer, three, tmp_path
):
    """--format writes OUTDIR/STEM.EXT in that format: lossless ones hold exactly the restored
    pixels, jpg is close to them (q95); jpg and bmp drop alpha with one warning line."""
    expected = tiny_restorer(load_image(three[0]).pixels)
    for fmt, suffix, pil_format in [
        ("png", ".png", "PNG"), ("jpeg", ".jpg", "JPEG"), ("webp", ".webp", "WEBP"),
        ("tif", ".tif", "TIFF"), ("bmp", ".bmp", "BMP"),
    ]:  # fmt: skip
        out = tmp_path / fmt
        code, err = deblock(
            capsys, tiny_model_prefix, *three, "-o", out, "--format", fmt, "--no-consistency"
        )
        assert code == 0 and not error_lines(err), err
        names = ["colour", "grey", "rgba"]
        assert sorted(p.name for p in out.iterdir()) == [n + suffix for n in names]
        grey = load_image(out / f"grey{suffix}")
        assert grey.format == pil_format and grey.is_grey == (fmt != "webp")  # WebP: no grey
        pixels = grey.pixels if grey.is_grey else grey.pixels[..., 0]
        assert grey.is_grey or np.all(grey.pixels == pixels[..., None])
        diff = np.abs(pixels.astype(int) - expected)
        assert diff.max() <= (8 if fmt == "jpeg" else 0) and diff.mean() < 1, (fmt, diff.max())
        rgba = load_image(out / f"rgba{suffix}")
        dropped = [line for line in err.splitlines() if "transparency" in line]
        if fmt in ("jpeg", "bmp"):
            assert rgba.alpha is None
            name = fmt.replace("jpeg", "jpg")
            warning = f"warning: {three[2]}: {name} keeps no alpha channel: transparency dropped"
            assert dropped == [warning]
        else:
            np.testing.assert_array_equal(rgba.alpha, load_image(three[2]).alpha)
            assert not dropped


def test_same_stem_twice_in_a_batch_writes_the_first_only(
    capsys, tiny_model_prefix, tiny_restorer, tmp_path
):
    """a/photo.jpg and b/photo.jpg both map to OUTDIR/photo.png: the first is written, the
    second is an error line naming the first (also with --overwrite, never a silent overwrite)."""
    first, second = tmp_path / "a" / "photo.jpg", tmp_path / "b" / "photo.jpg"
    for path, pixels in ((first, grey()), (second, 255 - grey())):
        path.parent.mkdir()
        save_jpeg(path, pixels)
    for extra in ([], ["--overwrite"]):
        out = tmp_path / f"out{len(extra)}"
        code, err = deblock(
            capsys, tiny_model_prefix, first, second, "-o", out, *extra, "--no-consistency"
        )
        assert code == 3
        assert error_lines(err) == [
            f"error: {second}: {out / 'photo.png'} was already written from {first} (same name): "
            "restore one of them into another folder"
        ]
        np.testing.assert_array_equal(
            load_image(out / "photo.png").pixels, tiny_restorer(load_image(first).pixels)
        )


def test_an_output_that_is_another_input_is_refused(capsys, tiny_model_prefix, tmp_path):
    """x.jpg -> OUTDIR/x.png where x.png is itself an input: both refused, even with
    --overwrite, and both inputs are unchanged."""
    jpg, png = save_jpeg(tmp_path / "x.jpg", grey()), tmp_path / "x.png"
    Image.fromarray(grey()).save(png)
    before = png.read_bytes(), jpg.read_bytes()
    code, err = deblock(capsys, tiny_model_prefix, jpg, png, "-o", tmp_path, "--overwrite")
    assert code == 3
    assert error_lines(err) == [
        f"error: {jpg}: {png} is one of the inputs: never overwritten",
        f"error: {png}: output would overwrite the input",
    ]
    assert (png.read_bytes(), jpg.read_bytes()) == before


def test_a_write_failure_is_one_error_line(capsys, tiny_model_prefix, three, tmp_path, monkeypatch):
    """A failing write (here a full disk) is one error line per file; the batch goes on."""
    import cqrnet_jax.data.io as io_module

    real_save = io_module.save_image

    def full_disk(path, array, **kw):
        if Path(path).stem == "grey":
            raise OSError(28, "No space left on device")
        real_save(path, array, **kw)

    monkeypatch.setattr(io_module, "save_image", full_disk)
    out = tmp_path / "out"
    code, err = deblock(capsys, tiny_model_prefix, *three, "-o", out)
    assert code == 3
    expected = f"error: {three[0]}: cannot write {out / 'grey.png'}: No space left on device"
    assert error_lines(err) == [expected]
    assert sorted(p.name for p in out.iterdir()) == ["colour.png", "rgba.png"]


def test_progress_bars_over_files_and_tiles(
    capsys, tiny_model_prefix, tiny_restorer, three, tmp_path
):
    """stderr shows a bar over the files and, for an image of several tiles, over its tiles
    (here 2 x 2 tiles whose margins cover the image: the result equals the untiled one)."""
    out = tmp_path / "out"
    code, err = deblock(
        capsys, tiny_model_prefix, three[0], "-o", out, "--tile", "32", "--no-consistency"
    )
    assert code == 0
    assert "deblock: 100%" in err and "| 1/1 [" in err  # the files
    assert "grey.jpg:" in err and "| 0/4 [" in err and "tile/s" in err  # its 4 tiles
    np.testing.assert_array_equal(
        load_image(out / "grey.png").pixels, tiny_restorer(load_image(three[0]).pixels)
    )
    code, err = deblock(
        capsys, tiny_model_prefix, three[0], "-o", out, "--overwrite", "--no-progress"
    )
    assert code == 0 and err.strip() == f"deblock: 1 written to {out}, 0 failed"


# --- tiles, output folder, ensemble -------------------------------------------------------------


@pytest.mark.parametrize("tile", ["1", "15"])
def test_a_tile_below_the_window_is_a_usage_error(capsys, tiny_model_prefix, three, tmp_path, tile):
    """The tiny model's windows are 16 pixels: --tile 15 would silently become 16, so it is one
    error line naming the smallest tile, exit 2, nothing written; 16 and 0 are fine."""
    out = tmp_path / "out"
    code, err = deblock(capsys, tiny_model_prefix, three[0], "-o", out, "--tile", tile)
    assert code == 2, err
    assert err.strip() == (
        f"error: --tile {tile}: the smallest tile of this model is 16 pixels (its non-local "
        "window); 0 restores whole images"
    )
    assert not out.exists()
    for ok in ("16", "0"):
        code, err = deblock(capsys, tiny_model_prefix, three[0], "-o", out / ok, "--tile", ok)
        assert code == 0 and (out / ok / "grey.png").is_file(), err


def test_a_run_that_writes_nothing_leaves_no_folder(capsys, tiny_model_prefix, tmp_path):
    """-o a/b/out with only bad inputs: exit 3 and none of a, a/b, a/b/out is created."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a picture" * 20)
    out = tmp_path / "a" / "b" / "out"
    code, err = deblock(capsys, tiny_model_prefix, bad, tmp_path / "gone.jpg", "-o", out)
    assert code == 3 and len(error_lines(err)) == 2, err
    assert not (tmp_path / "a").exists()
    assert err.strip().endswith(f"deblock: 0 written to {out}, 2 failed")


def test_an_existing_output_folder_is_kept(capsys, tiny_model_prefix, tmp_path):
    """An existing folder, empty or not, is never removed, also when nothing is written."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a picture" * 20)
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    for out in (empty, full):
        code, _ = deblock(capsys, tiny_model_prefix, bad, "-o", out)
        assert code == 3 and out.is_dir()
    assert [p.name for p in full.iterdir()] == ["keep.txt"] and not any(empty.iterdir())


def test_an_output_folder_under_a_file_is_a_usage_error(capsys, tiny_model_prefix, three, tmp_path):
    (tmp_path / "taken").write_bytes(b"data")
    code, err = deblock(capsys, tiny_model_prefix, three[0], "-o", tmp_path / "taken" / "out")
    assert code == 2
    assert err.strip() == (
        f"error: -o {tmp_path / 'taken' / 'out'}: cannot create the folder "
        f"({tmp_path / 'taken'}: not a folder)"
    )


def test_ensemble_restores_the_8_transforms_in_tiles(
    capsys, tiny_model_prefix, tiny_restorer, three, tmp_path
):
    """--ensemble writes the self-ensemble of the model (`SelfEnsemble`); in tiles of 32 (2 x 2
    tiles whose margins cover the image: as whole) the tile bar counts the tiles of all 8 passes."""
    from cqrnet_jax.ensemble import SelfEnsemble

    out = tmp_path / "out"
    code, err = deblock(
        capsys,
        tiny_model_prefix,
        three[0],
        "-o",
        out,
        "--ensemble",
        "--tile",
        32,
        "--no-consistency",
    )
    assert code == 0 and not error_lines(err), err
    assert "| 0/32 [" in err  # 8 passes of 4 tiles
    y = load_image(three[0]).pixels
    expected = SelfEnsemble(tiny_restorer)(y)
    np.testing.assert_array_equal(load_image(out / "grey.png").pixels, expected)
    assert np.any(expected != tiny_restorer(y))


@pytest.mark.slow
def test_files_restored_on_several_devices_at_once_equal_one_at_a_time(
    tiny_model_prefix, three, tmp_path
):
    """In a fresh process on a CPU of 2+ cores, deblock splits the cores into devices and
    restores files concurrently: the same bytes as --parallel 1, every file, and of two inputs
    of one name the first in input order is written and the second refused, as one at a time."""
    import os
    import subprocess
    import sys

    from cqrnet_jax.devices import host_cores

    if host_cores() < 2:
        pytest.skip("needs a CPU of 2 or more cores")
    twin = Path(three[0]).with_suffix(".png")  # grey.png: the same output name as grey.jpg
    Image.open(three[1]).save(twin)
    inputs = [*three, twin]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    outputs = {}
    for parallel in ("2", "1"):
        out = tmp_path / f"out{parallel}"
        cmd = [sys.executable, "-m", "cqrnet_jax", "deblock", *map(str, inputs), "-o", str(out)]
        cmd += ["--model", tiny_model_prefix, "--no-progress", "--parallel", parallel]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert proc.returncode == 3, proc.stderr[-2000:]
        assert error_lines(proc.stderr) == [
            f"error: {twin}: {out / 'grey.png'} was already written from {three[0]} (same name): "
            "restore one of them into another folder"
        ]
        outputs[parallel] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(outputs["2"]) == ["colour.png", "grey.png", "rgba.png"]
    assert outputs["2"] == outputs["1"]
