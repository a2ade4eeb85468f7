"""The training entry point tells the user's errors from bugs: a bad config value (exit status 2),
missing data or a missing ranker (3) is one line "error: ..." on stderr, as in the `cqrnet-jax`
commands; any other exception (a shape error from JAX) propagates with its traceback. A run that
fails before it has anything to keep removes the workdir it created; the data (training and
evaluation sets) are checked before the train step compiles; Ctrl-C stops with one line saying
where a rerun resumes, exit status 130. `main.main` runs in-process with its flags replaced, so a
test can break something deep inside; the flag-parsing and Ctrl-C-from-outside cases run the
command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cached_compile_env
from PIL import Image

from cqrnet_jax import main as entry
from cqrnet_jax.data.datasets import DATA_DIR_ENV
from cqrnet_jax.errors import ConfigError
from cqrnet_jax.train import loop, tasks
from cqrnet_jax.train.ranker_task import RankerTask
from cqrnet_jax.train.workdir import saved_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(monkeypatch, config, workdir) -> int:
    flags = types.SimpleNamespace(
        config=config,
        workdir=str(workdir),
        distributed=False,  # one process: main joins no distributed run
        coordinator_address=None,
        num_processes=None,
        process_id=None,
    )
    monkeypatch.setattr(entry, "FLAGS", flags)
    return entry.main(["main"])


def _smoke(ranker_config):
    config = ranker_config("smoke")
    config.data.backend = "numpy"
    return config


def _unknown_task(config, tmp_path):
    config.task = "nope"
    return "task: one of ranker, deblock, not 'nope'"


def _unknown_schedule(config, tmp_path):
    config.optim.schedule = "nope"  # found before anything is read or compiled
    return "optim.schedule: one of constant, step, cosine, not 'nope'"


def _checkpoints_every_minus_one(config, tmp_path):
    config.checkpoint_every = -1
    return "checkpoint_every must be 0 or more, got -1"


def _missing_data_dir(config, tmp_path):
    config.data.source = "shared"
    config.data.data_dir = str(tmp_path / "nowhere")
    return f"data directory {tmp_path / 'nowhere'} (given) does not exist"


def _unreadable_training_file(config, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "broken.png").write_bytes(b"not a png")
    config.data.source = "folder"
    config.data.files = str(tmp_path / "photos")
    return f"{tmp_path / 'photos' / 'broken.png'}: "


def _batch_not_divisible(config, tmp_path):
    if jax.device_count() == 1:
        pytest.skip("needs several devices (XLA_FLAGS=--xla_force_host_platform_device_count=2)")
    config.batch_size = 2 * jax.device_count() + 1
    return "must be divisible by the number of devices"


@pytest.mark.parametrize(
    "break_config, status",
    [
        (_unknown_task, 2),
        (_unknown_schedule, 2),
        (_checkpoints_every_minus_one, 2),
        (_missing_data_dir, 3),
        (_unreadable_training_file, 3),
        (_batch_not_divisible, 2),
    ],
)
def test_a_user_error_is_one_line_with_its_status_and_leaves_no_workdir(
    break_config, status, ranker_config, tmp_path, monkeypatch, capsys
):
    """A bad setting exits 2, bad data 3 (cqrnet_jax/errors.py); also when it is found after the
    workdir was created (an unreadable training image, while the images are read)."""
    config = _smoke(ranker_config)
    expected = break_config(config, tmp_path)
    assert _main(monkeypatch, config, tmp_path / "runs" / "run") == status
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # the workdir and the parent created for it


def test_a_failed_start_keeps_a_workdir_that_was_there(ranker_config, tmp_path, monkeypatch):
    """A workdir that existed before the run is left as it was found, empty or not, and so is
    one that the user wrote into while the run was starting (each run stops on a user error
    found once the state exists, before compiling)."""

    def no_compile(*args, **kwargs):
        raise ConfigError("stopped before compiling")

    monkeypatch.setattr(loop, "compile_step", no_compile)
    config = _smoke(ranker_config)
    (tmp_path / "empty").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert _main(monkeypatch, config, tmp_path / "empty") == 2
    assert (tmp_path / "empty").is_dir()
    assert _main(monkeypatch, config, tmp_path / "mine") == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"

    def write_notes(*args, **kwargs):  # the user's file, written while the run starts
        (tmp_path / "new" / "notes.txt").write_text("mine")
        return real_create_state(*args, **kwargs)

    real_create_state = loop.create_state
    monkeypatch.setattr(loop, "create_state", write_notes)
    assert _main(monkeypatch, config, tmp_path / "new") == 2
    assert (tmp_path / "new" / "notes.txt").read_text() == "mine"


def test_no_data_directory_names_the_training_flag(ranker_config, tmp_path, monkeypatch, capsys):
    """`python -m cqrnet_jax.main` takes the data directory as a config field, not --data-dir."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    config = _smoke(ranker_config)
    config.data.source = "shared"
    assert _main(monkeypatch, config, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no data directory: pass --config.data.data_dir=DIR or set ")
    assert f"{DATA_DIR_ENV}=DIR" in err and "--data-dir" not in err, err


def _deblock_with_eval(deblock_config, monkeypatch):
    """The deblock smoke preset monitoring on Classic5, with compiling the train step replaced by
    an error: these runs must have decided about the evaluation set before compiling."""
    config = deblock_config("smoke")
    config.data.backend = "numpy"
    config.eval_set = "Classic5"
    config.eval_every = 1

    def no_compile(*args, **kwargs):
        raise ConfigError("stopped before compiling")

    monkeypatch.setattr(loop, "compile_step", no_compile)
    return config


@pytest.mark.slow  # a training run: ~20 s on 2 busy cores
def test_evaluation_is_off_without_a_data_directory(deblock_config, tmp_path, monkeypatch, capsys):
    """Training on one's own photos with no data directory at all: evaluation (monitoring only)
    is turned off with one line, before compiling, and the run goes on."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    (tmp_path / "photos").mkdir()
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(tmp_path / "photos" / "grey.png")
    config = _deblock_with_eval(deblock_config, monkeypatch)
    config.data.source = "folder"
    config.data.files = str(tmp_path / "photos")
    assert _main(monkeypatch, config, tmp_path / "run") == 2
    out, err = capsys.readouterr()
    assert (
        "no data directory for the evaluation set 'Classic5' (--config.data.data_dir=DIR or "
        f"${DATA_DIR_ENV}): evaluation, which only monitors training, is off\n" in out
    ), out
    assert err == "error: stopped before compiling\n"


@pytest.mark.parametrize("how", ["config", "env", "no_set"])
def test_an_evaluation_set_that_cannot_be_read_fails_before_compiling(
    how, deblock_config, tmp_path, monkeypatch, capsys
):
    """A data directory named (config or environment) but missing, or one without the set."""
    config = _deblock_with_eval(deblock_config, monkeypatch)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    missing = tmp_path / "nowhere"
    if how == "config":
        config.data.data_dir = str(missing)
        expected = f"error: data directory {missing} (given) does not exist\n"
    elif how == "env":
        monkeypatch.setenv(DATA_DIR_ENV, str(missing))
        expected = f"error: data directory {missing} (from ${DATA_DIR_ENV}) does not exist\n"
    else:
        (tmp_path / "data").mkdir()
        config.data.data_dir = str(tmp_path / "data")
        expected = f"error: image folder {tmp_path / 'data' / 'Classic5'} does not exist\n"
    assert _main(monkeypatch, config, tmp_path / "run") == 3
    assert capsys.readouterr().err == expected
    assert not (tmp_path / "run").exists()


def test_a_missing_ranker_is_one_line_and_exit_status_3(
    deblock_config, tmp_path, monkeypatch, capsys
):
    config = deblock_config("smoke")
    config.loss.ranker = str(tmp_path / "nowhere" / "ranker")
    assert _main(monkeypatch, config, tmp_path / "run") == 3
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {tmp_path / 'nowhere' / 'ranker'}: expected ranker.msgpack and ranker.json\n"
    )


def test_a_programming_error_keeps_its_traceback(ranker_config, tmp_path, monkeypatch, capsys):
    """A ValueError from JAX deep inside the step (an einsum over mismatched axes in the loss) is
    not the user's: main lets it through, so absl prints its traceback."""

    class BrokenLoss(RankerTask):
        def loss_fn(self, *args, **kwargs):
            loss, aux = super().loss_fn(*args, **kwargs)
            return loss + jnp.einsum("ij,jk->", jnp.ones((2, 3)), jnp.ones((4, 2))), aux

    monkeypatch.setattr(tasks, "get_task", BrokenLoss)
    with pytest.raises(ValueError, match="Size of label 'j'") as caught:
        _main(monkeypatch, _smoke(ranker_config), tmp_path / "run")
    assert not isinstance(caught.value, ConfigError)
    assert "error:" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "config_flag, expected",
    [
        ("configs/ranker.py:smoke,nope", "unknown preset 'nope'; choose from paper, cpu, smoke"),
        ("configs/nothere.py:smoke", "config file configs/nothere.py: no such file"),
    ],
)
def test_a_bad_config_flag_is_one_line(config_flag, expected, tmp_path):
    """An unknown preset or a missing config file stops at flag parsing with one line (config_flags
    would put a traceback in it), exit status 2 as any bad setting."""
    cmd = [
        sys.executable,
        "-m",
        "cqrnet_jax.main",
        f"--config={config_flag}",
        f"--workdir={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: flag --config={config_flag}: {expected}"), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


# --- Ctrl-C ---------------------------------------------------------------------------------------


_REAL_DUE = loop._due


def _main_catching_ctrl_c(monkeypatch, config, workdir) -> int:
    """`_main`, with a KeyboardInterrupt that escapes it a failure of the test, not the end of
    the whole pytest session."""
    try:
        return _main(monkeypatch, config, workdir)
    except KeyboardInterrupt as err:
        pytest.fail(f"KeyboardInterrupt escaped main: {err!r}")


def _interrupt_at(monkeypatch, step: int, action):
    """Runs `action()` when the loop plans step `step` (inside the step, after its update)."""

    def due(config, current, *args, **kwargs):
        if current == step:
            action()
        return _REAL_DUE(config, current, *args, **kwargs)

    monkeypatch.setattr(loop, "_due", due)


@pytest.mark.slow  # training runs: ~15 s on 2 busy cores
def test_ctrl_c_saves_the_next_step_and_says_where_to_resume(
    ranker_config, tmp_path, monkeypatch, capsys
):
    """SIGINT asks the loop to stop: it finishes the step in progress, saves a checkpoint there,
    prints one line and main exits 130; a rerun resumes there."""
    config = _smoke(ranker_config)  # checkpoints every 10 steps
    _interrupt_at(monkeypatch, 3, lambda: signal.raise_signal(signal.SIGINT))
    assert _main_catching_ctrl_c(monkeypatch, config, tmp_path / "run") == 130
    out, err = capsys.readouterr()
    assert err == "interrupted at step 4; rerun the same command to resume from step 4\n"
    assert saved_steps(str(tmp_path / "run")) == [4]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored

    monkeypatch.setattr(loop, "_due", _REAL_DUE)
    assert _main(monkeypatch, config, tmp_path / "run") == 0
    assert "resuming at step 4 of 20" in capsys.readouterr().out


@pytest.mark.parametrize(
    "checkpoint_every, hint",
    [
        (2, "rerun the same command to resume from step 2"),
        (10, "nothing saved yet: rerun the same command to start again"),
    ],
)
def test_a_second_ctrl_c_stops_at_once(
    checkpoint_every, hint, ranker_config, tmp_path, monkeypatch, capsys
):
    """KeyboardInterrupt itself (a second Ctrl-C) stops without saving: the line names the last
    checkpoint, and a workdir created by the run with none is removed."""
    config = _smoke(ranker_config)
    config.checkpoint_every = checkpoint_every

    def interrupt():
        raise KeyboardInterrupt

    _interrupt_at(monkeypatch, 3, interrupt)
    assert _main_catching_ctrl_c(monkeypatch, config, tmp_path / "run") == 130
    assert capsys.readouterr().err == f"interrupted at step 3; {hint}\n"
    assert (tmp_path / "run").exists() == (checkpoint_every == 2)


@pytest.mark.slow  # a training process: ~40 s on 2 busy cores
def test_ctrl_c_stops_the_command_cleanly(tmp_path, compile_cache):
    """`python -m cqrnet_jax.main --config=configs/deblock.py:smoke`, SIGINT once the first step
    is logged: no traceback, one line saying where to resume, exit status 130, a checkpoint
    there."""
    env = cached_compile_env(compile_cache)
    cmd = [
        sys.executable,
        "-m",
        "cqrnet_jax.main",
        "--config=configs/deblock.py:smoke",
        f"--workdir={tmp_path / 'run'}",
        "--config.num_steps=10000",
        "--config.log_every=1",
        "--config.data.backend=numpy",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("step 1/"):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, "".join(lines) + out + err
    assert "Traceback" not in err, err
    last = err.splitlines()[-1] if err else ""
    match = re.fullmatch(
        r"interrupted at step (\d+); rerun the same command to resume from step (\d+)", last
    )
    assert match and match[1] == match[2], err
    assert saved_steps(str(tmp_path / "run")) == [int(match[1])]
