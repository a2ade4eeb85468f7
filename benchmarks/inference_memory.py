"""Peak memory and time of full-image inference with the :cpu de-blocker, whole or tiled.

  python benchmarks/inference_memory.py HEIGHT WIDTH TILE      (TILE 0 = whole image)

  python benchmarks/inference_memory.py --photo [--tile N]
The whole `cqrnet-jax deblock` command (load, restore, save) on a 12-megapixel colour photo: a
scikit-image photo upscaled to 4000x3000, plus N(0, 3^2) noise, saved as JPEG q30; the peak RSS
of the command's process comes from os.wait4 (what /usr/bin/time -v reports).
Measured: experiments/results/inference_memory.txt.
"""

import argparse
import importlib.util
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "deblock.py"


def bench_restorer(h, w, tile):
    """The Restorer alone (random :cpu weights, noise image), in this process."""
    import jax
    import jax.numpy as jnp

    from cqrnet_jax.inference import Restorer
    from cqrnet_jax.models.build import deblock_from_config

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


def make_photo(path, h=3000, w=4000, quality=30):
    """A realistic large JPEG: a real photo upscaled (bicubic) with sensor-like noise."""
    import skimage.data
    from PIL import Image

    big = Image.fromarray(skimage.data.astronaut()).resize((w, h), Image.BICUBIC)
    noise = np.random.default_rng(0).normal(0.0, 3.0, (h, w, 3))
    pixels = np.clip(np.asarray(big, np.float64) + noise, 0, 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=quality)


def bench_cli(tile, h=3000, w=4000):
    """`cqrnet-jax deblock PHOTO -o OUT --tile TILE` in a child process: its wall time and peak
    RSS (maximum resident set size from wait4, as /usr/bin/time -v reports it)."""
    with tempfile.TemporaryDirectory() as tmp:
        photo = pathlib.Path(tmp) / "photo.jpg"
        make_photo(photo, h, w)
        cmd = [sys.executable, "-m", "cqrnet_jax", "deblock", str(photo), "-o", f"{tmp}/out"]
        cmd += ["--tile", str(tile)]
        start = time.perf_counter()
        child = subprocess.Popen(cmd)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
    peak_mb = usage.ru_maxrss / 1024
    print(
        f"deblock {w}x{h} ({w * h / 1e6:.0f} MP) JPEG q30, tile={tile}: exit {child.returncode}, "
        f"{seconds:.0f} s, peak RSS {peak_mb:.0f} MB"
    )
    return child.returncode


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", nargs="*", type=int, help="HEIGHT WIDTH TILE (Restorer alone)")
    parser.add_argument("--photo", action="store_true", help="the whole deblock command")
    parser.add_argument("--tile", type=int, default=512)
    args = parser.parse_args()
    if args.photo:
        sys.exit(bench_cli(args.tile))
    bench_restorer(*args.size)
