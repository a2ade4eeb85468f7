"""`data.jpeg_history.grid_quality`: the IJG quality of the JPEG an image was decoded from, read
from its pixels, on scikit-image's photos (grey and colour, 4:2:0 and 4:4:4)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from cqrnet_jax.data.jpeg_history import grid_quality


def _decoded(pixels, quality, **options):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality, **options)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


@pytest.mark.parametrize("name", ["camera", "coffee"])
def test_a_decoded_jpeg_reads_its_quality(name):
    """QF 5-95: the quality itself, or one below where the tables' low steps coincide (50)."""
    photo = getattr(skimage.data, name)()
    for quality in (5, 10, 20, 30, 50, 70, 90, 95):
        assert grid_quality(_decoded(photo, quality)) in (quality, quality - 1), quality


def test_colour_without_subsampling_reads_its_quality_too():
    assert grid_quality(_decoded(skimage.data.astronaut(), 40, subsampling=0)) == 40


def test_no_jpeg_history_reads_none():
    """A photo never JPEG-compressed, a decoded JPEG cropped off its block grid, one scaled, a
    flat image and one too small to judge."""
    camera = skimage.data.camera()
    assert grid_quality(camera) is None
    decoded = _decoded(camera, 20)
    assert grid_quality(decoded[3:, 5:]) is None
    half = np.asarray(Image.fromarray(decoded).resize((256, 256), Image.BICUBIC))
    assert grid_quality(half) is None
    assert grid_quality(np.full((256, 256), 128, np.uint8)) is None
    assert grid_quality(decoded[:64, :64]) is None
