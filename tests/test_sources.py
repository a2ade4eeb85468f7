"""Training image sources: folders, globs and the built-in photos, loaded as Y uint8."""

import ml_collections
import numpy as np
import pytest
from PIL import Image

from cqrnet_jax.data.color import rgb_to_y
from cqrnet_jax.data.datasets import DATA_DIR_ENV, builtin_photos
from cqrnet_jax.data.sources import load_training_images


def _cfg(**kw):
    return ml_collections.ConfigDict(
        {"source": "folder", "data_dir": None, "files": "", "color": False, **kw}
    )


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (25, 15), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(grey).save(tmp_path / "b.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path, rgb, grey


def test_folder_source_loads_y_of_each_image(folder):
    """A folder gives its images (sorted), colour converted to the protocol's Y, grey as is."""
    path, rgb, grey = folder
    images = load_training_images(_cfg(files=str(path)))
    assert len(images) == 2
    np.testing.assert_array_equal(images[0], rgb_to_y(rgb))
    np.testing.assert_array_equal(images[1], grey)


def test_globs_and_lists_combine_and_bad_entries_are_errors(folder):
    """Comma-separated globs and files combine; a missing entry names itself in the error."""
    path, _, grey = folder
    images = load_training_images(_cfg(files=f"{path}/b.*, {path}/a.png"))
    np.testing.assert_array_equal(images[0], grey)
    with pytest.raises(ValueError, match="missing.png: no such file"):
        load_training_images(_cfg(files=f"{path}/a.png,{path}/missing.png"))


def test_builtin_source_is_the_builtin_photos_without_a_data_directory(monkeypatch):
    """Smoke runs and CI train on the built-in photos' Y, pixel for pixel, with no data folder
    set anywhere."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    images = load_training_images(_cfg(source="builtin"))
    expected = [y for _, y in builtin_photos()]
    assert len(images) == len(expected) >= 4
    for got, want in zip(images, expected):
        np.testing.assert_array_equal(got, want)
