"""``imgrade evaluate --gallery N``: per-grade precision and recall, and the photos in report.html, from a real run."""

import csv
import json
import re

import numpy as np

from imgrade.cli import main

GRADES = ["2L", "L", "M", "S", "2S", "BL", "BM", "BS", "C"]


def _cards(page: str, section: str) -> list[tuple[str, str, str]]:
    """(true, predicted, source) of each photo card of the section with this id."""
    body = re.search(rf'<section [^>]*id="{section}"[^>]*>(.*?)</section>', page, re.S).group(1)
    return re.findall(r'<figure class="photo \w+" data-true="([^"]+)" data-predicted="([^"]+)".*?title="([^"]+)"', body)


def test_evaluate_shows_precision_recall_and_the_worst_photos(trained_run, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", str(trained_run), "--out", str(out), "--gallery", "2"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^grade\s+n\s+MAE\s+mean error\s+precision\s+recall\s+F1", printed, re.M), printed

    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    metrics = json.loads((out / "metrics.json").read_text())
    for grade in GRADES:
        truly = [r for r in rows if r["true_grade"] == grade]
        graded = [r for r in rows if r["predicted_grade"] == grade]
        right = sum(r["predicted_grade"] == grade for r in truly)
        entry = metrics["per_grade"][grade]
        assert entry["recall"] == (right / len(truly) if truly else None), grade
        assert entry["precision"] == (right / len(graded) if graded else None), grade

    page = (out / "report.html").read_text()
    for k, grade in enumerate(GRADES):
        truly = [r for r in rows if r["true_grade"] == grade]
        # worst first: the most grades off, then the largest |score - true|
        truly.sort(key=lambda r: (-abs(GRADES.index(r["predicted_grade"]) - k), -abs(float(r["error"]))))
        expected = [(r["true_grade"], r["predicted_grade"], r["image"]) for r in truly[:2]]
        assert _cards(page, f"grade-{k}") == expected, grade
    confusion = np.asarray(metrics["confusion"])
    for t, p in zip(*np.nonzero(confusion)):
        assert f'<a href="#cell-{t}-{p}">{confusion[t, p]}</a>' in page
        cards = _cards(page, f"cell-{t}-{p}")
        assert len(cards) == min(2, confusion[t, p]) and {c[:2] for c in cards} == {(GRADES[t], GRADES[p])}


def test_gallery_zero_leaves_the_photos_out(trained_run, tmp_path):
    assert main(["evaluate", str(trained_run), "--out", str(tmp_path / "eval"), "--gallery", "0"]) == 0
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "Photos it gets wrong" not in page and 'class="photo' not in page
    assert page.count("data:image/png") == 4  # the scatter, the violin, the confusion matrix and the loss curve


def test_negative_gallery_is_refused(trained_run, tmp_path, capsys):
    assert main(["evaluate", str(trained_run), "--out", str(tmp_path / "eval"), "--gallery", "-1"]) == 2
    assert "--gallery -1 is negative" in capsys.readouterr().err
