"""`cqrnet-jax deblock FILE... -o OUTDIR`: restores real JPEG files with a de-blocking model.

Grey images go through the model as they are. Colour images: the studio-swing Y channel goes
through the model, Cb/Cr are kept from the decoded file, and the result is converted back to RGB;
alpha is carried over unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def add_deblock_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "deblock",
        help="remove JPEG artifacts from image files",
        description="Restores each input (files, folders, globs) and writes OUTDIR/STEM.png.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument(
        "--model",
        default="default",
        help="'default' (shipped), a training workdir or a params prefix",
    )
    p.add_argument("--tile", type=int, default=512, help="tile size, bounds memory (default 512)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def restore_image(restorer, loaded) -> np.ndarray:
    """The restored image as uint8: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA."""
    from cqrnet_jax.data.color import rgb_to_ycbcr, ycbcr_to_rgb

    if loaded.pixels.ndim == 2:
        out = restorer(loaded.pixels)
    else:
        ycbcr = rgb_to_ycbcr(loaded.pixels)
        y = np.clip(np.round(ycbcr[..., 0]), 0, 255).astype(np.uint8)
        restored = restorer.restore_float(y.astype(np.float32) / 255.0) * 255.0
        ycbcr[..., 0] = restored + (ycbcr[..., 0] - y)  # keep the sub-level part of Y
        out = ycbcr_to_rgb(ycbcr)
    if loaded.alpha is not None:
        rgb = out if out.ndim == 3 else np.repeat(out[..., None], 3, axis=-1)
        out = np.concatenate([rgb, loaded.alpha[..., None]], axis=-1)
    return out


def run_deblock(args) -> int:
    from tqdm import tqdm

    from cqrnet_jax.data.datasets import expand_inputs
    from cqrnet_jax.data.io import ImageLoadError, load_image, save_image
    from cqrnet_jax.inference import load_restorer

    restorer, _ = load_restorer(args.model, tile=args.tile)
    outdir = Path(args.output)
    outdir.mkdir(parents=True, exist_ok=True)
    failed = 0
    items = expand_inputs(args.inputs)
    for path, error in tqdm(items, desc="deblock", unit="file", file=sys.stderr):
        target = outdir / (Path(path).stem + ".png")
        if error is None and target.resolve() == Path(path).resolve():
            error = "output would overwrite the input"
        elif error is None and target.exists() and not args.overwrite:
            error = f"{target} exists (use --overwrite)"
        if error is None:
            try:
                save_image(target, restore_image(restorer, load_image(path)))
                continue
            except ImageLoadError as err:
                error = err.reason
        tqdm.write(f"error: {path}: {error}", file=sys.stderr)  # not glued to the bar
        failed += 1
    return 1 if failed else 0
