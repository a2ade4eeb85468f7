"""Photos of any kind through a Y de-blocker (`restore_image`: grey, colour, with alpha).

Colour: Y through the de-blocker, Cb/Cr cleaned by a guided filter led by the restored Y.
Colour JPEGs store chroma at half resolution (4:2:0) with a coarser table than luma, so decoded
Cb/Cr carry 16×16-pixel blocks and blurred edges. A guided filter (He et al., ECCV 2010) with the
restored Y as guide smooths those blocks while keeping chroma edges where Y has edges. On LIVE1
it beat the decoded chroma and the de-blocker applied to Cb/Cr, at a fraction of the latter's
cost (`benchmarks/chroma.py`, numbers in docs/method.md "Colour images"). Above
CHROMA_FILTER_UP_TO the decoded chroma is fine enough that the filter loses more detail than it
removes blocks, so files of a higher quality keep their decoded Cb/Cr.

A quality-conditioned model (`inference.Restorer.quality_input`) is told each file's JPEG
quality (`image_quality`): read from its quantization tables, else from the trace a decoded
JPEG's block grid leaves in its pixels (a PNG of a JPEG), else the top of its training range.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cqrnet_jax.data.color import rgb_to_ycbcr, round_to_uint8, ycbcr_to_rgb
from cqrnet_jax.data.consistency import JpegLuma, project_upright
from cqrnet_jax.data.jpeg import table_quality
from cqrnet_jax.data.jpeg_history import grid_quality

# Guided-filter window radius (pixels) and regulariser (on Y in [0, 1]); docs/method.md.
CHROMA_RADIUS = 3
CHROMA_EPS = 1e-4
# The highest JPEG quality (read from the file's tables) whose chroma the guided filter cleans:
# above it, the filter gained almost nothing on average and cost some photos much, and from
# QF 80 it lost on average (experiments/results/chroma_filter_qf.json, BSDS500 val).
CHROMA_FILTER_UP_TO = 60


def box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean of `x` (H, W) over (2r+1)² windows, each window clipped to the image: the
    zero-padded box filter divided by the fraction of each window inside the image."""
    size = 2 * radius + 1
    x = np.asarray(x, np.float64)
    inside = [ndimage.uniform_filter1d(np.ones(n), size, mode="constant") for n in x.shape]
    return ndimage.uniform_filter(x, size, mode="constant") / np.outer(*inside)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter: `src` as a local linear function of `guide`, both (H, W)."""
    mean_i, mean_p = box_mean(guide, radius), box_mean(src, radius)
    cov = box_mean(guide * src, radius) - mean_i * mean_p
    var = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)


def restore_y(restorer, y: np.ndarray) -> np.ndarray:
    """Studio-swing float Y (H, W) -> restored float Y: the model sees the rounded uint8 Y, the
    sub-level part of the input is kept."""
    y8 = round_to_uint8(y)
    return restorer.restore_float(y8.astype(np.float32) / 255.0) * 255.0 + (y - y8)


def filter_chroma(ycbcr: np.ndarray, radius: int = CHROMA_RADIUS, eps: float = CHROMA_EPS):
    """Float YCbCr (H, W, 3) -> a copy whose Cb and Cr are guided-filtered with its Y as guide."""
    out = np.array(ycbcr, np.float64)
    guide = out[..., 0] / 255.0
    for c in (1, 2):
        out[..., c] = 255.0 * guided_filter(guide, out[..., c] / 255.0, radius, eps)
    return out


def _studio_to_full(y: np.ndarray) -> np.ndarray:
    return (y - 16.0) * (255.0 / 219.0)  # studio Y of an RGB = 16 + 219/255 · its JFIF Y


def _full_to_studio(y: np.ndarray) -> np.ndarray:
    return 16.0 + y * (219.0 / 255.0)


def restore_rgb(
    restorer, rgb: np.ndarray, luma: JpegLuma | None = None, clean_chroma: bool = True
) -> np.ndarray:
    """Decoded colour JPEG (H, W, 3) uint8 -> restored RGB uint8: Y by the model, Cb/Cr by the
    guided filter with the restored Y (or as decoded, without `clean_chroma`). Neutral
    (R = G = B) images stay exactly neutral. With `luma` (the file's Y plane and table), the
    restored Y is projected onto what the file allows."""
    ycbcr = rgb_to_ycbcr(rgb)
    y = restore_y(restorer, ycbcr[..., 0])
    if luma is not None:
        y = _full_to_studio(project_upright(_studio_to_full(y), luma))
    ycbcr[..., 0] = y
    if _is_neutral(rgb):
        ycbcr[..., 1:] = 128.0  # no chroma to filter; one channel, copied, keeps R = G = B exact
        return np.repeat(ycbcr_to_rgb(ycbcr)[..., 1:2], 3, axis=-1)
    return ycbcr_to_rgb(filter_chroma(ycbcr) if clean_chroma else ycbcr)


def file_jpeg_quality(loaded) -> int | None:
    """The JPEG quality of a loaded file (`data.io.LoadedImage`) from its luma quantization
    table (IJG's quality exactly, else the nearest); None when it is not a JPEG."""
    return table_quality(loaded.quantization) if loaded.format == "JPEG" else None


# What a conditioned model is told for an image with no JPEG trace: the top of its training range.
UNKNOWN_QUALITY = 95.0


def told_quality(restorer, quality: float):
    """`restorer` told that its images are JPEGs of `quality` when it is quality-conditioned
    (`for_quality`); any other restorer (an identity, a blind model) as it is."""
    if restorer is None or not getattr(restorer, "quality_input", False):
        return restorer
    return restorer.for_quality(quality)


def image_quality(loaded, *restorers) -> tuple[float | None, str | None]:
    """(the JPEG quality the quality-conditioned ones of `restorers` are told for a loaded
    image, where it comes from): the file's tables ("file", `file_jpeg_quality`); else the
    trace its pixels keep of a JPEG's block grid ("pixels", `data.jpeg_history.grid_quality`:
    a PNG of a decoded JPEG); else UNKNOWN_QUALITY ("unknown": a clean image, or one resized
    or cropped after its JPEG). (None, None) when none of them is conditioned: nothing is read.

    Not the ranker's blind estimate (`quality.blind_quality`): it read 20 clean Urban100 photos as
    QF 25-95, and the conditioned model told that left them at 42.6 dB Y PSNR from themselves
    (worst 38.5) against 45.2 told UNKNOWN_QUALITY and 45.3 by the blind model; on PNGs of QF-80
    JPEGs it cost 0.4 dB of the gain (experiments/results/nonjpeg_inputs.json)."""
    if not any(getattr(r, "quality_input", False) for r in restorers if r is not None):
        return None, None
    quality = file_jpeg_quality(loaded)
    if quality is not None:
        return float(quality), "file"
    quality = grid_quality(loaded.pixels)
    if quality is not None:
        return float(quality), "pixels"
    return UNKNOWN_QUALITY, "unknown"


def quality_note(quality: float, source: str | None) -> str | None:
    """One line on the quality a conditioned model was told for a file without tables (None
    for a JPEG's own, which needs no note)."""
    if source == "pixels":
        return (
            f"not a JPEG file, but its pixels are a decoded JPEG of quality {quality:.0f} "
            "(read from their 8x8 DCT lattice): restored as such"
        )
    if source == "unknown":
        return (
            f"no trace of a JPEG's 8x8 blocks in its pixels: restored as JPEG quality "
            f"{quality:.0f}, which changes a clean image least (it needs no restoration)"
        )
    return None


def chroma_filter_pays(loaded) -> bool:
    """Whether the guided filter cleans a loaded colour file's chroma: unless it is a JPEG of a
    quality above CHROMA_FILTER_UP_TO (files without tables, e.g. PNGs, get the filter)."""
    quality = file_jpeg_quality(loaded)
    return quality is None or quality <= CHROMA_FILTER_UP_TO


def colour_model_pays(colour, loaded) -> bool:
    """Whether a colour model restores a loaded file: unless it is a JPEG of a quality above
    the model's `color_up_to` (its metadata: every test photo gained up to there); above it,
    Y by the Y model alone does (`restore_rgb`)."""
    limit, quality = colour.meta.get("color_up_to"), file_jpeg_quality(loaded)
    return limit is None or quality is None or quality <= limit


def restore_rgb_model(restorer, rgb: np.ndarray, luma: JpegLuma | None = None) -> np.ndarray:
    """Decoded colour JPEG (H, W, 3) uint8 -> restored RGB uint8 by a colour model (RGB in and
    out). The restored Cb and Cr are shifted to the decoded ones' means, so the photo's mean
    colour stays the JPEG's, at almost no cost in PSNR (docs/method.md, "Colour images").
    A neutral image stays exactly neutral (Cb = Cr = 128). With `luma`, the Y of the restored
    RGB is projected onto what the file allows."""
    out = restorer.restore_float(np.asarray(rgb, np.float32) / 255.0) * 255.0
    ycbcr = rgb_to_ycbcr(out)  # unrounded
    if luma is not None:
        ycbcr[..., 0] = _full_to_studio(project_upright(_studio_to_full(ycbcr[..., 0]), luma))
    if _is_neutral(rgb):
        ycbcr[..., 1:] = 128.0
        return np.repeat(ycbcr_to_rgb(ycbcr)[..., 1:2], 3, axis=-1)
    decoded = rgb_to_ycbcr(rgb)[..., 1:]
    ycbcr[..., 1:] += decoded.mean(axis=(0, 1)) - ycbcr[..., 1:].mean(axis=(0, 1))
    return ycbcr_to_rgb(ycbcr)


def _is_neutral(rgb: np.ndarray) -> bool:
    return np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])


def restore_grey(restorer, grey: np.ndarray, luma: JpegLuma | None = None) -> np.ndarray:
    """Grey uint8 (H, W) -> restored uint8; with `luma`, projected onto what the file allows."""
    y = restorer.restore_float(np.asarray(grey, np.float32) / 255.0) * 255.0
    if luma is not None:
        y = project_upright(y, luma)
    return round_to_uint8(y)


def restore_image(
    restorer, loaded, consistency: bool = True, colour=None, quality: float | None = None
) -> np.ndarray:
    """A loaded image (`data.io.LoadedImage`) restored, as uint8: (H, W) grey, (H, W, 3) RGB or
    (H, W, 4) RGBA (alpha carried over). `restorer` is a Y model; colour pixels go through
    `colour`, a colour model (`restore_rgb_model`), when given (and `colour_model_pays`), else Y
    by `restorer` and Cb/Cr by the guided filter (`restore_rgb`, where `chroma_filter_pays`).
    With `consistency` and a JPEG whose luma was read, the restored luma keeps every DCT
    coefficient inside the file's quantization interval (`data.consistency`). A
    quality-conditioned model is told `quality`, else the file's (`image_quality`)."""
    if quality is None:
        quality = image_quality(loaded, restorer, colour)[0]
    if quality is not None:
        restorer, colour = told_quality(restorer, quality), told_quality(colour, quality)
    pixels = loaded.pixels
    luma = getattr(loaded, "jpeg_luma", None) if consistency else None
    if luma is not None and luma.upright_shape != pixels.shape[:2]:
        luma = None
    if pixels.ndim == 2:
        out = restore_grey(restorer, pixels, luma)
    elif colour is not None and colour_model_pays(colour, loaded):
        out = restore_rgb_model(colour, pixels, luma)
    else:
        out = restore_rgb(restorer, pixels, luma, chroma_filter_pays(loaded))
    if loaded.alpha is not None:
        rgb = out if out.ndim == 3 else np.repeat(out[..., None], 3, axis=-1)
        out = np.concatenate([rgb, loaded.alpha[..., None]], axis=-1)
    return out
