"""JPEG degradation of the protocol: grayscale baseline JPEG with the IJG tables, encode + decode;
and the IJG quality a file was saved at, read back from its luma quantization table.

PIL and TensorFlow both wrap libjpeg(-turbo); with TF's `dct_method='INTEGER_ACCURATE'` their
decoded pixels are identical to PIL's (tests/test_jpeg.py checks both), so the NumPy and tf.data
pipelines agree.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

MIN_QUALITY, MAX_QUALITY = 1, 100

# ITU T.81 Annex K.1 luminance table, natural (row-major) order: what libjpeg scales by quality.
_STD_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.int64,
)  # fmt: skip
# Zigzag scan position k -> natural index (JPEG files store tables in zigzag order).
_ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34,
     27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44,
     51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63],
)  # fmt: skip


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


# Chroma subsampling of a colour JPEG, as PIL's `subsampling` argument takes it.
SUBSAMPLINGS = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def jpeg_degrade_rgb(rgb_uint8: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """A colour JPEG round trip by PIL (libjpeg): (H, W, 3) uint8 RGB encoded at `quality` (IJG
    tables, luma and chroma) with `subsampling` ("4:2:0", PIL's default, or "4:4:4"), then decoded
    back to RGB with libjpeg's chroma upsampling; (H, W, 3) uint8 both ways."""
    rgb = np.asarray(rgb_uint8)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}")
    if subsampling not in SUBSAMPLINGS:
        raise ValueError(f"subsampling: one of {', '.join(SUBSAMPLINGS)}, not {subsampling!r}")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(
        buf, format="JPEG", quality=check_quality(quality), subsampling=SUBSAMPLINGS[subsampling]
    )
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return np.asarray(im.convert("RGB"))


def ijg_luma_table(quality: int, force_baseline: bool = True) -> np.ndarray:
    """libjpeg's luminance table at `quality` (jpeg_quality_scaling + jpeg_add_quant_table)."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return np.clip((_STD_LUMA * scale + 50) // 100, 1, 255 if force_baseline else 32767)


def header_quality(quantization: dict | None) -> int | None:
    """IJG quality 1..100 whose scaled luma table equals the file's table 0, else None.

    `quantization` is PIL's `im.quantization` (natural order in Pillow >= 8.3; zigzag order in
    older Pillow is accepted too). All 100 IJG tables differ, so a match is unique. Tables built
    without libjpeg's baseline clamp (16-bit entries > 255) are recognised as well.
    """
    if not quantization or 0 not in quantization:
        return None
    table = np.asarray(list(quantization[0]), np.int64)
    if table.shape != (64,):
        return None
    natural_from_zigzag = np.empty(64, np.int64)
    natural_from_zigzag[_ZIGZAG] = table
    for candidate in (table, natural_from_zigzag):  # natural order first: Pillow >= 8.3
        for q in range(1, 101):
            if any(np.array_equal(candidate, ijg_luma_table(q, b)) for b in (True, False)):
                return q
    return None


def nearest_ijg_quality(table) -> int:
    """The IJG quality (1..100) whose baseline luma table is nearest to `table` (64 entries,
    natural order) in mean squared log ratio: the scale of a table matters, not its units."""
    log_table = np.log(np.maximum(np.asarray(table, np.float64), 1.0))
    distances = [
        np.mean((log_table - np.log(ijg_luma_table(q).astype(np.float64))) ** 2)
        for q in range(1, 101)
    ]
    return int(np.argmin(distances)) + 1


def table_quality(quantization: dict | None) -> int | None:
    """A JPEG's quality from its tables (PIL's `im.quantization`): the IJG quality whose luma
    table it is, else the nearest one; None without a 64-entry luma table."""
    if not quantization or len(quantization.get(0, ())) != 64:
        return None
    exact = header_quality(quantization)
    return exact if exact is not None else nearest_ijg_quality(quantization[0])
