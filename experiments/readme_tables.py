"""Render the tables of README.md, experiments/*.md, docs/usage.md and a model card from results.

  python experiments/readme_tables.py           # rewrite every table in place
  python experiments/readme_tables.py --check   # exit 1, naming them, if a table is stale

A table sits between `<!-- table:NAME -->` and `<!-- /table -->`; NAME picks its renderer in
`RENDERERS`. Numbers are never typed into those files by hand: a stale number is a bug, and
`tests/test_readme_tables.py` fails when regenerating would change one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
FILES = (
    "README.md",
    "experiments/protocol.md",
    "experiments/tables.md",
    "experiments/colour.md",
    "docs/usage.md",
    "cqrnet_jax/pretrained/deblock_color.md",
)
BLOCK = re.compile(r"(<!-- table:([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.S)
SETS = ("Classic5", "LIVE1", "BSDS500")
QUALITIES = (10, 20, 30)
# Published rows shown beside ours: name in table2.json's "published" -> column header.
PUBLISHED = {"ARCNN": "ARCNN", "DnCNN-3": "DnCNN-3", "CQR paper (single model)": "CQR paper"}


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _by_key(rows) -> dict:
    return {(r["dataset"], r["quality"]): r for r in rows}


def _table2() -> tuple[dict, dict, dict]:
    """Ours (the shipped model), the decoded JPEG and the published rows of table2.json."""
    t2 = _load("table2.json")
    runs = {run["model"]: run for run in t2["runs"]}
    published: dict = {}
    for r in t2["published"]["results"]:
        published.setdefault(r["model"], {})[(r["dataset"], r["quality"])] = r
    return runs["default"], runs["jpeg"], published


def _triplet(r) -> str:
    return f"{r['psnr']:.2f} {r['ssim']:.3f} {r['psnr_b']:.2f}"


def render_results() -> str:
    """README: the shipped model against JPEG and the published rows, PSNR / PSNR-B."""
    ours, jpeg, published = _table2()
    cols = [("JPEG", _by_key(jpeg["results"])), ("**ours**", _by_key(ours["results"]))]
    cols += [(head, published[name]) for name, head in PUBLISHED.items()]
    lines = [
        "| set | QF | " + " | ".join(h for h, _ in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for ds in SETS:
        for q in QUALITIES:
            cells = [f"{c[(ds, q)]['psnr']:.2f} / {c[(ds, q)]['psnr_b']:.2f}" for _, c in cols]
            lines.append(f"| {ds} | {q} | " + " | ".join(cells) + " |")
    n = {ds: _by_key(ours["results"])[(ds, 10)]["n_images"] for ds in SETS}
    lines += [
        "",
        f"PSNR / PSNR-B in dB on Y; ours is the shipped CPU model after {ours['step']} steps on "
        f"2 CPU cores. Classic5 ({n['Classic5']} images), LIVE1 ({n['LIVE1']}), BSDS500 test "
        f"({n['BSDS500']}; the CQR paper's BSDS500 is its 500-image set). Published rows: "
        "the CQR paper's Table 2 and FBCNN's table. Source: `experiments/results/table2.json`.",
    ]
    return "\n".join(lines)


def render_demo() -> str:
    """README: what `cqrnet-jax demo` printed (experiments/results/demo_astronaut_q10.txt)."""
    text = (RESULTS / "demo_astronaut_q10.txt").read_text()
    rows = re.findall(r"^(JPEG|restored|gain)\s+(\S+)\s+(\S+)\s+(\S+)$", text, re.M)
    wall = re.search(r"^([\d.]+) s wall", text, re.M).group(1)
    peak = re.search(r"XLA matmul peak (\d+) GFLOP/s", text)
    host = f" (a host whose XLA matmul peak is {peak.group(1)} GFLOP/s)" if peak else ""
    lines = ["| astronaut, QF 10 | PSNR | SSIM | PSNR-B |", "|---|---|---|---|"]
    lines += [f"| {name} | {a} | {b} | {c} |" for name, a, b, c in rows]
    lines += [
        "",
        f"{wall} s on 2 CPU cores{host}, start-up included "
        "(`experiments/results/demo_astronaut_q10.txt`).",
    ]
    return "\n".join(lines)


def render_jpeg_baseline() -> str:
    """experiments/protocol.md: the decoded JPEG against the published JPEG rows."""
    d = _load("jpeg_baseline.json")
    ours = _by_key(d["results"])
    n = {ds: ours[(ds, 10)]["n_images"] for ds in SETS}
    lines = ["| set | QF 10 | QF 20 | QF 30 |", "|---|---|---|---|"]
    for ds in SETS:
        name = f"{ds} test" if ds == "BSDS500" else ds
        cells = [_triplet(ours[(ds, q)]) for q in QUALITIES]
        lines.append(f"| {name} ({n[ds]}) | " + " | ".join(cells) + " |")
    matched = sum(
        round(r[m], 2 if m != "ssim" else 3) == r["published"][m]
        for r in d["results"]
        for m in ("psnr", "ssim", "psnr_b")
    )
    lines += ["", f"{matched} of {3 * len(d['results'])} values equal the published ones."]
    return "\n".join(lines)


def render_table2() -> str:
    """experiments/tables.md: the shipped model, PSNR | SSIM | PSNR-B, against every row."""
    ours, jpeg, published = _table2()
    cols = [("JPEG", _by_key(jpeg["results"])), ("ours", _by_key(ours["results"]))]
    cols += [(head, published[name]) for name, head in PUBLISHED.items()]
    cols.append(("SwinIR", published["SwinIR"]))
    lines = [
        "| set | QF | " + " | ".join(h for h, _ in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for ds in SETS:
        for q in QUALITIES:
            cells = [_triplet(c[(ds, q)]) if (ds, q) in c else "–" for _, c in cols]
            lines.append(f"| {ds} | {q} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_ensemble() -> str:
    """docs/usage.md: the self-ensemble (`--ensemble`) against single passes, same runs' files."""
    lines = [
        "| set | QF | PSNR single → ensemble | PSNR-B single → ensemble |",
        "|---|---|---|---|",
    ]
    for name in ("ensemble_classic5", "ensemble_live1_q10"):
        single = _by_key(_load(f"{name}_single.json")["results"])
        for key, r in _by_key(_load(f"{name}.json")["results"]).items():
            s = single[key]
            lines.append(
                f"| {key[0]} | {key[1]} | {s['psnr']:.2f} → {r['psnr']:.2f} "
                f"({r['psnr'] - s['psnr']:+.2f}) | {s['psnr_b']:.2f} → {r['psnr_b']:.2f} "
                f"({r['psnr_b'] - s['psnr_b']:+.2f}) |"
            )
    return "\n".join(lines)


def _run_tables():
    spec = importlib.util.spec_from_file_location("run_tables", REPO / "experiments/run_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pm(stat) -> str:
    mean, spread, n = stat
    return f"{mean:.2f} ± {spread / 2:.2f}" if n > 1 else f"{mean:.2f}"


def render_run_tables() -> str:
    """experiments/tables.md: Tables 1 and 2 re-measured (table1.json, table2_baselines.json),
    PSNR / PSNR-B only; `run_tables.py --render` prints SSIM and the verdicts too."""
    rt = _run_tables()
    t1 = rt.summarize(_load("table1.json")["rows"])
    t2 = rt.summarize(_load("table2_baselines.json")["rows"])
    lines = [
        "Table 1, BSDS500 test, PSNR / PSNR-B, mean ± half-range over seeds; the paper's row "
        "(RNAN-scale network, DIV2K, BSDS500's 500 images) in brackets:",
        "",
        "| model | seeds | QF 10 | QF 20 | QF 30 |",
        "|---|---|---|---|---|",
    ]
    for model in rt.TABLE1:
        cells = []
        for q in QUALITIES:
            st, paper = t1[(model, "BSDS500", q)], rt.PAPER_TABLE1[model][q]
            cells.append(
                f"{_pm(st['psnr'])} / {_pm(st['psnr_b'])} ({paper[0]:.2f} / {paper[2]:.2f})"
            )
        n = t1[(model, "BSDS500", 10)]["psnr"][2]
        lines.append(f"| {model} | {n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Table 2's learned baselines at the same budget, PSNR / PSNR-B, mean ± half-range "
        "(published rows: the `table2` table above):",
        "",
        "| set | QF | " + " | ".join(rt.TABLE2) + " |",
        "|---|---|" + "---|" * len(rt.TABLE2),
    ]
    for ds in rt.TABLE2_SETS:
        for q in QUALITIES:
            cells = [
                f"{_pm(t2[(m, ds, q)]['psnr'])} / {_pm(t2[(m, ds, q)]['psnr_b'])}"
                for m in rt.TABLE2
            ]
            lines.append(f"| {ds} | {q} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "`full` minus the other row (means over seeds), PSNR / PSNR-B in dB; the paper's in "
        "brackets:",
        "",
        "| full minus | QF 10 | QF 20 | QF 30 |",
        "|---|---|---|---|",
    ]

    def diff(a, b, pa, pb) -> str:
        return (
            f"{rt._signed(a['psnr'][0] - b['psnr'][0])} / "
            f"{rt._signed(a['psnr_b'][0] - b['psnr_b'][0])} "
            f"({rt._signed(pa[0] - pb[0])} / {rt._signed(pa[2] - pb[2])})"
        )

    for model in rt.TABLE1[1:]:
        cells = [
            diff(
                t1[("full", "BSDS500", q)],
                t1[(model, "BSDS500", q)],
                rt.PAPER_TABLE1["full"][q],
                rt.PAPER_TABLE1[model][q],
            )
            for q in QUALITIES
        ]
        lines.append(f"| {model}, BSDS500 | " + " | ".join(cells) + " |")
    for model in ("arcnn", "dncnn"):
        for ds in rt.TABLE2_SETS:
            cells = [
                diff(
                    t2[("full", ds, q)],
                    t2[(model, ds, q)],
                    rt.PAPER_TABLE2["full"][ds][q],
                    rt.PAPER_TABLE2[model][ds][q],
                )
                for q in QUALITIES
            ]
            lines.append(f"| {model}, {ds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _colour_rows(name: str) -> dict:
    """{(set, quality): summary row} of an `experiments/color_table.py` JSON."""
    return {(r["set"], r["quality"]): r for r in _load(name)["summary"]}


# Colour candidates on BSDS500 val: (label, results file, row of that file).
COLOUR_CANDIDATES = (
    ("JPEG", "color_val_chroma.json", "jpeg"),
    ("Y model + guided filter on Cb/Cr", "color_val_chroma.json", "guided"),
    ("colour U-Net (RGB in and out)", "color_val_unet.json", "color"),
    ("chroma U-Net (chosen)", "color_val_chroma.json", "color"),
)


def render_color_val() -> str:
    """experiments/colour.md: the colour candidates on BSDS500 val, RGB PSNR / SSIM."""
    files = {f: _colour_rows(f) for _, f, _ in COLOUR_CANDIDATES}
    keys = sorted(files["color_val_chroma.json"])
    n = files["color_val_chroma.json"][keys[0]]["images"]
    lines = [
        f"| BSDS500 val ({n}), RGB PSNR / SSIM | " + " | ".join(f"QF {q}" for _, q in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for label, f, row in COLOUR_CANDIDATES:
        cells = [
            f"{files[f][k][row + '_psnr']:.2f} / {files[f][k][row + '_ssim']:.3f}" for k in keys
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The shipped colour model's records (both its U-Nets told the quality: Y step 39 343, the
# 24 / 48 / 96 chroma U-Net step 10 000).
COLOR_TABLE = "color_table_w24.json"
COLOR_ABOVE = "color_above_range_w24.json"


def render_color_table() -> str:
    """README and the colour model card: the shipped colour model on LIVE1 colour and BSDS500
    test (COLOR_TABLE) beside the guided-filter path and the published rows."""
    ours = _colour_rows(COLOR_TABLE)
    published = _load("color_published.json")["rows"]
    qualities = sorted({q for _, q in ours})
    lines = [
        "| set | row | " + " | ".join(f"QF {q}" for q in qualities) + " |",
        "|---|---|" + "---:|" * len(qualities),
    ]
    for ds in sorted({d for d, _ in ours}, key=lambda d: d != "LIVE1_color"):
        n = ours[(ds, qualities[0])]["images"]
        for label, row in (("JPEG", "jpeg"), ("guided filter", "guided"), ("**ours**", "color")):
            cells = [f"{ours[(ds, q)][row + '_psnr']:.2f}" for q in qualities]
            lines.append(f"| {ds} ({n}) | {label} | " + " | ".join(cells) + " |")
        for r in (r for r in published if r["dataset"] == ds):
            cells = [f"{r['psnr'][str(q)]:.2f}" for q in qualities]
            lines.append(f"| {ds} | {r['model']} (published) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_color_above() -> str:
    """The colour model card: LIVE1 colour above QF 40, the gain over the JPEG per image."""
    d = _load(COLOR_ABOVE)
    lines = [
        "| QF | colour model: mean / worst gain | photos worse "
        "| without it (guided filter to QF 60): mean / worst |",
        "|---:|---|---:|---|",
    ]
    for s in d["summary"]:
        q = s["quality"]
        rows = [e for e in d["per_image"] if e["quality"] == q]
        colour = [e["color"]["psnr"] - e["jpeg"]["psnr"] for e in rows]
        grey = [e["guided"]["psnr"] - e["jpeg"]["psnr"] for e in rows]
        lines.append(
            f"| {q} | {sum(colour) / len(colour):+.2f} / {min(colour):+.2f} | "
            f"{sum(g < 0 for g in colour)} of {len(rows)} | "
            f"{sum(grey) / len(grey):+.2f} / {min(grey):+.2f} |"
        )
    return "\n".join(lines)


def render_color_bound() -> str:
    """experiments/colour.md: how far a perfect Cb/Cr (or Y) would lift the colour model."""
    d = _load("color_bound.json")
    lines = [
        "| QF | JPEG | guided filter | colour model | its Y, clean Cb/Cr | clean Y, its Cb/Cr "
        "| floor (guided + 0.5) | Cb/Cr error cut from guided: model / floor needs |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in d["summary"]:
        mse = lambda db: 10 ** (-db / 10)  # noqa: E731 (relative MSE of a PSNR)
        y_only = mse(r["color_clean_chroma"])  # the error left with a perfect Cb/Cr
        guided_c = mse(r["guided"]) - y_only
        cut = 1 - (mse(r["color"]) - y_only) / guided_c
        needs = 1 - (mse(r["guided"] + 0.5) - y_only) / guided_c
        lines.append(
            f"| {r['quality']} | {r['jpeg']:.2f} | {r['guided']:.2f} | {r['color']:.2f} | "
            f"{r['color_clean_chroma']:.2f} | {r['color_clean_y']:.2f} | "
            f"{r['guided'] + 0.5:.2f} | {cut:.0%} / {needs:.0%} |"
        )
    return "\n".join(lines)


RENDERERS = {
    "color-bound": render_color_bound,
    "color-above": render_color_above,
    "color-val": render_color_val,
    "color-table": render_color_table,
    "results": render_results,
    "demo": render_demo,
    "jpeg-baseline": render_jpeg_baseline,
    "table2": render_table2,
    "run-tables": render_run_tables,
    "ensemble": render_ensemble,
}


def rewrite(text: str) -> str:
    """`text` with every marked table rendered afresh."""

    def one(m: re.Match) -> str:
        return f"{m.group(1)}{RENDERERS[m.group(2)]()}\n{m.group(4)}"

    return BLOCK.sub(one, text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report stale tables (exit 1)")
    args = p.parse_args(argv)
    stale = []
    for name in FILES:
        path = REPO / name
        old = path.read_text()
        new = rewrite(old)
        if new != old:
            stale.append(name)
            if not args.check:
                path.write_text(new)
    if stale:
        verb = "stale" if args.check else "rewrote"
        print(f"{verb}: {', '.join(stale)}", file=sys.stderr)
    return 1 if (stale and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
