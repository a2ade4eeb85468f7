"""Gather what a GPU run of experiments/gpu_train.sh needs into one folder, DIR: the test sets,
wheels of the pure-Python packages a bare GPU machine may lack, and as many training images as
an allocation's size limit leaves room for.

  python experiments/gpu_pack.py DIR --data-dir DATA      # (what gpu_train.sh --prepare runs)

For allocations that take in at most --limit-mib (default 64) MiB: this checkout's files (tracked
and untracked-not-ignored: what a copy of the working tree holds) plus DIR. DIR may be anywhere;
inside the repository it must be ignored by git (e.g. .gpu/, ignored already), so that the
images are never committed. Test sets go first, all of them (Classic5 and LIVE1 as their Y in
PNG, the BSDS500 test JPEGs as they are: the cheapest lossless forms, measured), then training
images in a fixed shuffled order over BSDS500 train+val and Urban100 until the limit is reached.
DIR/manifest.json lists it all.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cqrnet_jax.data import datasets
from cqrnet_jax.data.io import load_y
from cqrnet_jax.errors import UserError

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20
WHEELS = ("ml-collections==1.1.0",)  # pure Python, beyond jax and its kin (no TensorFlow)


def travelling_bytes(exclude: Path) -> int:
    """Bytes of the checkout that a copy of the working tree holds anyway: tracked and
    untracked-not-ignored files (those under `exclude`, the pack itself, left out)."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            check=True,
            capture_output=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        sys.exit(f"error: {REPO}: not a git checkout (git ls-files failed); clone the repository")
    files = [REPO / f for f in listing.split("\0") if f]
    return sum(f.stat().st_size for f in files if f.is_file() and exclude not in f.parents)


def check_ignored(folder: Path):
    """A pack inside the repository must be ignored by git; one outside it needs nothing."""
    try:
        rel = folder.resolve().relative_to(REPO)
    except ValueError:
        return
    ignored = subprocess.run(["git", "check-ignore", "-q", str(rel)], cwd=REPO).returncode == 0
    if not ignored:
        sys.exit(
            f"error: {folder}: inside the repository but not ignored by git; use .gpu, a folder "
            "outside the repository, or add it to .git/info/exclude"
        )


def fetch_wheels(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    for spec in WHEELS:
        name = spec.split("==")[0].replace("-", "_")
        if any(folder.glob(f"{name}-*.whl")):
            continue
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        if subprocess.run([*cmd, "-d", str(folder), spec]).returncode != 0:
            sys.exit(f"error: pip could not download {spec} into {folder} (no network?)")


def save_png_y(src: Path, dst: Path):
    dst.parent.mkdir(parents=True, exist_ok=True)
    y = load_y(src)
    Image.fromarray(y).save(dst, optimize=True)
    assert np.array_equal(np.asarray(Image.open(dst)), y), dst


def pack_tests(data: Path, out: Path) -> list[dict]:
    """Classic5 and LIVE1 as Y PNGs, BSDS500 test JPEGs copied: all of each set."""
    files = []
    for name in datasets.EVAL_SETS:
        for src in datasets.list_eval_images(name, data):
            rel = src.relative_to(data)
            if src.suffix.lower() in (".jpg", ".jpeg"):
                dst = out / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            else:
                dst = (out / rel).with_suffix(".png")
                save_png_y(src, dst)
            files.append(dict(set=name, file=str(dst.relative_to(out)), bytes=dst.stat().st_size))
    return files


def pack_training(data: Path, out: Path, budget: int, seed: int = 0) -> list[dict]:
    """Training images, copied as they are, in a fixed shuffled order until `budget` bytes."""
    paths = datasets.list_train_images(data)
    order = np.random.default_rng(seed).permutation(len(paths))
    files, used = [], 0
    for i in order:
        src = paths[i]
        size = src.stat().st_size
        if used + size > budget:
            continue
        dst = out / src.relative_to(data)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        used += size
        files.append(dict(file=str(dst.relative_to(out)), bytes=size))
    return files


def pack(folder: Path, data: Path, limit_mib: float, margin_mib: float) -> str:
    """Fills `folder` from the data directory `data`; returns a one-line summary."""
    shutil.rmtree(folder / "data", ignore_errors=True)
    fetch_wheels(folder / "wheels")
    tests = pack_tests(data, folder / "data")
    fixed = travelling_bytes(folder) + sum(f.stat().st_size for f in folder.rglob("*.whl"))
    test_bytes = sum(f["bytes"] for f in tests)
    budget = int((limit_mib - margin_mib) * MIB) - fixed - test_bytes
    if budget <= 0:
        sys.exit(
            f"error: no room for training images under --limit-mib {limit_mib:g}: the checkout, "
            f"wheels and test sets take {(fixed + test_bytes) / MIB:.1f} MiB"
        )
    train = pack_training(data, folder / "data", budget)
    total = fixed + test_bytes + sum(f["bytes"] for f in train)
    by_set = {}
    for f in train:
        key = str(Path(f["file"]).parent)
        by_set[key] = by_set.get(key, 0) + 1
    manifest = dict(
        limit_mib=limit_mib,
        travelling_mib=round(total / MIB, 2),
        repository_mib=round(fixed / MIB, 2),
        test_mib=round(test_bytes / MIB, 2),
        training_images=by_set,
        tests=tests,
        train=train,
    )
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return (
        f"{folder}: {len(tests)} test images ({test_bytes / MIB:.1f} MiB), {len(train)} training "
        f"images {by_set}, {total / MIB:.1f} of {limit_mib:g} MiB with the checkout"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="the pack folder (created)")
    parser.add_argument("--data-dir", default=None, help="default: $CQRNET_DATA_DIR")
    parser.add_argument(
        "--limit-mib",
        type=float,
        default=64.0,
        help="the most the allocation takes in, this checkout's files and DIR together (MiB)",
    )
    parser.add_argument("--margin-mib", type=float, default=1.0)
    args = parser.parse_args()
    folder = args.dir.absolute()
    check_ignored(folder)
    try:
        data = datasets.resolve_data_dir(args.data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        print(pack(folder, data, args.limit_mib, args.margin_mib))
    except (UserError, OSError) as e:  # a missing or unreadable set, an unwritable folder
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
