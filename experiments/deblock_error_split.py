"""Where a de-blocker's error sits on Classic5: mean signed error (bias), and the mean squared error
split into a low-frequency part (the error's 16x16 local mean) and the high-frequency rest.

  CQRNET_DATA_DIR=DATA python experiments/deblock_error_split.py MODEL [MODEL ...]

MODEL: 'default', a training workdir or a params prefix. Used to see what the feature-matching loss
does to the restorations (experiments/tables.md, "The `:cpu` model").
"""

import argparse

import numpy as np
from scipy.ndimage import uniform_filter

from cqrnet_jax.data.datasets import load_eval_set
from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.inference import load_restorer
from cqrnet_jax.metrics import psnr


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--qualities", default="10,30")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    images = load_eval_set("Classic5", args.data_dir)
    for spec in args.models:
        restorer, meta = load_restorer(spec)
        for q in (int(v) for v in args.qualities.split(",")):
            rows = []
            told = restorer.for_quality(q)  # a quality-conditioned model is told the QF
            for _, y in images:
                out = told.restore_float(jpeg_degrade(y, q).astype(np.float32) / 255) * 255
                err = out - y.astype(np.float32)
                low = uniform_filter(err, 16)
                out8 = np.clip(np.round(out), 0, 255).astype(np.uint8)  # what `evaluate` scores
                rows.append(
                    [err.mean(), np.mean(low**2), np.mean((err - low) ** 2), float(psnr(out8, y))]
                )
            bias, low, high, mean_psnr = np.mean(rows, axis=0)
            print(
                f"{spec} (step {meta.get('step')}) QF {q}: bias {bias:+.3f}  "
                f"MSE low {low:.2f}  high {high:.2f}  PSNR {mean_psnr:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
