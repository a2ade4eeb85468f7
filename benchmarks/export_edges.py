"""What padding an image to multiples of the de-blocker's size alignment changes at its bottom and
right edges (docs/export.md, "Images of other sizes").

  python benchmarks/export_edges.py --json experiments/results/export_edges.json

The symbolic-size exported de-blocker takes (b, M*h, M*w) images, M the shipped model's size
alignment (`artifacts.size_multiple`: 128 for the U-Net), and has no notion of a real extent: a
user pads, runs it, and crops back, and the network then sees the padding as image. This runs
the shipped model (`load_restorer("default")`, the JAX model the artifacts reproduce within
1.2e-7, experiments/results/export.json) on real photos of sizes that are not multiples of M,
JPEG (quality 10 and 30, grey IJG, the Y channel as the artifacts take it), padded bottom/right
to multiples of M by numpy's "symmetric" (docs/export.md's `pad_to_multiple`), "reflect" or
"edge" and cropped back, and compares the 8-bit result with the same model on the unpadded
image. Also the package's own canvases (`Restorer(canvas=M)`: symmetric padding, and the network
told each image's real extent), for contrast. Per case: the largest difference and its 99.9th
percentile in the last 8 and M rows and columns, beyond them, and how far from the bottom/right
edge any pixel moves (by a level, and by more than one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time

import numpy as np

PAD_MODES = ("symmetric", "reflect", "edge")
QUALITIES = (10, 30)


def bands(m: int) -> tuple[int, ...]:
    """The last rows and columns looked at: 8 (one JPEG block) and the alignment."""
    return (8, m)


def photos(m: int) -> dict[str, np.ndarray]:
    """Y uint8 of scikit-image photos whose sides are not multiples of m."""
    import skimage.data

    from cqrnet_jax.data.color import rgb_to_y

    out = {
        "camera 450x500 crop": skimage.data.camera()[:450, 6:506],
        "astronaut 500x500 crop": rgb_to_y(skimage.data.astronaut())[:500, 6:506],
        "coffee 400x600": rgb_to_y(skimage.data.coffee()),
        "chelsea 300x451": rgb_to_y(skimage.data.chelsea()),
    }
    for name, y in out.items():
        if y.shape[0] % m == 0 or y.shape[1] % m == 0:
            raise ValueError(f"{name}: {y.shape} has a side that is a multiple of {m}")
    return out


def padded_and_cropped(restorer, y: np.ndarray, mode: str, m: int) -> np.ndarray:
    """The artifact's use: pad bottom/right to multiples of m, restore all of it, crop back."""
    h, w = y.shape
    padded = np.pad(y, ((0, -h % m), (0, -w % m)), mode=mode)
    return restorer.restore_float(padded)[:h, :w]


def edge_figures(got: np.ndarray, want: np.ndarray, m: int) -> dict:
    """8-bit differences overall and in the last rows/columns, and their reach from the edge."""
    from cqrnet_jax.inference import to_uint8

    diff = np.abs(to_uint8(got).astype(int) - to_uint8(want).astype(int))
    h, w = diff.shape
    out = {"max": int(diff.max()), "pixels_changed": int((diff > 0).sum()), "pixels": h * w}
    for k in bands(m):
        band = np.concatenate([diff[h - k :, :].ravel(), diff[: h - k, w - k :].ravel()])
        out[f"last_{k}"] = {"max": int(band.max()), "p99.9": float(np.percentile(band, 99.9))}
    for name, changed in (("reach_from_edge", diff > 0), ("reach_over_1_level", diff > 1)):
        rows, cols = np.nonzero(changed)  # distance of each to the bottom or right edge
        out[name] = int(np.minimum(h - rows, w - cols).max()) if rows.size else 0
    out[f"max_beyond_last_{m}"] = int(diff[: h - m, : w - m].max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    load = os.getloadavg()[0]
    import jax

    from cqrnet_jax.artifacts import size_multiple
    from cqrnet_jax.data.jpeg import jpeg_degrade
    from cqrnet_jax.inference import Restorer, load_restorer

    whole, meta = load_restorer("default")
    m = size_multiple("deblock", whole.model)  # what the symbolic-size artifact's sides are
    canvases = Restorer(whole.model, whole.variables, canvas=m, max_batch=1)
    results = []
    for name, clean in photos(m).items():
        for q in QUALITIES:
            y = jpeg_degrade(clean, q).astype(np.float32) / 255.0
            told = whole.for_quality(q)  # a conditioned model (the shipped one) is told the QF
            want = told.restore_float(y)
            row = {"photo": name, "quality": q}
            for mode in PAD_MODES:
                got = padded_and_cropped(told, y, mode, m)
                row[f"padded_{mode}"] = edge_figures(got, want, m)
            row[f"canvas_{m}"] = edge_figures(canvases.for_quality(q).restore_float(y), want, m)
            print(json.dumps(row), flush=True)
            results.append(row)
    report = {
        "command": "python benchmarks/export_edges.py " + shlex.join(sys.argv[1:]),
        "about": " ".join(__doc__.split("\n\n", 2)[2].split()),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (load average {load:.1f} "
        f"at the start{': shared with other jobs' if load >= 1 else ''}), jax {jax.__version__}, "
        f"{jax.default_backend()}",
        "model": f"default (step {meta.get('step')})",
        "alignment": m,
        "results": results,
    }
    if args.json:
        with open(args.json, "w") as f:
            f.write(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
