"""Does scoring an image as the average of training-sized tiles rank *different* images better?

The ranker trains on 48x48 crops but `estimate` scores whole photos (global average pooling over
the whole image). This compares, on the first N BSDS500 test images at QF 1..30, the pooled and the
per-image Spearman rho of (a) the whole-image score, (b) the mean and (c) the median of the scores
of non-overlapping TILE x TILE tiles (aligned with the 8x8 JPEG grid).

  CQRNET_DATA_DIR=DATA python experiments/ranker_tiles.py 20 48

Result: experiments/results/ranker_tiles.json (experiments/ranker.md, "Findings"). No gain
worth its cost: the cross-image spread is in what the ranker learned (it only ever compared
versions of one crop), not in how a whole photo is pooled.
"""

import sys
import time

import numpy as np

from cqrnet_jax.data.datasets import load_eval_set
from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.metrics import spearman
from cqrnet_jax.quality import load_ranker

n = int(sys.argv[1])
tile = int(sys.argv[2])
scorer = load_ranker()
imgs = load_eval_set("BSDS500", None)[:n]
qs = list(range(1, 31))
full = np.zeros((n, 30))
mean = np.zeros((n, 30))
med = np.zeros((n, 30))
t = time.time()
for i, (_, y) in enumerate(imgs):
    degs = [jpeg_degrade(y, q) for q in qs]
    full[i] = scorer(degs)
    h, w = y.shape
    for j, d in enumerate(degs):
        tiles = [
            d[a : a + tile, b : b + tile]
            for a in range(0, h - tile + 1, tile)
            for b in range(0, w - tile + 1, tile)
        ]
        s = scorer(tiles)
        mean[i, j] = s.mean()
        med[i, j] = np.median(s)
qq = np.tile(np.array(qs, float), n)
for name, m in [("full", full), ("tile-mean", mean), ("tile-median", med)]:
    per = np.mean([spearman(m[i], qs) for i in range(n)])
    print(f"{name:12s} pooled {spearman(m.ravel(), qq):.4f} per-image {per:.4f}")
print("seconds", time.time() - t)
