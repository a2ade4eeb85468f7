"""XLA:CPU compiler options for the de-blocker's programs: what each costs and buys.

  python benchmarks/cpu_compiler_options.py [--quick] [--json OUT]

The package compiles its programs with `devices.CPU_COMPILER_OPTIONS` on a CPU; this measures
the choice. Leave the cores idle while it runs (minutes on a small CPU).

- train: the `:cpu` de-blocker's full train step (MAE + ranker losses, Adam; batch 16 of 48 x 48)
  on one device (all cores) and data-parallel on the CPU split into one device per core, as the
  trainer runs it, and the ranker's (configs/ranker.py: 32 pairs of 128 x 128, BatchNorm) on
  the split; with jaxlib's default YNNPACK fusions, YNNPACK off, and YNNPACK for all but the
  convolutions (the package's choice). Best of 4 steps after the first.
- inference: the shipped model's program on photo sizes, on one device (one core, as `deblock`
  runs a file): trace-and-lower, compile and best-of-3 run seconds per option set, and the
  largest output difference from the default. A first program compiled and run before the
  rows keeps warm-up out of them, and the option sets run in turn per size.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from cqrnet_jax.devices import split_host_cores  # noqa: E402  (before JAX starts)

split_host_cores()

import jax  # noqa: E402
import numpy as np  # noqa: E402
from bench import _best, cpu_description  # noqa: E402  (bench's timing and machine record)
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from cqrnet_jax.devices import CPU_COMPILER_OPTIONS  # noqa: E402

YNN = "xla_cpu_experimental_ynn_fusion_type"
TRAIN_OPTIONS = {
    "default": {},
    "ynn_off": {YNN: ""},
    "ynn_but_convolutions": CPU_COMPILER_OPTIONS["train"],
}
INFERENCE_OPTIONS = {
    "default": {},
    "O1": {"xla_backend_optimization_level": 1},
    "O0": {"xla_backend_optimization_level": 0},
    "ynn_but_convolutions": CPU_COMPILER_OPTIONS["train"],
}
SIZES = [(321, 481), (333, 500), (400, 600), (512, 512)]


def _programs():
    """(name, task, config, batch, device lists) of the train steps measured."""
    from deblock_step import load_config

    from cqrnet_jax.config_base import load_config_file
    from cqrnet_jax.data.pipeline import make_batches
    from cqrnet_jax.data.sources import load_training_images
    from cqrnet_jax.train.deblock_task import DeblockTask
    from cqrnet_jax.train.ranker_task import RankerTask

    config = load_config("cpu")
    rng = np.random.default_rng(0)
    p = config.data.patch_size
    batch = dict(
        degraded=rng.integers(0, 255, (config.batch_size, 1, p, p), dtype=np.uint8),
        clean=rng.integers(0, 255, (config.batch_size, p, p), dtype=np.uint8),
    )
    splits = (jax.devices()[:1], jax.devices())
    yield "train_step:deblock:cpu", DeblockTask(config), config, batch, splits
    config = load_config_file(str(REPO / "configs" / "ranker.py"), "")
    config.data.source = "builtin"
    source = make_batches(
        config.data,
        load_training_images(config.data),
        mode="ranker",
        global_batch=config.batch_size,
        start_step=0,
    )
    batch = next(source)
    source.close()
    yield "train_step:ranker", RankerTask(config), config, batch, splits[1:]


def train_rows(repeats: int) -> list[dict]:
    rows = []
    for program, task, config, batch, splits in _programs():
        for devices in splits:
            mesh = Mesh(np.array(devices), ("data",))
            rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
            rows += _train_rows(program, task, config, batch, mesh, rep, data, repeats)
    return rows


def _train_rows(program, task, config, batch, mesh, rep, data, repeats) -> list[dict]:
    from cqrnet_jax.train.loop import create_state, train_step

    rows = []
    for name, options in TRAIN_OPTIONS.items():
        state = create_state(task, config, mesh)
        placed = jax.device_put(batch, data)
        step = jax.jit(
            functools.partial(train_step, loss_fn=task.loss_fn),
            in_shardings=(rep, data, rep),
            out_shardings=(rep, rep),
            compiler_options=options or None,
        )
        frozen = task.frozen if task.frozen is None else jax.device_put(task.frozen, rep)
        start = time.perf_counter()
        compiled = step.lower(state, placed, frozen).compile()
        compile_s = time.perf_counter() - start
        box = [state]

        def run(compiled=compiled, box=box, placed=placed, frozen=frozen):
            box[0], metrics = compiled(box[0], placed, frozen)
            jax.block_until_ready(metrics)

        run()
        row = {
            "program": program,
            "devices": mesh.devices.size,
            "options": name,
            "compile_s": compile_s,
            "step_s": _best(run, repeats),
        }
        print(row, flush=True)
        rows.append(row)
    return rows


def inference_rows(repeats: int) -> list[dict]:
    from cqrnet_jax.inference import load_restorer

    restorer, _ = load_restorer("default")
    device = jax.devices()[0]
    variables = restorer._variables_on(device)

    def measure(h, w, options):
        x = np.random.default_rng(h * w).random((1, h, w), np.float32)
        x, valid = jax.device_put((x, np.array([[h, w]], np.int32)), device)
        q = np.full((1,), 10.0, np.float32) if restorer.quality_input else None  # the shipped
        fn = jax.jit(restorer._forward, compiler_options=options or None)
        start = time.perf_counter()
        lowered = fn.lower(variables, x, valid, q)
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        compiled_at = time.perf_counter()
        out = [None]

        def run():
            out[0] = np.asarray(compiled(variables, x, valid, q))

        run_s = _best(run, repeats)
        return lowered_at - start, compiled_at - lowered_at, run_s, out[0]

    measure(97, 131, {})  # warm-up: the first program's allocations and thread pools
    rows = []
    for h, w in SIZES:
        reference = None
        for name, options in INFERENCE_OPTIONS.items():
            lower_s, compile_s, run_s, out = measure(h, w, options)
            reference = out if reference is None else reference
            row = {
                "program": "deblock_inference:shipped",
                "size": [h, w],
                "options": name,
                "lower_s": lower_s,
                "compile_s": compile_s,
                "run_s": run_s,
                "max_abs_diff": float(np.max(np.abs(out - reference))),
            }
            print(row, flush=True)
            rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--json", metavar="OUT", help="write the rows as JSON to OUT")
    args = p.parse_args(argv)
    rows = train_rows(2 if args.quick else 4) + inference_rows(2 if args.quick else 3)
    sums = {}
    for name in INFERENCE_OPTIONS:
        mine = [r for r in rows if r.get("size") and r["options"] == name]
        sums[name] = {k: sum(r[k] for r in mine) for k in ("lower_s", "compile_s", "run_s")}
    report = {
        "command": "python benchmarks/cpu_compiler_options.py" + " --quick" * args.quick,
        "jax": jax.__version__,
        "devices": len(jax.devices()),
        **cpu_description(),
        "train_options": TRAIN_OPTIONS,
        "inference_options": INFERENCE_OPTIONS,
        "rows": rows,
        "inference_sums_over_sizes": sums,
    }
    print(json.dumps(sums, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
