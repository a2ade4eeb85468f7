"""The work behind `cqrnet-jax serve`'s page: uploaded files as jobs, run one at a time.

One worker thread owns the models (loaded once per server) and takes jobs in upload order, so
two requests never run a model at once; each job is the ranker's estimate, then the restoration
exactly as `deblock` does it (`deblock.restore_file`, the same left-alone rule, `force` for
`--force`), its tiles counted for the page. Every file lives in the job's folder inside the
server's temporary folder (`root`): the upload, the decoded input (`before.png`) and the result
(`after.png`, what `deblock` writes). Nothing here knows about HTTP (`serve_app` does).
"""

from __future__ import annotations

import collections
import secrets
import shutil
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cqrnet_jax.apps.deblock import FileError, restore_file
from cqrnet_jax.apps.estimate import _estimate_one
from cqrnet_jax.apps.input_quality import peek_quality, restore_notes
from cqrnet_jax.data.color import round_to_uint8
from cqrnet_jax.data.io import ImageLoadError, image_size, save_image

QUEUED, RUNNING, DONE, SKIPPED, FAILED = "queued", "running", "done", "skipped", "failed"


@dataclass(eq=False)  # one job is one object: compared by identity
class Job:
    """One uploaded file and what became of it; `public()` is what the page sees."""

    id: str
    name: str  # the file's name on the user's machine, for messages and downloads only
    folder: Path
    force: bool = False
    state: str = QUEUED
    message: str | None = None  # why it was left alone or failed
    format: str | None = None  # the file's format as PIL names it ("JPEG", "PNG", ...)
    quality: str | None = None  # what its header says (`FileQuality.describe`)
    estimate: float | None = None  # the ranker's blind estimate of its JPEG quality
    warnings: list[str] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)  # width, height as stored
    tiles_done: int = 0
    tiles_total: int = 1
    position: int = 0  # jobs ahead of it in the queue
    save_options: dict = field(default_factory=dict)  # after.png's (its colour profile)

    @property
    def upload(self) -> Path:
        return self.folder / "upload"

    @property
    def stem(self) -> str:
        return Path(self.name).stem or "image"

    def public(self) -> dict:
        keys = ("id", "name", "state", "message", "format", "quality", "estimate", "warnings")
        out = {k: getattr(self, k) for k in keys}
        out["warnings"] = list(self.warnings)  # a copy: the worker may add to it meanwhile
        out.update(width=self.size[0], height=self.size[1], position=self.position)
        out.update(tiles_done=self.tiles_done, tiles_total=self.tiles_total)
        return out


class _TileProgress:
    """`restorer.progress` for one job: counts its tiles (a further pass extends the total)."""

    def __init__(self, job: Job):
        self.job = job

    def update(self, n: int = 1) -> None:
        job = self.job
        if job.tiles_done + n > job.tiles_total:
            job.tiles_total += job.tiles_total
        job.tiles_done += n


def display_name(text: str) -> str:
    """A file name sent by the browser, made safe to show: its last path part, printable, short."""
    name = text.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()[:120]
    return name or "upload"


class JobQueue:
    """Jobs by id and the one worker thread that runs them (`start` / `stop`)."""

    def __init__(self, restorer, scorer, root: Path, *, limit, trained, max_pixels, colour=None):
        self.restorer, self.scorer, self.root = restorer, scorer, Path(root)
        self.colour = colour  # the colour model for colour photos (`photo.restore_image`)
        self.limit, self.trained, self.max_pixels = limit, trained, max_pixels
        self.jobs: dict[str, Job] = {}
        self._waiting: collections.deque[Job] = collections.deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="cqrnet-serve-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the worker after the job in progress (queued jobs are dropped)."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def new_job(self, name: str, force: bool) -> Job:
        """A job with an empty folder for its upload (`upload`), not queued yet."""
        job_id = secrets.token_hex(8)
        job = Job(job_id, display_name(name), self.root / job_id, force=force)
        job.folder.mkdir()
        return job

    def admit(self, job: Job) -> None:
        """Checks an uploaded file's header (an image within the pixel limit) and queues it;
        raises ImageLoadError (with the user's file name) when it is not one."""
        try:
            job.size = image_size(job.upload, max_pixels=self.max_pixels)
        except ImageLoadError as err:
            raise ImageLoadError(job.name, err.reason) from None
        job.tiles_total = sum(1 for _ in self.restorer.tiles(job.size[1], job.size[0]))
        found = peek_quality(job.upload)
        job.format = found.format if found else None
        job.quality = found.describe() if found and found.quality is not None else None
        self.jobs[job.id] = job
        self.queue(job)

    def queue(self, job: Job, force: bool | None = None) -> None:
        """Puts `job` at the end of the queue (again, e.g. forced after it was left alone)."""
        with self._ready:
            if force is not None:
                job.force = force
            job.state, job.message, job.tiles_done = QUEUED, None, 0
            self._waiting.append(job)
            self._renumber()
            self._ready.notify()

    def remove(self, job: Job) -> bool:
        """Forgets `job` and deletes its files, unless it is running (False then)."""
        with self._ready:
            if job.state == RUNNING:
                return False
            if job in self._waiting:
                self._waiting.remove(job)
                self._renumber()
            self.jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)
        return True

    def _renumber(self) -> None:
        for i, waiting in enumerate(self._waiting):
            waiting.position = i

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self._waiting and not self._stopping:
                    self._ready.wait()
                if self._stopping:
                    return
                job = self._waiting.popleft()
                self._renumber()
                job.state = RUNNING
            try:
                self._run(job)
            except Exception as err:  # never let one file stop the server
                traceback.print_exc(file=sys.stderr)
                job.state, job.message = FAILED, f"{job.name}: internal error: {err}"

    def _run(self, job: Job) -> None:
        if job.estimate is None and self.scorer is not None:
            try:
                record = _estimate_one(self.scorer, str(job.upload), self.max_pixels)
                job.estimate = record["estimated_quality"]
            except (ImageLoadError, MemoryError, RuntimeError) as err:
                job.warnings.append(f"no estimate: {' '.join(str(err).split())[:200]}")
        conditioned = getattr(self.restorer, "quality_input", False)
        found = peek_quality(job.upload)
        why, note = restore_notes(found, self.trained, self.limit, job.force, conditioned)
        if why:
            job.state, job.message = SKIPPED, f"{job.name}: {why}"
            return
        models = [m for m in (self.restorer, self.colour) if m is not None]
        for model in models:  # whichever restores the photo counts its tiles
            model.progress = _TileProgress(job)
        try:
            loaded, pixels, options, warning = restore_file(
                self.restorer, str(job.upload), max_pixels=self.max_pixels, colour=self.colour
            )
        except FileError as err:
            job.state, job.message = FAILED, f"{job.name}: {err}"
            return
        finally:
            for model in models:
                model.progress = None
        before = loaded.pixels
        if loaded.alpha is not None:  # as restore_image carries it over
            rgb = before if before.ndim == 3 else np.repeat(before[..., None], 3, axis=-1)
            before = np.concatenate([rgb, loaded.alpha[..., None]], axis=-1)
        save_image(job.folder / "before.png", before, **options)
        save_image(job.folder / "after.png", pixels, **options)
        job.save_options = options
        job.warnings += [w for w in (note, warning) if w]
        job.state = DONE

    def blended(self, job: Job, strength: float) -> np.ndarray:
        """The result at `strength` in [0, 1]: the input plus that share of the restoration's
        change (1: the result as written, 0: the decoded input)."""
        from PIL import Image

        with Image.open(job.folder / "before.png") as im:
            before = np.asarray(im).astype(np.float32)
        with Image.open(job.folder / "after.png") as im:
            after = np.asarray(im).astype(np.float32)
        return round_to_uint8(before + strength * (after - before))
