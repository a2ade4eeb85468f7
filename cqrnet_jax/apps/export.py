"""`cqrnet-jax export --format stablehlo|savedmodel|onnx -o DIR`: a model as an artifact that
runs without this package (docs/export.md shows how); the formats are `cqrnet_jax.artifacts`'s.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from cqrnet_jax.apps.common import add_model_argument, environment
from cqrnet_jax.artifacts import (
    FORMATS,
    INPUT_NAME,
    MANIFEST,
    MODELS,
    PLATFORMS,
    QUALITY_NAME,
    ExportError,
    check_output_dir,
    input_shape,
    io_description,
    load_model,
    shape_text,
    staging,
    write_onnx,
    write_savedmodel,
    write_stablehlo,
)


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="export a model as StableHLO, a TF SavedModel or ONNX",
        description="Writes the de-blocker (or the colour de-blocker, or the ranker) as an "
        "artifact that runs without this package, plus DIR/export.json. Input: (batch, height, "
        "width) float32 Y in [0, 1]; the colour de-blocker's (batch, height, width, 3) RGB; a "
        "quality-conditioned de-blocker's also (batch,) JPEG qualities. "
        "See docs/export.md for how to run each format.",
    )
    p.add_argument("--format", required=True, choices=FORMATS, help="artifact format")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--what",
        choices=MODELS,
        default="deblock",
        help="deblock (Y), color (RGB: the shipped colour model by default) or ranker "
        "(default: deblock)",
    )
    add_model_argument(p, "model of --what")
    p.add_argument(
        "--height",
        type=int,
        help="fixed image height (default: symbolic; the de-blocker's: any multiple of its size "
        "alignment, 128 for the shipped one; "
        "ONNX de-blocker: required)",
    )
    p.add_argument(
        "--width", type=int, help="fixed image width (default: symbolic, as for --height)"
    )
    p.add_argument(
        "--batch", type=int, help="fixed batch size (default: symbolic; ONNX de-blocker: 1)"
    )
    p.add_argument(
        "--platforms",
        default="cpu,cuda",
        help="stablehlo/savedmodel: comma-separated platforms to lower for (default: cpu,cuda)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in DIR")
    return p


def _check_args(args) -> tuple[str, ...]:
    """Validates the numeric flags; returns the platforms to lower for."""
    for flag in ("height", "width", "batch"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ExportError(f"--{flag}: {value} is not a positive integer")
    platforms = tuple(dict.fromkeys(p.strip() for p in args.platforms.split(",") if p.strip()))
    if not platforms or any(p not in PLATFORMS for p in platforms):
        raise ExportError(
            f"--platforms: give some of {', '.join(PLATFORMS)}, not {args.platforms!r}"
        )
    return platforms


def run_export(args) -> int:
    out = Path(args.output).expanduser()
    check_output_dir(out, args.overwrite)
    platforms = _check_args(args)
    model, variables, meta = load_model(args.what, args.model)
    shape = input_shape(args.what, model, args.format, args.batch, args.height, args.width)
    manifest = {
        "format": args.format,
        "what": args.what,
        "command": " ".join(["cqrnet-jax", *map(shlex.quote, getattr(args, "argv", []))]),
        "model": {"source": args.model, "step": meta.get("step"), "config": meta.get("model")},
        **io_description(args.what, model, shape),
    }
    with staging(out) as tmp:
        if args.format == "onnx":
            info = write_onnx(args.what, model, variables, shape, tmp)
        else:
            writer = write_stablehlo if args.format == "stablehlo" else write_savedmodel
            info = writer(args.what, model, variables, shape, platforms, tmp)
        manifest["versions"] = {**environment(), **info.pop("versions", {})}
        manifest.update(info)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    inputs = f"input {INPUT_NAME[args.what]}: {shape_text(shape)} float32"
    if "quality_input" in manifest:  # a quality-conditioned de-blocker
        inputs += f", {QUALITY_NAME}: {shape_text(shape[:1])} float32 JPEG quality"
    print(f"wrote {out} ({args.format}, {inputs})")
    return 0
