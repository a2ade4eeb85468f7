"""`cqrnet-jax serve` driven in a real browser: Debian's headless chromium through its
chromium-driver and selenium. The server runs as the command (tiny saved models, in an empty
working folder and its own TMPDIR); the page takes a JPEG through its file input and a PNG and a
text file dropped on it, shows qualities, estimate, warnings and errors, and the PNG it downloads
equals what `deblock` writes for the same file. The screenshot is kept as a test artefact
(tmp_path/serve_page.png). Ctrl-C stops the server, which leaves no file behind.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from helpers import cached_compile_env, deblock
from PIL import Image

from cqrnet_jax.data.io import load_image

pytestmark = pytest.mark.slow
pytest.importorskip("starlette", reason="the web extra (starlette) is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TILE = 48
# Set by .ci/run once it has installed the browser: there, a missing one fails instead of skips.
REQUIRE = os.environ.get("CQRNET_REQUIRE_BROWSER") == "1"

DROP_FILE = """
const [data, name, type] = arguments;
const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, {type}));
document.getElementById("drop").dispatchEvent(
  new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
"""


def browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    found = {"chromium": chromium, "chromedriver (Debian package chromium-driver)": driver}
    missing = [name for name, path in found.items() if not path]
    if missing:
        why = f"{' and '.join(missing)} not found (apt-get install chromium chromium-driver)"
        pytest.fail(why) if REQUIRE else pytest.skip(why)
    return chromium, driver


def free_port() -> int:
    from cqrnet_jax.apps.serve import listening_socket

    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def server(tmp_path, tiny_model_prefix, tiny_ranker, compile_cache):
    """(URL, process, its working folder, its TMPDIR) of `serve` with the tiny models."""
    home, tmp = tmp_path / "cwd", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = cached_compile_env(compile_cache)
    env["TMPDIR"] = str(tmp)
    port = free_port()
    command = [sys.executable, "-m", "cqrnet_jax", "serve", "--port", str(port)]
    command += ["--model", tiny_model_prefix, "--ranker", str(tiny_ranker), "--tile", str(TILE)]
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                urllib.request.urlopen(f"{url}/api/limits", timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start in 300 s"
                time.sleep(0.5)
        yield url, proc, home, tmp
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()


@pytest.fixture
def browser(tmp_path):
    """Headless chromium saving downloads into tmp_path/downloads."""
    chromium, driver = browser_paths()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1000,800")
    prefs = {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    options.add_experimental_option("prefs", prefs)
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    chrome.downloads = downloads
    try:
        yield chrome
    finally:
        chrome.quit()


def downloaded(folder: Path, name: str, timeout: float = 60) -> Path:
    path, deadline = folder / name, time.monotonic() + timeout
    while not path.exists() or list(folder.glob("*.crdownload")):
        assert time.monotonic() < deadline, f"no {name} downloaded: {os.listdir(folder)}"
        time.sleep(0.1)
    return path


def card(chrome, name: str):
    return chrome.find_element(By.XPATH, f"//section[h2='{name}']")


def test_page_restores_as_deblock_does(server, browser, capsys, tiny_model_prefix, tmp_path):
    url, proc, home, tmp = server
    jpeg = tmp_path / "astronaut.jpg"  # 96 x 128: 6 tiles of 48
    Image.fromarray(skimage.data.astronaut()[40:136, 180:308]).save(jpeg, quality=15)
    png = io.BytesIO()
    Image.fromarray(skimage.data.coffee()[100:164, 200:264]).save(png, format="PNG")

    browser.get(url)
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "limits").text)
    browser.find_element(By.ID, "files").send_keys(str(jpeg))
    for data, name, kind in ((png.getvalue(), "coffee.png", "image/png"), (b"hi", "a.txt", "")):
        browser.execute_script(DROP_FILE, base64.b64encode(data).decode(), name, kind)
    WebDriverWait(browser, 300).until(
        lambda b: (
            len(b.find_elements(By.CSS_SELECTOR, ".card.done")) == 2
            and b.find_elements(By.CSS_SELECTOR, ".card.failed")
        )
    )
    info = card(browser, "astronaut.jpg").find_element(By.CLASS_NAME, "info").text
    assert "128 × 96 · JPEG quality 15 (from its quantization table)" in info, info
    assert "ranker's estimate: quality " in info, info
    warning = card(browser, "coffee.png").find_element(By.CSS_SELECTOR, ".warnings li").text
    assert warning.startswith("not a JPEG (PNG): quality unknown"), warning
    failed = card(browser, "a.txt").find_element(By.CLASS_NAME, "message").text
    assert failed == "a.txt: not an image file (unknown format or damaged header)"
    browser.save_screenshot(str(tmp_path / "serve_page.png"))  # the artefact
    assert Image.open(tmp_path / "serve_page.png").size[0] > 0

    # the PNG the page gives is what `deblock` writes
    card(browser, "astronaut.jpg").find_element(By.CLASS_NAME, "download").click()
    page_png = load_image(downloaded(browser.downloads, "astronaut.png")).pixels
    code, err = deblock(capsys, tiny_model_prefix, jpeg, "-o", tmp_path / "out", "--tile", TILE)
    assert code == 0, err
    expected = load_image(tmp_path / "out" / "astronaut.png").pixels
    np.testing.assert_array_equal(page_png, expected)

    # zoom, split and strength; all results at half strength in one zip
    view = card(browser, "astronaut.jpg")
    set_value = "arguments[0].value = arguments[1];"
    set_value += "arguments[0].dispatchEvent(new Event(arguments[2]))"
    browser.execute_script(set_value, view.find_element(By.CLASS_NAME, "zoom"), "2", "change")
    width = "return getComputedStyle(arguments[0]).width"
    assert browser.execute_script(width, view.find_element(By.CLASS_NAME, "stage")) == "256px"
    browser.execute_script(set_value, view.find_element(By.CLASS_NAME, "split"), "250", "input")
    after = view.find_element(By.CLASS_NAME, "after")
    assert after.value_of_css_property("clip-path") == "inset(0px 0px 0px 25%)"
    browser.execute_script(set_value, browser.find_element(By.ID, "strength"), "50", "input")
    assert after.value_of_css_property("opacity") == "0.5"
    browser.find_element(By.ID, "download-all").click()
    with zipfile.ZipFile(downloaded(browser.downloads, "restored.zip")) as archive:
        assert sorted(archive.namelist()) == ["astronaut.png", "coffee.png"]
        half = np.asarray(Image.open(io.BytesIO(archive.read("astronaut.png"))))
    before = load_image(jpeg).pixels.astype(float)
    np.testing.assert_array_equal(half, np.round(before + 0.5 * (expected - before)))

    # Ctrl-C: a clean stop, its temporary folder gone, nothing written anywhere else
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert not list(tmp.iterdir()) and not list(home.iterdir())
