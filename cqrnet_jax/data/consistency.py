"""JPEG-consistency projection: keep a restored image's DCT coefficients inside the intervals that
the JPEG file's quantized coefficients allow.

A baseline JPEG stores, for every 8×8 block of the level-shifted image, k = round(C / Q) for each
DCT coefficient C and step Q of its quantization table; so the image that was compressed had
C in [(k − ½)Q, (k + ½)Q]. That set is convex and holds the original, so clipping a restoration's
coefficients to it (an orthogonal projection, since the 8×8 DCT is orthonormal) never moves the
restoration farther from the original in L2: PSNR can only rise (up to rounding to 8 bits). At high
quality the intervals are narrow and the output stays close to the file; at low quality they are
wide and the network's output passes almost unchanged. Blocks cut by the image's right or bottom
edge (the encoder padded them with pixels we do not have) are left as restored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dihedral import dihedral, undo_dihedral

BLOCK = 8


def _dct_matrix(n: int = BLOCK) -> np.ndarray:
    """The orthonormal DCT-II matrix (n, n): JPEG's forward DCT of a block x is D @ x @ D.T."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_D = _dct_matrix()


def _blocks(x: np.ndarray) -> np.ndarray:
    """(H, W) with H, W multiples of 8 -> (H/8, W/8, 8, 8) views of its blocks."""
    h, w = x.shape
    return x.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).swapaxes(1, 2)


def _unblocks(b: np.ndarray) -> np.ndarray:
    nh, nw = b.shape[:2]
    return b.swapaxes(1, 2).reshape(nh * BLOCK, nw * BLOCK)


def project(restored: np.ndarray, decoded: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Projects `restored` (H, W float, 0..255 scale) onto the set of images whose JPEG
    quantization with `table` (8×8, natural order) gives the coefficients of `decoded` (H, W, the
    file's decoded component, 0..255). Returns float64 (H, W); edge blocks that are not whole stay
    as they were."""
    restored = np.asarray(restored, np.float64)
    q = np.asarray(table, np.float64).reshape(BLOCK, BLOCK)
    h, w = restored.shape
    h8, w8 = h - h % BLOCK, w - w % BLOCK
    out = restored.copy()
    if h8 == 0 or w8 == 0:
        return out
    dec = _blocks(np.asarray(decoded, np.float64)[:h8, :w8] - 128.0)
    res = _blocks(restored[:h8, :w8] - 128.0)
    k = np.round((_D @ dec @ _D.T) / q)
    coef = np.clip(_D @ res @ _D.T, (k - 0.5) * q, (k + 0.5) * q)
    out[:h8, :w8] = _unblocks(_D.T @ coef @ _D) + 128.0
    return out


def luma_table(im) -> np.ndarray | None:
    """The 8×8 quantization table (natural order) of a PIL JPEG's first component, or None when
    its tables cannot be read."""
    tables = getattr(im, "quantization", None)
    if not tables:
        return None
    layers = getattr(im, "layer", None) or []
    index = layers[0][3] if layers and len(layers[0]) > 3 else min(tables)
    table = tables.get(index)
    if table is None or len(table) != BLOCK * BLOCK:
        return None
    return np.asarray(table, np.float64).reshape(BLOCK, BLOCK)


@dataclass(frozen=True)
class JpegLuma:
    """What the projection needs from a JPEG file: its decoded luma component as stored (no EXIF
    turn; full-range JFIF Y), the component's quantization table, and the EXIF orientation (1-8)
    that turned the stored pixels upright."""

    y: np.ndarray  # uint8 (H, W), as stored
    table: np.ndarray  # (8, 8) float64, natural order
    orientation: int = 1

    @property
    def upright_shape(self) -> tuple[int, int]:
        """(H, W) of the upright pixels this luma belongs to."""
        h, w = self.y.shape
        return (w, h) if self.orientation >= 5 else (h, w)


def _luma_is_component_0(im) -> bool:
    """True when the file's first component is a full-resolution luma: a grey JPEG, or a YCbCr one
    (not Adobe-RGB, not R/G/B component ids, Y sampled at the highest rate)."""
    if im.mode == "L":
        return True
    if im.mode != "RGB" or im.info.get("adobe_transform") == 0:
        return False
    layers = getattr(im, "layer", None) or []
    if len(layers) != 3 or [c[0] for c in layers] in ([82, 71, 66], ["R", "G", "B"]):
        return False
    h, v = layers[0][1], layers[0][2]
    return all(h >= c[1] and v >= c[2] for c in layers[1:])


def read_jpeg_luma(im, source, orientation: int = 1) -> JpegLuma | None:
    """`JpegLuma` of an opened PIL JPEG, re-reading `source` (its path or bytes) for a colour
    one's Y plane; None when the file's first component is not its luma or has no table."""
    import io

    from PIL import Image  # data/io.py's dependency too; kept local so numpy users need not

    table = luma_table(im)
    if table is None or not _luma_is_component_0(im):
        return None
    if im.mode == "L":
        y = np.array(im, dtype=np.uint8)
    else:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as grey:
            grey.draft("L", None)  # libjpeg's grey output of a YCbCr JPEG is its Y component
            if grey.mode != "L" or grey.size != im.size:
                return None
            y = np.array(grey, dtype=np.uint8)
    return JpegLuma(y, table, orientation if orientation in range(1, 9) else 1)


# EXIF orientation -> the flip or rotation (`dihedral` index) that turns stored pixels upright,
# as PIL's `ImageOps.exif_transpose` does.
_EXIF_TO_DIHEDRAL = {1: 0, 2: 4, 3: 2, 4: 6, 5: 7, 6: 3, 7: 5, 8: 1}


def upright(x: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels (H, W, ...) turned upright for EXIF `orientation`."""
    return dihedral(x, _EXIF_TO_DIHEDRAL[orientation])


def stored(x: np.ndarray, orientation: int) -> np.ndarray:
    """Inverse of `upright`: upright pixels back to the file's stored orientation."""
    return undo_dihedral(x, _EXIF_TO_DIHEDRAL[orientation])


def project_upright(restored: np.ndarray, luma: JpegLuma) -> np.ndarray:
    """`project` for an upright restoration (H, W float, 0..255 JFIF Y) of the file `luma`
    describes; None-safe callers check the shapes match first."""
    turned = stored(restored, luma.orientation)
    return upright(project(turned, luma.y, luma.table), luma.orientation)
