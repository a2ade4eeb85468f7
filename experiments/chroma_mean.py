"""What keeping the JPEG's mean Cb/Cr costs a colour model (`photo.restore_rgb_model`).

  python experiments/chroma_mean.py DATA --json experiments/results/chroma_mean.json

The first N BSDS500 val images as PIL colour JPEGs (4:2:0); the shipped colour model's raw
output, then the same with its Cb and Cr shifted to the decoded ones' means. RGB PSNR of both
(no projection), and the model's own mean Cb/Cr shift in levels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from color_table import SUFFIXES, colour_jpeg  # noqa: E402

from cqrnet_jax.data.color import rgb_to_ycbcr, ycbcr_to_rgb  # noqa: E402
from cqrnet_jax.inference import load_color_restorer  # noqa: E402
from cqrnet_jax.metrics import rgb_psnr  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--color-model", default="default")
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--qualities", default="10,30,70")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    colour = load_color_restorer(args.color_model, tile=512)
    folder = Path(args.data_dir, "BSDS500/val")
    files = sorted(f for f in folder.iterdir() if f.suffix in SUFFIXES)[: args.images]
    rows = []
    for q in (int(x) for x in args.qualities.split(",")):
        raw, kept, shifts = [], [], []
        for path in files:
            ref = np.asarray(Image.open(path).convert("RGB"))
            decoded = colour_jpeg(ref, q).pixels
            told = colour.for_quality(q)  # a quality-conditioned model is told the QF
            out = rgb_to_ycbcr(told.restore_float(decoded.astype(np.float32) / 255.0) * 255.0)
            shift = out[..., 1:].mean(axis=(0, 1)) - rgb_to_ycbcr(decoded)[..., 1:].mean(
                axis=(0, 1)
            )
            raw.append(rgb_psnr(ycbcr_to_rgb(out), ref))
            out[..., 1:] -= shift
            kept.append(rgb_psnr(ycbcr_to_rgb(out), ref))
            shifts.append(shift)
        shifts = np.abs(np.array(shifts))
        row = {
            "quality": q,
            "images": len(files),
            "model_psnr": float(np.mean(raw)),
            "mean_kept_psnr": float(np.mean(kept)),
            "largest_shift_cb_cr": [float(v) for v in shifts.max(axis=0)],
        }
        rows.append(row)
        print(json.dumps(row))
    command = "python experiments/chroma_mean.py DATA " + " ".join(sys.argv[2:])
    Path(args.json).write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
