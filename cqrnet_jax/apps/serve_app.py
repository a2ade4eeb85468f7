"""The HTTP side of `cqrnet-jax serve`: a Starlette app over a `serve_jobs.JobQueue`.

The page (`serve_static/`: one HTML file, a script and a style sheet, nothing fetched from
elsewhere) talks to a small JSON API; every error is `{"error": "FILE: reason"}` with a 4xx
status, and the server goes on serving.

  GET  /api/limits                      the server's limits, for the page to check before upload
  POST /api/jobs?name=N&force=0|1       body: the file's bytes -> its job (201), queued
  GET  /api/jobs?ids=A,B                those jobs' states (queued, running, done, skipped, failed)
  POST /api/jobs/ID/force               a job left alone, queued again to be restored anyway
  DELETE /api/jobs/ID                   a job forgotten and its files deleted (not while running)
  GET  /api/jobs/ID/before.png          the decoded input (upright, 8 bits)
  GET  /api/jobs/ID/after.png?strength=S  the result (S < 1: that share of the change, blended)
  GET  /api/zip?ids=A,B&strength=S      the results as STEM.png in one zip
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import secrets
import shutil
import zipfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cqrnet_jax.apps.serve_jobs import DONE, SKIPPED, JobQueue, display_name
from cqrnet_jax.data.io import ImageLoadError

STATIC = Path(__file__).with_name("serve_static")
NO_STORE = {"Cache-Control": "no-store"}


class Refused(Exception):
    """A request the server turns down: an HTTP status and a one-line message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _strength(request: Request) -> float:
    text = request.query_params.get("strength", "1")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise Refused(400, f"strength {text!r}: give a number from 0 to 1")
    return value


def _png(pixels, options: dict) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", **options)
    return buffer.getvalue()


class _Api:
    """The request handlers, over one JobQueue."""

    def __init__(self, jobs: JobQueue, max_upload_bytes: int):
        self.jobs, self.max_upload_bytes = jobs, max_upload_bytes

    def job_of(self, request: Request, done: bool = False):
        job = self.jobs.jobs.get(request.path_params["id"])
        if job is None:
            raise Refused(404, "no such image on this server (was it restarted?)")
        if done and job.state != DONE:
            raise Refused(409, f"{job.name}: not restored ({job.state})")
        return job

    async def page(self, request: Request):
        return FileResponse(STATIC / "index.html", headers=NO_STORE)

    async def limits(self, request: Request):
        jobs = self.jobs
        return JSONResponse(
            {
                "max_upload_bytes": self.max_upload_bytes,
                "max_pixels": jobs.max_pixels,
                "restore_limit": jobs.limit,
                "trained": list(jobs.trained),
            },
            headers=NO_STORE,
        )

    async def upload(self, request: Request):
        name = display_name(request.query_params.get("name", ""))
        force = request.query_params.get("force", "0") in ("1", "true", "on")
        job = await run_in_threadpool(self.jobs.new_job, name, force)
        admitted, size, limit = False, 0, self.max_upload_bytes
        try:
            with open(job.upload, "wb") as out:
                async for chunk in request.stream():  # read to the end, kept up to the limit
                    size += len(chunk)
                    if size <= limit:
                        out.write(chunk)
            if size > limit:
                raise Refused(
                    413,
                    f"{name}: {_megabytes(size)} is above this server's upload limit of "
                    f"{_megabytes(limit)} (serve --max-upload-mb)",
                )
            if size == 0:
                raise Refused(400, f"{name}: file is empty")
            try:
                await run_in_threadpool(self.jobs.admit, job)
            except ImageLoadError as err:
                status = 413 if "too large" in err.reason else 400
                raise Refused(status, str(err)) from None
            admitted = True
        finally:
            if not admitted:
                shutil.rmtree(job.folder, ignore_errors=True)
        return JSONResponse(job.public(), status_code=201, headers=NO_STORE)

    async def states(self, request: Request):
        jobs = self.jobs.jobs
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        return JSONResponse([jobs[i].public() for i in ids if i in jobs], headers=NO_STORE)

    async def force(self, request: Request):
        job = self.job_of(request)
        if job.state != SKIPPED:
            raise Refused(409, f"{job.name}: only an image left alone can be forced ({job.state})")
        self.jobs.queue(job, force=True)
        return JSONResponse(job.public(), headers=NO_STORE)

    async def remove(self, request: Request):
        job = self.job_of(request)
        if not await run_in_threadpool(self.jobs.remove, job):
            raise Refused(409, f"{job.name}: being restored; remove it when it is done")
        return JSONResponse({"removed": job.id}, headers=NO_STORE)

    async def before(self, request: Request):
        job = self.job_of(request, done=True)
        return FileResponse(job.folder / "before.png", headers=NO_STORE)

    async def after(self, request: Request):
        job, strength = self.job_of(request, done=True), _strength(request)
        if strength == 1.0:  # the file as written, what `deblock` writes
            return FileResponse(job.folder / "after.png", headers=NO_STORE)
        pixels = await run_in_threadpool(self.jobs.blended, job, strength)
        data = await run_in_threadpool(_png, pixels, job.save_options)
        return Response(data, media_type="image/png", headers=NO_STORE)

    def _write_zip(self, path: Path, chosen: list, strength: float) -> None:
        names: set[str] = set()
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:  # PNGs: compressed
            for job in chosen:
                name, n = f"{job.stem}.png", 1
                while name in names:  # two uploads of one name: a.png, a-2.png
                    n += 1
                    name = f"{job.stem}-{n}.png"
                names.add(name)
                if strength == 1.0:
                    archive.write(job.folder / "after.png", name)
                else:
                    pixels = self.jobs.blended(job, strength)
                    archive.writestr(name, _png(pixels, job.save_options))

    async def all_results(self, request: Request):
        strength, jobs = _strength(request), self.jobs.jobs
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        chosen = [jobs[i] for i in ids if i in jobs and jobs[i].state == DONE]
        if not chosen:
            raise Refused(404, "no restored images to download yet")
        path = self.jobs.root / f"restored-{secrets.token_hex(8)}.zip"
        await run_in_threadpool(self._write_zip, path, chosen, strength)
        return FileResponse(
            path,
            filename="restored.zip",
            headers=NO_STORE,
            background=BackgroundTask(os.unlink, path),
        )


async def _refused(request: Request, err: Refused):
    return JSONResponse({"error": str(err)}, status_code=err.status, headers=NO_STORE)


def build_app(jobs: JobQueue, *, max_upload_bytes: int, allowed_hosts=("*",)) -> Starlette:
    """The app: the page and its API over `jobs`, whose worker runs while the app does."""
    api = _Api(jobs, max_upload_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        jobs.start()
        try:
            yield
        finally:
            jobs.stop()

    routes = [
        Route("/", api.page),
        Route("/api/limits", api.limits),
        Route("/api/jobs", api.upload, methods=["POST"]),
        Route("/api/jobs", api.states),
        Route("/api/jobs/{id}/force", api.force, methods=["POST"]),
        Route("/api/jobs/{id}", api.remove, methods=["DELETE"]),
        Route("/api/jobs/{id}/before.png", api.before),
        Route("/api/jobs/{id}/after.png", api.after),
        Route("/api/zip", api.all_results),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))],
        exception_handlers={Refused: _refused},
        lifespan=lifespan,
    )
