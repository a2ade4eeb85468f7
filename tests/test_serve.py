"""`cqrnet-jax serve`'s server with the tiny saved de-blocker and ranker, run in a thread and
talked to over HTTP: results equal to `deblock`'s, the strength blend and the zip, the
left-alone rule and its override, bad files and limits (a message, and the server keeps
serving), one model run at a time. The page in a real browser: test_serve_browser.py."""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

import numpy as np
import pytest
from helpers import deblock, grey, png_header_only, rgb
from PIL import Image

pytest.importorskip("starlette", reason="the web extra (starlette) is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the web extra (uvicorn) is not installed")

from cqrnet_jax.apps.cli import main  # noqa: E402
from cqrnet_jax.apps.serve import listening_socket  # noqa: E402
from cqrnet_jax.apps.serve_app import build_app  # noqa: E402
from cqrnet_jax.apps.serve_jobs import JobQueue  # noqa: E402
from cqrnet_jax.data.io import load_image  # noqa: E402
from cqrnet_jax.inference import load_restorer  # noqa: E402
from cqrnet_jax.quality import load_ranker  # noqa: E402

TILE = 48  # the tiny model's tiles: a 96 x 128 image goes through in 2 x 3 of them
MAX_UPLOAD = 200_000
MAX_PIXELS = 1_000_000


@contextlib.contextmanager
def running(jobs: JobQueue):
    """The app over `jobs`, served by uvicorn in a thread on a free port; yields its URL."""
    app = build_app(jobs, max_upload_bytes=MAX_UPLOAD, allowed_hosts=["127.0.0.1"])
    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def served(tiny_model_prefix, tiny_ranker, tmp_path_factory):
    """(URL, JobQueue, its folder) of a server with the tiny models, limit QF 50."""
    restorer, _ = load_restorer(tiny_model_prefix, tile=TILE)
    root = tmp_path_factory.mktemp("serve_root")
    jobs = JobQueue(
        restorer,
        load_ranker(tiny_ranker),
        root,
        limit=50,
        trained=(10, 30),
        max_pixels=MAX_PIXELS,
    )
    with running(jobs) as url:
        yield url, jobs, root


def request(url: str, data: bytes | None = None, method: str | None = None):
    """(status, body bytes) of one HTTP request; error statuses are returned, not raised."""
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def upload(url: str, name: str, data: bytes, force: bool = False):
    query = urllib.parse.urlencode({"name": name, "force": int(force)})
    status, body = request(f"{url}/api/jobs?{query}", data=data, method="POST")
    return status, json.loads(body)


def wait_done(url: str, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (state,) = json.loads(request(f"{url}/api/jobs?ids={job_id}")[1])
        if state["state"] in ("done", "skipped", "failed"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {state['state']} after {timeout} s")


def jpeg_bytes(pixels, quality=20) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def big_rgb():
    import skimage.data

    return skimage.data.astronaut()[40:136, 180:308]  # 96 x 128


def test_results_are_what_deblock_writes(served, capsys, tiny_model_prefix, tmp_path):
    """A grey and a colour JPEG (in 2 and 6 tiles, all counted): done, the header's
    quality and the ranker's estimate reported, before.png the decoded input, after.png equal
    pixel for pixel to `deblock --tile 48`'s PNG of the same file."""
    url, _, _ = served
    files = {"grey.jpg": grey(), "colour.jpg": big_rgb()}
    for name, pixels in files.items():
        path = tmp_path / name
        path.write_bytes(jpeg_bytes(pixels))
        status, job = upload(url, name, path.read_bytes())
        assert status == 201 and job["quality"] == "JPEG quality 20 (from its quantization table)"
        job = wait_done(url, job["id"])
        assert job["state"] == "done" and not job["warnings"], job
        assert isinstance(job["estimate"], float)
        tiles = 6 if name == "colour.jpg" else 2  # 40 x 56: 1 x 2 tiles
        assert job["tiles_done"] == job["tiles_total"] == tiles
        code, err = deblock(capsys, tiny_model_prefix, path, "-o", tmp_path / "out", "--tile", TILE)
        assert code == 0, err
        expected = load_image(tmp_path / "out" / f"{path.stem}.png").pixels
        after = png_pixels(request(f"{url}/api/jobs/{job['id']}/after.png")[1])
        np.testing.assert_array_equal(after, expected)
        before = png_pixels(request(f"{url}/api/jobs/{job['id']}/before.png")[1])
        np.testing.assert_array_equal(before, load_image(path).pixels)
        assert np.abs(after.astype(int) - before).mean() > 1  # the model changed it


def test_strength_blends_and_the_zip_holds_every_result(served):
    """strength=0 gives the input, 0.5 the rounded midpoint; the zip holds STEM.png per result
    (a repeated name numbered), at the strength asked; a strength outside [0, 1] is refused."""
    url, _, _ = served
    ids = []
    for _ in range(2):
        status, job = upload(url, "same.jpg", jpeg_bytes(rgb()))
        assert status == 201
        ids.append(wait_done(url, job["id"])["id"])
    base = f"{url}/api/jobs/{ids[0]}"
    before = png_pixels(request(f"{base}/before.png")[1]).astype(float)
    after = png_pixels(request(f"{base}/after.png")[1]).astype(float)
    np.testing.assert_array_equal(png_pixels(request(f"{base}/after.png?strength=0")[1]), before)
    half = png_pixels(request(f"{base}/after.png?strength=0.5")[1])
    np.testing.assert_array_equal(half, np.round(before + 0.5 * (after - before)))
    status, body = request(f"{base}/after.png?strength=1.5")
    assert status == 400 and "strength '1.5'" in json.loads(body)["error"]

    status, body = request(f"{url}/api/zip?ids={','.join(ids)}&strength=0.5")
    assert status == 200
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.namelist() == ["same.png", "same-2.png"]
        np.testing.assert_array_equal(png_pixels(archive.read("same.png")), half)
    status, body = request(f"{url}/api/zip?ids=nosuchjob")
    assert status == 404 and "no restored images" in json.loads(body)["error"]


def test_above_the_limit_left_alone_until_forced_and_non_jpegs_warned(served):
    """A QF-90 JPEG is left alone with deblock's message (and still estimated); forcing it
    restores it with deblock's --force warning; `force=1` at upload restores it at once; a
    PNG is restored with the not-a-JPEG warning."""
    url, _, _ = served
    data = jpeg_bytes(rgb(), quality=90)
    _, job = upload(url, "fine.jpg", data)
    job = wait_done(url, job["id"])
    assert job["state"] == "skipped" and job["estimate"] is not None
    assert job["message"].startswith("fine.jpg: left alone: JPEG quality 90")
    status, _ = request(f"{url}/api/jobs/{job['id']}/after.png")
    assert status == 409
    status, body = request(f"{url}/api/jobs/{job['id']}/force", data=b"", method="POST")
    assert status == 200, body
    job = wait_done(url, job["id"])
    assert job["state"] == "done" and "restored because of --force" in job["warnings"][0]
    _, job = upload(url, "fine2.jpg", data, force=True)
    assert wait_done(url, job["id"])["state"] == "done"

    buffer = io.BytesIO()
    Image.fromarray(rgb()).save(buffer, format="PNG")
    _, job = upload(url, "drawing.png", buffer.getvalue())
    job = wait_done(url, job["id"])
    assert job["state"] == "done" and job["warnings"][0].startswith("not a JPEG (PNG)")


def test_bad_files_get_a_message_and_the_server_keeps_serving(served, tmp_path):
    """Not an image, empty, over the upload limit, over the pixel limit: refused at upload
    with `NAME: reason`, nothing kept; a truncated JPEG fails in the worker with its reason;
    then a good file is still restored."""
    url, _, root = served
    folders = set(root.iterdir())
    cases = [
        ("notes.txt", b"not an image", 400, "notes.txt: not an image file"),
        ("empty.jpg", b"", 400, "empty.jpg: file is empty"),
        ("huge.jpg", b"\xff" * (MAX_UPLOAD + 1), 413, "huge.jpg: 0.2 MB is above"),
        ("bomb.png", png_header_only(2000, 1000), 413, "bomb.png: image too large: 2000000"),
    ]
    for name, data, code, message in cases:
        status, body = upload(url, name, data)
        assert status == code and body["error"].startswith(message), body
    assert set(root.iterdir()) == folders  # refused uploads leave nothing behind

    data = jpeg_bytes(big_rgb())
    status, job = upload(url, "cut.jpg", data[: len(data) // 2])
    assert status == 201
    job = wait_done(url, job["id"])
    assert job["state"] == "failed" and job["message"] == "cut.jpg: truncated image data", job

    status, job = upload(url, "good.jpg", jpeg_bytes(grey()))
    assert status == 201 and wait_done(url, job["id"])["state"] == "done"
    status, body = request(f"{url}/api/jobs/nosuchjob/after.png")
    assert status == 404 and "no such image" in json.loads(body)["error"]


def test_removing_an_image_deletes_its_files(served):
    url, _, root = served
    _, job = upload(url, "gone.jpg", jpeg_bytes(grey()))
    wait_done(url, job["id"])
    assert (root / job["id"] / "after.png").is_file()
    status, _ = request(f"{url}/api/jobs/{job['id']}", method="DELETE")
    assert status == 200 and not (root / job["id"]).exists()
    assert request(f"{url}/api/jobs/{job['id']}/after.png")[0] == 404


def test_requests_queue_for_one_model_run_at_a_time(served):
    """Four uploads at once: all restored, the model never running twice at the same time."""
    url, jobs, _ = served
    restorer = jobs.restorer
    running_now, most, lock = [0], [0], threading.Lock()
    original = restorer._run

    def counted(job_list):
        with lock:
            running_now[0] += 1
            most[0] = max(most[0], running_now[0])
        try:
            time.sleep(0.05)  # room for an overlap, were there one
            return original(job_list)
        finally:
            with lock:
                running_now[0] -= 1

    restorer._run = counted
    try:
        ids = [None] * 4

        def send(i):
            ids[i] = upload(url, f"{i}.jpg", jpeg_bytes(grey(), quality=10 + i))[1]["id"]

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [wait_done(url, i)["state"] for i in ids] == ["done"] * 4
    finally:
        restorer._run = original
    assert most[0] == 1


def test_the_page_needs_nothing_from_the_network(served):
    """The page and what it loads come from this server: no address elsewhere in them."""
    url, _, _ = served
    status, html = request(f"{url}/")
    assert status == 200 and b"Drop JPEGs here" in html
    linked = re.findall(rb'(?:src|href)="([^"]*)"', html)
    assert linked and all(link.startswith((b"/static/", b"data:")) for link in linked), linked
    for link in linked:
        if link.startswith(b"/static/"):
            status, body = request(url + link.decode())
            assert status == 200 and b"http:" not in body and b"https:" not in body, link


def test_other_hosts_are_refused(served):
    """A request naming another host (DNS rebinding from a web page) is refused."""
    url, _, _ = served
    req = urllib.request.Request(f"{url}/api/limits", headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=10)
    assert caught.value.code == 400


def test_serve_command_line(capsys):
    """--help says what the page does and its defaults; a busy port is one error line."""
    assert main(["serve", "--help"]) == 0
    text = capsys.readouterr().out
    assert "drop images" in text and "127.0.0.1" in text and "--max-upload-mb" in text
    busy = listening_socket("127.0.0.1", 0)
    busy.listen()
    port = busy.getsockname()[1]
    try:
        assert main(["serve", "--port", str(port)]) == 2
    finally:
        busy.close()
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}:"), err
    assert main(["serve", "--port", "70000"]) == 2
