"""Where the image sets live and how to read them: evaluation sets, training lists, built-in photos.

The data directory is never hard-coded: it comes from an argument (the CLIs' --data-dir, the
training config's data.data_dir) or the CQRNET_DATA_DIR environment variable. Its layout and
sources are in docs/data.md; `cqrnet-jax fetch-data --out DIR` downloads it (`data/fetch.py`).
"""

from __future__ import annotations

import glob
import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cqrnet_jax.errors import ConfigError, InputError

from .io import load_image, load_y

DATA_DIR_ENV = "CQRNET_DATA_DIR"
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
# Folders named as inputs (deblock, estimate, folder training sources) also give these files;
# the shared data folders (list_images) keep IMAGE_SUFFIXES.
INPUT_SUFFIXES = (*IMAGE_SUFFIXES, ".jpe", ".jfif", ".gif", ".pgm", ".ppm", ".pnm", ".pbm")

# Canonical name -> folder in the data directory, each read as Y (paper §4.1): Classic5 is grey
# and used as it is; LIVE1 (the colour BMPs) and BSDS500 test (RGB JPEGs) go through `rgb_to_y`.
_EVAL_FOLDERS = {"Classic5": "Classic5", "LIVE1": "LIVE1_color", "BSDS500": "BSDS500/test"}
EVAL_SETS = tuple(_EVAL_FOLDERS)
# Held-apart validation images, for choosing models (never the test sets): a run that validates
# on one trains without it (data.train_sets).
_VALIDATION_FOLDERS = {"BSDS500val": "BSDS500/val"}
VALIDATION_SETS = tuple(_VALIDATION_FOLDERS)
TRAIN_SETS = ("BSDS500/train", "BSDS500/val", "Urban100_gray")
# Folders holding test images (LIVE1_gray is LIVE1's Y): never allowed in a training list.
_TEST_FOLDERS = (*_EVAL_FOLDERS.values(), "LIVE1_gray")
# Training folders of grey images, refused by a colour run (data.color), and the colour sets:
# Urban100_color_half holds clean colour PNGs, BSDS500's are colour JPEGs (docs/data.md).
GREY_TRAIN_SETS = ("Urban100_gray",)
COLOR_TRAIN_SETS = ("BSDS500/train", "BSDS500/val", "Urban100_color_half")

# Photos that ship inside the scikit-image wheel (skimage/data), so no download is ever needed.
_BUILTIN_PHOTOS = ("camera.png", "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")


# How a caller's user names the data directory, for the "no data directory" hint: the commands'
# flag (the default) or the training config's field (`python -m cqrnet_jax.main`).
CLI_FLAG = "--data-dir DIR"
CONFIG_FLAG = "--config.data.data_dir=DIR"


class DataDirError(InputError):
    """The data directory or one of its image folders is missing or unusable (one-line message)."""


class NoDataDirError(ConfigError, DataDirError):
    """No data directory was named at all (neither given nor in $CQRNET_DATA_DIR): a setting
    missing, so a ConfigError's exit status."""


def data_dir_given(data_dir: str | os.PathLike | None = None) -> bool:
    """Whether a data directory is named: `data_dir`, or else $CQRNET_DATA_DIR (not empty)."""
    return (data_dir is not None and str(data_dir) != "") or bool(os.environ.get(DATA_DIR_ENV))


def resolve_data_dir(data_dir: str | os.PathLike | None = None, flag: str = CLI_FLAG) -> Path:
    """The data directory: `data_dir` if given, else $CQRNET_DATA_DIR; it must exist. `flag`:
    how the caller's user gives it, named in the error when there is none (CONFIG_FLAG for the
    training entry point)."""
    if data_dir is not None and str(data_dir) != "":
        path, source = Path(data_dir).expanduser(), "given"
    elif os.environ.get(DATA_DIR_ENV):
        path, source = Path(os.environ[DATA_DIR_ENV]).expanduser(), f"from ${DATA_DIR_ENV}"
    else:
        raise NoDataDirError(
            f"no data directory: pass {flag} or set {DATA_DIR_ENV}=DIR (the folder holding "
            "Classic5/, LIVE1_color/, BSDS500/ ...; `cqrnet-jax fetch-data --out DIR` gets them)"
        )
    if not path.exists():
        raise DataDirError(f"data directory {path} ({source}) does not exist")
    if not path.is_dir():
        raise DataDirError(f"data directory {path} ({source}) is not a directory")
    return path


def is_image_file(path: Path) -> bool:
    """An image by its suffix (case-insensitive); hidden files (e.g. macOS '._x.png') excluded."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def is_input_image(path: Path) -> bool:
    """An image among a folder's files given on the command line: the training suffixes, other
    formats PIL reads (GIF, PNM, JFIF) too; hidden files excluded."""
    return path.suffix.lower() in INPUT_SUFFIXES and not path.name.startswith(".")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside `folder`, sorted; DataDirError if it is missing or has none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataDirError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise DataDirError(
            f"image folder {folder} has no image files ({', '.join(IMAGE_SUFFIXES)})"
        )
    return files


def canonical_eval_name(name: str) -> str:
    """'classic5' -> 'Classic5' etc. (test and validation sets); ConfigError otherwise."""
    for known in (*EVAL_SETS, *VALIDATION_SETS):
        if str(name).lower() == known.lower():
            return known
    known = ", ".join((*EVAL_SETS, *VALIDATION_SETS))
    raise ConfigError(f"unknown evaluation set {name!r}; known sets: {known}")


def list_eval_images(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Sorted image files of evaluation set `name` (EVAL_SETS or VALIDATION_SETS)."""
    folder = {**_EVAL_FOLDERS, **_VALIDATION_FOLDERS}[canonical_eval_name(name)]
    return list_images(resolve_data_dir(data_dir) / folder)


def load_eval_set(
    name: str, data_dir: str | os.PathLike | None = None
) -> list[tuple[str, np.ndarray]]:
    """[(image stem, Y uint8 (H, W))] of evaluation set `name`, in file-name order."""
    return [(p.stem, load_y(p)) for p in list_eval_images(name, data_dir)]


def list_train_images(
    data_dir: str | os.PathLike | None = None, sets: Iterable[str] = TRAIN_SETS
) -> list[Path]:
    """Sorted image files of the training folders `sets` (relative to the data directory).

    Refuses any evaluation folder: training must never see a test image.
    """
    root = resolve_data_dir(data_dir)
    files: list[Path] = []
    for name in sets:
        rel = Path(name).as_posix().strip("/")
        if any(
            rel.lower() == t.lower() or rel.lower().startswith(t.lower() + "/")
            for t in _TEST_FOLDERS
        ):
            raise ConfigError(f"{name!r} holds test images and cannot be used for training")
        files.extend(list_images(root / rel))
    return sorted(files)


def check_color_train_sets(sets: Iterable[str]) -> None:
    """ConfigError (one line) if a colour run's `data.train_sets` names a grey folder."""
    grey = [s for s in sets if Path(s).as_posix().strip("/").lower() in _lower(GREY_TRAIN_SETS)]
    if grey:
        names, verb = ", ".join(map(repr, grey)), "are" if len(grey) > 1 else "is"
        raise ConfigError(
            f"data.train_sets: {names} {verb} grey and data.color trains on colour images "
            f"(e.g. {', '.join(COLOR_TRAIN_SETS)}; presets: `color` after `holdout`)"
        )


def _lower(names: Iterable[str]) -> set[str]:
    return {n.lower() for n in names}


def builtin_photo_files() -> dict[str, Path]:
    """{name: file} of the photos bundled with scikit-image, read straight from the installed
    skimage/data folder (never through pooch downloads): no data, no network."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataDirError("built-in photos need scikit-image (pip install scikit-image)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [f for f in _BUILTIN_PHOTOS if not (folder / f).is_file()]
    if missing:
        raise DataDirError(f"built-in photos missing from {folder}: {', '.join(missing)}")
    return {Path(f).stem: folder / f for f in _BUILTIN_PHOTOS}


def builtin_photos() -> list[tuple[str, np.ndarray]]:
    """A few real photos bundled with scikit-image, as [(name, Y uint8 (H, W))]: the evaluator's
    default when there is no data directory."""
    return [(name, load_y(path)) for name, path in builtin_photo_files().items()]


def builtin_color_photos() -> list[tuple[str, np.ndarray]]:
    """The colour ones of `builtin_photos` (all but the grey camera), as [(name, RGB uint8
    (H, W, 3))]: a colour smoke run's training images."""
    out = []
    for name, path in builtin_photo_files().items():
        pixels = load_image(path).pixels
        if pixels.ndim == 3:
            out.append((name, pixels))
    return out


def _expand_one(arg: str, from_glob: bool = False) -> list[tuple[str, str | None]]:
    """One command-line input -> [(path, error or None)]."""
    path = Path(arg)
    if path.is_dir():
        files = [f for f in sorted(path.iterdir()) if f.is_file() and is_input_image(f)]
        return [(str(f), None) for f in files] or [(arg, "folder has no image files")]
    if path.exists() or from_glob:  # a file: whatever its suffix, it was asked for by name
        return [(arg, None)]
    if any(c in arg for c in "*?["):  # a pattern (the shell did not expand it)
        matches = sorted(glob.glob(arg, recursive=True))
        items = [item for m in matches for item in _expand_one(m, from_glob=True)]
        return items or [(arg, "no file matches this pattern")]
    return [(arg, "no such file")]


def expand_inputs(inputs) -> list[tuple[str, str | None]]:
    """[(path, error or None)] for command-line inputs; a problem is reported per input, never
    raised. A file is taken whatever its suffix; a folder gives its image files (by suffix,
    sorted, hidden files skipped, not recursive); a glob pattern (`*`, `?`, `[...]`, and `**`
    across folders) gives its matches, each taken as if named on the command line. A file named
    twice (also through a link or two patterns) is kept once, at its first place."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for arg in inputs:
        for path, error in _expand_one(str(arg)):
            key = path if error else os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                out.append((path, error))
    return out
