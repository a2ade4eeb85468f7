"""Whether a file is the kind of image the de-blocker was trained for, from its own header.

The model learned to undo JPEG at the qualities it was trained on. Above the quality where it is
known to gain (`restore_limit`) it may lose detail, and an image that never was a JPEG has
nothing for it to undo. `deblock`, `demo` and `evaluate` leave JPEGs above the limit alone unless
forced, and warn about files that are not JPEGs. The quality is read from the file's luma
quantization table: exactly when it is one of IJG's (libjpeg's, what most software writes),
else the IJG quality whose table is nearest in log scale (cameras and Photoshop write their own
tables; Pillow's "web_high" preset, Photoshop's "high" tables, reads as ~86). Nothing is
decoded for it: `LoadedImage` carries the tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from cqrnet_jax.data.jpeg import header_quality, nearest_ijg_quality


@dataclass(frozen=True)
class FileQuality:
    """What a file's header says about its JPEG quality."""

    format: str | None  # PIL format name ("JPEG", "PNG", ...)
    quality: int | None  # IJG quality, exact or nearest; None when not a JPEG (or no table)
    exact: bool  # the table is IJG's own at `quality`
    deep: bool = False  # more than 8 bits a channel (the restorer works in 8); from `peek_quality`

    def describe(self) -> str:
        if self.exact:
            return f"JPEG quality {self.quality} (from its quantization table)"
        return f"JPEG quality ~{self.quality} (nearest IJG quality to its own quantization table)"


def trained_qualities(meta: dict) -> tuple[int, int]:
    """(lowest, highest) JPEG quality a de-blocker was trained on, from its saved config (its QF
    ranges, else its fixed QFs); the training defaults for params saved without one."""
    data = meta.get("config", {}).get("data", {})
    if ranges := data.get("quality_ranges"):
        return min(r[0] for r in ranges), max(r[1] for r in ranges)
    qualities = data.get("qualities")
    if not qualities:
        from cqrnet_jax.config_base import train_defaults

        qualities = train_defaults().data.qualities
    return min(qualities), max(qualities)


def restore_limit(meta: dict, consistency: bool = True) -> int:
    """The highest JPEG quality a de-blocker restores by default: what its metadata records as
    measured (every test image gains up to there; `restores_up_to_consistent` with the
    JPEG-consistency projection, `restores_up_to` without), else the top of its training
    qualities. Files above it are left alone unless asked (`--force`)."""
    measured = meta.get("restores_up_to_consistent") if consistency else None
    return int(measured or meta.get("restores_up_to") or trained_qualities(meta)[1])


def file_quality(loaded) -> FileQuality:
    """The JPEG quality of a loaded file (`data.io.LoadedImage`) as its header says."""
    tables = loaded.quantization if loaded.format == "JPEG" else None
    if not tables or len(tables.get(0, ())) != 64:
        return FileQuality(loaded.format, None, False)
    exact = header_quality(tables)
    if exact is not None:
        return FileQuality(loaded.format, exact, True)
    return FileQuality(loaded.format, nearest_ijg_quality(tables[0]), False)


def peek_quality(path) -> FileQuality | None:
    """What a file's header says of its JPEG quality and bit depth, read without decoding its
    pixels (so the decision to restore comes before the restoration); None when PIL cannot open
    it: its loading then reports why."""
    from dataclasses import replace
    from types import SimpleNamespace

    from PIL import Image

    from cqrnet_jax.data.io import quiet_pil_size_warning

    quiet_pil_size_warning()  # the file's loading checks its size
    try:
        with Image.open(path) as im:
            fmt, mode = im.format, im.mode
            quant = getattr(im, "quantization", None) if fmt == "JPEG" else None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    tables = {int(k): list(v) for k, v in quant.items()} if quant else None
    found = file_quality(SimpleNamespace(format=fmt, quantization=tables))
    return replace(found, deep=mode.startswith("I;16") or mode in ("I", "F"))


def quality_warning(
    found: FileQuality, trained: tuple[int, int], limit: int, conditioned: bool = False
) -> str | None:
    """One line for a file restored although the model may not help it, or None: an image that
    is not a JPEG, or (restored because forced) a JPEG above `limit`. None for a file without
    tables when the model is `conditioned`: what it is told is said once it is read from the
    pixels (`photo.quality_note`)."""
    low, high = trained
    if found.quality is None:
        if conditioned:
            return None
        kind = f"not a JPEG ({found.format})" if found.format != "JPEG" else "a JPEG without tables"
        return (
            f"{kind}: quality unknown; the model removes the artifacts of JPEG quality "
            f"{low}-{high} and only smooths an image that has none (restored anyway)"
        )
    if found.quality > limit:
        return (
            f"{found.describe()} is above {limit}, the highest this model is known to improve: "
            "it may lose detail (restored because of --force)"
        )
    return None


def skip_reason(found: FileQuality, limit: int) -> str | None:
    """Why a JPEG above `limit` is left alone, or None (not a JPEG, or within the limit)."""
    if found.quality is None or found.quality <= limit:
        return None
    return (
        f"left alone: {found.describe()} is above {limit}, the highest this model is known to "
        "improve (--force restores it)"
    )


DEEP_NOTE = "a 16-bit image: restored and written with 8 bits a channel"


def restore_notes(
    found: FileQuality | None,
    trained: tuple[int, int],
    limit: int,
    force: bool,
    conditioned: bool = False,
) -> tuple[str | None, str | None]:
    """(why a file is left alone or None, the warning to give when restoring it or None), from
    what its header says (`peek_quality`; None: unreadable, its loading says why), for a model
    told each file's quality when `conditioned`. The one decision `deblock` and `serve` both
    make."""
    if found is None:
        return None, None
    if not force and (why := skip_reason(found, limit)):
        return why, None
    note = quality_warning(found, trained, limit, conditioned)
    if found.deep:
        note = f"{note}; {DEEP_NOTE}" if note else DEEP_NOTE
    return None, note
