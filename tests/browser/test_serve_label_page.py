"""The labelling view of ``imgrade serve --label``: a real server on loopback, a real headless
Chromium clicking grades, and ``imgrade train`` on the labels it wrote."""

import csv
import os
from pathlib import Path

from PIL import Image

from imgrade.cli import main
from imgrade.data.synthetic import GRADE_NAMES, generate_cucumbers
from imgrade.runtime import load_grader

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LABELLED_BEFORE = 21  # rows LABELS.csv starts with: with the three clicked, enough to split for training
TO_CLICK = 3
WAIT_S = 60


def _photos(folder: Path) -> tuple[Path, Path]:
    """pool/photoK.png, TO_LABEL.csv listing them all (as ``imgrade suggest`` writes it), and
    labels.csv beside it with the first LABELLED_BEFORE labelled with their true grades."""
    synthetic = generate_cucumbers(LABELLED_BEFORE + TO_CLICK, seed=11).imageset
    (folder / "pool").mkdir()
    to_label = ["path,target,suggested"]
    labels = ["path,target"]
    for k, (image, target) in enumerate(zip(synthetic.images, synthetic.targets)):
        Image.fromarray(image).save(folder / "pool" / f"photo{k}.png")
        to_label.append(f"pool/photo{k}.png,,{GRADE_NAMES[int(target)]}")
        if k < LABELLED_BEFORE:
            labels.append(f"pool/photo{k}.png,{GRADE_NAMES[int(target)]}")
    (folder / "to_label.csv").write_text("\n".join(to_label) + "\n")
    (folder / "labels.csv").write_text("\n".join(labels) + "\n")
    return folder / "to_label.csv", folder / "labels.csv"


def _console_errors(browser) -> list[str]:
    """The console's errors since the last call (failed requests and policy violations included)."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_labelling_three_photos_by_clicking_gives_a_set_train_reads(
    browser, trained_run, imgrade_serve, tmp_path, tmp_path_factory
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    to_label, labels = _photos(tmp_path)
    grades = load_grader(trained_run, device="cpu").grade_names
    env = {k: v for k, v in os.environ.items() if k != "IMGRADE_TOKEN"}
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with imgrade_serve(trained_run, log, "--label", str(to_label), env=env) as url:
        _console_errors(browser)  # what earlier tests left in the console
        browser.get(f"{url}/")
        view = browser.find_element(By.CSS_SELECTOR, '[data-testid="label-view"]')
        progress = browser.find_element(By.CSS_SELECTOR, '[data-testid="label-progress"]')
        hint = browser.find_element(By.CSS_SELECTOR, '[data-testid="label-hint"]')

        def ready(labelled: int) -> None:
            """Wait until the view shows ``labelled`` done and the next photo with its hint."""
            expected = f"{labelled} of {LABELLED_BEFORE + TO_CLICK} labelled"
            WebDriverWait(browser, WAIT_S).until(
                lambda _: (
                    view.get_attribute("data-state") == "ready"
                    and progress.text == expected
                    and "…" not in hint.text
                    and browser.execute_script("return document.getElementById('label-img').naturalWidth") > 0
                ),
                f"the labelling view never showed {expected!r} with its photo and hint",
            )

        ready(LABELLED_BEFORE)
        buttons = view.find_elements(By.CSS_SELECTOR, '[data-testid="label-button"]')
        assert [b.get_attribute("data-grade") for b in buttons] == grades  # the model's grades, in order
        assert (
            view.find_element(By.CSS_SELECTOR, '[data-testid="label-path"]').text == f"pool/photo{LABELLED_BEFORE}.png"
        )
        assert any(grade in hint.text for grade in grades), hint.text  # the model's grade as a hint
        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "serve_label_page.png"))
        try:
            browser.set_window_size(390, 844)
            width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];")
            assert width[0] <= width[1], f"the labelling view is {width[0]}px wide in a {width[1]}px phone window"
            assert browser.save_screenshot(str(ARTIFACTS / "serve_label_page_phone.png"))
        finally:
            browser.set_window_size(1280, 1600)  # the browser is shared by the whole session

        # a click, then an undo (key U) brings the same photo back
        buttons[0].click()
        ready(LABELLED_BEFORE + 1)
        browser.find_element(By.TAG_NAME, "body").send_keys("u")
        ready(LABELLED_BEFORE)
        assert view.get_attribute("data-index") == str(LABELLED_BEFORE)

        clicked = []
        for k in range(TO_CLICK):
            index = int(view.get_attribute("data-index"))
            grade = grades[(2 * k + 1) % len(grades)]
            if k == TO_CLICK - 1:  # the last one by its key, 1 to 9
                browser.find_element(By.TAG_NAME, "body").send_keys(str(grades.index(grade) + 1))
            else:
                view.find_element(By.CSS_SELECTOR, f'[data-testid="label-button"][data-grade="{grade}"]').click()
            clicked.append([f"pool/photo{index}.png", grade])
            if k < TO_CLICK - 1:
                ready(LABELLED_BEFORE + k + 1)
        WebDriverWait(browser, WAIT_S).until(
            lambda _: browser.find_element(By.CSS_SELECTOR, '[data-testid="label-done"]').is_displayed(),
            "the view never said every photo is labelled",
        )
        assert progress.text == f"{LABELLED_BEFORE + TO_CLICK} of {LABELLED_BEFORE + TO_CLICK} labelled"
        assert _console_errors(browser) == []  # no failed request, no policy violation, no script error

    with labels.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "target"] and len(rows) == 1 + LABELLED_BEFORE + TO_CLICK
    assert rows[-TO_CLICK:] == clicked
    assert (tmp_path / "grades.txt").read_text().split() == grades

    run = tmp_path / "run"
    assert main(["train", "--data", str(labels), "--epochs", "1", "--depth", "11", "--out", str(run)]) == 0
    assert load_grader(run, device="cpu").grade_names == grades  # grades.txt's order, every grade
