"""The README's screenshot of `cqrnet-jax serve` (docs/images/serve.png): the shipped model on
scikit-image's astronaut saved at JPEG quality 10 and 90, in headless chromium (Debian's
chromium and chromium-driver, selenium: the test extra).

    python experiments/serve_screenshot.py   # 13 s on 2 CPU cores, start-up included

The page is shot in a 1000 x 930 window and stored with a 96-colour palette (39 KB).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import skimage.data
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "images" / "serve.png"
PORT = 8765


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        photo = skimage.data.astronaut()[20:276, 120:376]  # the face, 256 x 256
        files = []
        for quality in (90, 10):  # the page shows the last one on top
            path = Path(tmp) / f"astronaut_q{quality}.jpg"
            Image.fromarray(photo).save(path, quality=quality)
            files.append(path)
        server = subprocess.Popen(
            [sys.executable, "-m", "cqrnet_jax", "serve", "--port", str(PORT)], cwd=tmp
        )
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for arg in ("--headless=new", "--no-sandbox", "--window-size=1000,930"):
            options.add_argument(arg)
        browser = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        try:
            url = f"http://127.0.0.1:{PORT}/"
            for _ in range(240):
                try:
                    urllib.request.urlopen(url, timeout=5).close()
                    break
                except OSError:
                    time.sleep(0.5)
            browser.get(url)
            WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "limits").text)
            for path in files:
                browser.find_element(By.ID, "files").send_keys(str(path))
                time.sleep(1)
            WebDriverWait(browser, 600).until(
                lambda b: (
                    b.find_elements(By.CSS_SELECTOR, ".card.done")
                    and b.find_elements(By.CSS_SELECTOR, ".card.skipped")
                )
            )
            zoom = browser.find_element(By.CSS_SELECTOR, ".card.done .zoom")
            browser.execute_script(
                "arguments[0].value = '2'; arguments[0].dispatchEvent(new Event('change'));", zoom
            )
            time.sleep(1)
            shot = Path(tmp) / "page.png"
            browser.save_screenshot(str(shot))
        finally:
            browser.quit()
            server.terminate()
            server.wait()
        OUT.parent.mkdir(parents=True, exist_ok=True)
        Image.open(shot).convert("RGB").quantize(96).save(OUT, optimize=True)
    print(f"{OUT}: {OUT.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
