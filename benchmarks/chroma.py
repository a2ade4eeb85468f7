"""Colour JPEGs: which chroma treatment goes with the de-blocked Y? Colour PSNR on LIVE1_color.

  python benchmarks/chroma.py --data-dir ../shared/data --json experiments/results/chroma.json

Each image is saved by PIL as a colour JPEG (IJG tables, quality q, subsampling=2: 4:2:0) and
decoded (libjpeg-turbo, fancy upsampling). Every option restores Y with the shipped model (one
pass, shared) and differs in Cb/Cr (MATLAB BT.601 studio swing, cqrnet_jax.data.color):

  jpeg                  the decoded file as it is (no model)
  y_model               restored Y + decoded Cb/Cr (no chroma treatment)
  y_model+gf_rR_eE      + guided filter on Cb/Cr, restored Y as guide, radius R, eps E
  y_model+cm_half_gG    + the model on Cb and Cr at their coded half resolution (recovered from
                        the decoded planes by inverting libjpeg's triangular upsampling), fed as
                        128 + G (C - 128), then upsampled back the way libjpeg does
  y_model+cm_half_g1+gf_r3   the two above in sequence (eps 1e-3)
  y_model+cm_full_g1    + the model on the full-resolution (upsampled) Cb and Cr planes

Metrics per image: PSNR over R, G and B together (8-bit, vs the BMP), and PSNR of the uint8-rounded
Y, Cb and Cr of the result. Times are seconds per image (median) of the whole restoration: the Y
pass plus the option's own chroma work. The model options on chroma are run on the first
`--model-chroma-images` (8) / `--full-res-images` (3) images only (sorted names), see the JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cqrnet_jax.data.color import rgb_to_ycbcr, ycbcr_to_rgb
from cqrnet_jax.metrics import psnr, rgb_psnr
from cqrnet_jax.photo import filter_chroma, restore_y

GF_VARIANTS = ((2, 1e-3), (3, 1e-3), (4, 1e-3), (3, 1e-4), (3, 1e-2))


def colour_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """RGB uint8 -> decoded RGB uint8 of PIL's colour JPEG at `quality`, 4:2:0."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, subsampling=2)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def fancy_upsampling_matrix(m: int, n: int) -> np.ndarray:
    """(n, m) matrix of libjpeg's 2× triangular ("fancy") upsampling, edges replicated."""
    u = np.zeros((2 * m, m))
    for i in range(m):
        u[2 * i, i] += 0.75
        u[2 * i, max(i - 1, 0)] += 0.25
        u[2 * i + 1, i] += 0.75
        u[2 * i + 1, min(i + 1, m - 1)] += 0.25
    return u[:n]


def to_half(plane: np.ndarray) -> np.ndarray:
    """Least-squares inverse of the decoder's 4:2:0 upsampling: the coded half-resolution plane."""
    h, w = plane.shape
    rows = np.linalg.pinv(fancy_upsampling_matrix((h + 1) // 2, h))
    cols = np.linalg.pinv(fancy_upsampling_matrix((w + 1) // 2, w))
    return rows @ plane @ cols.T


def to_full(half: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows = fancy_upsampling_matrix(half.shape[0], shape[0])
    cols = fancy_upsampling_matrix(half.shape[1], shape[1])
    return rows @ half @ cols.T


def model_on_plane(restorer, plane: np.ndarray, gain: float) -> np.ndarray:
    """The de-blocker on one chroma plane, contrast scaled by `gain` around 128."""
    x = (128.0 + gain * (plane - 128.0)) / 255.0
    out = restorer.restore_float(x.astype(np.float32)).astype(np.float64) * 255.0
    return 128.0 + (out - 128.0) / gain


def chroma_model(restorer, ycbcr: np.ndarray, gain: float, half: bool) -> np.ndarray:
    out = ycbcr.copy()
    for c in (1, 2):
        plane = to_half(ycbcr[..., c]) if half else ycbcr[..., c]
        plane = model_on_plane(restorer, plane, gain)
        out[..., c] = to_full(plane, ycbcr.shape[:2]) if half else plane
    return out


def scores(rgb_out: np.ndarray, rgb_ref: np.ndarray) -> dict:
    """PSNR of RGB (all channels) and of the uint8-rounded Y, Cb, Cr of the result."""
    out, ref = (np.clip(np.round(rgb_to_ycbcr(x)), 0, 255) for x in (rgb_out, rgb_ref))
    res = {"rgb": rgb_psnr(rgb_out, rgb_ref)}
    res.update({k: float(psnr(out[..., i], ref[..., i])) for i, k in enumerate(("y", "cb", "cr"))})
    return res


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def chroma_options(restorer, ycbcr_restored: np.ndarray, index: int, args):
    """(name, function of nothing -> (final YCbCr, seconds already spent elsewhere)) pairs for
    image number `index`; the half-resolution model result is computed once and reused."""
    yr = ycbcr_restored
    opts = [("y_model", lambda: (yr, 0.0))]
    for r, eps in GF_VARIANTS:
        opts.append(
            (f"y_model+gf_r{r}_e{eps:g}", lambda r=r, e=eps: (filter_chroma(yr, r, e), 0.0))
        )
    if index < args.model_chroma_images:
        half_g1 = {}

        def cm_half(gain):
            out, seconds = timed(chroma_model, restorer, yr, gain, True)
            if gain == 1.0:
                half_g1.update(out=out, seconds=seconds)
            return out, 0.0  # its time is measured around this call

        def cm_half_gf():
            return filter_chroma(half_g1["out"], 3, 1e-3), half_g1["seconds"]

        opts += [(f"y_model+cm_half_g{g:g}", lambda g=g: cm_half(g)) for g in (1.0, 0.5)]
        opts.append(("y_model+cm_half_g1+gf_r3", cm_half_gf))
    if index < args.full_res_images:
        opts.append(("y_model+cm_full_g1", lambda: (chroma_model(restorer, yr, 1.0, False), 0.0)))
    return opts


def run_image(restorer, rgb: np.ndarray, quality: int, index: int, args) -> dict:
    decoded = colour_jpeg(rgb, quality)
    results = {"jpeg": {**scores(decoded, rgb), "seconds": 0.0}}
    ycbcr = rgb_to_ycbcr(decoded)
    y_restored, y_seconds = timed(restore_y, restorer, ycbcr[..., 0])
    ycbcr[..., 0] = y_restored
    for name, fn in chroma_options(restorer, ycbcr, index, args):
        start = time.perf_counter()
        final, earlier = fn()
        out = ycbcr_to_rgb(final)
        seconds = y_seconds + earlier + time.perf_counter() - start
        results[name] = {**scores(out, rgb), "seconds": seconds}
    return results


def summarise(per_image: list[dict], qualities) -> dict:
    """Per QF and option: mean PSNRs over the images it ran on, median seconds, image count."""
    summary = {}
    for q in qualities:
        rows = [r for r in per_image if r["quality"] == q]
        names = dict.fromkeys(n for r in rows for n in r["options"])
        summary[str(q)] = {}
        for name in names:
            vals = [r["options"][name] for r in rows if name in r["options"]]
            entry = {k: float(np.mean([v[k] for v in vals])) for k in ("rgb", "y", "cb", "cr")}
            entry["seconds_median"] = float(np.median([v["seconds"] for v in vals]))
            summary[str(q)][name] = {**entry, "images": len(vals)}
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--qualities", default="10,20,30")
    p.add_argument("--images", type=int, default=0, help="first N images only (0: all)")
    p.add_argument("--model-chroma-images", type=int, default=8)
    p.add_argument("--full-res-images", type=int, default=3)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)

    from cqrnet_jax.inference import load_restorer

    restorer, _ = load_restorer("default", tile=args.tile)
    qualities = [int(q) for q in args.qualities.split(",")]
    files = sorted(Path(args.data_dir, "LIVE1_color").glob("*.bmp"))
    files = files[: args.images] if args.images else files
    per_image = []
    for index, path in enumerate(files):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for q in qualities:
            told = restorer.for_quality(q)  # a quality-conditioned model is told the QF
            options = run_image(told, rgb, q, index, args)
            per_image.append({"image": path.name, "quality": q, "options": options})
            best = max(options, key=lambda n: options[n]["rgb"])
            print(
                f"{path.name} q{q}: jpeg {options['jpeg']['rgb']:.2f} best {best} "
                f"{options[best]['rgb']:.2f}",
                file=sys.stderr,
                flush=True,
            )
        record = {
            "command": "python " + " ".join(sys.argv),
            "protocol": "LIVE1_color, PIL colour JPEG 4:2:0 (subsampling=2), IJG tables; "
            "PSNR over RGB and over uint8-rounded MATLAB Y/Cb/Cr of the result",
            "summary": summarise(per_image, qualities),
            "per_image": per_image,
        }
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")  # after every image
    return 0


if __name__ == "__main__":
    sys.exit(main())
