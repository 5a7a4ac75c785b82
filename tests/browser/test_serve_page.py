"""The page of ``imgrade serve``: a real server on loopback, a real headless Chromium, real uploads.

What the page shows for each photo must be what ``imgrade predict`` says about the same file.
"""

import json
import os
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from imgrade.cli import main
from imgrade.data.cucumber9 import read_cucumber9
from imgrade.data.synthetic import generate_cucumbers

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
REAL_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cucumber9-p1-sample"
GRADING_S = 60
SCORE_DECIMALS = 2  # the page's score precision (SCORE_DECIMALS in static/app.js)


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory, imgrade_serve):
    """``python -m imgrade serve RUN`` on a free loopback port, without a token; its base URL."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "IMGRADE_TOKEN"}  # the page is tested without a token
    with imgrade_serve(trained_run, log, env=env) as url:
        yield url


def _photos(folder: Path) -> list[Path]:
    """A generated cucumber (its name has markup in it, which must show as text) and, where the
    CUCUMBER-9 sample is present, one real photo, as PNG files."""
    synthetic = generate_cucumbers(1, seed=7).imageset.images[0]
    paths = [folder / "cucumber <b>synthetic.png"]
    Image.fromarray(synthetic).save(paths[0])
    if REAL_SAMPLE.is_dir():
        real = read_cucumber9(REAL_SAMPLE)
        paths.append(folder / "cucumber9-real.png")
        Image.fromarray(real.images[0]).save(paths[-1])
    return paths


def _predict(run: Path, paths: list[Path], capsys) -> dict[str, dict]:
    """``imgrade predict RUN PATHS --format json``, keyed by file name."""
    capsys.readouterr()
    assert main(["predict", str(run), *map(str, paths), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    return {Path(row["image"]).name: row for row in rows}


def _upload(browser, paths: list[Path]) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "file-input").send_keys("\n".join(str(path) for path in paths))


def _card(browser, name: str):
    """The finished result card of ``name`` (graded or failed), once the page has drawn it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def finished(driver):
        for card in driver.find_elements(By.CSS_SELECTOR, '[data-testid="result-card"]'):
            if card.get_attribute("data-file") == name and card.get_attribute("data-state") != "pending":
                return card
        return False

    return WebDriverWait(browser, GRADING_S).until(finished, f"no finished card for {name} after {GRADING_S}s")


def _shown(card) -> dict:
    from selenium.webdriver.common.by import By

    def text(testid):
        found = card.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')
        return found[0].text.strip() if found else None

    chips = card.find_elements(By.CSS_SELECTOR, '[data-testid="grade-set"] li:not(.chip-empty)')
    return {
        "state": card.get_attribute("data-state"),
        "name": card.find_element(By.CSS_SELECTOR, ".file-name").text,
        "grade": text("grade"),
        "score": text("score"),
        "grade_set": [chip.text for chip in chips]
        if card.find_elements(By.CSS_SELECTOR, '[data-testid="grade-set"]')
        else None,
        "score_bar": bool(card.find_elements(By.CSS_SELECTOR, '[data-testid="score-bar"] .axis-marker')),
        "error": text("error"),
        "markup": bool(card.find_elements(By.TAG_NAME, "b")),
    }


def _assert_matches(shown: dict, expected: dict, name: str) -> None:
    assert shown["state"] == "done", f"{name}: {shown}"
    assert shown["grade"] == expected["grade"], (
        f"{name}: page says {shown['grade']}, imgrade predict {expected['grade']}"
    )
    tolerance = 0.5 * 10**-SCORE_DECIMALS + 1e-4  # the page rounds to 2 decimals
    assert abs(float(shown["score"]) - expected["score"]) <= tolerance, (
        f"{name}: page {shown['score']}, predict {expected['score']}"
    )
    assert shown["score_bar"], f"{name}: no score marker on the grade axis"
    if expected["grade_set"] is not None:
        assert shown["grade_set"] == expected["grade_set"], f"{name}: {shown}"


def _save_full_page(browser, path: Path) -> None:
    """A screenshot of the whole page, not only the window (Chromium's DevTools protocol)."""
    import base64

    # The capture lays the page out again without a scroll bar, so the full window width.
    width, height = browser.execute_script("return [window.innerWidth, document.documentElement.scrollHeight];")
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def _policy_violations(browser) -> list[str]:
    """The console messages since the last call that report a Content-Security-Policy violation."""
    return [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]


def test_the_page_grades_uploads_like_predict(browser, server, trained_run, tmp_path, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photos = _photos(tmp_path)
    after_error = tmp_path / "after-error.png"
    after_error.write_bytes(photos[0].read_bytes())
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    expected = _predict(trained_run, [*photos, after_error], capsys)
    with urllib.request.urlopen(f"{server}/v1/model", timeout=10) as response:
        model = json.load(response)

    browser.set_window_size(1280, 1600)
    try:
        _policy_violations(browser)  # what earlier tests left in the console
        browser.get(f"{server}/")
        info = browser.find_element(By.CSS_SELECTOR, '[data-testid="model-info"]')
        WebDriverWait(browser, 10).until(
            lambda _: info.get_attribute("aria-busy") == "false", "the model card never loaded"
        )
        assert [chip.text for chip in info.find_elements(By.CSS_SELECTOR, ".grade-list li")] == model["grades"]
        assert model["rule"] in info.text
        assert browser.find_element(By.CSS_SELECTOR, '[data-testid="drop-zone"]').is_displayed()

        _upload(browser, photos)
        for path in photos:
            shown = _shown(_card(browser, path.name))
            _assert_matches(shown, expected[path.name], path.name)
            assert shown["name"] == path.name and not shown["markup"], "a file name must show as text, never as markup"

        _upload(browser, [broken])
        shown = _shown(_card(browser, broken.name))
        assert shown["state"] == "error" and shown["error"], shown
        assert shown["grade"] is None, "a photo that could not be read must not show a grade"

        _upload(browser, [after_error])  # the page keeps working after an error
        _assert_matches(_shown(_card(browser, after_error.name)), expected[after_error.name], after_error.name)
        cards = browser.find_elements(By.CSS_SELECTOR, '[data-testid="result-card"]')
        assert len(cards) == len(photos) + 2

        # Offline: everything the page loads comes from the service itself (no CDN, no web fonts).
        loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
        assert loaded and all(name.startswith(server) or name.startswith("blob:") for name in loaded), loaded
        # the page, its thumbnails and its calls all fit the service's Content-Security-Policy
        assert _policy_violations(browser) == []

        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "serve_page.png"))

        browser.set_window_size(390, 844)
        overflow = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
        assert overflow[0] <= overflow[1], f"the page is {overflow[0]}px wide in a {overflow[1]}px phone window"
        _save_full_page(browser, ARTIFACTS / "serve_page_phone.png")
    finally:
        browser.set_window_size(1280, 1600)  # the browser is shared by the whole session


def test_the_page_shows_the_model_card(browser, server, trained_run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server}/")
    info = browser.find_element(By.CSS_SELECTOR, '[data-testid="model-info"]')
    WebDriverWait(browser, 10).until(
        lambda _: info.get_attribute("aria-busy") == "false", "the model card never loaded"
    )
    card = browser.find_element(By.CSS_SELECTOR, '[data-testid="model-card"]')
    assert card.is_displayed() and card.get_attribute("open") is None  # folded until asked for
    card.find_element(By.TAG_NAME, "summary").click()
    WebDriverWait(browser, 10).until(lambda _: card.get_attribute("open") is not None)
    body = card.find_element(By.CSS_SELECTOR, ".model-card-body")
    headings = [h.text for h in body.find_elements(By.CSS_SELECTOR, "h3, h4")]
    assert headings[0] == f"Model card: {trained_run.name}" and "Test metrics" in headings
    rows = [
        [c.text for c in row.find_elements(By.CSS_SELECTOR, "th, td")] for row in body.find_elements(By.TAG_NAME, "tr")
    ]
    assert ["split", "images", "2L", "L", "M", "S", "2S", "BL", "BM", "BS", "C"] in rows
    assert any(row[:2] == ["test", "18"] for row in rows)
    items = [li.text for li in body.find_elements(By.TAG_NAME, "li")]
    assert any(item.startswith("Source: synthetic cucumbers") for item in items)
    assert body.find_elements(By.TAG_NAME, "code"), "`imgrade evaluate ...` shows as code"
    # markup in a card (a data set named <b>...</b>) stays text
    tags = browser.execute_script(
        "const nodes = window.imgradeMarkdown.render('# <b>bold</b>\\n\\n| a | <i>x</i> |\\n|---|---|\\n- <img src=x>');"
        "const box = document.createElement('div'); box.append(...nodes);"
        "return [box.querySelectorAll('b, i, img').length, box.textContent];"
    )
    assert tags[0] == 0 and "<b>bold</b>" in tags[1] and "<img src=x>" in tags[1]


def test_the_page_is_served_with_a_policy_the_browser_enforces(browser, server):
    """Script that is not one of the page's files is refused and reported (so the check above can fail)."""
    browser.get(f"{server}/")
    _policy_violations(browser)
    ran = browser.execute_script(
        "window.inlineRan = false;"
        "const script = document.createElement('script'); script.textContent = 'window.inlineRan = true';"
        "document.head.append(script); return window.inlineRan;"
    )
    assert ran is False, "an inline script ran on the page"
    violations = _policy_violations(browser)
    assert len(violations) == 1 and "script-src 'self'" in violations[0], violations
