"""The non-finite guard: a step whose loss, gradients or BatchNorm statistics are not finite is
skipped (the state stays as it was; the data moves on), counted, and shown as a warning; only a
run of more than `max_nonfinite_steps` such steps in a row stops training.

Not `optax.apply_if_finite`: it guards the optimizer's update only (the BatchNorm statistics of a
NaN batch would still be kept, poisoning every later step, and the step counted), after
`max_consecutive_errors` it applies the bad update, and it changes the optimizer state's layout
(so older checkpoints would no longer load). `train_step` reverts the whole state instead.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp

from cqrnet_jax.errors import TrainingError


class NonFiniteLossError(TrainingError):
    """Too many consecutive steps had a non-finite loss or gradient; training stopped, its
    checkpoints hold the last finite state."""


def all_finite(tree) -> jax.Array:
    """Whether every element of every array in `tree` is finite (a scalar bool; True if empty)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class NonFiniteGuard:
    """Counts the steps `train_step` skipped, from each step's `finite` flag.

    The flags are read one step late: the flag of step s is read after step s + 1 has been
    dispatched, so the host waits only while the device finishes step s with the next step
    already queued, and the device never idles for it. That costs one scalar copy a step (started
    asynchronously when it is pushed) and finds a diverged run within a step, instead of at the
    next `log_every` flush. Steps that checkpoint, export or log read their own flag at once
    (`settle(lag=0)`), so no state is saved at the end of a run of bad steps that should stop.
    """

    def __init__(self, max_consecutive: int, skipped: int = 0, verbose: bool = True):
        """`skipped`: the steps skipped before this run started (a resumed run's)."""
        self.max_consecutive, self.skipped, self.verbose = max_consecutive, skipped, verbose
        self.in_a_row = 0
        self._unread = collections.deque()  # (step, flag) not yet read

    def push(self, step: int, finite: jax.Array):
        finite.copy_to_host_async()
        self._unread.append((step, finite))

    def settle(self, lag: int = 1):
        """Reads every flag but the `lag` newest; NonFiniteLossError once more than
        `max_consecutive` steps in a row were skipped."""
        while len(self._unread) > lag:
            step, finite = self._unread.popleft()
            if bool(finite):
                self.in_a_row = 0
                continue
            self.skipped += 1
            self.in_a_row += 1
            if self.in_a_row > self.max_consecutive:
                raise NonFiniteLossError(self._stop_message(step))
            if self.verbose:
                print(
                    f"warning: step {step}: non-finite loss or gradient, update skipped "
                    f"({self.in_a_row} in a row, {self.skipped} in all)",
                    flush=True,
                )

    def _stop_message(self, step: int) -> str:
        first = step - self.in_a_row + 1
        steps = f"at step {step}" if first == step else f"at steps {first}..{step}"
        return (
            f"non-finite loss or gradient {steps} (max_nonfinite_steps={self.max_consecutive}): "
            "training stopped; the checkpoints hold the last finite state. Lower the learning "
            "rate, set optim.grad_clip, or check the data"
        )
