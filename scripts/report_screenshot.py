"""Draw docs/img/report_gallery.png: the photo sections of an evaluation's report.html in headless Chromium.

    .venv/bin/python scripts/report_screenshot.py RUN/eval-test/report.html [--out docs/img/report_gallery.png]

The report comes from `imgrade evaluate` (the README's picture: `imgrade demo`'s run). The script
opens the page in headless Chromium (Debian chromium + chromium-driver), scrolls the linked
confusion matrix to the top and saves what a 1100 x HEIGHT window shows from there: the matrix and
the first grades' worst-graded photos.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="an evaluation's report.html")
    parser.add_argument("--out", default=str(REPO / "docs" / "img" / "report_gallery.png"))
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--section", default="which-grades-it-confuses", help="the id of the heading to start at")
    args = parser.parse_args()

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={args.width},{args.height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        driver.get(Path(args.report).resolve().as_uri())
        loaded = driver.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth)")
        if not loaded:
            raise SystemExit(f"{args.report}: a picture did not load")
        if not driver.execute_script(f"return document.getElementById({args.section!r})"):
            raise SystemExit(f"{args.report} has no section {args.section!r}: evaluate it with --gallery above 0")
        driver.execute_script(f"document.getElementById({args.section!r}).scrollIntoView()")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
