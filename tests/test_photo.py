"""Colour restoration (cqrnet_jax.photo, `restore_image`): the guided filter against references,
colour PSNR gained on a real 4:2:0 JPEG with the shipped model, grey kept grey."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from cqrnet_jax.data.color import rgb_to_ycbcr, ycbcr_to_rgb
from cqrnet_jax.data.io import LoadedImage
from cqrnet_jax.inference import load_restorer
from cqrnet_jax.photo import (
    box_mean,
    guided_filter,
    image_quality,
    restore_image,
    restore_rgb,
    restore_y,
)


@pytest.fixture(scope="module")
def restorer():
    return load_restorer("default")[0]


def _psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def _jpeg_420(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, subsampling=2)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _loaded(pixels, alpha=None) -> LoadedImage:
    return LoadedImage(path="x.jpg", pixels=pixels, alpha=alpha, format="JPEG", mode="RGB")


@pytest.mark.parametrize("shape, r", [((7, 9), 2), ((7, 9), 0), ((3, 40), 5), ((1, 1), 3)])
def test_box_mean_equals_a_loop_over_clipped_windows(shape, r):
    """Every window clipped to the image, at the edges and where it is wider than the image."""
    x = np.random.default_rng(0).random(shape)
    got = box_mean(x, r)
    h, w = shape
    want = [
        [x[max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1].mean() for j in range(w)]
        for i in range(h)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_guided_filter_keeps_constants_and_local_linear_functions_of_the_guide():
    guide = np.random.default_rng(1).random((20, 24))
    np.testing.assert_allclose(guided_filter(guide, np.full((20, 24), 0.3), 3, 1e-3), 0.3)
    np.testing.assert_allclose(
        guided_filter(guide, 0.5 * guide + 0.1, 3, 1e-12), 0.5 * guide + 0.1, atol=1e-8
    )


def test_colour_psnr_improves_on_a_420_jpeg(restorer):
    """Astronaut crop saved as a 4:2:0 JPEG at q10: the restored image beats the decoded one in
    RGB PSNR, and its Cb and Cr beat both the decoded chroma and the model-on-Y-only result."""
    original = skimage.data.astronaut()[40:136, 180:308]  # 96 x 128: face, hair, flag stripes
    decoded = _jpeg_420(original, 10)
    restored = restore_image(restorer, _loaded(decoded))
    assert restored.shape == original.shape and restored.dtype == np.uint8

    told = restorer.for_quality(image_quality(_loaded(decoded), restorer)[0])  # as restore_image
    y_only = rgb_to_ycbcr(decoded)
    y_only[..., 0] = restore_y(told, y_only[..., 0])
    y_only = ycbcr_to_rgb(y_only)
    gain_over_jpeg = _psnr(restored, original) - _psnr(decoded, original)
    gain_over_y_only = _psnr(restored, original) - _psnr(y_only, original)
    assert gain_over_jpeg > 0.3 and gain_over_y_only > 0.05, (gain_over_jpeg, gain_over_y_only)
    ref, out, dec = (rgb_to_ycbcr(x) for x in (original, restored, decoded))
    for c in (1, 2):
        assert _psnr(out[..., c], ref[..., c]) > _psnr(dec[..., c], ref[..., c]) + 0.2


def test_grey_stays_grey(restorer):
    """A grey image goes through the model alone; an RGB image with R = G = B comes back with
    R = G = B; alpha is carried over."""
    grey = _jpeg_420(np.repeat(skimage.data.camera()[100:148, 200:264, None], 3, -1), 20)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 0], grey[..., 2])
    told = restorer.for_quality(image_quality(_loaded(grey), restorer)[0])  # as restore_image
    np.testing.assert_array_equal(
        restore_image(restorer, _loaded(grey[..., 0])), told(grey[..., 0])
    )
    out = restore_rgb(told, grey)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    assert np.mean(np.abs(out.astype(int) - grey)) > 0.5  # restored, not passed through
    alpha = np.full(grey.shape[:2], 7, np.uint8)
    rgba = restore_image(restorer, _loaded(grey, alpha))
    np.testing.assert_array_equal(rgba[..., :3], out)
    np.testing.assert_array_equal(rgba[..., 3], alpha)


def test_the_chroma_filter_is_for_low_qualities_and_a_q90_photo_gains(restorer):
    """A colour JPEG above CHROMA_FILTER_UP_TO (read from its tables) keeps its decoded Cb/Cr,
    and comes back better than it was; one at QF 20 gets the filter."""
    from cqrnet_jax.data.io import load_image_bytes
    from cqrnet_jax.photo import CHROMA_FILTER_UP_TO, chroma_filter_pays

    original = skimage.data.astronaut()[40:200, 160:352]
    for quality, filtered in ((20, True), (CHROMA_FILTER_UP_TO + 1, False), (90, False)):
        buf = io.BytesIO()
        Image.fromarray(original).save(buf, "JPEG", quality=quality)
        loaded = load_image_bytes(buf.getvalue(), "photo.jpg")
        assert chroma_filter_pays(loaded) is filtered, quality
        out = restore_image(restorer, loaded)
        for clean in (True, False):
            same = np.array_equal(
                out,
                restore_rgb(restorer.for_quality(quality), loaded.pixels, loaded.jpeg_luma, clean),
            )
            assert same is (clean == filtered), (quality, clean)
        assert _psnr(out, original) > _psnr(loaded.pixels, original) + 0.1, quality
    # files without tables (a PNG of a decoded JPEG) keep the filter
    png = LoadedImage(path="x.png", pixels=original, alpha=None, format="PNG", mode="RGB")
    assert chroma_filter_pays(png)
