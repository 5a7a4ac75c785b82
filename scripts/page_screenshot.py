"""Draw docs/img/serve_page.png: the web page of a real `imgrade serve`, after grading real photos.

    .venv/bin/python scripts/page_screenshot.py MODEL PHOTO... [--out docs/img/serve_page.png]

MODEL is a run folder or an exported .onnx file. The script starts `imgrade serve` on a free
port, opens the page in headless Chromium (Debian chromium + chromium-driver), uploads the
photos through the file chooser, waits for every card and saves a full-page screenshot.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[1]


def headless_chrome(width: int, height: int, *flags: str) -> webdriver.Chrome:
    """Debian's chromium, headless, in a window of ``width`` x ``height`` pixels (``flags`` added)."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", *flags):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    sys.exit(f"the server did not answer {url}healthz within {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("photos", nargs="+")
    parser.add_argument("--out", default=str(REPO / "docs" / "img" / "serve_page.png"))
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen([sys.executable, "-m", "imgrade", "serve", args.model, "--port", str(port)])
    driver = None
    try:
        _wait_healthy(url, server)
        driver = headless_chrome(args.width, 1000, "--disable-background-networking")
        driver.get(url)
        WebDriverWait(driver, 30).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=model-info] .chip, [data-testid=model-info] li")
        )
        driver.find_element(By.ID, "file-input").send_keys("\n".join(str(Path(p).resolve()) for p in args.photos))
        WebDriverWait(driver, 60).until(
            lambda d: (
                len(d.find_elements(By.CSS_SELECTOR, "[data-testid=result-card][data-state=done]")) == len(args.photos)
            )
        )
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(args.width, height + 200)  # + the headless window frame
        time.sleep(0.3)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
