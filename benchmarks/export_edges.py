"""What padding an image to multiples of 48 changes at its bottom and right edges (docs/export.md,
"Images of other sizes").

  python benchmarks/export_edges.py --json experiments/results/export_edges.json

The symbolic-size exported de-blocker takes (b, 48*h, 48*w) images and has no notion of a real
extent: a user pads, runs it, and crops back, and the network then sees the padding as image.
This runs the shipped model (`load_restorer("default")`, the JAX model the artifacts reproduce
bit for bit, tests/test_export.py) on real photos of sizes that are not multiples of 48, JPEG
(quality 10 and 30, grey IJG, the Y channel as the artifacts take it), padded bottom/right by
numpy's "symmetric" (docs/export.md's `pad_to_multiple`), "reflect" or "edge" and cropped back,
and compares the 8-bit result with the same model on the unpadded image. Also the package's own
canvases (`Restorer(canvas=48)`: symmetric padding, and the network told each image's real
extent), for contrast. Per case: the largest difference and its 99.9th percentile in the last
8 and 48 rows and columns, beyond them, and how far from the bottom/right edge any pixel moves
(by a level, and by more than one).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time

import numpy as np

PAD_MODES = ("symmetric", "reflect", "edge")
QUALITIES = (10, 30)
BANDS = (8, 48)  # the last rows and columns looked at


def photos() -> dict[str, np.ndarray]:
    """Y uint8 of scikit-image photos whose sides are not multiples of 48."""
    import skimage.data

    from cqrnet_jax.data.color import rgb_to_y

    return {
        "camera 512x512": skimage.data.camera(),
        "astronaut 500x500 crop": rgb_to_y(skimage.data.astronaut())[:500, 6:506],
        "coffee 400x600": rgb_to_y(skimage.data.coffee()),
        "chelsea 300x451": rgb_to_y(skimage.data.chelsea()),
    }


def to_uint8(y: np.ndarray) -> np.ndarray:
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)


def padded_and_cropped(restorer, y: np.ndarray, mode: str, m: int = 48) -> np.ndarray:
    """The artifact's use: pad bottom/right to multiples of m, restore all of it, crop back."""
    h, w = y.shape
    padded = np.pad(y, ((0, -h % m), (0, -w % m)), mode=mode)
    return restorer.restore_float(padded)[:h, :w]


def edge_figures(got: np.ndarray, want: np.ndarray) -> dict:
    """8-bit differences overall and in the last rows/columns, and their reach from the edge."""
    diff = np.abs(to_uint8(got).astype(int) - to_uint8(want).astype(int))
    h, w = diff.shape
    out = {"max": int(diff.max()), "pixels_changed": int((diff > 0).sum()), "pixels": h * w}
    for k in BANDS:
        band = np.concatenate([diff[h - k :, :].ravel(), diff[: h - k, w - k :].ravel()])
        out[f"last_{k}"] = {"max": int(band.max()), "p99.9": float(np.percentile(band, 99.9))}
    for name, changed in (("reach_from_edge", diff > 0), ("reach_over_1_level", diff > 1)):
        rows, cols = np.nonzero(changed)  # distance of each to the bottom or right edge
        out[name] = int(np.minimum(h - rows, w - cols).max()) if rows.size else 0
    out["max_beyond_last_48"] = int(diff[: h - 48, : w - 48].max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    import jax

    from cqrnet_jax.data.jpeg import jpeg_degrade
    from cqrnet_jax.inference import Restorer, load_restorer

    whole, meta = load_restorer("default")
    canvases = Restorer(whole.model, whole.variables, canvas=48, max_batch=1)
    results = []
    for name, clean in photos().items():
        for q in QUALITIES:
            y = jpeg_degrade(clean, q).astype(np.float32) / 255.0
            want = whole.restore_float(y)
            row = {"photo": name, "quality": q}
            for mode in PAD_MODES:
                row[f"padded_{mode}"] = edge_figures(padded_and_cropped(whole, y, mode), want)
            row["canvas_48"] = edge_figures(canvases.restore_float(y), want)
            print(json.dumps(row), flush=True)
            results.append(row)
    report = {
        "command": "python benchmarks/export_edges.py " + shlex.join(sys.argv[1:]),
        "about": " ".join(__doc__.split("\n\n", 2)[2].split()),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, jax {jax.__version__}, {jax.default_backend()}",
        "model": f"default (step {meta.get('step')})",
        "results": results,
    }
    if args.json:
        with open(args.json, "w") as f:
            f.write(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
