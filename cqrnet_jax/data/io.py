"""One image loader for every file users give us: any PIL mode, EXIF orientation, safe errors.

`load_image` returns upright uint8 pixels ((H, W) grey or (H, W, 3) RGB) plus alpha, JPEG
tables and the colour profile; multi-frame files (GIF, APNG, TIFF) give their first frame.
`load_y` gives the protocol's Y channel (paper §4.1), `load_luma` a JPEG's own decoded luma (for
quality estimation). Every failure is an `ImageLoadError` whose message is one line,
"{path}: {reason}", so CLIs can print it as it is.
"""

from __future__ import annotations

import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cqrnet_jax.errors import InputError

from .color import rgb_to_y, round_to_uint8
from .consistency import JpegLuma, read_jpeg_luma

DEFAULT_MAX_PIXELS = 100_000_000
_ORIENTATION = 0x0112  # the EXIF orientation tag
_GREY_MODES = ("1", "L", "LA", "La")
_RGB_MODES = ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class ImageLoadError(InputError):
    """An image file could not be read; `str(err)` is the single line "{path}: {reason}"."""

    def __init__(self, path: str | os.PathLike, reason: str):
        # Keep both in args so the error pickles (e.g. across data-loader worker processes).
        super().__init__(str(path), _one_line(reason))
        self.path, self.reason = self.args

    def __str__(self) -> str:
        return f"{self.path!s}: {self.reason}".replace("\n", "\\n")


@dataclass(frozen=True)
class LoadedImage:
    """Decoded, upright pixels of one file and what we know about how it was stored."""

    path: str
    pixels: np.ndarray  # uint8, (H, W) grey or (H, W, 3) RGB
    alpha: np.ndarray | None  # uint8 (H, W) when the source had transparency
    format: str | None  # PIL format name, e.g. "JPEG", "PNG"
    mode: str  # PIL mode of the file, before any conversion
    quantization: dict[int, list[int]] | None = None  # JPEG tables (PIL `im.quantization`)
    icc_profile: bytes | None = None  # the file's colour profile, when it describes `pixels`
    jpeg_luma: JpegLuma | None = None  # a JPEG's stored luma and table, for the projection

    @property
    def is_grey(self) -> bool:
        return self.pixels.ndim == 2


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Maps 'I' / 'F' samples to uint8 by the smallest range holding them: [0, 1], 255, 65535.

    PIL gives no bit depth for these modes, so the data decide: floats in [0, 1] are scaled by
    255, values up to 255 are taken as 8-bit, anything larger as 16-bit (rounded v / 257).
    Negative values and NaN become 0.
    """
    v = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=65535.0, neginf=0.0)
    v = np.clip(v, 0.0, 65535.0)
    top = float(v.max()) if v.size else 0.0
    if values.dtype.kind == "f" and top <= 1.0:
        v = v * 255.0
    elif top > 255.0:
        v = v / 257.0
    return round_to_uint8(v)


def _split_alpha(im: Image.Image, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Converts to `mode` ('LA' or 'RGBA') and returns (colour pixels, alpha)."""
    a = np.asarray(im.convert(mode))
    return np.ascontiguousarray(a[..., :-1].squeeze(-1) if mode == "LA" else a[..., :3]), a[..., -1]


def _palette_is_grey(rgb: np.ndarray) -> bool:
    return bool(
        np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    )


class _UnsupportedMode(ValueError):
    """A pixel mode PIL reads but cannot convert to RGB: the file's problem, not a bug."""


def _decoded_pixels(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Decoded PIL image -> (uint8 pixels (H, W) or (H, W, 3), alpha or None)."""
    mode, has_trns = im.mode, "transparency" in im.info
    if mode.startswith("I;16"):  # I;16, I;16L, I;16B, I;16N: unsigned 16-bit
        v = np.asarray(im).astype(np.uint32)
        return ((v + 128) // 257).astype(np.uint8), None  # = round(v / 257), never a tie
    if mode in ("I", "F"):
        return _scale_to_uint8(np.asarray(im)), None
    if mode in ("P", "PA"):
        has_alpha = has_trns or mode == "PA"
        rgb, alpha = (
            _split_alpha(im, "RGBA") if has_alpha else (np.asarray(im.convert("RGB")), None)
        )
        # A palette of greys is a grey image (e.g. an optimised 8-bit grey PNG or GIF).
        return (np.ascontiguousarray(rgb[..., 0]) if _palette_is_grey(rgb) else rgb), alpha
    if mode in _GREY_MODES:
        if mode in ("LA", "La") or has_trns:
            return _split_alpha(im, "LA")
        return np.asarray(im.convert("L")), None
    if mode in _RGB_MODES:
        if mode in ("RGBA", "RGBa") or (mode == "RGB" and has_trns):
            return _split_alpha(im, "RGBA")
        return np.asarray(im.convert("RGB")), None
    try:  # anything newer PIL may add: let PIL decide, as colour
        return np.asarray(im.convert("RGB")), None
    except (ValueError, OSError):
        raise _UnsupportedMode(f"unsupported image mode {mode!r}") from None


def _pil_bomb_reason(err: Exception) -> str:
    """PIL's DecompressionBombError message in our words (it gives the size and its limit)."""
    found = re.findall(r"(\d+) pixels", str(err))
    if len(found) == 2:
        return f"image too large: {found[0]} pixels > PIL limit {found[1]} (decompression bomb?)"
    return f"image too large: {_one_line(err)}"


def _check_file(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageLoadError(path, "no such file") from None
    except OSError as err:
        raise ImageLoadError(path, f"cannot access file ({err.strerror or err})") from None
    if path.is_dir():
        raise ImageLoadError(path, "is a directory")
    if st.st_size == 0:
        raise ImageLoadError(path, "file is empty")


def _check_size(im: Image.Image, path: Path, max_pixels: int) -> None:
    w, h = im.size
    if w * h > max_pixels:  # Image.open only parsed the header: nothing decoded yet
        raise ImageLoadError(
            path, f"image too large: {w * h} pixels > limit {max_pixels} (decompression bomb?)"
        )


def _icc_profile(im: Image.Image, pixels: np.ndarray) -> bytes | None:
    """The file's ICC profile when it describes `pixels` (a grey profile for grey pixels, an RGB
    one for RGB), so an output can carry it; None for CMYK, Lab etc. converted by PIL."""
    icc = im.info.get("icc_profile")
    if not isinstance(icc, bytes) or len(icc) < 20:
        return None
    space = icc[16:20]
    return icc if space == (b"GRAY" if pixels.ndim == 2 else b"RGB ") else None


def _decode(im: Image.Image, path: Path, source: Path | bytes | None = None) -> LoadedImage:
    """`LoadedImage` of an opened file; `source` (default `path`) is re-read for a colour JPEG's
    luma plane."""
    mode, fmt = im.mode, im.format
    quant = getattr(im, "quantization", None) if fmt == "JPEG" else None
    with _pil_errors(path):
        im.load()  # multi-frame files (GIF, APNG, TIFF pages): the first frame
    try:
        upright = ImageOps.exif_transpose(im) or im
    except Exception as err:  # a damaged EXIF block must not make the pixels unreadable
        warnings.warn(
            f"{path}: ignoring unreadable EXIF orientation ({_one_line(err)})", stacklevel=3
        )
        upright = im
    orientation = 1
    if upright is not im:
        orientation = int(im.getexif().get(_ORIENTATION, 1) or 1)
    luma = None
    if fmt == "JPEG":
        with _pil_errors(path):  # re-reads the file for a colour JPEG's Y plane
            luma = read_jpeg_luma(im, path if source is None else source, orientation)
    try:
        pixels, alpha = _decoded_pixels(upright)
    except _UnsupportedMode as err:
        raise ImageLoadError(path, str(err)) from None
    if luma is not None and luma.upright_shape != pixels.shape[:2]:
        luma = None  # a turn we do not know how to undo
    return LoadedImage(
        path=str(path),
        pixels=np.ascontiguousarray(pixels, dtype=np.uint8),
        alpha=None if alpha is None else np.ascontiguousarray(alpha, dtype=np.uint8),
        format=fmt,
        mode=mode,
        quantization={int(k): [int(x) for x in v] for k, v in quant.items()} if quant else None,
        icc_profile=_icc_profile(im, pixels),
        jpeg_luma=luma,
    )


@contextmanager
def _pil_errors(path: Path | str):
    """What PIL raises on a damaged or unreadable file, as an `ImageLoadError` with a one-line
    reason. Only PIL's own calls go inside, so an error in our code keeps its traceback."""
    try:
        yield
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageLoadError(path, _pil_bomb_reason(err)) from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image file (unknown format or damaged header)") from None
    except IsADirectoryError:
        raise ImageLoadError(path, "is a directory") from None
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except MemoryError:
        raise ImageLoadError(path, "not enough memory to decode the image") from None
    except (OSError, SyntaxError, EOFError) as err:
        msg = _one_line(err)
        if "truncated" in msg.lower() or isinstance(err, EOFError):  # "Truncated File Read"
            raise ImageLoadError(path, "truncated image data") from None
        raise ImageLoadError(path, f"cannot decode image: {msg or type(err).__name__}") from None
    except Exception as err:  # PIL plugins raise many kinds of error on corrupt data
        msg = _one_line(err) or type(err).__name__
        raise ImageLoadError(path, f"cannot decode image: {msg}") from None


def quiet_pil_size_warning() -> None:
    """Silences PIL's DecompressionBombWarning: files are checked against `max_pixels` (our limit)
    before any decoding, and PIL's warning would fire below it; its DecompressionBombError still
    applies. A filter, not a `catch_warnings` block: that is not thread-safe, and images load in
    worker threads (re-adding the same filter replaces it)."""
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _open(file, path: Path | str, max_pixels: int) -> Image.Image:
    """`Image.open(file)` (a path or a file object), its header checked against `max_pixels`."""
    quiet_pil_size_warning()
    with _pil_errors(path):
        im = Image.open(file)
    try:
        _check_size(im, Path(path), max_pixels)
    except ImageLoadError:
        im.close()
        raise
    return im


@contextmanager
def _opened(path: Path, max_pixels: int):
    """`Image.open(path)` whose size was checked against `max_pixels`; a file PIL cannot open is
    an `ImageLoadError` with a one-line reason."""
    _check_file(path)
    with _open(path, path, max_pixels) as im:
        yield im


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Reads an image file (read-only) into upright uint8 pixels; raises `ImageLoadError`.

    `max_pixels` (width * height) is checked on the header before any decoding. PIL's own
    `Image.MAX_IMAGE_PIXELS` guard still applies as a hard error above twice its value.
    """
    with _opened(Path(path), max_pixels) as im:
        return _decode(im, Path(path))


def load_image_bytes(
    data: bytes, name: str = "<bytes>", *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """`load_image` of a file's bytes held in memory; `name` stands for the path in messages."""
    import io

    with _open(io.BytesIO(data), name, max_pixels) as im:
        return _decode(im, Path(name), source=data)


def image_size(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image file as stored, from its header alone (nothing decoded): a
    check that the file is an image within `max_pixels`; raises `ImageLoadError` as `load_image`."""
    with _opened(Path(path), max_pixels) as im:
        return im.size


def load_luma(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """The luma to judge how a file was compressed by (`cqrnet-jax estimate`), (H, W) uint8.

    A colour JPEG: its decoder's own Y plane (JFIF, full range), before chroma upsampling and
    colour conversion, so it holds the compression artifacts exactly as the encoder made them;
    Y recomputed from the decoded RGB adds RGB rounding and clipping (up to ~20 levels). It is
    left full range: mapping it to the ranker's studio range (16 + 219/255 Y) estimated no
    better than RGB-derived Y, while the full-range plane did (estimate.py has the numbers).
    Other files: `load_y`'s Y. Pixels as stored, no EXIF turn, so the JPEG block grid stays at
    the top-left as in training.
    """
    path = Path(path)
    with _opened(path, max_pixels) as im:
        if im.format == "JPEG" and im.mode == "RGB":
            quant = {int(k): [int(x) for x in v] for k, v in im.quantization.items()}
            with _pil_errors(path):
                im.draft("L", None)  # libjpeg's grey output of a YCbCr JPEG is its Y component
                y = np.array(im, dtype=np.uint8) if im.mode == "L" else None
            if y is not None:
                return LoadedImage(str(path), y, None, "JPEG", "RGB", quantization=quant)
        img = _decode(im, path)
    return img if img.is_grey else replace(img, pixels=rgb_to_y(img.pixels), alpha=None)


def load_y(path: str | os.PathLike, **kw) -> np.ndarray:
    """The protocol's Y channel, uint8 (H, W): grey sources as they are, RGB via `rgb_to_y`."""
    img = load_image(path, **kw)
    return img.pixels if img.is_grey else rgb_to_y(img.pixels)


def save_image(path: str | os.PathLike, array: np.ndarray, **save_kw) -> None:
    """Writes a uint8 (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA array; the format follows the
    file suffix. Written to a temporary file first, so a failure never leaves half a file."""
    a = np.asarray(array)
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ValueError(f"expected uint8 (H, W), (H, W, 3) or (H, W, 4), got {a.dtype} {a.shape}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fmt = Image.registered_extensions().get(path.suffix.lower())
    try:
        Image.fromarray(a).save(tmp, format=fmt, **save_kw)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
