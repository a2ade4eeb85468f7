"""The colour table: RGB PSNR and SSIM of colour JPEGs restored as `deblock` restores them.

  python experiments/color_table.py DATA --color-model M --sets LIVE1_color,BSDS500/test \
      --qualities 10,20,30,40 --json OUT.json

Each clean image is saved by PIL as a colour JPEG (IJG tables, 4:2:0: PIL's default) and decoded
by `data.io.load_image_bytes`, as a user's file would be. Rows: the JPEG itself; `guided`, Y by
the Y model (--model) and Cb/Cr by the guided filter; `color`, the colour model (--color-model).
Both through `photo.restore_image` with the JPEG-consistency projection, as `deblock` runs by
default. PSNR over R, G and B together; SSIM (metrics.ssim) the mean of R's, G's and B's.
Choose by BSDS500/val, which no model trains on; LIVE1_color and BSDS500/test are test sets.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from cqrnet_jax.data.io import load_image_bytes
from cqrnet_jax.inference import load_color_restorer, load_restorer
from cqrnet_jax.metrics import rgb_psnr, ssim
from cqrnet_jax.photo import restore_image

_ssim = jax.jit(ssim)
SUFFIXES = (".png", ".jpg", ".bmp", ".tif")


def colour_jpeg(rgb: np.ndarray, quality: int):
    """PIL's colour JPEG of `rgb` at `quality` (4:2:0), loaded as `deblock` loads a file."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return load_image_bytes(buf.getvalue(), f"q{quality}.jpg")


def clean_images(data_dir: str, name: str, limit: int = 0):
    """(path, uint8 RGB) of set `name`'s clean images by name; the first `limit` (0: all)."""
    files = sorted(f for f in Path(data_dir, name).iterdir() if f.suffix in SUFFIXES)
    for path in files[:limit] if limit else files:
        yield path, np.asarray(Image.open(path).convert("RGB"))


def summarize(per_image: list[dict], sets: list[str], qualities: list[int], values) -> list[dict]:
    """Per set and quality, the mean of each of `values(entry)` (a dict of floats) over the
    images; each line is printed as JSON too."""
    summary = []
    for name in sets:
        for q in qualities:
            got = [values(e) for e in per_image if e["set"] == name and e["quality"] == q]
            line = {"set": name, "quality": q, "images": len(got)}
            line.update({k: float(np.mean([g[k] for g in got])) for k in got[0]})
            summary.append(line)
            print(json.dumps(line))
    return summary


def rgb_scores(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    channels = [np.moveaxis(x, -1, 0).astype(np.float32) for x in (out, ref)]
    return {"psnr": rgb_psnr(out, ref), "ssim": float(np.mean(_ssim(*channels)))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--model", default="default", help="the Y model of the guided row")
    p.add_argument("--color-model", default="none", help="the colour model ('none': no row)")
    p.add_argument("--sets", default="BSDS500/val", help="comma-separated folders of DATA")
    p.add_argument("--qualities", default="10,20,30,40")
    p.add_argument("--images", type=int, default=0, help="first N images of each set (0: all)")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)

    grey, _ = load_restorer(args.model, tile=args.tile)
    colour = load_color_restorer(args.color_model, tile=args.tile)
    rows = {"jpeg": None, "guided": None} | ({"color": colour} if colour else {})
    qualities = [int(q) for q in args.qualities.split(",")]
    per_image, seconds = [], {name: 0.0 for name in rows}
    for name in args.sets.split(","):
        for path, ref in clean_images(args.data_dir, name, args.images):
            for q in qualities:
                loaded = colour_jpeg(ref, q)
                entry = {"set": name, "image": path.name, "quality": q}
                for row, model in rows.items():
                    start = time.perf_counter()
                    if row == "jpeg":
                        out = loaded.pixels
                    else:
                        out = restore_image(grey, loaded, colour=model)
                    seconds[row] += time.perf_counter() - start
                    entry[row] = rgb_scores(out, ref)
                per_image.append(entry)
            print(path.name, {r: round(per_image[-1][r]["psnr"], 2) for r in rows}, flush=True)
    summary = summarize(
        per_image,
        args.sets.split(","),
        qualities,
        lambda e: {f"{row}_{m}": e[row][m] for row in rows for m in ("psnr", "ssim")},
    )
    record = {
        "command": "python " + " ".join(sys.argv),
        "protocol": "PIL colour JPEG (IJG tables, 4:2:0), decoded by PIL; restored by "
        "photo.restore_image with the JPEG-consistency projection; PSNR over RGB, SSIM the "
        "mean over R, G, B",
        "models": {"guided": args.model, "color": args.color_model},
        "seconds": seconds,
        "summary": summary,
        "per_image": per_image,
    }
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
