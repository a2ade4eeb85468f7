"""How far a better chroma alone could lift colour RGB PSNR: the colour model's output with its
Cb/Cr replaced by the clean image's (an oracle chroma network), and with its Y replaced by the
clean Y (an oracle Y), beside the model itself and the guided-filter path.

  python experiments/color_bound.py DATA --sets LIVE1_color --qualities 10,20,30,40 \
      --json experiments/results/color_bound.json

Colour JPEGs as experiments/color_table.py makes them (PIL, IJG tables, 4:2:0) and restored as
`deblock` restores them (`photo.restore_image`, projection on). YCbCr is the protocol's
(`data.color`); a swapped image is converted back to RGB and rounded to 8 bits. PSNR over RGB.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from color_table import clean_images, colour_jpeg, summarize

from cqrnet_jax.data.color import rgb_to_ycbcr, ycbcr_to_rgb
from cqrnet_jax.inference import load_color_restorer, load_restorer
from cqrnet_jax.metrics import rgb_psnr
from cqrnet_jax.photo import restore_image


def swapped(out: np.ndarray, ref: np.ndarray, take_y: bool) -> np.ndarray:
    """`out` with its Y (take_y) or its Cb/Cr (not take_y) taken from `ref`, as uint8 RGB."""
    a, b = rgb_to_ycbcr(out), rgb_to_ycbcr(ref)
    if take_y:
        a[..., 0] = b[..., 0]
    else:
        a[..., 1:] = b[..., 1:]
    return ycbcr_to_rgb(a)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data_dir")
    p.add_argument("--model", default="default", help="the Y model")
    p.add_argument("--color-model", default="default", help="the colour model")
    p.add_argument("--sets", default="LIVE1_color")
    p.add_argument("--qualities", default="10,20,30,40")
    p.add_argument("--images", type=int, default=0, help="first N images of each set (0: all)")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)

    grey, _ = load_restorer(args.model, tile=512)
    colour = load_color_restorer(args.color_model, args.model, tile=512)
    if colour is None:
        raise SystemExit(f"--color-model {args.color_model}: no colour model")
    rows = ("jpeg", "guided", "color", "color_clean_chroma", "color_clean_y")
    per_image = []
    qualities = [int(q) for q in args.qualities.split(",")]
    for name in args.sets.split(","):
        for path, ref in clean_images(args.data_dir, name, args.images):
            for q in qualities:
                loaded = colour_jpeg(ref, q)
                out = restore_image(grey, loaded, colour=colour)
                images = {
                    "jpeg": loaded.pixels,
                    "guided": restore_image(grey, loaded),
                    "color": out,
                    "color_clean_chroma": swapped(out, ref, take_y=False),
                    "color_clean_y": swapped(out, ref, take_y=True),
                }
                entry = {"set": name, "image": path.name, "quality": q}
                entry.update({k: rgb_psnr(v, ref) for k, v in images.items()})
                per_image.append(entry)
            print(path.name, flush=True)
    summary = summarize(
        per_image, args.sets.split(","), sorted(qualities), lambda e: {r: e[r] for r in rows}
    )
    record = {
        "command": "python " + " ".join(sys.argv),
        "protocol": "PIL colour JPEG (IJG tables, 4:2:0); photo.restore_image with the "
        "projection; RGB PSNR; color_clean_chroma: the colour model's Y with the clean Cb/Cr, "
        "color_clean_y: its Cb/Cr with the clean Y (8-bit RGB after the swap)",
        "models": {"y": args.model, "color": args.color_model},
        "summary": summary,
        "per_image": per_image,
    }
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
