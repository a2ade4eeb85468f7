"""Metric writers (TensorBoard event files + a JSON-lines log) and the progress line.

Not clu's `metric_writers` (the flax examples' choice): importing them imports TensorFlow, which
is an extra here (clu 0.0.12), and they keep no JSON-lines log, which the notebooks and tests
read."""

from __future__ import annotations

import json
import os
import time


class MetricWriter:
    """Writes scalars to TensorBoard (`tensorboard.summary.Writer`, no TensorFlow needed) and to
    `metrics.jsonl`; only process 0 writes."""

    def __init__(self, logdir: str, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        os.makedirs(logdir, exist_ok=True)
        from tensorboard.summary import Writer

        self._tb = Writer(logdir)
        self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")  # noqa: SIM115

    def write(self, step: int, scalars: dict[str, float]):
        if not self.enabled:
            return
        for name, value in scalars.items():
            self._tb.add_scalar(name, float(value), step=step)
        self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}))
        self._jsonl.write("\n")
        self._jsonl.flush()
        self._tb.flush()

    def close(self):
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """Steps/s over the last logging window and the ETA to `total` steps."""

    def __init__(self, start_step: int, total: int, deadline: float | None = None):
        """`deadline`: a `time.perf_counter()` time the run ends by (train_seconds), if any."""
        self.total, self.deadline = total, deadline
        self._last_step, self._last_time = start_step, time.perf_counter()

    def line(self, step: int, scalars: dict[str, float]) -> str:
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        if self.deadline is not None:
            eta = min(eta, max(0.0, self.deadline - now))
        shown = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        return (
            f"step {step}/{self.total} | {shown} | {rate:.2f} steps/s | "
            f"ETA {format_duration(eta) if eta != float('inf') else '?'}"
        )
