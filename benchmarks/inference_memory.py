"""Peak memory and time of full-image inference with the :cpu de-blocker, whole or tiled.

  python benchmarks/inference_memory.py HEIGHT WIDTH TILE      (TILE 0 = whole image)
Measured on the 2-core CPU while a training run shared it (2026-11-25, jax 0.10.2; times include
compilation of each distinct tile shape):
  768x1024 whole:    19.9 s, peak RSS 1594 MB
  768x1024 tile 256: 41.9 s, peak RSS  828 MB   (48-px margins: (256+96)^2/256^2 = 1.9x the work)
"""

import importlib.util
import pathlib
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from cqrnet_jax.inference import Restorer
from cqrnet_jax.train.deblock_task import deblock_from_config

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "deblock.py"


def main(h, w, tile):
    spec = importlib.util.spec_from_file_location("deblock_config", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = deblock_from_config(module.get_config("cpu").model)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 48, 48)))
    restorer = Restorer(model, variables, tile=tile)
    y = np.random.default_rng(0).integers(0, 255, (h, w), dtype=np.uint8)
    start = time.perf_counter()
    restorer(y)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{h}x{w} tile={tile}: {time.perf_counter() - start:.1f} s, peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
