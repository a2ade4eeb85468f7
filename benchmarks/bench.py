"""How close the package runs to this machine's arithmetic peak, and to PyTorch.

  python benchmarks/bench.py [--quick] [--only PARTS] [--json OUT]

Measures, in one run (leave the cores idle while it runs; the figures are noisy otherwise):
  peak_gflops                 XLA float32 matmul, the best of a few sizes
  flops                       each model's FLOPs (XLA cost analysis): MFLOP a pixel
  inference_*                 the shipped de-blocker alone on BSDS500-sized images (321 x 481):
                              one program at a time, and spread over the devices (`devices.py`:
                              the CPU split into one device per core) as `evaluate` runs it
  deblock_*                   `cqrnet-jax deblock` end to end (a fresh process: start-up, reading,
                              colour, compiles, writing) on a folder of JPEG photos of mixed sizes
  photo12_*                   the same on one 12-megapixel colour JPEG (4000 x 3000, QF 20): its
                              wall time and the process's peak resident memory
  train_*, trainer_patches    the real trainer (`python -m cqrnet_jax.main`, the `cpu` preset,
                              batch 16 of 48 x 48, with the ranker's losses) on the built-in photos
  pipeline_patches_per_s      the NumPy input pipeline alone (JPEG at three qualities per batch)
  torch_*                     `benchmarks/torch_twin.py` against the same network in JAX, same
                              weights, equal outputs checked: inference of one 321 x 481 image,
                              and a train step (MAE + Adam, batch 16 of 48 x 48) of the
                              de-blocker alone; ratios are ours / theirs in throughput (> 1: JAX
                              ahead). null without torch (pip install -e ".[bench]").
A fraction of peak is achieved FLOP/s over peak_gflops.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cqrnet_jax.devices import split_host_cores  # noqa: E402  (before JAX starts)

split_host_cores()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

BSDS = (321, 481)
PARTS = ("flops", "inference", "deblock", "photo12", "train", "pipeline", "torch")


def cpu_description() -> dict:
    """The CPU's model name and widest vector units (figures of peak differ across CPU kinds:
    the same 2 cores measured 226 GFLOP/s on an AVX2 host and 375 on an AVX-512/AMX one), and
    the allocator preloaded (the README trains with tcmalloc)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wide = [f for f in ("avx2", "avx512f", "amx_tile") if f in flags]
    return {"cpu": name, "cpu_vector_isa": wide, "ld_preload": os.environ.get("LD_PRELOAD")}


def _best(fn, repeats: int) -> float:
    """The fastest of `repeats` calls of `fn` (which blocks until its result is ready)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def peak_gflops(quick: bool) -> dict:
    out = {}
    for n in (1024, 2048) if quick else (1024, 2048, 4096):
        a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
        f = jax.jit(lambda a: a @ a).lower(a).compile()
        f(a).block_until_ready()
        seconds = _best(lambda f=f, a=a: f(a).block_until_ready(), 3 if quick else 5)
        out[n] = 2 * n**3 / seconds / 1e9
        print(f"matmul {n}: {out[n]:.0f} GFLOP/s", flush=True)
    return {"peak_gflops": max(out.values()), "matmul_gflops_by_size": out}


def model_flops() -> dict:
    """MFLOP a pixel of each network's forward pass on a 321 x 481 image (the ranker: a 48 x 48
    patch, as it scores)."""
    from cqrnet_jax.config_base import load_config_file
    from cqrnet_jax.models.build import deblock_from_config, ranker_from_config

    out = {}
    x = jnp.zeros((1, *BSDS), jnp.float32)
    for preset in ("cpu", "unet", "paper", "arcnn", "dncnn"):
        cfg = load_config_file(str(REPO / "configs" / "deblock.py"), preset)
        model = deblock_from_config(cfg.model, "float32", "chunked")
        variables = jax.eval_shape(model.init, jax.random.key(0), x[:, :48, :48])
        compiled = jax.jit(model.apply).lower(variables, x).compile()
        out[f"deblock:{preset}"] = _flops(compiled) / x.size / 1e6
    cfg = load_config_file(str(REPO / "configs" / "ranker.py"), "")
    ranker = ranker_from_config(cfg.model)
    p = jnp.zeros((1, 48, 48, 1), jnp.float32)
    variables = jax.eval_shape(lambda k: ranker.init(k, p, train=False), jax.random.key(0))
    compiled = jax.jit(lambda v, p: ranker.apply(v, p, train=False)).lower(variables, p).compile()
    out["ranker"] = _flops(compiled) / (48 * 48) / 1e6
    print("MFLOP a pixel:", {k: round(v, 3) for k, v in out.items()}, flush=True)
    return out


def inference(quick: bool, peak: float) -> dict:
    from cqrnet_jax.devices import inference_devices
    from cqrnet_jax.inference import Restorer, load_restorer

    restorer, _ = load_restorer("default")
    model, variables = restorer.model, restorer.variables
    x = np.random.default_rng(1).random((1, *BSDS), np.float32)
    valid = np.array([BSDS], np.int32)
    # a quality-conditioned model (the shipped one) is told QF 20: the cost is the same at any
    told = {"quality": np.full((1,), 20.0, np.float32)} if restorer.quality_input else {}
    compiled = jax.jit(model.apply).lower(variables, x, valid, **told).compile()
    flops_px = _flops(compiled) / x.size
    run = lambda: compiled(variables, x, valid, **told).block_until_ready()  # noqa: E731
    run()
    one = _best(run, 3 if quick else 5)
    devices = inference_devices()
    spread = Restorer(model, variables, devices=devices).for_quality(20)
    images = [x[0]] * (2 * len(devices) * (1 if quick else 3))
    spread.restore_float_batch(images[: len(devices)])  # compile on every device
    many = _best(lambda: spread.restore_float_batch(images), 1 if quick else 2) / len(images)
    mpix = x.size / 1e6
    out = {
        "inference_image": list(BSDS),
        "inference_mflop_per_pixel": flops_px / 1e6,
        "inference_devices": len(devices),
        "inference_one_program_s": one,
        "inference_one_program_mpix_per_s": mpix / one,
        "inference_spread_s_per_image": many,
        "inference_mpix_per_s": mpix / min(one, many),
    }
    out["inference_fraction_of_peak"] = out["inference_mpix_per_s"] * flops_px / 1e3 / peak
    out["inference_one_program_fraction_of_peak"] = mpix / one * flops_px / 1e3 / peak
    print({k: v for k, v in out.items()}, flush=True)
    return out


def _photos(folder: Path, quick: bool) -> int:
    """JPEG photos (QF 20, colour and grey) of mixed sizes from scikit-image into `folder`;
    returns their pixel count."""
    import skimage.data
    from PIL import Image

    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    sources += [skimage.data.camera(), skimage.data.rocket()]
    sizes = [(512, 512), (400, 600), (300, 451), (481, 321), (333, 500), (256, 384)]
    sizes += [(600, 800), (375, 500)]
    if quick:
        sizes = sizes[:4]
    total = 0
    for i, (h, w) in enumerate(sizes):
        img = Image.fromarray(sources[i % len(sources)]).resize((w, h), Image.BICUBIC)
        img.save(folder / f"photo{i}.jpg", quality=20)
        total += h * w
    return total


def deblock(quick: bool, peak: float, mflop_px: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in"), Path(tmp, "out")
        src.mkdir()
        pixels = _photos(src, quick)
        cmd = [sys.executable, "-m", "cqrnet_jax", "deblock", str(src), "-o", str(dst)]
        start = time.perf_counter()
        subprocess.run([*cmd, "--no-progress"], check=True, cwd=REPO, capture_output=True)
        wall = time.perf_counter() - start
        n = len(list(dst.iterdir()))
    out = {
        "deblock_photos": n,
        "deblock_megapixels": pixels / 1e6,
        "deblock_wall_s": wall,
        "deblock_mpix_per_s": pixels / 1e6 / wall,
    }
    out["deblock_fraction_of_peak"] = out["deblock_mpix_per_s"] * mflop_px * 1e3 / peak
    print(out, flush=True)
    return out


def photo12() -> dict:
    """`cqrnet-jax deblock` on one 12 MP colour JPEG: seconds and peak resident memory (the
    child's maxrss, read from wait4)."""
    import skimage.data
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in"), Path(tmp, "out")
        src.mkdir()
        img = Image.fromarray(skimage.data.astronaut()).resize((4000, 3000), Image.BICUBIC)
        img.save(src / "photo12mp.jpg", quality=20)
        cmd = [sys.executable, "-m", "cqrnet_jax", "deblock", str(src), "-o", str(dst)]
        start = time.perf_counter()
        proc = subprocess.Popen([*cmd, "--no-progress"], cwd=REPO, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0 or not any(dst.iterdir()):
            raise RuntimeError(f"deblock failed on the 12 MP photo: {cmd}")
    out = {
        "photo12_megapixels": 12.0,
        "photo12_wall_s": wall,
        "photo12_s_per_mpix": wall / 12.0,
        "photo12_peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,  # ru_maxrss is in KiB on Linux
    }
    print(out, flush=True)
    return out


def _trainer(steps: int, host_devices: int) -> dict:
    """timing.json of `steps` steps of the real trainer (cpu preset, built-in photos)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the trainer decides
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "cqrnet_jax.main", "--config=configs/deblock.py:cpu"]
        cmd += [f"--workdir={tmp}", "--config.data.source=builtin", f"--config.num_steps={steps}"]
        cmd += ["--config.eval_every=0", "--config.eval_set=", f"--config.checkpoint_every={steps}"]
        cmd += ["--config.data.backend=numpy", "--config.log_every=1000"]
        cmd += [f"--config.host_devices={host_devices}"]
        subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, env=env)
        return json.loads(Path(tmp, "timing.json").read_text())


def train(quick: bool, peak: float) -> dict:
    """The trainer as it runs by default (the CPU split into devices, data-parallel) and on one
    device; train_* and trainer_patches_per_s are the default's."""
    steps = 12 if quick else 40
    one, split = _trainer(steps, 1), _trainer(steps, 0)
    batch, patch = split["batch_size"], 48
    rate = split["steps_per_s"]
    out = {
        "train_preset": "cpu",
        "train_steps": steps,
        "train_devices": split["devices"],
        "train_steps_per_s": rate,
        "train_gflop_per_step": split["flops_per_step"] / 1e9,
        "train_pixels_per_s": rate * batch * patch * patch,
        "train_fraction_of_peak": rate * split["flops_per_step"] / 1e9 / peak,
        "trainer_patches_per_s": rate * batch,
        "train_input_wait_s": split.get("input_wait_s"),
        "train_one_device_steps_per_s": one["steps_per_s"],
        "train_one_device_fraction_of_peak": (
            one["steps_per_s"] * one["flops_per_step"] / 1e9 / peak
        ),
    }
    print(out, flush=True)
    return out


def pipeline(quick: bool) -> dict:
    from cqrnet_jax.config_base import load_config_file
    from cqrnet_jax.data.datasets import builtin_photos
    from cqrnet_jax.data.pipeline import make_batches

    cfg = load_config_file(str(REPO / "configs" / "deblock.py"), "cpu")
    cfg.data.backend = "numpy"
    images = [y for _, y in builtin_photos()]
    batches = make_batches(cfg.data, images, mode="deblock", global_batch=16, start_step=0)
    next(batches)
    n = 10 if quick else 40
    start = time.perf_counter()
    for _ in range(n):
        next(batches)
    rate = n * 16 / (time.perf_counter() - start)
    print(f"pipeline: {rate:.0f} patches/s ({cfg.data.num_threads} threads)", flush=True)
    return {"pipeline_patches_per_s": rate, "pipeline_threads": cfg.data.num_threads}


def versus_torch(quick: bool) -> dict:
    try:
        import torch
    except ImportError:
        return {"torch_train_ratio": None, "torch_inference_ratio": None, "torch": None}
    from cqrnet_jax.devices import compiler_options, host_cores

    torch.set_num_threads(host_cores())
    import optax

    sys.path.insert(0, str(REPO / "benchmarks"))
    from torch_twin import check_equal, from_flax

    from cqrnet_jax.models.build import load_deblock_model
    from cqrnet_jax.pretrained import resolve_model_prefix

    model, variables, meta = load_deblock_model(resolve_model_prefix("default"), "float32")
    net = from_flax(variables["params"], meta["model"]).to(memory_format=torch.channels_last)
    worst = check_equal(model, variables, net.eval(), [(2, 48, 48), (1, 77, 101)])
    repeats = 3 if quick else 5
    x = np.random.default_rng(2).random((1, *BSDS), np.float32)
    # XLA's options as the package compiles these programs (`devices.CPU_COMPILER_OPTIONS`)
    options = compiler_options("inference", jax.devices())
    apply = jax.jit(model.apply, compiler_options=options).lower(variables, x).compile()
    apply(variables, x).block_until_ready()
    ours_inf = _best(lambda: apply(variables, x).block_until_ready(), repeats)
    xt = torch.from_numpy(x)[:, None].contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        net(xt)
        theirs_inf = _best(lambda: net(xt), repeats)

    # one train step of the de-blocker alone: MAE, Adam, batch 16 of 48 x 48
    rng = np.random.default_rng(3)
    xb = rng.random((16, 48, 48), np.float32)
    yb = np.clip(xb + 0.05 * rng.standard_normal(xb.shape).astype(np.float32), 0, 1)
    tx = optax.adam(1e-4)

    def step(params, opt, x, y):
        loss, grads = jax.value_and_grad(
            lambda p: jnp.mean(jnp.abs(model.apply({"params": p}, x) - y))
        )(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    def jax_step_seconds(devices) -> float:
        """One step's best time, the batch split over `devices` (data-parallel, as the trainer)."""
        mesh = jax.sharding.Mesh(np.array(devices), ("data",))
        rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        jitted = jax.jit(
            step,
            in_shardings=(rep, rep, data, data),
            out_shardings=rep,
            compiler_options=compiler_options("train", devices),
        )
        params = jax.device_put(variables["params"], rep)
        state = [params, jax.device_put(tx.init(params), rep)]
        x, y = jax.device_put(xb, data), jax.device_put(yb, data)

        def run():
            state[0], state[1], loss = jitted(state[0], state[1], x, y)
            loss.block_until_ready()

        run()
        return _best(run, repeats)

    ours_train_one = jax_step_seconds(jax.devices()[:1])
    ours_train = jax_step_seconds(jax.devices())
    net.train()
    adam = torch.optim.Adam(net.parameters(), lr=1e-4)
    xt = torch.from_numpy(xb)[:, None].contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(yb)[:, None].contiguous(memory_format=torch.channels_last)

    def theirs_step():
        adam.zero_grad(set_to_none=True)
        loss = torch.mean(torch.abs(net(xt) - yt))
        loss.backward()
        adam.step()

    theirs_step()
    theirs_train = _best(theirs_step, repeats)
    out = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_max_abs_output_diff": worst,
        "torch_inference_s": theirs_inf,
        "jax_inference_one_program_s": ours_inf,
        "torch_train_step_s": theirs_train,
        "jax_train_step_s": ours_train,
        "jax_train_step_devices": len(jax.devices()),
        "jax_train_step_one_device_s": ours_train_one,
        "torch_inference_one_program_ratio": theirs_inf / ours_inf,
        "torch_train_one_device_ratio": theirs_train / ours_train_one,
        "torch_train_ratio": theirs_train / ours_train,
    }
    print(out, flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and photos (quicker)")
    p.add_argument("--json", metavar="OUT", help="write the figures as JSON to OUT")
    p.add_argument(
        "--only",
        metavar="PARTS",
        default=",".join(PARTS),
        help=f"comma-separated parts to run (default all: {','.join(PARTS)})",
    )
    args = p.parse_args(argv)
    parts = [x for x in args.only.split(",") if x]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
    report = {
        "command": " ".join(
            ["python benchmarks/bench.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
        **cpu_description(),
    }
    report.update(peak_gflops(args.quick))
    peak = report["peak_gflops"]
    if "flops" in parts:
        report["flops_mflop_per_pixel"] = model_flops()
    if "inference" in parts or "deblock" in parts:
        report.update(inference(args.quick, peak))
    if "deblock" in parts:
        report.update(deblock(args.quick, peak, report["inference_mflop_per_pixel"]))
    if "photo12" in parts:
        report.update(photo12())
    if "train" in parts:
        report.update(train(args.quick, peak))
    if "pipeline" in parts:
        report.update(pipeline(args.quick))
    if "torch" in parts:
        report.update(versus_torch(args.quick))
    if (
        report.get("torch_inference_s") and "inference_spread_s_per_image" in report
    ):  # images restored as evaluate does (spread) vs torch
        spread = report["inference_spread_s_per_image"]
        report["torch_inference_ratio"] = report["torch_inference_s"] / spread
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
