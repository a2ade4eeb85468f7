"""Whether a file is the kind of image the de-blocker was trained for, from its own header.

The model learned to undo JPEG at the qualities it was trained on (the shipped one: QF 10, 20
and 30). Above them it gains less and loses on some photos (README "Using it" has the numbers),
and an image that never was a JPEG has nothing for it to undo. `deblock` warns about such
files, and skips JPEGs above `--skip-above`. The quality is read from the file's luma
quantization table: exactly when it is one of IJG's (libjpeg's, what most software writes),
else the IJG quality whose table is nearest in log scale (cameras and Photoshop write their own
tables; Pillow's "web_high" preset, Photoshop's "high" tables, reads as ~86). Nothing is
decoded for it: `LoadedImage` carries the tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cqrnet_jax.data.jpeg import header_quality, ijg_luma_table


@dataclass(frozen=True)
class FileQuality:
    """What a file's header says about its JPEG quality."""

    format: str | None  # PIL format name ("JPEG", "PNG", ...)
    quality: int | None  # IJG quality, exact or nearest; None when not a JPEG (or no table)
    exact: bool  # the table is IJG's own at `quality`

    def describe(self) -> str:
        if self.exact:
            return f"JPEG quality {self.quality} (from its quantization table)"
        return f"JPEG quality ~{self.quality} (nearest IJG quality to its own quantization table)"


def trained_qualities(meta: dict) -> tuple[int, int]:
    """(lowest, highest) JPEG quality a de-blocker was trained on, from its saved config; the
    training defaults for params saved without one."""
    qualities = meta.get("config", {}).get("data", {}).get("qualities")
    if not qualities:
        from cqrnet_jax.config_base import train_defaults

        qualities = train_defaults().data.qualities
    return min(qualities), max(qualities)


def nearest_ijg_quality(table) -> int:
    """The IJG quality (1..100) whose baseline luma table is nearest to `table` (64 entries,
    natural order) in mean squared log ratio: the scale of a table matters, not its units."""
    log_table = np.log(np.maximum(np.asarray(table, np.float64), 1.0))
    distances = [
        np.mean((log_table - np.log(ijg_luma_table(q).astype(np.float64))) ** 2)
        for q in range(1, 101)
    ]
    return int(np.argmin(distances)) + 1


def file_quality(loaded) -> FileQuality:
    """The JPEG quality of a loaded file (`data.io.LoadedImage`) as its header says."""
    tables = loaded.quantization if loaded.format == "JPEG" else None
    if not tables or len(tables.get(0, ())) != 64:
        return FileQuality(loaded.format, None, False)
    exact = header_quality(tables)
    if exact is not None:
        return FileQuality(loaded.format, exact, True)
    return FileQuality(loaded.format, nearest_ijg_quality(tables[0]), False)


def quality_warning(found: FileQuality, trained: tuple[int, int]) -> str | None:
    """One line for a file the model was not trained for, or None."""
    low, high = trained
    if found.quality is None:
        kind = f"not a JPEG ({found.format})" if found.format != "JPEG" else "a JPEG without tables"
        return (
            f"{kind}: quality unknown; the model removes the artifacts of JPEG quality "
            f"{low}-{high} and only smooths an image that has none (restored anyway)"
        )
    if found.quality > high:
        return (
            f"{found.describe()} is above the model's training range {low}-{high}: it may gain "
            f"little or lose detail (restored anyway; --skip-above {high} skips such files)"
        )
    return None


def skip_reason(found: FileQuality, skip_above: int | None) -> str | None:
    """Why a file is skipped under `--skip-above`, or None: only JPEGs above it are."""
    if skip_above is None or found.quality is None or found.quality <= skip_above:
        return None
    return f"skipped: {found.describe()} is above --skip-above {skip_above}"
