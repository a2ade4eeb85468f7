"""What a quality-conditioned de-blocker does to files without quantization tables, as `deblock`
restores them (`photo.image_quality`), against the blind shipped model.

  python experiments/nonjpeg_inputs.py DATA --model RUN --json experiments/results/X.json

Inputs: the first N clean colour PNGs of Urban100_color_half (MANIFEST: never JPEG-compressed),
as they are (clean) and as PNGs of their PIL JPEGs (4:2:0) at each quality. For each, the
quality read from the pixels (`data.jpeg_history.grid_quality`) and the ranker's blind estimate,
and the Y PSNR (BT.601 studio Y, 8-bit, whole image) against the clean image of: the input;
the blind shipped model; the conditioned model told what `deblock` tells it (the pixels'
quality, else the top of its training range, `photo.UNKNOWN_QUALITY`); and
the conditioned model told the ranker's estimate (`quality.blind_quality`) and, for the clean
photos, QF 95.
Y by the model only (`restore_image` with no colour model; the guided filter's Cb/Cr are not
scored), no projection (a PNG has no tables).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from cqrnet_jax import photo
from cqrnet_jax.data.color import rgb_to_y
from cqrnet_jax.data.io import load_image_bytes
from cqrnet_jax.data.jpeg_history import grid_quality
from cqrnet_jax.inference import load_restorer
from cqrnet_jax.metrics import psnr
from cqrnet_jax.quality import blind_quality
from cqrnet_jax.scoring import json_safe


def _png_of(rgb: np.ndarray, quality: int | None) -> bytes:
    """PNG bytes of `rgb`, or of its PIL JPEG (4:2:0) at `quality` as decoded."""
    if quality is not None:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
        rgb = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--model", required=True, help="the quality-conditioned de-blocker")
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--qualities", default="20,50,80", help="PNGs of JPEGs at these qualities")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    blind, _ = load_restorer("default", tile=512)
    told, meta = load_restorer(args.model, tile=512)
    if not told.quality_input:
        p.error(f"--model {args.model}: not a quality-conditioned de-blocker")
    folder = Path(args.data_dir, "Urban100_color_half")
    files = sorted(folder.glob("*.png"))[: args.images]
    cases = [None, *(int(q) for q in args.qualities.split(","))]
    rows = []
    for path in files:
        clean = np.asarray(Image.open(path).convert("RGB"))
        ref = rgb_to_y(clean)
        for quality in cases:
            loaded = load_image_bytes(_png_of(clean, quality), path.stem + ".png")

            def score(out, ref=ref):
                return float(psnr(rgb_to_y(out), ref))

            given, source = photo.image_quality(loaded, told)
            row = {
                "image": path.stem,
                "jpeg_quality": quality,
                "grid_quality": grid_quality(loaded.pixels),
                "ranker_estimate": round(blind_quality(loaded.pixels), 1),
                "told": round(given, 1),
                "told_from": source,
                "input": score(loaded.pixels),
                "blind": score(photo.restore_image(blind, loaded, False)),
                "conditioned": score(photo.restore_image(told, loaded, False, quality=given)),
            }
            for key, q in (("conditioned_ranker", row["ranker_estimate"]), ("conditioned_q95", 95)):
                if key == "conditioned_ranker" or quality is None:
                    row[key] = score(photo.restore_image(told, loaded, False, None, q))
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = []
    for quality in cases:
        sel = [r for r in rows if r["jpeg_quality"] == quality]
        keys = [k for k in ("blind", "conditioned", "conditioned_ranker", "conditioned_q95")
                if all(k in r for r in sel)]  # fmt: skip
        entry = {
            "jpeg_quality": quality,
            "images": len(sel),
            "grid_quality_right": sum(r["grid_quality"] == quality for r in sel),
            "told_from": sorted({r["told_from"] for r in sel}),
            "input_psnr": float(np.mean([r["input"] for r in sel])),
        }
        for k in keys:
            change = np.array([r[k] - r["input"] for r in sel])
            entry[f"{k}_gain_mean"] = float(change.mean()) if quality is not None else None
            entry[f"{k}_psnr_mean"] = float(np.mean([r[k] for r in sel]))
            entry[f"{k}_gain_min"] = float(change.min()) if quality is not None else None
        summary.append(entry)
    record = {
        "command": "python experiments/nonjpeg_inputs.py DATA --model "
        f"{args.model} --images {args.images} --qualities {args.qualities} --json {args.json}",
        "model_step": meta.get("step"),
        "caveat": "Urban100 is among the training images of both models: this measures what "
        "each model is told and how much it changes a clean image, not generalisation",
        "note": __doc__.strip().splitlines()[0],
        "summary": summary,
        "rows": rows,
    }
    Path(args.json).write_text(json.dumps(json_safe(record), indent=1) + "\n")
    for entry in summary:
        print(json.dumps(entry))


if __name__ == "__main__":
    main()
