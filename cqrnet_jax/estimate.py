"""`cqrnet-jax estimate FILE... [--json]`: how compressed each image looks, and what it says.

Per file: the ranker's score of its Y channel, that score mapped to a JPEG quality by the
calibration stored with the weights, and the quality written in the file's own luma quantization
table (IJG scaling; null when not a JPEG or not IJG tables). Bad files get an
`error: FILE: reason` line on stderr and exit status 1; the others are still processed.
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_FILE_ERRORS, EXIT_NO_RANKER = 1, 2


def add_estimate_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `estimate` subcommand to an argparse subparsers object (func=run_estimate)."""
    p = subparsers.add_parser(
        "estimate",
        help="estimate the JPEG quality of images (ranker score + header quality)",
        description="Scores each image with the quality ranker and maps the score to a JPEG "
        "quality (calibrated on training images); also reads the quality from the file's own "
        "quantization table when it is an IJG JPEG. One line per file.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="image files, folders or globs")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--ranker", metavar="PREFIX", help="ranker weights prefix (default: shipped)")
    p.set_defaults(func=run_estimate)
    return p


def _estimate_one(scorer, file: str) -> dict:
    """The output record of one file; raises ImageLoadError / RuntimeError on failure."""
    from cqrnet_jax.data.color import rgb_to_y
    from cqrnet_jax.data.io import load_image
    from cqrnet_jax.ranker_eval import estimate_quality, header_quality

    img = load_image(file)
    y = img.pixels if img.is_grey else rgb_to_y(img.pixels)
    score = float(scorer(y))
    cal = scorer.calibration
    return {
        "file": file,
        "score": round(score, 4),
        "estimated_quality": None if cal is None else round(estimate_quality(score, cal), 1),
        "header_quality": header_quality(img.quantization) if img.format == "JPEG" else None,
    }


def _text_line(rec: dict) -> str:
    def fmt(v):
        return "none" if v is None else v

    return (
        f"{rec['file']}  score={rec['score']:.4f} estimated_quality="
        f"{fmt(rec['estimated_quality'])} header_quality={fmt(rec['header_quality'])}"
    )


def _load_scorer(prefix):
    """The ranker, or None after printing a one-line error (missing or unusable weights)."""
    from cqrnet_jax import pretrained
    from cqrnet_jax.ranker_eval import load_ranker

    where = prefix or pretrained.shipped("ranker")
    try:
        scorer = load_ranker(where)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(
            f"error: no usable ranker weights at {where} ({err}); train one with "
            "`python -m cqrnet_jax.main --config=configs/ranker.py:cpu --workdir=DIR` and pass "
            "--ranker DIR/export/ranker",
            file=sys.stderr,
        )
        return None
    if scorer.calibration is None:
        print(
            f"warning: {where}.json has no calibration: estimated_quality is null "
            "(add one with `python -m cqrnet_jax.ranker_eval --calibrate`)",
            file=sys.stderr,
        )
    return scorer


def run_estimate(args) -> int:
    """Runs `estimate` for parsed args (files, json, ranker); returns the exit status."""
    from cqrnet_jax.data.datasets import expand_inputs
    from cqrnet_jax.data.io import ImageLoadError

    scorer = _load_scorer(getattr(args, "ranker", None))
    if scorer is None:
        return EXIT_NO_RANKER
    failed = False
    for file, problem in expand_inputs(args.files):
        try:
            if problem:
                raise ImageLoadError(file, problem)
            rec = _estimate_one(scorer, file)
        except ImageLoadError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            failed = True
            continue
        except (MemoryError, RuntimeError) as err:  # e.g. XLA out of memory on a huge image
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            print(f"error: {file}: cannot score image: {reason}", file=sys.stderr, flush=True)
            failed = True
            continue
        print(json.dumps(rec) if args.json else _text_line(rec), flush=True)
    return EXIT_FILE_ERRORS if failed else 0
