"""What a training workdir holds, read from disk without JAX: its finished checkpoints, what a
rerun resumes from, and removing a workdir that a failed start left behind (`main.py`)."""

from __future__ import annotations

import os
import shutil

# What training writes into its workdir before it has anything to keep (a checkpoint in
# checkpoints/, an export in export/); anything else there is someone else's.
_DISPOSABLE = frozenset({"config.json", "checkpoints", "logs", "timing.json"})


def saved_steps(workdir: str) -> list[int]:
    """The steps of WORKDIR's finished checkpoints, sorted (orbax writes a step into a temporary
    folder and renames it to the step's number when it is complete)."""
    folder = os.path.join(workdir, "checkpoints")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(folder, n)))


def resume_hint(workdir: str) -> str:
    """What rerunning the training command on WORKDIR does, from its checkpoints on disk."""
    saved = saved_steps(workdir)
    if saved:
        return f"rerun the same command to resume from step {saved[-1]}"
    return "nothing saved yet: rerun the same command to start again"


def new_folders(path: str) -> list[str]:
    """The folders that creating `path` would create: `path` first, then its missing parents
    (empty when it exists)."""
    out = []
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        out.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return out


def remove_if_unused(created: list[str]) -> bool:
    """Removes the workdir `created[0]` and its parents `created[1:]`, folders this run created
    (`new_folders` before it started), if it left nothing worth keeping: no finished checkpoint,
    no export, nothing but what training writes. Parents go only while empty. Whether it did."""
    if not created:
        return False
    workdir = created[0]
    if not os.path.isdir(workdir) or os.path.islink(workdir):
        return False
    if set(os.listdir(workdir)) - _DISPOSABLE or saved_steps(workdir):
        return False
    shutil.rmtree(workdir)
    for parent in created[1:]:
        try:
            os.rmdir(parent)  # only while empty
        except OSError:
            break
    return True
