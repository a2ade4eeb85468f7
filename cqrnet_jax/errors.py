"""The user's errors, told apart from bugs.

Every error the user can fix is a `UserError`: the `cqrnet-jax` commands (`apps/cli.py`) and the
training entry point (`main.py`) each catch it in one place, print its message as one line
"error: ..." on stderr and exit with its kind's status. Any other exception is a bug (a shape
error from JAX, a TypeError) and keeps its traceback. The exit status says which kind:

    0    done
    1    a bug: Python's own status for an uncaught exception, with its traceback
    2    ConfigError: a bad flag, argument, preset or config value (argparse's status)
    3    InputError: a file, folder, model or data set named is missing, unreadable or not what
         it should be, or an output cannot be written; `deblock` and `estimate` also exit 3
         when some files failed (each with its own line) and the others were done
    4    TrainingError: training stopped on its own (non-finite loss, `max_nonfinite_steps`)
    130  interrupted (Ctrl-C)

Each class also subclasses the built-in type the code raised before (ValueError,
FileNotFoundError), so callers that catch those keep working.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; the message (one line) says what is wrong and, where it can,
    what to change. `exit_code` is the status of its kind (module docstring); raise one of the
    kinds below, not this base."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A setting is wrong: a flag, a command-line argument, a preset or a config value."""

    exit_code = 2


class InputError(UserError, ValueError):
    """A file, folder, model or data set named is missing, unreadable or not what it should be,
    or an output cannot be written there."""

    exit_code = 3


class MissingFileError(InputError, FileNotFoundError):
    """A file named by the config or the command line (a ranker or params prefix) is not there."""


class TrainingError(UserError, RuntimeError):
    """Training stopped on its own before `num_steps` (e.g. the loss stopped being finite)."""

    exit_code = 4
