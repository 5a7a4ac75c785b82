"""Draw docs/img/report_gallery.png: the photo sections of an evaluation's report.html in headless Chromium.

    .venv/bin/python scripts/report_screenshot.py RUN/eval-test/report.html [--out docs/img/report_gallery.png]

The report comes from `imgrade evaluate` (the README's picture: the run of
`imgrade demo --n 1000 --epochs 10`). The script
opens the page in headless Chromium (Debian chromium + chromium-driver), scrolls the linked
confusion matrix to the top and saves the page from there to the end of the first grade's
worst-graded photos.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from page_screenshot import headless_chrome  # this folder is on the path of a script run from it
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="an evaluation's report.html")
    parser.add_argument("--out", default=str(REPO / "docs" / "img" / "report_gallery.png"))
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--section", default="which-grades-it-confuses", help="the id of the heading to start at")
    parser.add_argument("--until", default="grade-0", help="the id of the element to end with")
    args = parser.parse_args()

    driver = headless_chrome(args.width, 1600, "--hide-scrollbars")
    try:
        driver.get(Path(args.report).resolve().as_uri())
        loaded = driver.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth)")
        if not loaded:
            raise SystemExit(f"{args.report}: a picture did not load")
        if not driver.execute_script(f"return document.getElementById({args.section!r})"):
            raise SystemExit(f"{args.report} has no section {args.section!r}: evaluate it with --gallery above 0")
        driver.execute_script(f"document.getElementById({args.section!r}).scrollIntoView()")
        bottom = driver.execute_script(f"return document.getElementById({args.until!r}).getBoundingClientRect().bottom")
        shot = Image.open(io.BytesIO(driver.get_screenshot_as_png()))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        shot.crop((0, 0, shot.width, min(shot.height, round(bottom) + 12))).save(args.out, optimize=True)
        print(f"wrote {args.out}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
