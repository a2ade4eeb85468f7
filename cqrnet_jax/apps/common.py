"""What the commands share: one-line user errors, argument types, the software versions that
reports record."""

from __future__ import annotations

import argparse
import contextlib
import sys

from cqrnet_jax.errors import ConfigError, InputError


class UsageError(ConfigError):
    """A bad flag or argument; the command prints it as the single line "error: <message>"."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors are one line."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


@contextlib.contextmanager
def writing(target):
    """Writes under it that fail for want of room or rights (OSError) are the user's to fix:
    an InputError naming `target`, the path they gave."""
    try:
        yield
    except OSError as err:
        raise InputError(f"cannot write {target}: {err.strerror or err}") from None


def write_json(path, report: dict) -> None:
    """Writes `report` to `path` (its folder created), whole or not at all; a non-finite float
    (NaN, inf) becomes null, since JSON has none."""
    import json
    import os
    from pathlib import Path

    from cqrnet_jax.scoring import json_safe

    path = Path(path)
    text = json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n"
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def out_of_memory(err: BaseException) -> bool:
    """Whether `err` says the host or the accelerator ran out of memory (XLA's
    RESOURCE_EXHAUSTED): a per-file failure to report, where other errors are bugs."""
    return isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError) and "RESOURCE_EXHAUSTED" in str(err)
    )


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


def add_ranker_argument(parser: argparse.ArgumentParser):
    """`--ranker`, the quality ranker a command scores with, as `--model` names a de-blocker
    (`pretrained.resolve_model_prefix` with kind 'ranker')."""
    parser.add_argument(
        "--ranker",
        default="default",
        metavar="MODEL",
        help="'default' (the shipped estimator), a ranker's training workdir or an exported "
        "params prefix (default: default)",
    )


def add_color_model_argument(parser: argparse.ArgumentParser):
    """`--color-model`, the model colour photos go through (`inference.load_color_restorer`)."""
    parser.add_argument(
        "--color-model",
        default="default",
        metavar="MODEL",
        help="colour photos: 'default' (the shipped colour model: Y by the shipped grey U-Net, "
        "Cb/Cr by a chroma U-Net; with another --model, as 'none'), 'none' (Y by "
        "--model, Cb/Cr by a guided filter), or a colour model's training workdir or params "
        "prefix (default: default)",
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
