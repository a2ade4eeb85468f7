"""JPEG degradation of the protocol: grayscale baseline JPEG with the IJG tables, encode + decode.

PIL and TensorFlow both wrap libjpeg(-turbo); with TF's `dct_method='INTEGER_ACCURATE'` their
decoded pixels are identical to PIL's (tests/test_jpeg.py checks both), so the NumPy and tf.data
pipelines agree.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

MIN_QUALITY, MAX_QUALITY = 1, 100


def check_quality(quality: int) -> int:
    q = int(quality)
    if q != quality or not MIN_QUALITY <= q <= MAX_QUALITY:
        raise ValueError(f"JPEG quality must be an integer in [1, 100], got {quality!r}")
    return q


def jpeg_encode(y_uint8: np.ndarray, quality: int) -> bytes:
    """Encodes (H, W) uint8 as a baseline grayscale JPEG with IJG quality scaling."""
    y = np.asarray(y_uint8)
    if y.ndim != 2 or y.dtype != np.uint8:
        raise ValueError(f"expected an (H, W) uint8 image, got {y.dtype} {y.shape}")
    buf = io.BytesIO()
    # One channel: no chroma subsampling; libjpeg defaults (baseline, standard Huffman tables).
    Image.fromarray(y, mode="L").save(buf, format="JPEG", quality=check_quality(quality))
    return buf.getvalue()


def jpeg_decode(data: bytes) -> np.ndarray:
    """Decodes a grayscale JPEG to (H, W) uint8 (libjpeg's accurate integer IDCT, PIL's default)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L"))


def jpeg_degrade(y_uint8: np.ndarray, quality: int) -> np.ndarray:
    """The protocol's degradation: JPEG encode at `quality`, then decode; (H, W) uint8 both ways."""
    return jpeg_decode(jpeg_encode(y_uint8, quality))
