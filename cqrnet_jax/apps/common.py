"""What the commands share: one-line user errors, argument types, the software versions that
reports record."""

from __future__ import annotations

import argparse
import sys

USAGE_ERROR = 2  # exit status of a user error (bad flags, data, files)


class UsageError(ValueError):
    """A user error; the command prints it as the single line "error: <message>"."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors are one line."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def int_in_range(low: int, high: int | None = None):
    """An argparse `type`: an integer in [low, high] (no upper bound when high is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer {bounds}")
        return value

    return parse


def add_model_argument(parser: argparse.ArgumentParser, what: str = "de-blocker", also: str = ""):
    """`--model`, as every command that runs a model takes it (`pretrained.resolve_model_prefix`);
    `also` names the values a command accepts beyond those."""
    parser.add_argument(
        "--model",
        default="default",
        help=f"'default' (the shipped {what}), a training workdir or an exported params prefix"
        f"{also} (default: default)",
    )


def environment() -> dict[str, str]:
    """Versions of Python and the packages that decide the numbers, and JAX's backend."""
    from importlib.metadata import PackageNotFoundError, version

    import jax

    out = {"python": sys.version.split()[0]}
    for package in ("cqrnet-jax", "jax", "jaxlib", "flax", "numpy", "pillow"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    out["backend"] = jax.default_backend()
    return out
