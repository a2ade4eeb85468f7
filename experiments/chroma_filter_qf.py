"""Up to which JPEG quality the guided filter on Cb/Cr pays (`photo.CHROMA_FILTER_UP_TO`).

  python experiments/chroma_filter_qf.py DATA --json experiments/results/chroma_filter_qf.json

Colour JPEGs by PIL (IJG tables, 4:2:0) of the first N BSDS500 val images (validation, never a
test set), Y restored by the shipped de-blocker (no projection: the filter is what is compared).
Per quality, RGB PSNR gain over the JPEG of: Y restored with the decoded Cb/Cr (`y_only`); Y
restored with Cb/Cr guided-filtered (`guided`); and the filter's own effect, guided - y_only.
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

from cqrnet_jax import photo  # noqa: E402
from cqrnet_jax.data.color import rgb_to_ycbcr, ycbcr_to_rgb  # noqa: E402
from cqrnet_jax.inference import load_restorer  # noqa: E402
from cqrnet_jax.metrics import rgb_psnr  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--images", type=int, default=20, help="first N BSDS500 val images")
    p.add_argument("--qualities", default="10,20,30,40,50,60,70,80,90")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    grey, _ = load_restorer("default", tile=512)
    folder = Path(args.data_dir, "BSDS500/val")
    files = sorted(f for f in folder.iterdir() if f.suffix in SUFFIXES)[: args.images]
    rows = []
    for q in (int(x) for x in args.qualities.split(",")):
        gains = []
        for path in files:
            ref = np.asarray(Image.open(path).convert("RGB"))
            rgb = colour_jpeg(ref, q).pixels
            ycbcr = rgb_to_ycbcr(rgb)
            ycbcr[..., 0] = photo.restore_y(grey.for_quality(q), ycbcr[..., 0])  # told the QF
            jpeg = rgb_psnr(rgb, ref)
            y_only = rgb_psnr(ycbcr_to_rgb(ycbcr), ref) - jpeg
            guided = rgb_psnr(ycbcr_to_rgb(photo.filter_chroma(ycbcr)), ref) - jpeg
            gains.append((y_only, guided))
        g = np.array(gains)
        row = {
            "quality": q,
            "images": len(files),
            "y_only_gain": float(g[:, 0].mean()),
            "guided_gain": float(g[:, 1].mean()),
            "guided_min_gain": float(g[:, 1].min()),
            "guided_losers": int((g[:, 1] < 0).sum()),
            "filter_effect": float((g[:, 1] - g[:, 0]).mean()),
            "filter_effect_min": float((g[:, 1] - g[:, 0]).min()),
        }
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    command = "python experiments/chroma_filter_qf.py DATA " + " ".join(sys.argv[2:])
    Path(args.json).write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
