"""The decoded JPEG's own error on the de-blocker's training stream: the MSE between degraded and
clean patches of the first N batches (seed 0's data order), on the [0, 1] scale the loop's l_mse
logs. A training MSE above it means the network is worse than returning its input.

  CQRNET_DATA_DIR=../shared/data python benchmarks/train_stream_jpeg_mse.py [--batches 40]

`--window 50` also prints the mean of each 50 batches, to set beside the loop's log lines (each
the mean l_mse of the 50 steps before it, on the same stream when the run's data seed is 0).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from cqrnet_jax.config_base import load_config_file
from cqrnet_jax.data.pipeline import make_batches
from cqrnet_jax.data.sources import load_training_images

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--presets", default="cpu,dncnn")
    parser.add_argument("--window", type=int, default=0, help="steps per printed mean; 0: none")
    args = parser.parse_args()
    c = load_config_file(REPO / "configs" / "deblock.py", args.presets)
    c.data.backend = "numpy"
    stream = make_batches(
        c.data, load_training_images(c.data), mode="deblock", global_batch=16, start_step=0
    )
    mse = []
    for b in itertools.islice(stream, args.batches):
        d, y = np.asarray(b["degraded"], np.float64), np.asarray(b["clean"], np.float64)
        d = d[:, 0] if d.ndim == y.ndim + 1 else d
        mse.append(np.mean((d - y) ** 2) / 255.0**2)
        if args.window and len(mse) % args.window == 0:
            print(f"step {len(mse)}: JPEG MSE {np.mean(mse[-args.window :]):.4g}")
    print(f"JPEG MSE over {len(mse)} batches of 16: {np.mean(mse):.2e} "
          f"± {np.std(mse) / np.sqrt(len(mse)):.1e} ([0, 1] scale)")  # fmt: skip


if __name__ == "__main__":
    main()
