"""Removing a workdir that a failed start left behind: only folders the run created, and only
while they hold nothing worth keeping (a finished checkpoint, an export, someone else's file)."""

from __future__ import annotations

from cqrnet_jax.train.workdir import new_folders, remove_if_unused, saved_steps


def _start(path):
    """What a run writes before its first checkpoint."""
    (path / "logs").mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "checkpoints" / "5.orbax-checkpoint-tmp-123").mkdir(parents=True)


def test_new_folders_lists_the_workdir_and_its_missing_parents(tmp_path):
    assert new_folders(str(tmp_path)) == []
    assert new_folders(str(tmp_path / "a" / "b")) == [
        str(tmp_path / "a" / "b"),
        str(tmp_path / "a"),
    ]


def test_a_new_workdir_with_nothing_to_keep_goes_with_its_new_parents(tmp_path):
    created = new_folders(str(tmp_path / "a" / "b"))
    _start(tmp_path / "a" / "b")
    assert saved_steps(str(tmp_path / "a" / "b")) == []  # an unfinished save is no checkpoint
    assert remove_if_unused(created)
    assert list(tmp_path.iterdir()) == []


def test_a_workdir_with_something_to_keep_stays(tmp_path):
    for keep in ("checkpoints/10", "export", "notes.txt"):
        workdir = tmp_path / keep.replace("/", "_")
        created = new_folders(str(workdir))
        _start(workdir)
        (workdir / keep).mkdir(parents=True, exist_ok=True)
        assert not remove_if_unused(created), keep
        assert (workdir / keep).exists()
    assert saved_steps(str(tmp_path / "checkpoints_10")) == [10]


def test_a_parent_that_holds_something_else_stays(tmp_path):
    created = new_folders(str(tmp_path / "a" / "b"))
    _start(tmp_path / "a" / "b")
    (tmp_path / "a" / "other").mkdir()
    assert remove_if_unused(created)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["other"]
