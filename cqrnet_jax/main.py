"""Training entry point: `python -m cqrnet_jax.main --config=configs/ranker.py:cpu --workdir=DIR`.

Rerunning the same command on the same workdir resumes from its latest checkpoint. Several
processes (hosts, or one per GPU) train together through `jax.distributed`: each runs the same
command with `--distributed` (coordinator, process count and id detected on SLURM, Open MPI,
Cloud TPU and Kubernetes) or with `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`; the workdir must be one folder all of them see. The user's
errors (`cqrnet_jax.errors.UserError`: a bad flag or config value, missing data or ranker, a run
that diverged) print one line "error: ..." on stderr and exit with their kind's status (2, 3, 4:
`cqrnet_jax/errors.py`); anything else is a bug and keeps its traceback. The data are
checked before anything is compiled, and a run that fails before its first checkpoint removes
the workdir it created. Ctrl-C stops after the step in progress, saves it, prints one line
saying where a rerun resumes and exits 130 (a second Ctrl-C stops at once).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cqrnet_jax.errors import ConfigError, UserError  # noqa: E402
from cqrnet_jax.train import workdir as workdir_lib  # noqa: E402


class _OneLineConfigErrors:
    """The config flag's parser, except that a missing file and a ConfigError of the file's
    `get_config` (an unknown preset) read as one line: config_flags puts their tracebacks in the
    message (or defers a missing file's until the config is first read)."""

    def __init__(self, parser):
        self._parser = parser

    def parse(self, path):
        file = path.split(":", 1)[0]
        if not os.path.isfile(file):
            raise ConfigError(f"config file {file}: no such file")
        try:
            return self._parser.parse(path)
        except ConfigError as err:
            raise ConfigError(str(err.__context__ or err)) from None

    def __getattr__(self, name):  # flag_type(), syntactic_help...: config_flags' own
        return getattr(self._parser, name)


FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Training config file (path[:presets]).", lock_config=True
)
FLAGS["config"].parser = _OneLineConfigErrors(FLAGS["config"].parser)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and exported params.")
flags.mark_flags_as_required(["config", "workdir"])
flags.DEFINE_bool(
    "distributed",
    False,
    "Join a multi-process run (jax.distributed.initialize); values not given by the flags below "
    "are detected from the cluster (SLURM, Open MPI, Cloud TPU, Kubernetes).",
)
flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's coordinator (implies --distributed)."
)
flags.DEFINE_integer("num_processes", None, "Processes in the run (implies --distributed).")
flags.DEFINE_integer("process_id", None, "This process's index, 0..N-1 (implies --distributed).")


def _split_host_cores(config) -> None:
    """config.host_devices: the CPU as that many devices (0: auto), before JAX starts."""
    from cqrnet_jax.devices import MAX_HOST_DEVICES, split_host_cores

    wanted = config.host_devices  # 0 or more (config_check)
    if wanted != 1:
        split_host_cores(wanted or MAX_HOST_DEVICES, divides=config.batch_size)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, except that a bad flag (an unknown preset, a missing --workdir) is a
    ConfigError: one line "error: ..." and its exit status, as after parsing."""
    try:
        return FLAGS(argv)
    except flags.Error as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(ConfigError.exit_code)


def run(argv: list[str] | None = None) -> None:
    """Parses the flags in `argv` (default sys.argv) and trains; exits with the status."""
    app.run(main, argv=argv, flags_parser=_parse_flags)


def main(argv):
    if len(argv) > 1:
        print(f"error: unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
        return ConfigError.exit_code
    cluster = dict(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )
    multi = FLAGS.distributed or any(v is not None for v in cluster.values())
    # the folders this run creates, removed if it fails before it has anything to keep (one
    # process only: in a multi-process run the others may still be writing there)
    created = [] if multi or "://" in FLAGS.workdir else workdir_lib.new_folders(FLAGS.workdir)
    status = 1
    try:
        status = _train(cluster, multi)
    except KeyboardInterrupt as err:  # Ctrl-C: one line saying where a rerun resumes
        status = 130
        print(str(err) or f"interrupted; {workdir_lib.resume_hint(FLAGS.workdir)}", file=sys.stderr)
    finally:
        if status:  # an error, Ctrl-C or a bug (its exception goes on after this)
            workdir_lib.remove_if_unused(created)
    return status


def _train(cluster: dict, multi: bool) -> int:
    import jax
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO

    from cqrnet_jax.train import distributed
    from cqrnet_jax.train.config_check import check_config
    from cqrnet_jax.train.loop import train_and_evaluate
    from cqrnet_jax.train.tasks import get_task

    if FLAGS.config.compile_cache_dir:
        jax.config.update(
            "jax_compilation_cache_dir", os.path.expanduser(FLAGS.config.compile_cache_dir)
        )
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    try:
        check_config(FLAGS.config)  # before any data are read or a device is used
        if multi:
            distributed.join(**cluster)  # before anything touches a device
        else:
            _split_host_cores(FLAGS.config)
        train_and_evaluate(FLAGS.config, FLAGS.workdir, get_task(FLAGS.config))
    except UserError as err:  # the user's to fix: no traceback
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    run()
