"""`cqrnet-jax evaluate`: a model (the shipped one unless --model says otherwise; `jpeg` for the
JPEG itself) scored on JPEG-compressed test sets with the literature's protocol (PSNR / SSIM /
PSNR-B on Y); the scoring is `cqrnet_jax.scoring`'s. `--ensemble` scores the model's x8
self-ensemble (`cqrnet_jax.ensemble`), reported as model "NAME+ensemble"."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from cqrnet_jax.apps.common import (
    UsageError,
    add_model_argument,
    environment,
    int_in_range,
    write_json,
)
from cqrnet_jax.data.datasets import DATA_DIR_ENV

BUILTIN = "builtin"  # dataset name of the photos bundled with scikit-image
# `evaluate` runs on canvases of this step: one compile per canvas, not per image size, and mean
# scores close to whole images' (experiments/results/canvas_eval.json). Images per call: 8 on an
# accelerator; 1 on a CPU, where bigger batches are no faster and cost memory (same file).
CANVAS_STEP = 48
ACCELERATOR_BATCH = 8
# Sizes shared by at least this many images get programs of their own size instead of canvases:
# the same scores as whole images, and no padding to restore (BSDS500 test has two sizes).
EXACT_GROUP = 8


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="score a model on JPEG-compressed test sets (PSNR, SSIM, PSNR-B on Y)",
        description=(
            "JPEG-compress every test image (Y channel) at each quality, restore it with the model "
            "(the shipped one unless --model says otherwise; --model jpeg scores the JPEG itself) "
            "and print PSNR | SSIM | PSNR-B per dataset and quality (means over images). Without "
            f"--data-dir or ${DATA_DIR_ENV}, runs on a few photos bundled with scikit-image."
        ),
    )
    add_model_argument(p, also="; 'jpeg' scores the decoded JPEG itself, the baseline")
    p.add_argument(
        "--ensemble",
        action="store_true",
        help="score the model's x8 self-ensemble: each image restored in its 8 flips and "
        "rotations, turned back and averaged (8 times the time)",
    )
    p.add_argument(
        "--canvas",
        type=int,
        metavar="STEP",
        help="pad each image (bottom/right) to sides rounded up to multiples of STEP (itself "
        "rounded up to the model's window), batch images of one canvas, crop back: one compile "
        f"per canvas, not per image size (a size that {EXACT_GROUP} or more images share keeps "
        f"its own); 0 restores whole images (default: {CANVAS_STEP}, or 0 with --tile)",
    )
    p.add_argument(
        "--parallel",
        type=int_in_range(1),
        metavar="N",
        help="run the model on N devices at once: on a CPU its cores split into that many "
        "devices (default: min(cores, 4)), on GPUs all of them",
    )
    p.add_argument(
        "--batch",
        type=int,
        help="at most this many images of one canvas per model call, which bounds the memory "
        f"(default: {ACCELERATOR_BATCH} on a GPU or TPU, 1 on a CPU)",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=0,
        help="restore whole images in tiles of this size, one by one (default 0: no tiles)",
    )
    p.add_argument("--data-dir", help=f"folder holding the test sets (default: ${DATA_DIR_ENV})")
    p.add_argument(
        "--datasets",
        help="comma-separated: Classic5, LIVE1, BSDS500 (200-image test split) or builtin "
        "(default: all three with a data directory, else builtin)",
    )
    p.add_argument("--qualities", default="10,20,30", help="JPEG qualities (default: 10,20,30)")
    p.add_argument(
        "--force",
        action="store_true",
        help="score the model at every quality; without it, qualities above the highest the "
        "model is known to improve are scored as the JPEG itself, as deblock leaves such files",
    )
    p.add_argument(
        "--no-consistency",
        action="store_true",
        help="score the network's output as it is; by default each output is projected onto "
        "what its JPEG allows (DCT coefficients inside the quantization intervals), as "
        "deblock does",
    )
    p.add_argument("--json", metavar="OUT", help="also write results as JSON to OUT")
    p.add_argument("--per-image", action="store_true", help="also print one row per image")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _parse_qualities(text: str) -> list[int]:
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts:
        raise UsageError("--qualities: give at least one JPEG quality, e.g. 10,20,30")
    out = []
    for t in parts:
        if not t.isdigit() or not 1 <= int(t) <= 100:
            raise UsageError(f"--qualities: {t!r} is not an integer JPEG quality in [1, 100]")
        out.append(int(t))
    return list(dict.fromkeys(out))


def _parse_datasets(text: str | None, have_data_dir: bool) -> list[str]:
    from cqrnet_jax.data.datasets import EVAL_SETS, canonical_eval_name

    if text is None:
        return list(EVAL_SETS) if have_data_dir else [BUILTIN]
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UsageError("--datasets: give at least one dataset name")
    try:
        names = [BUILTIN if n.lower() == BUILTIN else canonical_eval_name(n) for n in names]
    except ValueError as err:
        raise UsageError(f"--datasets: {err}, {BUILTIN}") from None
    return list(dict.fromkeys(names))


def _canvas_step(args: argparse.Namespace) -> int:
    """The canvas step: --canvas, else the default, except with --tile (tiles exclude canvases)."""
    if args.tile < 0 or (args.canvas is not None and args.canvas < 0):
        raise UsageError("--tile and --canvas take 0 or more")
    if args.canvas is None:
        return 0 if args.tile else CANVAS_STEP
    if args.canvas and args.tile:
        raise UsageError("--canvas and --tile exclude each other: give one of them")
    return args.canvas


def _batch(args: argparse.Namespace) -> int:
    """--batch, else ACCELERATOR_BATCH on a GPU / TPU and 1 on a CPU."""
    if args.batch is not None:
        if args.batch < 1:
            raise UsageError("--batch takes 1 or more")
        return args.batch
    import jax

    return 1 if jax.default_backend() == "cpu" else ACCELERATOR_BATCH


def _inference_mode(restorer) -> dict | None:
    """How the model ran (canvas step, batch, tile, ensemble) for the report; None for the "jpeg"
    model."""
    from cqrnet_jax.ensemble import SelfEnsemble

    if not hasattr(restorer, "canvas"):
        return None
    mode = {"canvas": restorer.canvas, "max_batch": restorer.max_batch, "tile": restorer.tile}
    inner = getattr(restorer, "restorer", restorer)  # the one an ensemble wraps
    mode["exact_group"] = inner.exact_group
    mode["devices"] = len(inner.devices)
    return {**mode, "ensemble": 8 if isinstance(restorer, SelfEnsemble) else 1}


def _load_sets(names: list[str], data_dir: Path | None) -> list[tuple[str, list]]:
    from cqrnet_jax.data.datasets import builtin_photos, load_eval_set

    return [(n, builtin_photos() if n == BUILTIN else load_eval_set(n, data_dir)) for n in names]


def _check_output(path: str, data_dir: Path | None) -> Path:
    """The JSON path, refused inside the data directory (never touch the input data); its folder
    is created when the report is written."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise UsageError(f"--json: {out} is a directory")
    if data_dir is not None and out.resolve().is_relative_to(data_dir.resolve()):
        raise UsageError(f"--json: refusing to write {out} inside the data directory {data_dir}")
    return out


def _command_line(argv: list[str], data_dir_from_env: bool) -> str:
    """The command as typed: program name, arguments, and the data-dir variable when it was used."""
    prog = "python -m cqrnet_jax" if sys.argv[0].endswith("__main__.py") else "cqrnet-jax"
    env = f"{DATA_DIR_ENV}={shlex.quote(os.environ[DATA_DIR_ENV])} " if data_dir_from_env else ""
    return env + " ".join([prog, *map(shlex.quote, argv)])


def _left_alone(restorer, qualities: list[int], force: bool, consistency: bool) -> set[int]:
    """The qualities above the model's limit, scored as the JPEG itself (as `deblock` leaves
    such files) unless `force`; one line on stderr says so."""
    meta = getattr(getattr(restorer, "restorer", restorer), "meta", None)  # ensembles wrap it
    if force or meta is None:  # "jpeg" is the identity anyway
        return set()
    from cqrnet_jax.apps.input_quality import restore_limit

    limit = restore_limit(meta, consistency)
    above = {q for q in qualities if q > limit}
    if above:
        listed = ",".join(str(q) for q in sorted(above))
        print(
            f"QF {listed}: above {limit}, the highest this model is known to improve: scored "
            "as the JPEG itself, as deblock leaves such files (--force scores the model)",
            file=sys.stderr,
        )
    return above


def run_evaluate(args: argparse.Namespace) -> int:
    from cqrnet_jax.devices import MAX_HOST_DEVICES, inference_devices, split_host_cores

    split_host_cores(args.parallel or MAX_HOST_DEVICES)  # before anything starts JAX
    from cqrnet_jax.data.datasets import resolve_data_dir
    from cqrnet_jax.ensemble import SelfEnsemble
    from cqrnet_jax.scoring import (
        PUBLISHED_SOURCE,
        compare_published,
        evaluate_sets,
        format_per_image,
        format_table,
        format_timing,
        get_restorer,
        published_rows,
    )

    qualities = _parse_qualities(args.qualities)
    from_env = not args.data_dir and bool(os.environ.get(DATA_DIR_ENV))
    data_dir = resolve_data_dir(args.data_dir) if args.data_dir or from_env else None
    names = _parse_datasets(args.datasets, data_dir is not None)
    if data_dir is None and names != [BUILTIN]:
        resolve_data_dir(None)  # raises the "no data directory: pass --data-dir ..." error
    canvas = _canvas_step(args)
    if args.ensemble and args.model == "jpeg":
        raise UsageError("--ensemble needs a model: 'jpeg' (the decoded JPEG) is the identity")
    out = _check_output(args.json, data_dir) if args.json else None
    model_name, restorer = get_restorer(
        args.model,
        tile=args.tile,
        canvas=canvas,
        max_batch=_batch(args),
        exact_group=EXACT_GROUP if canvas else 0,
        devices=inference_devices(args.parallel),
    )
    if args.ensemble:
        model_name, restorer = f"{model_name}+ensemble", SelfEnsemble(restorer)
    if data_dir is None:
        print(
            f"no data directory (--data-dir / ${DATA_DIR_ENV}): "
            "evaluating on the built-in photos (scikit-image)",
            file=sys.stderr,
        )
    sets = _load_sets(names, data_dir)
    left_alone = _left_alone(restorer, qualities, args.force, not args.no_consistency)
    scores = evaluate_sets(
        restorer,
        model_name,
        sets,
        qualities,
        progress=not args.no_progress,
        left_alone=left_alone,
        consistency=not args.no_consistency,
    )
    results = compare_published(scores["results"])
    print(format_timing(scores["timing"]), file=sys.stderr)
    print(format_table(results))
    if args.per_image:
        print()
        print(format_per_image(scores["per_image"]))
    if out is not None:
        report = {
            "command": _command_line(args.argv, from_env),
            "data_dir": None if data_dir is None else str(data_dir),
            "versions": environment(),
            "inference": _inference_mode(restorer),
            "results": results,
            "per_image": scores["per_image"],
            "timing": scores["timing"],
        }
        if any("published" in r for r in results):
            pub = published_rows(model_name)
            report["published"] = {"source": PUBLISHED_SOURCE, "results": pub}
        write_json(out, report)
        print(f"wrote {out}", file=sys.stderr)
    return 0
