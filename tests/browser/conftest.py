"""A real headless Chromium, driven by Selenium, for tests that open pages the way a user does.

Chromium and its driver come from the Debian packages ``chromium`` and ``chromium-driver``,
which ``make test`` installs when run as root. Where they are missing the browser tests skip,
except on CI (``CI=true``), where a skipped browser test would hide a broken page: there they fail.
"""

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _unavailable(message: str):
    """Skip locally; fail on CI, where the browser must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the browser test cannot run: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A headless Chromium with a fresh profile and a 1280x1600 window; quits after the session."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        _unavailable(
            f"the browser tests need {' and '.join(missing)}: install them with "
            "`sudo apt-get install chromium chromium-driver` (`make test` does it when run as root)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("the browser tests need selenium: pip install -e '.[test]'")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests often run as root in containers, where Chromium's sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB, too little for a renderer
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1280,1600",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for driver.get_log("browser")
    # Naming the driver keeps Selenium Manager from looking for (or downloading) one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
