"""Same-host A/B of de-blockers' network time: each model restores the same JPEG-degraded images.

  python benchmarks/restore_ab.py OLD/deblock default [--rounds 2] [--quality 10]

`Restorer.restore_float` alone (no start-up, reading or writing), told `--quality` when the
model is quality-conditioned; per model and image size, the best of 4 calls after a warm-up
call, the models taking turns for `--rounds` rounds so that a drift of the host's speed shows
as spread rather than as a difference. Leave the cores idle while it runs.
"""

from __future__ import annotations

import argparse

import numpy as np
import skimage.data
from bench import _best  # bench's timing (this script's folder is on sys.path)

from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.inference import load_restorer

SIZES = ((321, 481), (1024, 1024))  # a BSDS500 image; a megapixel


def best_seconds(restorer, x, repeats: int = 4) -> float:
    restorer.restore_float(x)  # compile
    return _best(lambda: restorer.restore_float(x), repeats)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="'default' or params prefixes / workdirs")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quality", type=int, default=10)
    args = p.parse_args(argv)
    photo = skimage.data.camera()
    images = {
        f"{h}x{w}": jpeg_degrade(np.resize(photo, (h, w)), args.quality).astype(np.float32) / 255
        for h, w in SIZES
    }
    print("model " + " ".join(f"{k:>10}" for k in images))
    for _ in range(args.rounds):
        for spec in args.models:
            restorer = load_restorer(spec)[0].for_quality(args.quality)
            cells = [f"{best_seconds(restorer, x):10.3f}" for x in images.values()]
            print(f"{spec} " + " ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
