"""The HTML report opened in a real headless Chromium: text, tables and every embedded picture render."""

import json
from pathlib import Path

import numpy as np

from imgrade.evaluation import html as report
from imgrade.evaluation.boxes import plot_metric_boxes
from imgrade.evaluation.gallery import GalleryPhotos, gallery_blocks
from imgrade.evaluation.plots import plot_error_violin, plot_scatter

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
NAMES = ["2L", "L", "M", "S", "2S"]


def _write_pictures(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, len(NAMES), size=60).astype(np.float64)
    scores = y_true + rng.normal(0.0, 0.4, size=len(y_true))
    paths = {name: folder / f"{name}.png" for name in ("scatter", "violin", "boxes")}
    plot_scatter(y_true, scores, NAMES, paths["scatter"])
    plot_error_violin(y_true, scores, NAMES, paths["violin"])
    results = {
        name: {"qwk": list(rng.normal(0.8 + 0.03 * k, 0.02, 3)), "mae": list(rng.normal(0.5 - 0.04 * k, 0.03, 3))}
        for k, name in enumerate(["regression", "classification", "ordinal"])
    }
    plot_metric_boxes(results, ["qwk", "mae"], paths["boxes"], reference="regression")
    return paths


def test_report_renders_in_a_real_browser(browser, tmp_path):
    pictures = _write_pictures(tmp_path)
    blocks = [
        report.heading("Test metrics"),
        report.text("Three formulations over three seeds on generated cucumbers."),
        report.table(
            ["formulation", "mae", "qwk", "n"],
            [["regression", 0.5123, 0.801, 60], ["ordinal", 0.4321, None, 60]],
            caption="Mean over seeds",
            highlight_row=0,
        ),
        report.kv({"epochs": 2, "lr": 0.001}, caption="Training"),
        report.heading("Charts"),
        report.image(pictures["scatter"], "Predicted vs true"),
        report.image(pictures["violin"], "Error per grade"),
        report.image(pictures["boxes"], "Metrics across seeds"),
        report.pre("model:\n  head: ordinal\n", caption="config.yaml"),
    ]
    page = report.write_report(tmp_path / "report.html", "Comparison <run 7>", blocks, subtitle="3 seeds")

    from selenium.webdriver.common.by import By  # here, so a missing selenium skips (or fails on CI) in the fixture

    browser.get(page.as_uri())

    assert browser.title == "Comparison <run 7>"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Comparison <run 7>"
    first_row = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "tbody tr.highlight td")]
    assert first_row == ["regression", "0.512", "0.801", "60"]
    assert browser.find_element(By.XPATH, "//tbody/tr[2]/td[3]").text == "-"

    images = browser.execute_script(
        "return Array.from(document.images,"
        " im => [im.id, im.complete, im.naturalWidth, im.getBoundingClientRect().top]);"
    )
    assert [image[0] for image in images] == ["predicted-vs-true", "error-per-grade", "metrics-across-seeds"]
    for element_id, complete, natural_width, _ in images:
        assert complete and natural_width > 100, f"<img id={element_id}> did not decode: naturalWidth {natural_width}"
    assert images[0][3] == images[1][3], "the first two pictures should sit side by side on a 1280px window"

    # Data URIs are not fetched, so a self-contained page records no resource loads at all.
    assert browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);") == []

    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "report.png"))


def test_the_report_of_a_real_run_and_comparison_render(browser, tmp_path):
    """imgrade train -> evaluate -> compare on generated cucumbers; both report.html pages open and render."""
    from selenium.webdriver.common.by import By

    from imgrade.cli import main

    data = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(data), "--n", "60"]) == 0
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--task",
                "classification",
                "--epochs",
                "1",
                "--depth",
                "11",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    assert main(["evaluate", str(run)]) == 0
    assert (
        main(
            [
                "compare",
                "--data",
                str(data),
                "--tasks",
                "regression,corn",
                "--seeds",
                "1",
                "--epochs",
                "1",
                "--depth",
                "11",
                "--out",
                str(tmp_path / "cmp"),
            ]
        )
        == 0
    )
    for page, expected_images in ((run / "eval-test" / "report.html", 4), (tmp_path / "cmp" / "report.html", 1)):
        browser.get(page.as_uri())
        assert browser.title.startswith("imgrade")
        widths = browser.execute_script(
            "return Array.from(document.querySelectorAll('.figures img'), i => i.complete ? i.naturalWidth : 0)"
        )
        assert len(widths) == expected_images and all(w > 100 for w in widths), (page, widths)
        assert browser.find_elements(By.CSS_SELECTOR, "table tbody tr")
    # the evaluation's gallery: every test photo of this small run, each loaded at its 32 px
    browser.get((run / "eval-test" / "report.html").as_uri())
    split = json.loads((run / "split.json").read_text())
    widths = browser.execute_script(
        "return Array.from(document.querySelectorAll('section.grade img'), i => i.complete ? i.naturalWidth : 0)"
    )
    assert widths == [32] * len(split["test"])  # 12 test photos, fewer than 8 in any grade
    browser.get((run / "eval-test" / "report.html").as_uri())
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "run_report.png"))


def test_gallery_photos_load_and_a_confusion_cell_leads_to_its_photos(browser, tmp_path):
    """Each grade's worst photos decode at their size and show 3x larger; clicking a count scrolls to its photos."""
    from selenium.webdriver.common.by import By

    rng = np.random.default_rng(3)
    y_true = np.repeat(np.arange(len(NAMES)), [12, 3, 7, 0, 9])  # 2L has more photos than the cap, S none
    predicted = np.clip(y_true + rng.integers(-1, 2, len(y_true)), 0, len(NAMES) - 1)
    predicted[:4] = 2  # four 2L photos graded M: two grades off
    images = rng.integers(0, 255, (len(y_true), 32, 32, 3), dtype=np.uint8)
    photos = GalleryPhotos(images, [f"p{i}.png" for i in range(len(y_true))], y_true, predicted + 0.3, predicted, 5)
    blocks = [report.heading("Metrics"), report.text("before the gallery"), *gallery_blocks(photos, NAMES)]
    blocks += [report.heading("Configuration"), report.pre("model: {}\n" * 80, caption="config.yaml")]
    page = report.write_report(tmp_path / "report.html", "gallery", blocks)

    browser.get(page.as_uri())
    loaded = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure.photo img'),"
        " i => [i.complete, i.naturalWidth, Math.round(i.getBoundingClientRect().width)]);"
    )
    assert loaded and all(item == [True, 32, 96] for item in loaded), loaded
    per_grade = browser.execute_script(
        "return Array.from(document.querySelectorAll('section.grade'),"
        " s => [s.dataset.grade, s.querySelectorAll('figure.photo img').length]);"
    )
    assert per_grade == [["2L", 5], ["L", 3], ["M", 5], ["S", 0], ["2S", 5]]

    link = browser.find_element(By.CSS_SELECTOR, 'table.confusion a[href="#cell-0-2"]')
    assert link.text == "4"
    assert browser.execute_script("return window.scrollY") == 0
    link.click()
    target = browser.execute_script(
        "const s = document.querySelector('section.cell:target'); const r = s.getBoundingClientRect();"
        " return [s.id, Math.round(r.top), window.innerHeight,"
        " Array.from(s.querySelectorAll('figure.photo'), f => [f.dataset.true, f.dataset.predicted])];"
    )
    section, top, height, cards = target
    assert section == "cell-0-2" and 0 <= top < height / 4, target  # scrolled to the top of the window
    assert cards == [["2L", "M"]] * 4
    heading = browser.find_element(By.CSS_SELECTOR, "#cell-0-2 h3").text
    assert heading.startswith("true 2L, graded M: all 4 photos"), heading
