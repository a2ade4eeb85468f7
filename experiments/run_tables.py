"""The paper's Table 1 (ablations) and Table 2's learned baselines, re-measured: every row trained
from scratch through our pipeline and loop at one budget, with several seeds, and scored by the
shared evaluator.

  python experiments/run_tables.py --scale cpu --seeds 2 --data-dir ../shared/data

Rows (configs/deblock.py presets on top of the scale's): `full` (L_MAE + 0.01 L_Q + 0.9 L_F),
`no_cqr` (L_MAE only), `no_dc` (dilations 1, 1, 1), `no_lq`, `no_lf` — Table 1, scored on BSDS500
test —, and `arcnn`, `dncnn` (their papers' networks and MSE loss) with `full` and the decoded
`jpeg` — Table 2, scored on Classic5, LIVE1 and BSDS500 test —, each at QF 10, 20 and 30.

Every row gets the same budget: steps x batch x patch, the same data (BSDS500 train+val and
Urban100), QFs and learning-rate schedule (`SCALES`). A row's seed sets both the initialisation
and the data order. It resumes where it stopped: rows already in the result files are kept, a
run whose workdir holds checkpoints continues from them (training is resumable step for step),
and each finished row is written to the result files at once. Workdirs go under --workdir (keep
it outside the repository); the result files are experiments/results/table1.json and
table2_baselines.json, and `--render` prints both tables as Markdown with mean ± spread over seeds
and a verdict per component (experiments/tables.md, "Tables 1 and 2, re-measured with seeds").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
TABLE1 = ("full", "no_cqr", "no_dc", "no_lq", "no_lf")
TABLE2 = ("jpeg", "arcnn", "dncnn", "full")
TABLE1_SETS = ("BSDS500",)
TABLE2_SETS = ("Classic5", "LIVE1", "BSDS500")
# glibc's allocator slows XLA:CPU training (docs/training.md "On a CPU"): used if here
TCMALLOC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
QUALITIES = (10, 20, 30)

# The budget of one row at each scale: the CQR network's presets and the training schedule that
# every row shares. `cpu`: the shipped CPU network (configs/deblock.py:cpu), 1 200 steps of batch
# 16 on 48x48 patches (its cost per row: experiments/tables.md, "Tables 1 and 2, re-measured
# with seeds").
SCALES = {
    "cpu": dict(
        presets="cpu",
        num_steps=1200,
        batch_size=16,
        patch_size=48,
        learning_rate=2e-4,
        warmup_steps=100,
    ),
    "smoke": dict(  # a few steps of the tiny network: checks the whole path (not a result)
        presets="smoke",
        num_steps=4,
        batch_size=4,
        patch_size=48,
        learning_rate=1e-3,
        warmup_steps=0,
    ),
    "paper": dict(
        presets="paper",
        num_steps=100_000,
        batch_size=16,
        patch_size=48,
        learning_rate=1e-4,
        warmup_steps=1000,
    ),
}
# The paper's Table 1 (BSDS500, 500 images; PSNR, SSIM, PSNR-B), column order as published.
PAPER_TABLE1 = {
    "full": {10: (29.42, 0.807, 29.01), 20: (31.97, 0.865, 31.29), 30: (32.91, 0.891, 31.98)},
    "no_cqr": {10: (29.21, 0.801, 28.81), 20: (31.41, 0.827, 30.89), 30: (32.77, 0.889, 31.90)},
    "no_dc": {10: (29.38, 0.792, 28.92), 20: (30.77, 0.799, 30.12), 30: (31.19, 0.832, 30.27)},
    "no_lq": {10: (29.41, 0.802, 28.98), 20: (31.87, 0.851, 31.23), 30: (32.79, 0.890, 31.90)},
    "no_lf": {10: (29.32, 0.780, 28.90), 20: (31.71, 0.809, 31.13), 30: (32.26, 0.861, 31.39)},
}
# The paper's Table 2 (PSNR, SSIM, PSNR-B): its single model (`full`) and the baselines as
# published for the same protocol, BSDS500 there being the 200-image test split for all but
# `full`, whose BSDS500 row the paper gives for its 500 images.
PAPER_TABLE2 = {
    "jpeg": {
        "Classic5": {
            10: (27.82, 0.760, 25.21),
            20: (30.12, 0.834, 27.50),
            30: (31.48, 0.867, 28.94),
        },
        "LIVE1": {10: (27.77, 0.773, 25.33), 20: (30.07, 0.851, 27.57), 30: (31.41, 0.885, 28.92)},
        "BSDS500": {
            10: (27.80, 0.768, 25.10),
            20: (30.05, 0.849, 27.22),
            30: (31.37, 0.884, 28.53),
        },
    },
    "arcnn": {
        "Classic5": {
            10: (29.03, 0.793, 28.76),
            20: (31.15, 0.852, 30.59),
            30: (32.51, 0.881, 31.98),
        },
        "LIVE1": {10: (28.96, 0.808, 28.77), 20: (31.29, 0.873, 30.79), 30: (32.67, 0.904, 32.22)},
        "BSDS500": {
            10: (29.10, 0.804, 28.73),
            20: (31.28, 0.870, 30.55),
            30: (32.67, 0.902, 31.94),
        },
    },
    "dncnn": {
        "Classic5": {
            10: (29.40, 0.803, 29.13),
            20: (31.63, 0.861, 31.19),
            30: (32.91, 0.886, 32.38),
        },
        "LIVE1": {10: (29.19, 0.812, 28.90), 20: (31.59, 0.880, 31.07), 30: (32.98, 0.909, 32.34)},
        "BSDS500": {
            10: (29.21, 0.809, 28.80),
            20: (31.53, 0.878, 30.79),
            30: (32.90, 0.907, 31.97),
        },
    },
    "full": {
        "Classic5": {
            10: (29.92, 0.837, 29.71),
            20: (32.89, 0.886, 32.41),
            30: (33.31, 0.893, 32.97),
        },
        "LIVE1": {10: (29.81, 0.810, 29.59), 20: (32.04, 0.891, 31.77), 30: (33.57, 0.912, 32.81)},
        "BSDS500": {
            10: (29.41, 0.801, 29.03),
            20: (31.87, 0.868, 31.08),
            30: (32.91, 0.901, 32.00),
        },
    },
}


def _row_presets(row: str, scale: str) -> str:
    base = SCALES[scale]["presets"]
    return base if row == "full" else f"{base},{row}"


def train_command(row: str, seed: int, scale: str, workdir: Path) -> list[str]:
    b = SCALES[scale]
    return [
        sys.executable,
        "-m",
        "cqrnet_jax.main",
        f"--config={REPO / 'configs' / 'deblock.py'}:{_row_presets(row, scale)}",
        f"--workdir={workdir}",
        f"--config.seed={seed}",
        f"--config.data.seed={seed}",
        f"--config.num_steps={b['num_steps']}",
        f"--config.batch_size={b['batch_size']}",
        f"--config.data.patch_size={b['patch_size']}",
        "--config.optim.schedule=cosine",
        f"--config.optim.learning_rate={b['learning_rate']}",
        f"--config.optim.warmup_steps={b['warmup_steps']}",
        f"--config.optim.decay_steps={b['num_steps']}",
        "--config.optim.decay_begin=0",
        "--config.eval_every=0",
        "--config.eval_set=",
        "--config.checkpoint_every=100",
        "--config.keep_checkpoints=1",
    ]


def eval_command(model: str, sets, out: Path, data_dir: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cqrnet_jax",
        "evaluate",
        "--model",
        model,
        "--datasets",
        ",".join(sets),
        "--qualities",
        ",".join(map(str, QUALITIES)),
        "--data-dir",
        data_dir,
        "--json",
        str(out),
        "--no-progress",
    ]


def _shown(cmd: list[str]) -> str:
    """A command as recorded: `python` for the interpreter, paths relative to the repository, the
    data directory as DATA."""
    out = ["python" if c == sys.executable else c for c in cmd]
    out = [c.replace(str(REPO) + os.sep, "") for c in out]
    return shlex.join(out)


def hardware(devices: int | None = None) -> str:
    """The backend, the devices (`devices`: those a row trained on, from its timing.json; the
    CPU split into one device per core counts each), and the host's CPU."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    backend = jax.default_backend()
    count = devices or jax.device_count()
    return f"{backend}: {count} x {kind}; host {cpu}, {os.cpu_count()} cores"


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _export_step(workdir: Path) -> int | None:
    meta = workdir / "export" / "deblock.json"
    return json.loads(meta.read_text()).get("step") if meta.is_file() else None


def train(row: str, seed: int, scale: str, workdir: Path, log) -> float:
    """Trains (or resumes) one row; the wall seconds of all its training runs so far."""
    steps = SCALES[scale]["num_steps"]
    spent_file = workdir / "tables_wall_s.json"
    spent = _load(spent_file).get("wall_s", 0.0)
    if _export_step(workdir) == steps:
        return spent
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = train_command(row, seed, scale, workdir)
    log(f"train {row} seed {seed}: {_shown(cmd)}")
    start = time.time()
    env = dict(os.environ)
    if TCMALLOC.is_file() and "LD_PRELOAD" not in env:
        env["LD_PRELOAD"] = str(TCMALLOC)
    with open(workdir / "train.log", "a") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    spent += time.time() - start
    _write(spent_file, {"wall_s": spent})
    if code != 0 or _export_step(workdir) != steps:
        raise RuntimeError(
            f"training {row} seed {seed} failed (exit {code}): see {workdir}/train.log"
        )
    return spent


def evaluate(model: str, sets, out: Path, data_dir: str, log) -> dict:
    if not out.is_file():
        cmd = eval_command(model, sets, out, data_dir)
        log(f"evaluate {model}: {_shown(cmd)}")
        subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def _rows_of(report: dict, name: str, seed, extra: dict) -> list[dict]:
    return [
        dict(
            model=name,
            seed=seed,
            dataset=r["dataset"],
            quality=r["quality"],
            psnr=r["psnr"],
            ssim=r["ssim"],
            psnr_b=r["psnr_b"],
            **extra,
        )
        for r in report["results"]
    ]


def _budget(scale: str) -> dict:
    b = dict(SCALES[scale])
    b["schedule"] = (
        f"Adam, {b['warmup_steps']} warm-up steps, then a cosine from "
        f"{b['learning_rate']:g} to 0 at step {b['num_steps']}"
    )
    b["data"] = "BSDS500 train+val and Urban100_gray, Y; QF 10/20/30 in equal shares per batch"
    return b


def run(args, log=print) -> None:
    scale, seeds = args.scale, list(range(args.seeds))
    work = Path(args.workdir).expanduser().resolve() / scale
    files = {
        1: RESULTS / f"table1{args.suffix}.json",
        2: RESULTS / f"table2_baselines{args.suffix}.json",
    }
    tables = {
        k: _load(p) or {"scale": scale, "budget": _budget(scale), "rows": []}
        for k, p in files.items()
    }
    for k, t in tables.items():
        if t.get("scale") != scale:
            raise SystemExit(f"error: {files[k]} holds scale {t.get('scale')!r}, not {scale!r}")

    def done(k, name, seed):
        return any(r["model"] == name and r["seed"] == seed for r in tables[k]["rows"])

    def record(k, rows):
        tables[k]["rows"].extend(rows)
        _write(files[k], tables[k])

    # the decoded JPEG: one row, no training, no seed
    if "jpeg" in args.rows and not args.train_only and not done(2, "jpeg", None):
        out = work / "jpeg" / "eval.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        report = evaluate("jpeg", TABLE2_SETS, out, args.data_dir, log)
        cmd = _shown(eval_command("jpeg", TABLE2_SETS, Path("OUT"), "DATA"))
        record(
            2,
            _rows_of(
                report,
                "jpeg",
                None,
                dict(command=cmd, steps=0, wall_time_s=0.0, hardware=hardware()),
            ),
        )
    for seed in seeds:
        for row in [r for r in args.rows if r != "jpeg"]:
            in1, in2 = row in TABLE1, row in TABLE2
            if (not in1 or done(1, row, seed)) and (not in2 or done(2, row, seed)):
                continue
            workdir = work / f"{row}_s{seed}"
            if args.score_only and _export_step(workdir) != SCALES[scale]["num_steps"]:
                continue  # not trained yet (perhaps training now, in another process)
            wall = train(row, seed, scale, workdir, log)
            if args.train_only:
                continue
            sets = sorted(
                {*(TABLE1_SETS if in1 else ()), *(TABLE2_SETS if in2 else ())},
                key=TABLE2_SETS.index,
            )
            report = evaluate(str(workdir), sets, workdir / "eval.json", args.data_dir, log)
            extra = dict(
                command=_shown(train_command(row, seed, scale, Path("WORKDIR")))
                + " && "
                + _shown(eval_command("WORKDIR", sets, Path("OUT"), "DATA")),
                steps=SCALES[scale]["num_steps"],
                wall_time_s=round(wall, 1),
                hardware=hardware(_load(workdir / "timing.json").get("devices")),
            )
            rows = _rows_of(report, row, seed, extra)
            if in1 and not done(1, row, seed):
                record(1, [r for r in rows if r["dataset"] in TABLE1_SETS])
            if in2 and not done(2, row, seed):
                record(2, rows)
            log(f"done {row} seed {seed} ({wall / 60:.0f} min of training)")


# --------------------------------------------------------------------------- summary


def _signed(x: float) -> str:
    """A difference to 0.01 with its sign; one that rounds to zero is +0.00, never -0.00."""
    return f"{round(x, 2) + 0.0:+.2f}"


def summarize(rows: list[dict]) -> dict:
    """{(model, dataset, quality): {metric: (mean, spread, n)}}; spread = max - min over seeds."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["model"], r["dataset"], r["quality"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        out[key] = {
            m: (statistics.fmean(v := [r[m] for r in rs]), max(v) - min(v), len(v))
            for m in ("psnr", "ssim", "psnr_b")
        }
    return out


def verdict(full: tuple, other: tuple, words=("helps", "hurts", "no measurable effect")) -> str:
    """What removing a component did to a metric: the full model's (mean, spread, n) against the
    ablation's. A difference no larger than the larger seed spread is a tie. `words` name the
    three outcomes: full ahead, full behind, tie."""
    diff = full[0] - other[0]
    noise = max(full[1], other[1])
    if min(full[2], other[2]) < 2:
        return "one seed: no verdict"
    if abs(diff) <= noise:
        return words[2]
    return words[0] if diff > 0 else words[1]


def _cell(stat, digits: int) -> str:
    mean, spread, n = stat
    return f"{mean:.{digits}f} ± {spread / 2:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def render(suffix: str = "") -> str:
    lines = []
    t1 = _load(RESULTS / f"table1{suffix}.json")
    if t1.get("rows"):
        s = summarize(t1["rows"])
        lines += [
            f"Table 1 ({t1['scale']} scale; {t1['budget']['num_steps']} steps of batch "
            f"{t1['budget']['batch_size']}, {t1['budget']['patch_size']}² patches per row), "
            "BSDS500 test, PSNR | SSIM | PSNR-B, mean ± half-range over seeds; the paper's rows "
            "(RNAN-scale network, DIV2K, BSDS500's 500 images) under each:",
            "",
        ]
        lines += ["| model | seeds | QF 10 | QF 20 | QF 30 |", "|---|---|---|---|---|"]
        for model in TABLE1:
            if (model, "BSDS500", 10) not in s:
                continue
            cells = [
                " ".join(
                    _cell(s[(model, "BSDS500", q)][m], 3 if m == "ssim" else 2)
                    for m in ("psnr", "ssim", "psnr_b")
                )
                for q in QUALITIES
            ]
            n = s[(model, "BSDS500", 10)]["psnr"][2]
            lines.append(f"| {model} | {n} | " + " | ".join(cells) + " |")
            paper = PAPER_TABLE1[model]
            lines.append(
                f"| {model}, paper | – | "
                + " | ".join(
                    f"{paper[q][0]:.2f} {paper[q][1]:.3f} {paper[q][2]:.2f}" for q in QUALITIES
                )
                + " |"
            )
        lines += [
            "",
            "Full model minus the ablation (ours: mean over seeds; a difference within the larger "
            "seed spread is a tie), against the paper's:",
            "",
            "| removed | QF | PSNR | PSNR-B | paper PSNR | paper PSNR-B |",
            "|---|---|---|---|---|---|",
        ]
        for model in TABLE1[1:]:
            for q in QUALITIES:
                a, b = s.get(("full", "BSDS500", q)), s.get((model, "BSDS500", q))
                if a and b:
                    pf, pa = PAPER_TABLE1["full"][q], PAPER_TABLE1[model][q]
                    lines.append(
                        f"| {model[3:]} | {q} | "
                        f"{_signed(a['psnr'][0] - b['psnr'][0])} dB: "
                        f"{verdict(a['psnr'], b['psnr'])} | "
                        f"{_signed(a['psnr_b'][0] - b['psnr_b'][0])} dB: "
                        f"{verdict(a['psnr_b'], b['psnr_b'])} | "
                        f"{_signed(pf[0] - pa[0])} | {_signed(pf[2] - pa[2])} |"
                    )
    t2 = _load(RESULTS / f"table2_baselines{suffix}.json")
    if t2.get("rows"):
        s = summarize(t2["rows"])
        lines += [
            "",
            f"Table 2 baselines ({t2['scale']} scale, same budget), PSNR | SSIM | PSNR-B:",
            "",
        ]
        lines += ["| set | QF | " + " | ".join(TABLE2) + " |", "|---|---|" + "---|" * len(TABLE2)]
        for ds in TABLE2_SETS:
            for q in QUALITIES:
                cells = []
                for model in TABLE2:
                    st = s.get((model, ds, q))
                    cells.append(
                        " ".join(
                            _cell(st[m], 3 if m == "ssim" else 2)
                            for m in ("psnr", "ssim", "psnr_b")
                        )
                        if st
                        else "–"
                    )
                lines.append(f"| {ds} | {q} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "The paper's Table 2 for the same rows (its `full` = its single model):",
            "",
            "| set | QF | " + " | ".join(TABLE2) + " |",
            "|---|---|" + "---|" * len(TABLE2),
        ]
        for ds in TABLE2_SETS:
            for q in QUALITIES:
                cells = [
                    "{:.2f} {:.3f} {:.2f}".format(*PAPER_TABLE2[model][ds][q]) for model in TABLE2
                ]
                lines.append(f"| {ds} | {q} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "`full` minus each learned baseline (ours: mean over seeds; a difference within the "
            "larger seed spread is a tie), against the paper's:",
            "",
            "| baseline | set | QF | PSNR | PSNR-B | paper PSNR | paper PSNR-B |",
            "|---|---|---|---|---|---|---|",
        ]
        for model in ("arcnn", "dncnn"):
            words = ("full ahead", f"{model} ahead", "tie")
            for ds in TABLE2_SETS:
                for q in QUALITIES:
                    a, b = s.get(("full", ds, q)), s.get((model, ds, q))
                    if not (a and b):
                        continue
                    pf, pb = PAPER_TABLE2["full"][ds][q], PAPER_TABLE2[model][ds][q]
                    lines.append(
                        f"| {model} | {ds} | {q} | "
                        f"{_signed(a['psnr'][0] - b['psnr'][0])} dB: "
                        f"{verdict(a['psnr'], b['psnr'], words)} | "
                        f"{_signed(a['psnr_b'][0] - b['psnr_b'][0])} dB: "
                        f"{verdict(a['psnr_b'], b['psnr_b'], words)} | "
                        f"{_signed(pf[0] - pb[0])} | {_signed(pf[2] - pb[2])} |"
                    )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--seeds", type=int, default=2, help="seeds 0 .. N-1 per row (default 2)")
    p.add_argument(
        "--rows",
        default=",".join(dict.fromkeys(TABLE1 + TABLE2)),
        help="comma-separated rows (default: all)",
    )
    p.add_argument("--workdir", default="../runs/tables", help="run folders (outside the repo)")
    p.add_argument(
        "--data-dir", default=os.environ.get("CQRNET_DATA_DIR"), help="test and training data"
    )
    p.add_argument("--suffix", default="", help="result files table1SUFFIX.json, ... (tests)")
    p.add_argument("--render", action="store_true", help="print the tables as Markdown and stop")
    p.add_argument(
        "--train-only",
        action="store_true",
        help="train the missing rows and score none (a later run without it scores them)",
    )
    p.add_argument(
        "--score-only",
        action="store_true",
        help="score the rows whose training has finished and train none (beside a --train-only "
        "run in the background)",
    )
    args = p.parse_args(argv)
    if args.train_only and args.score_only:
        p.error("--train-only and --score-only exclude each other")
    if args.render:
        print(render(args.suffix))
        return 0
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = set(args.rows) - set(TABLE1 + TABLE2)
    if unknown or not args.data_dir:
        p.error(f"unknown rows {sorted(unknown)}" if unknown else "--data-dir or $CQRNET_DATA_DIR")
    os.environ["CQRNET_DATA_DIR"] = str(Path(args.data_dir).resolve())
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
