"""`python -m cqrnet_jax` = the `cqrnet-jax` command."""

from cqrnet_jax.apps.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
