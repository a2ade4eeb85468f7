"""Where a de-blocker's PSNR-B goes: D_B and D_Bc (mean squared neighbour step across 8x8 block
edges, and elsewhere) of its output, beside the clean image's and the JPEG's.

    python experiments/block_steps.py DATA MODEL [MODEL ...] [--images 6] [--quality 30]

The first N BSDS500 val images, Y as PIL's YCbCr (full range) cropped to a multiple of 8, PIL
JPEG at the QF; each MODEL as `cqrnet-jax evaluate --model` takes it ('default', a workdir or a
params prefix), network output without the consistency projection.
"""

from __future__ import annotations

import argparse
import glob
import io
import os

import numpy as np
from PIL import Image

from cqrnet_jax.inference import load_restorer


def block_steps(x: np.ndarray) -> tuple[float, float]:
    """(D_B, D_Bc): mean squared step between neighbours across block edges, and elsewhere."""
    x = x.astype(np.float64)
    dh, dv = np.square(np.diff(x, axis=1)), np.square(np.diff(x, axis=0))
    cb, rb = np.arange(x.shape[1] - 1) % 8 == 7, np.arange(x.shape[0] - 1) % 8 == 7
    d_b = (dh[:, cb].sum() + dv[rb].sum()) / (dh[:, cb].size + dv[rb].size)
    d_c = (dh[:, ~cb].sum() + dv[~rb].sum()) / (dh[:, ~cb].size + dv[~rb].size)
    return d_b, d_c


def jpeg(y: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(y).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--quality", type=int, default=30)
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.data_dir, "BSDS500", "val", "*.jpg")))
    restorers = {  # a quality-conditioned model is told the QF
        m: load_restorer(m, canvas=0, max_batch=1)[0].for_quality(args.quality) for m in args.models
    }
    rows: dict[str, list] = {}
    for f in files[: args.images]:
        y = np.asarray(Image.open(f).convert("YCbCr"))[..., 0]
        y = y[: y.shape[0] // 8 * 8, : y.shape[1] // 8 * 8]
        j = jpeg(y, args.quality)
        outs = {"clean": y, "jpeg": j, **{m: r(j) for m, r in restorers.items()}}
        for name, out in outs.items():
            d_b, d_c = block_steps(out)
            rows.setdefault(name, []).append(
                (d_b, d_c, d_b - d_c, np.mean((out - y.astype(float)) ** 2))
            )
    print(f"{'output':40s} {'D_B':>8s} {'D_Bc':>8s} {'excess':>8s} {'MSE':>7s}")
    for name, values in rows.items():
        a = np.mean(values, axis=0)
        print(f"{name:40s} {a[0]:8.2f} {a[1]:8.2f} {a[2]:8.2f} {a[3]:7.2f}")


if __name__ == "__main__":
    main()
