"""Where training images come from: the shared training set, a folder/glob, TFDS DIV2K, or the
built-in photos (smoke runs). All are returned as Y-channel uint8 arrays (H, W) held in memory,
or in a colour run (data.color) as RGB uint8 arrays (H, W, 3), grey images refused."""

from __future__ import annotations

import os

import numpy as np

from cqrnet_jax.data import datasets
from cqrnet_jax.data.io import load_image, load_y
from cqrnet_jax.errors import ConfigError, InputError

SOURCES = ("shared", "folder", "div2k", "builtin")


def _expand(files: str) -> list[str]:
    """Training files from comma-separated files, folders and globs; any bad entry is an error."""
    entries = [os.path.expanduser(f.strip()) for f in files.split(",") if f.strip()]
    items = datasets.expand_inputs(entries)
    bad = [f"{path}: {error}" for path, error in items if error]
    if bad or not items:
        raise InputError(f"training files {files!r}: " + ("; ".join(bad) or "nothing given"))
    return [path for path, _ in items]


def _div2k(split: str = "train", color: bool = False) -> list[np.ndarray]:
    """DIV2K high-resolution images through tensorflow-datasets (needs the dataset prepared), as
    Y, or RGB with `color`."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ConfigError(
            "data.source=div2k needs tensorflow-datasets: pip install 'cqrnet-jax[tf]'"
        ) from None

    from cqrnet_jax.data.color import rgb_to_y

    try:
        ds = tfds.load("div2k/bicubic_x2", split=split, download=False)
    except Exception as err:  # tfds raises several types for "not prepared"
        raise ConfigError(f"TFDS div2k is not available offline: {err}".splitlines()[0]) from None
    return [np.asarray(ex["hr"]) if color else rgb_to_y(ex["hr"]) for ex in tfds.as_numpy(ds)]


def training_files(data_cfg) -> list[str] | None:
    """The files the config's `data` block trains on (source shared or folder), listed without
    reading them, or None for the sources that are not files (div2k, builtin); ConfigError (one
    line) if the data directory, a folder or a file is missing. Cheap: the training entry point
    calls it before it creates anything."""
    source = data_cfg.source
    if source == "shared":
        if data_cfg.color:
            datasets.check_color_train_sets(tuple(data_cfg.train_sets))
        root = datasets.resolve_data_dir(data_cfg.data_dir, flag=datasets.CONFIG_FLAG)
        return [str(p) for p in datasets.list_train_images(root, tuple(data_cfg.train_sets))]
    if source == "folder":
        return _expand(data_cfg.files)
    if source in SOURCES:
        return None
    raise ConfigError(f"unknown data source {source!r}; choose from {', '.join(SOURCES)}")


def load_rgb(path) -> np.ndarray:
    """A colour training image, RGB uint8 (H, W, 3); ConfigError (one line) for a grey one."""
    pixels = load_image(path).pixels
    if pixels.ndim != 3:
        raise ConfigError(f"{path}: a grey image, and data.color trains on colour images only")
    return pixels


def load_training_images(data_cfg) -> list[np.ndarray]:
    """Loads the images named by the config's `data` block (source, data_dir, files): Y (H, W),
    or with data.color RGB (H, W, 3) (the built-in source: its colour photos)."""
    color = data_cfg.color
    paths = training_files(data_cfg)
    if paths is not None:
        return [load_rgb(p) if color else load_y(p) for p in paths]
    if data_cfg.source == "div2k":
        return _div2k(color=color)
    if color:
        return [rgb for _, rgb in datasets.builtin_color_photos()]
    return [y for _, y in datasets.builtin_photos()]
