"""`cqrnet-jax estimate INPUT... [--json]`: how compressed each image looks, and what it says.

Per file: the ranker's score of its luma, that score mapped to a JPEG quality by the
calibration stored with the weights, the quality written in the file's own luma quantization
table (IJG scaling; null when not a JPEG or not IJG tables), and the quality of the JPEG its
pixels were decoded from, read from the lattice of its 8×8 DCT coefficients (null when they
carry no such trace: `data.jpeg_history`; a PNG of a JPEG keeps it). For a colour JPEG the
luma is the decoder's own Y plane (`load_luma`), the closest estimates of the lumas compared on
BSDS500 test photos (benchmarks/estimate_luma.py, experiments/results/estimate_luma.json).
Images larger than `quality.MAX_SCORED_SIDE` squared are scored on a centred, block-grid
aligned crop of that size, which bounds memory. Inputs are files, folders and globs as for
`deblock`; bad files (unreadable, not an image, too big, out of memory) get an
`error: FILE: reason` line on stderr and exit status 3; the others are still processed.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_estimate_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `estimate` subcommand to an argparse subparsers object (func=run_estimate)."""
    from cqrnet_jax.apps.common import add_ranker_argument, int_in_range
    from cqrnet_jax.data.io import DEFAULT_MAX_PIXELS

    p = subparsers.add_parser(
        "estimate",
        help="estimate the JPEG quality of images (ranker score + header quality)",
        description="Scores each image with the quality ranker and maps the score to a JPEG "
        "quality (calibrated on training images); also reads the quality from the file's own "
        "quantization table when it is an IJG JPEG, and the quality of the JPEG its pixels were "
        "decoded from (pixel_quality: from their 8x8 DCT lattice, also for a PNG of a JPEG; "
        "none when they carry no trace of one). One line per file. The estimate says how "
        "compressed an image looks, on the scale of IJG JPEG qualities: for a JPEG straight "
        "from an encoder it is close at low qualities and coarse above QF 30, the estimator's "
        "trained range (cqrnet_jax/pretrained/ranker_blind.md); for an image that was "
        "restored, resized or re-saved it is not the quality the file was written at (a "
        "restored image reads much higher): trust the header quality for that.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="image files, folders or globs")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_ranker_argument(p)
    p.add_argument(
        "--calibration",
        metavar="FILE",
        help="map scores to qualities with this calibration (written by `cqrnet-jax "
        "ranker-eval --calibrate FILE`) instead of the ranker's own",
    )
    p.add_argument(
        "--max-pixels",
        type=int_in_range(1),
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger images (decompression bombs; default {DEFAULT_MAX_PIXELS})",
    )
    p.set_defaults(func=run_estimate)
    return p


def _estimate_one(scorer, file: str, max_pixels: int) -> dict:
    """The output record of one file; raises ImageLoadError if it cannot be read."""
    from cqrnet_jax.data.io import load_image, load_luma
    from cqrnet_jax.data.jpeg import header_quality
    from cqrnet_jax.data.jpeg_history import grid_quality
    from cqrnet_jax.quality import estimate_quality, scored_region

    img = load_luma(file, max_pixels=max_pixels)
    score = float(scorer(scored_region(img.pixels)))
    cal = scorer.calibration
    # a JPEG's luma is its decoder's Y plane, the one the lattice is on; other files' is studio
    # Y, so their pixels are read again for the encoder's (full-range) luma
    pixels = img.pixels if img.format == "JPEG" else load_image(file, max_pixels=max_pixels).pixels
    return {
        "file": file,
        "score": round(score, 4),
        "estimated_quality": None if cal is None else round(estimate_quality(score, cal), 1),
        "header_quality": header_quality(img.quantization) if img.format == "JPEG" else None,
        "pixel_quality": grid_quality(pixels),
    }


def _text_line(rec: dict) -> str:
    def fmt(v):
        return "none" if v is None else v

    return (
        f"{rec['file']}  score={rec['score']:.4f} estimated_quality="
        f"{fmt(rec['estimated_quality'])} header_quality={fmt(rec['header_quality'])} "
        f"pixel_quality={fmt(rec['pixel_quality'])}"
    )


def _load_scorer(prefix, calibration_file=None):
    """The ranker, with the calibration in `calibration_file` if given; InputError (one line
    saying how to make one) if its weights are missing or are not a ranker's."""
    from cqrnet_jax import pretrained
    from cqrnet_jax.errors import InputError
    from cqrnet_jax.quality import load_calibration, load_ranker

    where = pretrained.resolve_model_prefix(prefix or "default", "ranker")
    try:
        scorer = load_ranker(where)
    except InputError as err:
        raise InputError(
            f"no usable ranker weights at {where} ({err}); train one with "
            "`python -m cqrnet_jax.main --config=configs/ranker.py:cpu --workdir=DIR` and pass "
            "--ranker DIR"
        ) from None
    if calibration_file:
        scorer.meta = {**scorer.meta, "calibration": load_calibration(calibration_file)}
    if scorer.calibration is None:
        print(
            f"warning: {where}.json has no calibration: estimated_quality is null (fit one with "
            "`cqrnet-jax ranker-eval --calibrate FILE` and pass --calibration FILE)",
            file=sys.stderr,
        )
    return scorer


def run_estimate(args) -> int:
    """Runs `estimate` for parsed args (files, json, ranker); returns the exit status."""
    from cqrnet_jax.apps.common import out_of_memory
    from cqrnet_jax.data.datasets import expand_inputs
    from cqrnet_jax.data.io import DEFAULT_MAX_PIXELS, ImageLoadError

    scorer = _load_scorer(getattr(args, "ranker", None), getattr(args, "calibration", None))
    failed = False
    max_pixels = getattr(args, "max_pixels", DEFAULT_MAX_PIXELS)
    for file, problem in expand_inputs(args.files):
        try:
            if problem:
                raise ImageLoadError(file, problem)
            rec = _estimate_one(scorer, file, max_pixels)
        except ImageLoadError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            failed = True
            continue
        except (MemoryError, RuntimeError) as err:  # anything but running out of memory is a bug
            if not out_of_memory(err):
                raise
            print(f"error: {file}: not enough memory to score it", file=sys.stderr, flush=True)
            failed = True
            continue
        print(json.dumps(rec) if args.json else _text_line(rec), flush=True)
    return ImageLoadError.exit_code if failed else 0
