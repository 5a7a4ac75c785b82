"""The HTML report opened in a real headless Chromium: text, tables and every embedded picture render."""

from pathlib import Path

import numpy as np

from imgrade.evaluation import html as report
from imgrade.evaluation.boxes import plot_metric_boxes
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
        widths = browser.execute_script("return Array.from(document.images, i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) == expected_images and all(w > 100 for w in widths), (page, widths)
        assert browser.find_elements(By.CSS_SELECTOR, "table tbody tr")
    browser.get((run / "eval-test" / "report.html").as_uri())
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "run_report.png"))
