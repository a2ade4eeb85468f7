"""Does the JPEG-consistency projection (`cqrnet_jax.consistency`) pay? Y PSNR of the decoded JPEG,
the de-blocker's output and the projected output, per image, at several qualities.

    CQRNET_DATA_DIR=DATA python experiments/consistency.py --model default --set BSDS500val \
        --max-images 20 --json experiments/results/consistency_val.json
"""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
from PIL import Image

from cqrnet_jax import metrics
from cqrnet_jax.data.color import round_to_uint8
from cqrnet_jax.data.consistency import luma_table, project
from cqrnet_jax.data.datasets import load_eval_set
from cqrnet_jax.data.jpeg import jpeg_encode
from cqrnet_jax.inference import load_restorer
from cqrnet_jax.photo import told_quality


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(metrics.psnr(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--set", default="BSDS500val")
    parser.add_argument("--max-images", type=int, default=20)
    parser.add_argument("--qualities", default="10,30,50,70,90")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    images = load_eval_set(args.set)[: args.max_images]
    qualities = [int(q) for q in args.qualities.split(",")]
    rows = []
    for spec in args.model:
        restorer, _ = load_restorer(spec)
        for q in qualities:
            told = told_quality(restorer, q)  # a quality-conditioned model is told the QF
            gains = {"net": [], "projected": []}
            for _name, clean in images:
                im = Image.open(io.BytesIO(jpeg_encode(clean, q)))
                table = luma_table(im)
                decoded = np.asarray(im.convert("L"))
                restored = told.restore_float(decoded.astype(np.float32) / 255.0) * 255.0
                base = psnr(decoded, clean)
                gains["net"].append(psnr(round_to_uint8(restored), clean) - base)
                projected = round_to_uint8(project(restored, decoded, table))
                gains["projected"].append(psnr(projected, clean) - base)
            row = {"model": spec, "set": args.set, "quality": q, "images": len(images)}
            for key, g in gains.items():
                row[f"{key}_gain_mean"] = round(float(np.mean(g)), 3)
                row[f"{key}_gain_min"] = round(float(np.min(g)), 3)
            print(json.dumps(row), flush=True)
            rows.append(row)
    with open(args.json, "w") as f:
        json.dump({"command": "experiments/consistency.py", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
