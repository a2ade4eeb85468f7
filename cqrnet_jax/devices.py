"""Restoring on several devices at once: on a CPU, one XLA device per core.

XLA:CPU runs one program on all cores, but a de-blocking network's convolutions scale poorly over
them, so one program per core restores and trains faster than one program on all of them
(benchmarks/bench.py; measured in docs/usage.md and docs/training.md "On a CPU"). `split_host_cores`
makes the CPU platform one device per core before JAX starts (the trainer and `evaluate` call
it); `inference_devices` lists the devices `inference.Restorer` spreads its images (or tiles,
or canvas batches) over: the CPU's, or all local accelerators.
"""

from __future__ import annotations

import os
import sys

MAX_HOST_DEVICES = 4  # on bigger CPUs each device keeps several cores; bounds the memory in flight
_FLAG = "--xla_force_host_platform_device_count"

# XLA:CPU options per program (`jax.jit(..., compiler_options=)`), chosen by measurement on 2
# cores with jax 0.10.2 (benchmarks/cpu_compiler_options.py, its JSON in experiments/results/):
# - training: jaxlib runs convolutions and their gradients through YNNPACK by default; with YNNPACK
#   kept for its other fusions (products, elementwise, reductions) and the convolutions left to
#   XLA's own (Eigen) kernels, the `:cpu` de-blocker's train step is much faster;
# - inference: LLVM at -O1 compiles the de-blocker's program faster than the default and runs it
#   no slower (its convolutions and products are library calls; `deblock` compiles one program
#   per image size, so a folder of photos of many sizes spends much of its time there).
# Options a jaxlib does not know fail the compile: the trainer then compiles without them.
_YNN_ALL_BUT_CONVOLUTIONS = ",".join(
    f"LIBRARY_FUSION_TYPE_{kind}" for kind in ("DOT", "ELTWISE", "REDUCE", "INDIVIDUAL_DOT")
)
CPU_COMPILER_OPTIONS = {
    "train": {"xla_cpu_experimental_ynn_fusion_type": _YNN_ALL_BUT_CONVOLUTIONS},
    "inference": {"xla_backend_optimization_level": 1},
}


def compiler_options(kind: str, devices) -> dict | None:
    """`CPU_COMPILER_OPTIONS[kind]` when every one of `devices` is a CPU, else None."""
    return CPU_COMPILER_OPTIONS[kind] if all(d.platform == "cpu" for d in devices) else None


def host_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def host_device_count(cores: int, max_devices: int, divides: int | None = None) -> int:
    """min(cores, max_devices), lowered to the largest count that divides `divides` if given."""
    count = max(1, min(cores, max_devices))
    while divides and count > 1 and divides % count:
        count -= 1
    return count


def split_host_cores(max_devices: int = MAX_HOST_DEVICES, divides: int | None = None) -> int:
    """Makes XLA's CPU platform min(cores, `max_devices`) devices (the most of them that divides
    `divides`, a global batch, when given); returns that count, or 0 when nothing changed:
    XLA_FLAGS already sets a count, there is one core, or JAX has already started its backends
    (the flag is read once, then). Call it before anything runs on JAX. Harmless with an
    accelerator, whose devices JAX uses instead."""
    flags = os.environ.get("XLA_FLAGS", "")
    count = host_device_count(host_cores(), max_devices, divides)
    if _FLAG in flags or count < 2:
        return 0
    if "jax" in sys.modules:
        import jax

        try:  # JAX refuses the count once its backends have started
            jax.config.update("jax_num_cpu_devices", count)
        except RuntimeError:
            return 0
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={count}".strip()
    return count


def inference_devices(parallel: int | None = None) -> list:
    """The default backend's local devices, at most `parallel` of them (None: all)."""
    import jax

    devices = jax.local_devices()
    return devices[:parallel] if parallel else devices
