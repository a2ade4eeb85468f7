"""Data directory resolution, evaluation / training sets, built-in photos.

The `test_shared_*` tests need the real sets: run with CQRNET_DATA_DIR=../shared/data
(they are skipped when it is unset or lacks the folders).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data_dir
from PIL import Image

from cqrnet_jax.data import (
    DATA_DIR_ENV,
    EVAL_SETS,
    TRAIN_SETS,
    DataDirError,
    NoDataDirError,
    builtin_photos,
    list_eval_images,
    list_train_images,
    load_eval_set,
    load_y,
    resolve_data_dir,
)
from cqrnet_jax.data.datasets import CONFIG_FLAG

# --- resolve_data_dir -------------------------------------------------------------------------


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    explicit, from_env = tmp_path / "a", tmp_path / "b"
    explicit.mkdir()
    from_env.mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(from_env))
    assert resolve_data_dir(explicit) == explicit  # the argument wins over the environment
    assert resolve_data_dir(str(explicit)) == explicit
    assert resolve_data_dir() == from_env
    assert resolve_data_dir("") == from_env  # an empty flag value counts as not given


def _one_line_error(call, *parts):
    with pytest.raises(DataDirError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg and all(p in msg for p in parts), msg
    assert isinstance(info.value, ValueError)


def test_resolve_data_dir_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    _one_line_error(resolve_data_dir, "pass --data-dir DIR or set", DATA_DIR_ENV, "fetch-data")
    with pytest.raises(NoDataDirError):  # none named at all: training can go on without eval
        resolve_data_dir()
    # the training entry point's users name it as a config field
    _one_line_error(
        lambda: resolve_data_dir(None, flag=CONFIG_FLAG),
        "pass --config.data.data_dir=DIR or set",
        DATA_DIR_ENV,
    )
    monkeypatch.setenv(DATA_DIR_ENV, "")
    _one_line_error(resolve_data_dir, "--data-dir", DATA_DIR_ENV)
    _one_line_error(
        lambda: resolve_data_dir(tmp_path / "nope"), str(tmp_path / "nope"), "not exist"
    )
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "gone"))
    _one_line_error(resolve_data_dir, "gone", DATA_DIR_ENV, "not exist")
    (tmp_path / "file").write_text("x")
    _one_line_error(lambda: resolve_data_dir(tmp_path / "file"), "not a directory")


# --- sets on a small fake data directory ------------------------------------------------------


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_eval_sets_on_fake_dir(tmp_path):
    rng = np.random.default_rng(0)
    grey, rgb = rng.integers(0, 256, (8, 8), np.uint8), rng.integers(0, 256, (6, 9, 3), np.uint8)
    _write(tmp_path / "Classic5" / "b.bmp", grey)
    _write(tmp_path / "Classic5" / "a.BMP", grey)
    (tmp_path / "Classic5" / "notes.txt").write_text("not an image")
    (tmp_path / "Classic5" / "._a.bmp").write_bytes(b"macOS metadata")
    _write(tmp_path / "LIVE1_color" / "x.png", rgb)
    assert [p.name for p in list_eval_images("classic5", tmp_path)] == ["a.BMP", "b.bmp"]
    loaded = load_eval_set("CLASSIC5", tmp_path)
    assert [name for name, _ in loaded] == ["a", "b"]
    np.testing.assert_array_equal(loaded[0][1], grey)  # grey used as it is
    (name, y), = load_eval_set("live1", tmp_path)  # fmt: skip
    assert name == "x" and y.dtype == np.uint8
    np.testing.assert_array_equal(y, load_y(tmp_path / "LIVE1_color" / "x.png"))
    with pytest.raises(ValueError, match="Classic5, LIVE1, BSDS500"):
        list_eval_images("Set14", tmp_path)
    _one_line_error(lambda: list_eval_images("BSDS500", tmp_path), "BSDS500/test", "not exist")
    (tmp_path / "BSDS500" / "test").mkdir(parents=True)
    _one_line_error(lambda: load_eval_set("BSDS500", tmp_path), "BSDS500/test", "no image files")


def test_train_list_on_fake_dir(tmp_path):
    for rel in ("BSDS500/train/2.jpg", "BSDS500/train/1.jpg", "BSDS500/val/3.jpg"):
        _write(tmp_path / rel, np.zeros((4, 4, 3), np.uint8))
    _write(tmp_path / "Urban100_gray" / "img_001.png", np.zeros((4, 4), np.uint8))
    files = list_train_images(tmp_path)
    assert files == sorted(files) and len(files) == 4
    assert list_train_images(tmp_path, sets=["BSDS500/val"]) == [tmp_path / "BSDS500/val/3.jpg"]
    for test_set in ("BSDS500/test", "classic5", "LIVE1_gray"):
        with pytest.raises(ValueError, match="test images"):
            list_train_images(tmp_path, sets=[test_set])
    _one_line_error(lambda: list_train_images(tmp_path, sets=["DIV2K"]), "DIV2K", "not exist")


def test_builtin_photos_are_real_y_images():
    photos = builtin_photos()
    assert 4 <= len(photos) <= 6 and len({n for n, _ in photos}) == len(photos)
    for _, y in photos:
        assert y.dtype == np.uint8 and y.ndim == 2 and min(y.shape) >= 256
        assert y.std() > 20  # real content, not a flat test card
    assert EVAL_SETS == ("Classic5", "LIVE1", "BSDS500")


# --- the shared data (CQRNET_DATA_DIR) --------------------------------------------------------


def test_shared_eval_sets_sizes():
    root = shared_data_dir("LIVE1_gray", "BSDS500")
    classic5 = load_eval_set("Classic5", root)
    assert [n for n, _ in classic5] == ["baboon", "barbara", "boats", "lena", "peppers"]
    assert all(y.shape == (512, 512) and y.dtype == np.uint8 for _, y in classic5)
    assert len(list_eval_images("LIVE1", root)) == 29
    bsds = list_eval_images("bsds500", root)
    assert len(bsds) == 200 and all(p.suffix == ".jpg" for p in bsds)
    ys = load_eval_set("BSDS500", root)
    assert all(y.dtype == np.uint8 and y.shape in ((321, 481), (481, 321)) for _, y in ys)


def test_shared_live1_y_matches_live1_gray():
    root = shared_data_dir("LIVE1_gray", "BSDS500")
    live1 = load_eval_set("LIVE1", root)
    assert len(live1) == 29
    for name, y in live1:
        ref = load_y(root / "LIVE1_gray" / f"{name}.png")
        assert y.shape == ref.shape
        assert np.abs(y.astype(int) - ref).max() <= 1, name


def test_shared_train_list():
    root = shared_data_dir("LIVE1_gray", "BSDS500")
    files = list_train_images(root)
    assert len(files) == 400 and files == sorted(files)
    assert TRAIN_SETS == ("BSDS500/train", "BSDS500/val", "Urban100_gray")
    assert not any("/test/" in p.as_posix() for p in files)
