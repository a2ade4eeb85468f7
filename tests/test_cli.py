"""The `cqrnet-jax` entry point itself: --version, and a missing command."""

from __future__ import annotations

from cqrnet_jax import __version__
from cqrnet_jax.apps.cli import main


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"cqrnet-jax {__version__}\n" and captured.err == ""


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err == "error: missing command (see cqrnet-jax --help)\n"
