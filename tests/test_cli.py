"""The `cqrnet-jax` entry point itself: --version, a missing command, and a bug that keeps its
traceback while a bad file gets its one line."""

from __future__ import annotations

import subprocess
import sys

from helpers import grey, save_jpeg

from cqrnet_jax import __version__
from cqrnet_jax.apps.cli import main


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"cqrnet-jax {__version__}\n" and captured.err == ""


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err == "error: missing command (see cqrnet-jax --help)\n"


# `python -m cqrnet_jax` with a shape bug put inside the network (JAX raises a ValueError)
_BROKEN_CLI = """
import sys
import jax.numpy as jnp
from cqrnet_jax import inference
from cqrnet_jax.apps.cli import main

def mismatched(self, variables, x, valid, quality=None):
    return x + jnp.einsum("ij,jk->", jnp.ones((2, 3)), jnp.ones((4, 2)))

inference.Restorer._forward = mismatched
sys.exit(main(sys.argv[1:]))
"""


def test_a_bug_exits_with_its_traceback(tiny_model_prefix, tmp_path):
    """The bad file first gets its one line; the bug then stops the command with Python's
    traceback and exit status 1, never an 'error:' line of its own."""
    bad, good = tmp_path / "bad.jpg", save_jpeg(tmp_path / "good.jpg", grey())
    bad.write_bytes(b"not a picture" * 20)
    cmd = [sys.executable, "-c", _BROKEN_CLI, "deblock", str(bad), str(good)]
    cmd += ["-o", str(tmp_path / "out"), "--model", tiny_model_prefix, "--parallel", "1"]
    proc = subprocess.run([*cmd, "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {bad}: not an image file (unknown format or damaged header)"]
    assert "Traceback (most recent call last)" in proc.stderr
    assert "\nValueError: Size of label 'j'" in proc.stderr, proc.stderr
