"""The protocol's JPEG degradation (PIL == TF with the accurate IDCT) and BT.601 Y."""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from cqrnet_jax.data.color import rgb_to_y
from cqrnet_jax.data.jpeg import jpeg_degrade, jpeg_encode

QUALITIES = (1, 10, 20, 30, 50, 95)

# The IJG standard luminance quantization table (natural order) that `quality` scales.
IJG_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
)


def _photo_crops():
    cam = skimage.data.camera()
    return {"camera_129x137": cam[100:229, 150:287], "camera_37x53": cam[300:337, 200:253]}


CROPS = _photo_crops()


def _pil_roundtrip(img, q):
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="JPEG", quality=q)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return np.asarray(im)


@pytest.mark.parametrize("name", CROPS)
@pytest.mark.parametrize("q", QUALITIES)
def test_jpeg_degrade_equals_pil_roundtrip(name, q):
    """jpeg_degrade is PIL's grayscale encode + decode, bit for bit, keeping shape and dtype."""
    img = CROPS[name]
    out = jpeg_degrade(img, q)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out, _pil_roundtrip(img, q))
    if q < 95:
        assert not np.array_equal(out, img)  # it really degrades


@pytest.mark.parametrize("name", CROPS)
@pytest.mark.parametrize("q", QUALITIES)
def test_jpeg_degrade_equals_tensorflow_accurate_idct(tf, name, q):
    """TF's adjust_jpeg_quality and encode_jpeg + decode_jpeg with INTEGER_ACCURATE equal PIL."""
    img = CROPS[name]
    ours = jpeg_degrade(img, q)
    adjusted = tf.image.adjust_jpeg_quality(img[..., None], q, dct_method="INTEGER_ACCURATE")
    np.testing.assert_array_equal(adjusted.numpy()[..., 0], ours)
    data = tf.io.encode_jpeg(img[..., None], quality=q)
    decoded = tf.io.decode_jpeg(data, dct_method="INTEGER_ACCURATE")
    np.testing.assert_array_equal(decoded.numpy()[..., 0], ours)
    # The encoders agree too: PIL decodes TF's bytes to the same pixels.
    with Image.open(io.BytesIO(data.numpy())) as im:
        np.testing.assert_array_equal(np.asarray(im.convert("L")), ours)


@pytest.mark.parametrize("q", (10, 30, 95))
def test_tensorflow_default_integer_fast_decode_differs(tf, q):
    """TF's default decoder (INTEGER_FAST) is off by >= 1 on many pixels: the flag matters."""
    img = CROPS["camera_129x137"]
    data = tf.io.encode_jpeg(img[..., None], quality=q)
    fast = tf.io.decode_jpeg(data).numpy()[..., 0]
    fast_adjusted = tf.image.adjust_jpeg_quality(img[..., None], q).numpy()[..., 0]
    ours = jpeg_degrade(img, q)
    assert np.mean(fast != ours) > 0.05
    assert np.mean(fast_adjusted != ours) > 0.05


@pytest.mark.parametrize("q", QUALITIES)
def test_encoded_file_is_baseline_grayscale_with_ijg_table(q):
    """jpeg_encode writes a one-channel baseline JPEG whose table is the IJG one scaled for q."""
    with Image.open(io.BytesIO(jpeg_encode(CROPS["camera_37x53"], q))) as im:
        assert im.mode == "L" and im.format == "JPEG"
        assert not im.info.get("progressive")
        assert list(im.quantization) == [0]
        table = np.array(im.quantization[0]).reshape(8, 8)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    np.testing.assert_array_equal(table, np.clip((IJG_LUMA * scale + 50) // 100, 1, 255))


@pytest.mark.parametrize("q", (0, 101, 10.5, -5))
def test_invalid_quality_raises(q):
    """Qualities outside [1, 100] or not integers are refused."""
    with pytest.raises(ValueError, match="quality"):
        jpeg_degrade(CROPS["camera_37x53"], q)


@pytest.mark.parametrize(
    "img",
    [
        np.zeros((16, 16), np.float32),
        np.zeros((16, 16), np.uint16),
        np.zeros((16, 16, 1), np.uint8),
        np.zeros((16, 16, 3), np.uint8),
        np.zeros((16,), np.uint8),
    ],
    ids=["float32", "uint16", "HxWx1", "HxWx3", "1-D"],
)
def test_non_uint8_or_non_2d_input_raises(img):
    """Only (H, W) uint8 images are accepted."""
    with pytest.raises(ValueError, match=r"\(H, W\) uint8"):
        jpeg_degrade(img, 50)


@pytest.mark.parametrize(
    "rgb, y",
    [
        ((0, 0, 0), 16),
        ((255, 255, 255), 235),  # 16 + 65.481 + 128.553 + 24.966 = 235
        ((255, 0, 0), 81),  # round(16 + 65.481)
        ((0, 255, 0), 145),  # round(16 + 128.553)
        ((0, 0, 255), 41),  # round(16 + 24.966)
        ((128, 128, 128), 126),  # round(16 + 219 * 128 / 255) = round(125.93)
        ((255, 255, 0), 210),  # round(16 + 194.034)
        ((10, 200, 30), 122),  # 16 + (654.81 + 25710.6 + 748.98) / 255 = 122.33
    ],
)
def test_rgb_to_y_hand_values(rgb, y):
    """rgb_to_y is MATLAB's studio-swing Y, rounded: hand-computed pixels."""
    out = rgb_to_y(np.array([[rgb]], np.uint8))
    assert out.dtype == np.uint8 and out.shape == (1, 1)
    assert int(out[0, 0]) == y


def test_rgb_to_y_range_and_shape():
    """Y stays in [16, 235] for every RGB input and keeps the leading shape."""
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    y = rgb_to_y(rgb)
    assert y.shape == (7, 9) and y.dtype == np.uint8
    assert y.min() >= 16 and y.max() <= 235
    expected = np.round(16 + rgb.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255)
    np.testing.assert_array_equal(y, expected.astype(np.uint8))
