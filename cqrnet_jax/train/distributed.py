"""Joining a multi-process run through JAX's own distributed runtime (`jax.distributed`).

One process per host (or per GPU) runs the same training command; `jax.distributed.initialize`
connects them to process 0's coordinator, after which `jax.devices()` lists every process's
devices and the loop's mesh, batches, checkpoints and logs span them all (`loop.py`).
"""

from __future__ import annotations

import os

import jax

from cqrnet_jax.errors import ConfigError


def join(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
):
    """Calls `jax.distributed.initialize` with the values given; the others (all of them with a
    bare `--distributed`) JAX detects from the cluster (SLURM, Open MPI, Cloud TPU, Kubernetes).
    Must run before anything touches a device. A cluster that cannot be detected, or values JAX
    refuses, raise ConfigError (the user's to fix)."""
    use_gloo_on_cpu()
    given = dict(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    try:
        jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})
    except (ValueError, TypeError) as err:
        missing = ", ".join(f"--{k}" for k, v in given.items() if v is None)
        hint = f" (no cluster detected: give {missing})" if missing else ""
        raise ConfigError(f"jax.distributed.initialize: {err}{hint}") from None


def use_gloo_on_cpu():
    """The CPU devices of several processes all-reduce through gloo over TCP: JAX 0.10's default
    for `jax_cpu_collectives_implementation`, set explicitly so a run does not depend on a
    version's default, unless the user chose another (JAX_CPU_COLLECTIVES_IMPLEMENTATION=mpi).
    It only concerns the CPU backend; GPUs and TPUs keep their own collectives."""
    if os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
        return
    if hasattr(jax.config, "jax_cpu_collectives_implementation"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
