"""The `cqrnet-jax` command (also `python -m cqrnet_jax`): one subcommand per job.

Each subcommand is a module of `cqrnet_jax.apps` with `add_<name>_parser(subparsers)` and
`run_<name>(args) -> int`. The user's errors (`cqrnet_jax.errors.UserError`: bad flags, data,
files) print one line "error: ..." on stderr and exit with their kind's status (2 a bad flag, 3 a
bad file or folder: `cqrnet_jax/errors.py`); any other exception is a bug and keeps its
traceback. Heavy imports (JAX) happen inside the `run_*` functions so that `--help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from cqrnet_jax import __version__
from cqrnet_jax.apps.common import ArgumentParser, UsageError
from cqrnet_jax.apps.deblock import add_deblock_parser, run_deblock
from cqrnet_jax.apps.demo import add_demo_parser, run_demo
from cqrnet_jax.apps.estimate import add_estimate_parser, run_estimate
from cqrnet_jax.apps.evaluate import add_evaluate_parser, run_evaluate
from cqrnet_jax.apps.export import add_export_parser, run_export
from cqrnet_jax.apps.fetch_data import add_fetch_data_parser, run_fetch_data
from cqrnet_jax.apps.ranker_eval import add_ranker_eval_parser, run_ranker_eval
from cqrnet_jax.apps.serve import add_serve_parser, run_serve
from cqrnet_jax.errors import UserError

PROG = "cqrnet-jax"


# --- entry point ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, description="JPEG artifact removal with CQR-guided networks."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    add_evaluate_parser(sub).set_defaults(run=run_evaluate)
    add_estimate_parser(sub).set_defaults(run=run_estimate)
    add_export_parser(sub).set_defaults(run=run_export)
    add_deblock_parser(sub).set_defaults(run=run_deblock)
    add_demo_parser(sub).set_defaults(run=run_demo)
    add_serve_parser(sub).set_defaults(run=run_serve)
    add_fetch_data_parser(sub).set_defaults(run=run_fetch_data)
    add_ranker_eval_parser(sub).set_defaults(run=run_ranker_eval)
    passthrough = dict(add_help=False, prefix_chars="\0")  # the rest goes to their own parsers
    p = sub.add_parser(
        "train", help="train a ranker or a de-blocker (python -m cqrnet_jax.main)", **passthrough
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(run=_run_train)
    return parser


def _run_train(args) -> int:
    from cqrnet_jax.apps.train import run

    return run(["cqrnet-jax train", *args.rest])


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand; returns the exit status (0 ok, else as `cqrnet_jax.errors`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(f"missing command (see {PROG} --help)")
        args.argv = argv
        return args.run(args)
    except SystemExit as stop:  # --help / --version print and exit through argparse
        return stop.code if isinstance(stop.code, int) else 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except UserError as err:  # bad flags, data, files: the user's to fix, no traceback
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return err.exit_code
