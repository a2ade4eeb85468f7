"""Which luma should `cqrnet-jax estimate` score for a colour JPEG? Error of the shipped ranker's
quality estimate on BSDS500 test photos saved by PIL (IJG, 4:2:0) at known qualities.

  python benchmarks/estimate_luma.py --data-dir DATA --json experiments/results/estimate_luma.json
Methods: rgb_to_y = studio Y recomputed from the decoded RGB; raw_jfif = the decoder's own Y
plane, full range (`load_luma`, what `estimate` scores); studio_of_raw = that plane mapped to
16 + 219/255 Y (the range the ranker was trained on). Every Nth test image (--every), 8 qualities;
prints the mean absolute QF error per quality and method, and a paired t-test of raw_jfif
against rgb_to_y over per-image mean errors. Measured: experiments/results/estimate_luma.json
("table", "p_value").
"""

import argparse
import io
import json
import time

import numpy as np
from PIL import Image
from scipy.stats import ttest_1samp

from cqrnet_jax.data.color import rgb_to_y
from cqrnet_jax.data.datasets import list_eval_images, resolve_data_dir
from cqrnet_jax.quality import estimate_quality, load_ranker

QUALITIES = (5, 10, 15, 20, 25, 30, 50, 75)
METHODS = ("rgb_to_y", "raw_jfif", "studio_of_raw")


def lumas(rgb: np.ndarray, quality: int) -> dict[str, np.ndarray]:
    """The three candidate lumas of `rgb` saved as a colour JPEG at `quality`."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        decoded = np.asarray(im.convert("RGB"))
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        im.draft("L", None)  # the decoder's Y plane, no colour conversion
        raw = np.asarray(im)
    studio = np.round(16 + raw * (219 / 255)).astype(np.uint8)
    return {"rgb_to_y": rgb_to_y(decoded), "raw_jfif": raw, "studio_of_raw": studio}


def table(estimates: np.ndarray) -> str:
    """MAE per quality and overall, one row per method."""
    err = np.abs(estimates - np.array(QUALITIES))
    low = [i for i, q in enumerate(QUALITIES) if q <= 30]
    rows = ["MAE per QF      " + " ".join(f"q{q:>4}" for q in QUALITIES) + "   all   q<=30"]
    for m, name in enumerate(METHODS):
        per_q = " ".join(f"{e:5.2f}" for e in err[m].mean(0))
        rows.append(f"{name:15s} {per_q}  {err[m].mean():5.2f}  {err[m][:, low].mean():5.2f}")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--every", type=int, default=2, help="every Nth test image")
    parser.add_argument("--json", help="write per-image estimates and the table here")
    args = parser.parse_args()
    files = list_eval_images("BSDS500", resolve_data_dir(args.data_dir))[:: args.every]
    scorer, start = load_ranker(), time.perf_counter()
    est = np.zeros((len(METHODS), len(files), len(QUALITIES)))
    for i, path in enumerate(files):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for j, q in enumerate(QUALITIES):
            for m, y in enumerate(lumas(rgb, q).values()):
                est[m, i, j] = estimate_quality(float(scorer(y)), scorer.calibration)
    print(f"{len(files)} images, {time.perf_counter() - start:.0f} s\n{table(est)}")
    err = np.abs(est - np.array(QUALITIES))
    diff = err[1] - err[0]
    p_value = ttest_1samp(diff.mean(1), 0.0).pvalue  # per image: pairs of one image correlate
    print(
        f"raw_jfif better on {np.mean(diff < 0):.0%} of pairs, worse on {np.mean(diff > 0):.0%}; "
        f"paired t-test over per-image mean errors: p = {p_value:.2g}"
    )
    if args.json:
        record = {"files": [p.name for p in files], "qualities": QUALITIES, "methods": METHODS}
        record |= {"estimates": est.round(3).tolist(), "table": table(est), "p_value": p_value}
        with open(args.json, "w") as f:
            json.dump(record, f)


if __name__ == "__main__":
    main()
