"""Multi-process training through `jax.distributed`: two processes on this machine (CPU, gloo,
one device each) train the ranker's `smoke` preset, which has BatchNorm, through the command line,
stop, and resume; their parameters and BatchNorm statistics equal those of one process with two
devices on the same global batches (the input's invariant: the processes' shares of a step's
batch, in process order, are the one-process batch; tests/test_pipeline.py checks it batch by
batch). Only process 0 prints, logs and exports. Also: how the flags reach
`jax.distributed.initialize`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cqrnet_jax import pretrained
from cqrnet_jax.errors import ConfigError
from cqrnet_jax.train import distributed, loop
from cqrnet_jax.train.ranker_task import RankerTask

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 2  # train K steps, stop, resume to 2K
OVERRIDES = {
    "data.backend": "numpy",  # no TensorFlow to import in each process (the batches are the same)
    "batch_size": 4,  # two pairs per device
    "log_every": 1,
    "checkpoint_every": K,
}
TIMEOUT_S = 420  # per leg, for two processes starting, compiling and training on 2 busy cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(workdir, num_steps: int, port: int, process_id: int) -> list[str]:
    flags = {**OVERRIDES, "num_steps": num_steps}
    if process_id:  # a probe: process 1 would export here if it exported
        flags["export_dir"] = str(workdir / "export_of_process_1")
    return [
        sys.executable,
        "-m",
        "cqrnet_jax.main",
        "--config=configs/ranker.py:smoke",
        f"--workdir={workdir}",
        *[f"--config.{k}={v}" for k, v in flags.items()],
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={process_id}",
    ]


def _tail(path, n=3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no output)"


def _run_two_processes(workdir, num_steps: int, logs, compile_cache: str) -> list[str]:
    """Runs the two processes of one leg to the end; their stdouts. A failure or a timeout kills
    both (a process whose peer died would wait for it) and shows each one's output."""
    env = dict(os.environ)
    env.update(
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=compile_cache,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    port = _free_port()
    outs = [logs / f"leg{num_steps}_process{i}.{s}" for i in range(2) for s in ("out", "err")]
    procs = []
    for i in range(2):
        with open(outs[2 * i], "w") as out, open(outs[2 * i + 1], "w") as err:
            cmd = _command(workdir, num_steps, port, i)
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err))
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        if any(p.poll() not in (None, 0) for p in procs):  # one failed: give the other a moment
            deadline = min(deadline, time.monotonic() + 15)
        time.sleep(0.2)
    timed_out = [p.poll() is None for p in procs]
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
    if any(timed_out) or any(p.returncode for p in procs):
        report = "\n".join(
            f"--- process {i}: {'timed out' if timed_out[i] else f'exit {procs[i].returncode}'}\n"
            f"stdout: {_tail(outs[2 * i])}\nstderr: {_tail(outs[2 * i + 1])}"
            for i in range(2)
        )
        pytest.fail(f"the 2-process run to step {num_steps} failed (port {port}):\n{report}")
    return [outs[0].read_text(), outs[2].read_text()]


def _reference_run(ranker_config, workdir, num_steps: int):
    """One process on two devices, the same config: its exported variables."""
    config = ranker_config("smoke")
    for key, value in {**OVERRIDES, "num_steps": num_steps}.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    loop.train_and_evaluate(config, str(workdir), RankerTask(config))
    return pretrained.load_variables(workdir / "export" / "ranker")[0]


def _max_abs_diff(a, b) -> float:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.fixture(scope="module")
def two_processes(ranker_config, tmp_path_factory, compile_cache):
    """Two processes train K steps and stop, then resume to 2K; one process with two devices does
    the same in this interpreter (the reference). The exports after each leg, the stdouts."""
    if jax.device_count() < 2:
        pytest.skip(
            "the reference needs 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)"
        )
    workdir, logs = tmp_path_factory.mktemp("two_processes"), tmp_path_factory.mktemp("outputs")
    out = {}
    for steps in (K, 2 * K):
        out[steps] = _run_two_processes(workdir, steps, logs, compile_cache)
        out[f"export{steps}"] = pretrained.load_variables(workdir / "export" / "ranker")
    reference_dir = tmp_path_factory.mktemp("one_process")
    with pytest.MonkeyPatch.context() as mp:  # exactly two devices, as the two processes have
        mp.setattr(
            loop, "make_mesh", lambda: jax.sharding.Mesh(np.array(jax.devices()[:2]), ("data",))
        )
        for steps in (K, 2 * K):
            out[f"reference{steps}"] = _reference_run(ranker_config, reference_dir, steps)
    return dict(out, workdir=workdir)


@pytest.mark.slow  # two legs of two fresh processes + the reference: 136 s on 2 cores at load 8
def test_two_processes_train_like_one_process_with_two_devices(two_processes):
    """After K steps and after resuming to 2K, the two processes' parameters and BatchNorm
    statistics equal the one-process run's. The per-device programs are the same, and an
    all-reduce over two devices adds the same two partial sums whatever the transport, so the
    two runs agree to float32 rounding (measured: bit for bit); the tolerance, 1e-6, is far
    below what a different batch does (both processes reading process 0's rows: 4e-4 at step 2)."""
    for steps in (K, 2 * K):
        ours, meta = two_processes[f"export{steps}"]
        reference = two_processes[f"reference{steps}"]
        assert meta["step"] == steps
        assert set(ours) == {"params", "batch_stats"} and ours["batch_stats"]
        assert _max_abs_diff(ours["params"], reference["params"]) <= 1e-6, steps
        assert _max_abs_diff(ours["batch_stats"], reference["batch_stats"]) <= 1e-6, steps
    # not vacuous: the K steps after the resume moved the weights and the statistics
    first, last = two_processes[f"export{K}"][0], two_processes[f"export{2 * K}"][0]
    assert _max_abs_diff(first["params"], last["params"]) > 1e-5
    assert _max_abs_diff(first["batch_stats"], last["batch_stats"]) > 1e-3


@pytest.mark.slow
def test_the_second_leg_resumes_from_the_checkpoint(two_processes):
    """Rerunning the two processes on the workdir continues from step K's checkpoint."""
    first, second = two_processes[K][0], two_processes[2 * K][0]
    assert f"starting step 0 of {K} on 2 device(s) in 2 processes" in first
    assert f"resuming at step {K} of {2 * K} on 2 device(s) in 2 processes" in second
    assert two_processes[f"export{2 * K}"][1]["step"] == 2 * K  # the state's count went on too
    checkpoints = sorted(os.listdir(two_processes["workdir"] / "checkpoints"))
    assert checkpoints == [str(K), str(2 * K)]


@pytest.mark.slow
def test_only_process_0_prints_logs_and_exports(two_processes):
    """Process 0 prints the progress, writes metrics.jsonl (each step once), one TensorBoard
    file per leg, config.json and the export; process 1 prints no progress and writes none of
    them (it was told to export to a folder of its own, which must not exist)."""
    workdir = two_processes["workdir"]
    for steps in (K, 2 * K):
        main, other = two_processes[steps]
        assert f"step {steps}/{steps} |" in main and f"done: {K} steps" in main
        assert "step " not in other and "done:" not in other, other
    with open(workdir / "logs" / "metrics.jsonl") as f:
        assert [json.loads(line)["step"] for line in f] == list(range(1, 2 * K + 1))
    assert len([n for n in os.listdir(workdir / "logs") if "tfevents" in n]) == 2
    assert json.loads((workdir / "config.json").read_text())["export_dir"] == ""
    assert (workdir / "export" / "ranker.msgpack").is_file()
    assert not (workdir / "export_of_process_1").exists()


# --- the flags --------------------------------------------------------------------------------


@pytest.fixture
def initialize_calls(monkeypatch):
    """Records jax.distributed.initialize's keyword arguments instead of connecting anything."""
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.delenv("JAX_CPU_COLLECTIVES_IMPLEMENTATION", raising=False)
    return calls


def test_join_passes_the_values_given_and_leaves_the_rest_to_detection(initialize_calls):
    """The values given go to jax.distributed.initialize; a bare --distributed passes none, so
    JAX detects the cluster (SLURM, Open MPI, Cloud TPU, Kubernetes); gloo is set for CPUs."""
    distributed.join("10.0.0.1:1234", 4, 3)
    distributed.join()
    distributed.join(num_processes=8)
    assert initialize_calls == [
        dict(coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3),
        {},
        dict(num_processes=8),
    ]
    assert jax.config.jax_cpu_collectives_implementation == "gloo"


def test_join_without_a_detectable_cluster_is_a_user_error(monkeypatch):
    """--distributed where JAX detects no cluster is a ConfigError naming the flags to give."""

    def undetected(**kw):
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", undetected)
    with pytest.raises(ConfigError, match="no cluster detected: give --coordinator_address, "):
        distributed.join()


def test_main_with_distributed_and_no_cluster_exits_with_one_line(tmp_path):
    """`--distributed` on a machine with no cluster environment: one 'error:' line, exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_"))}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    cmd = [
        sys.executable,
        "-m",
        "cqrnet_jax.main",
        "--config=configs/ranker.py:smoke",
        f"--workdir={tmp_path / 'run'}",
        "--distributed",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: jax.distributed.initialize: ") and "--process_id" in (
        proc.stderr
    )
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "run").exists()
