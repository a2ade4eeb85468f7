"""The user's errors, told apart from bugs: the training entry point prints a `ConfigError` as one
line and exits 1, while any other exception (a shape error from JAX, a bug) keeps its traceback.

Both subclass the built-in type the code raised before (ValueError, FileNotFoundError), so callers
that catch those keep working.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value, or the data or a file it names, is wrong or missing; the message (one line)
    says which and, where it can, what to change."""


class MissingFileError(ConfigError, FileNotFoundError):
    """A file named by the config or the command line (a ranker or params prefix) is not there."""
