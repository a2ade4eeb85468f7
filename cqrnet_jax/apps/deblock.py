"""`cqrnet-jax deblock INPUT... -o OUTDIR`: restores real image files with a de-blocking model.

Inputs are files, folders (their image files, not recursive) and glob patterns (`expand_inputs`).
Each input becomes OUTDIR/STEM.EXT (`--format`, PNG by default), upright (EXIF orientation
applied), with the input's colour profile. Nothing is ever overwritten by surprise: an input
never, an existing output only with --overwrite, and when two inputs share a stem (a.jpg,
a.png) the first is written and the second is an error (no silent renaming).

Big images go through the model in tiles (--tile, default 1024), which bounds memory (a
12-megapixel photo's peak: experiments/results/deblock_speed_cpu_unet.txt); tiled and whole
results agree within one grey level (tests/test_inference.py). A tile is rounded
up to whole non-local windows (128 pixels for the shipped model); a tile below one window is
refused, not silently enlarged: it would not bound memory as asked.

JPEGs above the quality the model is known to improve (`input_quality.restore_limit`: the highest
quality at which its metadata records every test image gaining) are left alone with one line
each and nothing written, unless `--force`; `--skip-above QF` moves that limit.
Images that are not JPEGs are restored with a warning. `--ensemble` restores the 8 flips and
rotations of each image and averages them (`cqrnet_jax.ensemble`): 8 times the time.

Each bad file (unreadable, not an image, too big, not writable, out of memory) gets one
`error: FILE: reason` line on stderr and the batch goes on; any other exception is a bug and
stops the run with its traceback. The exit status is 0 when every file was written or skipped,
3 when any failed, 2 for usage errors (`cqrnet_jax/errors.py`). The output folder is created
with the first file written, so a run that writes nothing leaves none.

How grey and colour pixels are restored is `photo.restore_image`'s business; alpha is carried over.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import sys
from pathlib import Path

import numpy as np

from cqrnet_jax.apps.common import (
    UsageError,
    add_color_model_argument,
    add_model_argument,
    int_in_range,
    out_of_memory,
)
from cqrnet_jax.apps.input_quality import peek_quality, restore_notes
from cqrnet_jax.errors import InputError
from cqrnet_jax.photo import restore_image

# --format -> file suffix; PIL picks the writer from the suffix.
FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif", "bmp": ".bmp"}
_FORMAT_ALIASES = {"jpeg": "jpg", "tif": "tiff"}
# A multiple of the shipped model's 128-pixel windows. Each tile is restored with margins around
# it, so bigger tiles spend less time on margins; memory grows with the tile (a 12 MP photo's time
# and peak at 1024 and 512: experiments/results/deblock_speed_cpu_unet.txt).
DEFAULT_TILE = 1024
JPEG_QUALITY = 95  # --format jpg without --quality; written 4:4:4 (no new chroma blur)


def _format(text: str) -> str:
    name = _FORMAT_ALIASES.get(text.lower(), text.lower())
    if name not in FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(FORMATS)}")
    return name


def add_deblock_parser(subparsers) -> argparse.ArgumentParser:
    from cqrnet_jax.data.io import DEFAULT_MAX_PIXELS

    p = subparsers.add_parser(
        "deblock",
        help="remove JPEG artifacts from image files",
        description="Restores each input (files, folders, globs) and writes OUTDIR/STEM.png "
        "(or --format). Folders are not searched recursively; use a glob such as "
        "'photos/**/*.jpg' for that. Inputs and existing outputs are never overwritten "
        "(the latter unless --overwrite).",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    add_model_argument(p)
    add_color_model_argument(p)
    p.add_argument(
        "--format",
        type=_format,
        default="png",
        help=f"output format: {', '.join(FORMATS)} (default png)",
    )
    p.add_argument(
        "--quality",
        type=int_in_range(1, 100),
        help=f"jpg/webp quality (default: jpg {JPEG_QUALITY}, webp lossless)",
    )
    p.add_argument(
        "--tile",
        type=int_in_range(0),
        default=DEFAULT_TILE,
        help="tile size in pixels, bounds memory: rounded up to whole non-local windows of the "
        "model (128 pixels for the shipped one, also the smallest tile); 0 = whole image "
        f"(default {DEFAULT_TILE})",
    )
    p.add_argument(
        "--skip-above",
        type=int_in_range(1, 100),
        metavar="QF",
        help="leave JPEGs whose quality (read from their quantization table) is above QF alone: "
        "a line each, nothing written (default: the highest quality the model is known to "
        "improve: 90 for the shipped one)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="restore every file whatever its JPEG quality (above the model's limit it may "
        "lose detail)",
    )
    p.add_argument(
        "--no-consistency",
        action="store_true",
        help="write the network's output as it is; by default a JPEG's restored luma keeps each "
        "DCT coefficient inside the file's quantization interval, which never moves it away "
        "from the photo before compression",
    )
    p.add_argument(
        "--ensemble",
        action="store_true",
        help="restore the 8 flips and rotations of each image and average them: a little "
        'better, 8 times slower (docs/usage.md, "Self-ensemble")',
    )
    p.add_argument(
        "--max-pixels",
        type=int_in_range(1),
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger images (decompression bombs; default {DEFAULT_MAX_PIXELS})",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--parallel",
        type=int_in_range(1),
        metavar="N",
        help="restore N files at once, one per device: on a CPU its cores split into N devices "
        "(default: min(cores, 4)), on GPUs one per GPU",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return p


class FileError(InputError):
    """One input could not be restored; the message is the reason, one line."""


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _file_key(path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, else None: links and case-insensitive names
    resolve to the file they name."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _check_target(target: Path, source: str, inputs: set, written: dict, overwrite: bool) -> None:
    """Raises FileError when writing `target` for `source` could lose data."""
    key = _file_key(target)
    if key is None:
        return
    if target.is_dir():
        raise FileError(f"{target} is a folder")
    if key == _file_key(source):
        raise FileError("output would overwrite the input")
    if key in inputs:
        raise FileError(f"{target} is one of the inputs: never overwritten")
    if key in written:
        raise FileError(
            f"{target} was already written from {written[key]} (same name): "
            "restore one of them into another folder"
        )
    if not overwrite:
        raise FileError(f"{target} exists (use --overwrite)")


def _save_options(out: np.ndarray, loaded, fmt: str, quality: int | None):
    """(pixels, PIL save options, warning or None) for writing `out` as `fmt`."""
    options, warning = {}, None
    if loaded.icc_profile is not None and fmt != "bmp":
        options["icc_profile"] = loaded.icc_profile
    if fmt in ("jpg", "bmp") and out.ndim == 3 and out.shape[-1] == 4:
        out, warning = out[..., :3], f"{fmt} keeps no alpha channel: transparency dropped"
    if fmt == "jpg":
        options.update(quality=quality or JPEG_QUALITY, subsampling=0)
    elif fmt == "webp":
        options.update({"quality": quality} if quality else {"lossless": True})
    elif fmt == "tiff":
        options["compression"] = "tiff_deflate"
    return np.ascontiguousarray(out), options, warning


class _TileCounter:
    """Counts tiles on a progress bar; a further pass over the same tiles extends it."""

    def __init__(self, bar, per_pass: int):
        self.bar, self.per_pass = bar, per_pass

    def update(self, n: int = 1) -> None:
        if self.bar.n + n > self.bar.total:
            self.bar.total += self.per_pass
        self.bar.update(n)


def _restore_with_progress(
    restorer, loaded, label: str, show: bool, consistency: bool = True, colour=None, quality=None
) -> np.ndarray:
    """`restore_image`, with a progress bar over the tiles when there are several."""
    from tqdm import tqdm

    def restore():
        return restore_image(restorer, loaded, consistency, colour, quality)

    active = colour if colour is not None and loaded.pixels.ndim == 3 else restorer
    n = sum(1 for _ in active.tiles(*loaded.pixels.shape[:2]))
    if not show or n <= 1:
        return restore()
    with tqdm(total=n, desc=label, unit="tile", leave=False, file=sys.stderr) as bar:
        active.progress = _TileCounter(bar, n)
        try:
            return restore()
        finally:
            active.progress = None


class _Skipped(Exception):
    """An input left alone on purpose (above the model's limit); the message says why."""


def restore_file(
    restorer,
    path: str,
    *,
    max_pixels: int,
    fmt: str = "png",
    quality: int | None = None,
    show_tiles: bool = False,
    consistency: bool = True,
    colour=None,
):
    """Loads and restores `path` as `deblock` does: (the loaded image, pixels to write, PIL save
    options, warning or None). Raises FileError with the one-line reason on failure. Without
    `show_tiles`, tiles are counted on `restorer.progress` when it is set (`serve`'s page).
    `consistency`: keep a JPEG's restored luma inside the file's quantization intervals;
    `colour`: the colour model for colour pixels (`photo.restore_image`). A quality-conditioned
    model is told the file's JPEG quality (`photo.image_quality`); the warning says which when
    the file has no tables."""
    from cqrnet_jax.data.io import ImageLoadError, load_image
    from cqrnet_jax.photo import image_quality, quality_note

    try:
        loaded = load_image(path, max_pixels=max_pixels)
        name = Path(path).name
        told, source = image_quality(loaded, restorer, colour)
        out = _restore_with_progress(restorer, loaded, name, show_tiles, consistency, colour, told)
    except ImageLoadError as err:
        raise FileError(err.reason) from None
    except (MemoryError, RuntimeError) as err:  # anything but running out of memory is a bug
        if not out_of_memory(err):
            raise
        raise FileError("not enough memory (try a smaller --tile)") from None
    out, options, warning = _save_options(out, loaded, fmt, quality)
    notes = [n for n in (quality_note(told, source), warning) if n]
    return loaded, out, options, "; ".join(notes) or None


def _restore_file(restorer, colour, path: str, args, show_tiles: bool):
    """`restore_file` for parsed args: (pixels, PIL save options, warning or None) to write."""
    kw = dict(max_pixels=args.max_pixels, fmt=args.format, quality=args.quality)
    kw.update(consistency=not args.no_consistency, colour=colour)
    return restore_file(restorer, path, **kw, show_tiles=show_tiles)[1:]


def _write(target: Path, out: np.ndarray, options: dict) -> None:
    """Writes a restored image, creating the output folder with the first file."""
    from cqrnet_jax.data.io import save_image

    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # with the first file written
        save_image(target, out, **options)
    except OSError as err:
        reason = err.strerror or _one_line(err)
        raise FileError(f"cannot write {target}: {reason}") from None


def _output_folder(text: str) -> Path:
    """The output folder, not created yet (the first file written creates it, so a run that
    writes nothing leaves no empty folder); UsageError if it cannot be one."""
    out = Path(text).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a folder")
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"-o {out}: cannot write into the folder (permission denied)")
    base = next(p for p in (out, *out.absolute().parents) if p.exists())
    if base != out and not (base.is_dir() and os.access(base, os.W_OK | os.X_OK)):
        why = "permission denied" if base.is_dir() else "not a folder"
        raise UsageError(f"-o {out}: cannot create the folder ({base}: {why})")
    return out


def check_tile(args, restorer) -> None:
    """A tile below the model's non-local window would be enlarged to it: refused instead."""
    if 0 < args.tile < restorer.step:
        raise UsageError(
            f"--tile {args.tile}: the smallest tile of this model is {restorer.step} pixels "
            "(its non-local window); 0 restores whole images"
        )


def run_deblock(args) -> int:
    """Runs `deblock` for parsed args; returns the exit status (0, or 3 if any file failed)."""
    from cqrnet_jax.devices import MAX_HOST_DEVICES, inference_devices, split_host_cores

    # before JAX starts: files (and a large photo's tiles) run on all cores at once
    split_host_cores(args.parallel or MAX_HOST_DEVICES)
    from tqdm import tqdm

    from cqrnet_jax.apps.input_quality import restore_limit, trained_qualities
    from cqrnet_jax.data.datasets import expand_inputs
    from cqrnet_jax.ensemble import SelfEnsemble
    from cqrnet_jax.inference import load_color_restorer, load_restorer

    outdir = _output_folder(args.output)
    devices = inference_devices(args.parallel)
    restorer, meta = load_restorer(args.model, tile=args.tile, devices=devices)
    colour = load_color_restorer(args.color_model, args.model, tile=args.tile, devices=devices)
    check_tile(args, restorer)
    trained = trained_qualities(meta)
    conditioned = restorer.quality_input  # told each file's quality (`photo.image_quality`)
    limit = args.skip_above
    if limit is None:
        limit = restore_limit(meta, not args.no_consistency)
    if args.ensemble:
        restorer = SelfEnsemble(restorer)
        colour = None if colour is None else SelfEnsemble(colour)
    items = expand_inputs(args.inputs)
    inputs = {_file_key(p) for p, error in items if error is None} - {None}
    written: dict[tuple[int, int], str] = {}
    failed = skipped = 0
    # As many files in flight as devices (one restorer: its programs are compiled once and its
    # jobs go to the devices in turn); each is checked and written here, in input order, so two
    # inputs of one name never race for one output. Tile bars only when one file runs at a time
    # (one device, or one file to restore: its tiles then go to the devices in turn).
    workers = len(devices)
    one_at_a_time = workers == 1 or sum(error is None for _, error in items) == 1
    show_tiles = not args.no_progress and one_at_a_time
    pending: collections.deque = collections.deque()

    def warn_for(path):
        def warn(line: str) -> None:
            tqdm.write(f"warning: {path}: {line}", file=sys.stderr)  # not glued to the bar

        return warn

    def finish(path, target, future, note=None) -> None:  # target: the error if no future
        nonlocal failed, skipped
        if note:  # a warning known before the restoration, shown in input order
            warn_for(path)(note)
        try:
            if future is None:
                raise FileError(target)
            out, options, warning = future.result()
            _check_target(target, path, inputs, written, args.overwrite)
            _write(target, out, options)
            written[_file_key(target)] = path
            if warning:
                warn_for(path)(warning)
        except _Skipped as why:
            warn_for(path)(str(why))
            skipped += 1
        except FileError as err:
            tqdm.write(f"error: {path}: {err}", file=sys.stderr)
            failed += 1
        bar.update(1)

    bar = tqdm(
        total=len(items), desc="deblock", unit="file", file=sys.stderr, disable=args.no_progress
    )
    with bar, concurrent.futures.ThreadPoolExecutor(workers) as pool:  # closed on a bug too
        for path, error in items:
            target = outdir / (Path(path).stem + FORMATS[args.format])
            if error is not None:
                pending.append((path, error, None, None))
            else:
                note = None
                try:  # refused now, not after a restoration (checked again before writing)
                    _check_target(target, path, inputs, written, args.overwrite)
                    found = peek_quality(path)
                    why, note = restore_notes(found, trained, limit, args.force, conditioned)
                    if why:
                        raise _Skipped(why)
                except (FileError, _Skipped) as err:
                    future = concurrent.futures.Future()
                    future.set_exception(err)
                else:
                    future = pool.submit(_restore_file, restorer, colour, path, args, show_tiles)
                pending.append((path, target, future, note))
            while len(pending) > workers or (pending and pending[0][2] is None):
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
    counts = [f"{len(written)} written to {outdir}", f"{skipped} skipped" * bool(skipped)]
    summary = ", ".join(c for c in [*counts, f"{failed} failed"] if c)
    print(f"deblock: {summary}", file=sys.stderr)
    return InputError.exit_code if failed else 0
