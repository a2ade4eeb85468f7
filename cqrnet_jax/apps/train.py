"""`cqrnet-jax train --config=configs/deblock.py:cpu --workdir=DIR`: the training entry point, the
same as `python -m cqrnet_jax.main` (flags and behaviour in `cqrnet_jax/main.py`)."""

from __future__ import annotations


def run(argv: list[str]) -> int:
    """Runs training with absl flags `argv` (argv[0] is the program name); the exit status."""
    from cqrnet_jax import main as entry

    if any(a in ("-h", "--help") for a in argv[1:]):  # absl would print __main__'s docstring
        print(f"usage: {argv[0]} --config=FILE[:PRESETS] --workdir=DIR [--config.FIELD=VALUE]\n")
        print((entry.__doc__ or "").strip() + "\n")
        print(entry.FLAGS.module_help(entry))
        return 0
    try:
        entry.run(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0
