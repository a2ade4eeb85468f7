"""`cqrnet-jax fetch-data --out DIR`: the image sets (Classic5, LIVE1, BSDS500, Urban100) from
their public sources into the data directory's layout, checked against the shipped SHA-256 list;
`--verify DIR` checks a folder. The work is `cqrnet_jax.data.fetch`'s; docs/data.md says what
each set is, where it comes from and its terms of use."""

from __future__ import annotations

import argparse
import sys

from cqrnet_jax.apps.common import UsageError, int_in_range
from cqrnet_jax.data.datasets import DATA_DIR_ENV
from cqrnet_jax.errors import InputError


def add_fetch_data_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fetch-data",
        help="download the test and training image sets, checking their checksums (~260 MB "
        "downloaded, 158 MB kept)",
        description=(
            "Download Classic5, LIVE1, BSDS500 and Urban100 from the GitHub repositories (pinned "
            "commits) they were copied from, into the layout training and evaluation read (point "
            f"--data-dir, --config.data.data_dir or ${DATA_DIR_ENV} at DIR), checking each file's "
            "SHA-256 before it is written; files already there and correct are kept. "
            "Research use only: see docs/data.md for each set's source and terms."
        ),
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", metavar="DIR", help="fetch into DIR (created if missing)")
    what.add_argument("--verify", metavar="DIR", help="check the files under DIR; fetch nothing")
    p.add_argument(
        "--from-dir",
        metavar="SRC",
        help="copy from SRC, a data directory already in this layout (another machine's), "
        "instead of downloading",
    )
    p.add_argument(
        "--sets",
        help="comma-separated folders (Classic5, LIVE1_color, LIVE1_gray, BSDS500/test, "
        "Urban100_gray, Urban100_color_half, ...) or groups: test (Classic5, LIVE1_color, "
        "BSDS500/test: 47 MB), train (BSDS500/train, BSDS500/val, Urban100_gray), BSDS500, "
        "LIVE1, all (default)",
    )
    p.add_argument(
        "--jobs", type=int_in_range(1, 64), default=8, help="files at a time (default: 8)"
    )
    return p


def run_fetch_data(args) -> int:
    from cqrnet_jax.data import fetch

    if args.verify:
        if args.from_dir:
            raise UsageError("--from-dir goes with --out, not --verify")
        checked, bad = fetch.verify(args.verify, args.sets)
        for line in bad:
            print(f"error: {line}", file=sys.stderr)
        if bad:
            print(f"{len(bad)} of {checked} files missing or wrong", file=sys.stderr)
            return InputError.exit_code
        print(f"{checked} files ok")
        return 0
    mirror = fetch.LocalCopy(args.from_dir) if args.from_dir else fetch.GitHub()
    written = fetch.fetch(args.out, mirror, args.sets, jobs=args.jobs)
    print(
        f"done: {written} files written to {args.out}; use it with --data-dir {args.out}, "
        f"--config.data.data_dir={args.out} or {DATA_DIR_ENV}={args.out}"
    )
    return 0
