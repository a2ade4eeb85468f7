"""Per-image PSNR gain of a model over the decoded JPEG, from two `cqrnet-jax evaluate
--per-image --json` reports (the model's and `--model jpeg`'s): the table behind a model's
`restores_up_to` limits.

    python experiments/above_range.py MODEL.json JPEG.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_json")
    parser.add_argument("jpeg_json")
    args = parser.parse_args()
    with open(args.model_json) as f:
        model = json.load(f)["per_image"]
    with open(args.jpeg_json) as f:
        jpeg = {(r["dataset"], r["quality"], r["image"]): r for r in json.load(f)["per_image"]}
    gains, gains_b = defaultdict(list), defaultdict(list)
    for r in model:
        base = jpeg[r["dataset"], r["quality"], r["image"]]
        gains[r["dataset"], r["quality"]].append(r["psnr"] - base["psnr"])
        gains_b[r["dataset"], r["quality"]].append(r["psnr_b"] - base["psnr_b"])
    print("set       QF  gain mean  gain min..max    images that lose  PSNR-B gain")
    for (name, q), g in sorted(gains.items()):
        lose = sum(x < 0 for x in g)
        b = sum(gains_b[name, q]) / len(g)
        print(
            f"{name:<9} {q:>2}  {sum(g) / len(g):+9.2f}  {min(g):+.2f}..{max(g):+.2f}"
            f"     {lose:>2} of {len(g):<2}          {b:+.2f}"
        )


if __name__ == "__main__":
    main()
