"""A metric registered in one place shows everywhere: evaluate's console, metrics.json, report.html, compare."""

import csv
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from imgrade.cli import main
from imgrade.evaluation import comparison
from imgrade.evaluation.metrics import METRICS, Metric, Predictions, register_metric, unregister_metric


@pytest.fixture
def within2():
    """Share of images at most two grades off, added to the metric table and nowhere else."""
    metric = register_metric(
        Metric(
            "within2",
            "within-2",
            needs="grades",
            compute=lambda p: float(np.mean(np.abs(p.grades - p.y_true) <= 2)),
            higher_is_better=True,
            description="the share at most two grades off",
            compare="table",
            plotted=True,
        )
    )
    yield metric
    unregister_metric(metric.name)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synth_dir):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--data", str(synth_dir), "--epochs", "1", "--depth", "11", "--out", str(run)]) == 0
    return run


def test_a_registered_metric_is_computed_printed_saved_and_reported(tiny_run, within2, tmp_path, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(tiny_run), "--out", str(tmp_path / "ev")]) == 0
    printed = capsys.readouterr().out.splitlines()
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    with open(tmp_path / "ev" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    grades = list(metrics["per_grade"])
    off = [abs(grades.index(r["predicted_grade"]) - grades.index(r["true_grade"])) for r in rows]
    assert metrics["within2"] == pytest.approx(np.mean(np.array(off) <= 2))
    assert list(metrics)[list(metrics).index("qwk") + 1] == "within2"  # in table order, after the built-in ones
    assert ["within-2", f"{metrics['within2']:.3f}"] in [line.split() for line in printed]
    decisions = next(line for line in printed if line.startswith("grades from"))
    assert decisions.split()[-1] == "within-2" and "within2" in metrics["decisions"][metrics["decisions"]["used"]]
    page = (tmp_path / "ev" / "report.html").read_text()
    assert f'<th scope="row">within-2</th><td class="num">{metrics["within2"]:.3f}</td>' in page
    assert "within-2: the share at most two grades off" in page


def test_a_registered_metric_is_compared_and_plotted(synth_dir, within2, tmp_path, capsys, monkeypatch):
    plotted = []

    def plot_metric_boxes(results, metrics, path, **kwargs):
        plotted.extend(metrics)
        real(results, metrics, path, **kwargs)

    real = comparison.plot_metric_boxes
    monkeypatch.setattr(comparison, "plot_metric_boxes", plot_metric_boxes)
    out = tmp_path / "cmp"
    argv = ["compare", "--data", str(synth_dir), "--tasks", "regression", "--seeds", "1", "--epochs", "1"]
    assert main([*argv, "--depth", "11", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert [float(r["within2"]) >= float(r["within1"]) for r in rows] == [True, True]
    assert [s["within2"] for s in summary] == [r["within2"] for r in rows]  # one run each: its mean
    header = next(line for line in printed.splitlines() if line.startswith("| formulation"))
    assert "| within2 |" in header
    assert '<th scope="col" class="num">within-2</th>' in (out / "report.html").read_text()
    assert "within2" in plotted


def test_the_docs_register_this_metric_as_it_is_here(within2):
    page = (Path(__file__).parents[2] / "docs" / "extending.md").read_text(encoding="utf-8")
    example = re.search(r"## A new metric.*?```python\n(.*?)```", page, re.S).group(1)
    unregister_metric("within2")  # the docs register it again
    exec(example, {})
    documented = METRICS["within2"]
    data = Predictions(np.array([0, 1, 3]), np.array([0.0, 0.0, 0.0]), np.array([0, 0, 0]), 4)
    assert documented.compute(data) == within2.compute(data) == pytest.approx(2 / 3)
    assert replace(documented, compute=len) == replace(within2, compute=len)  # the same row but for the lambda
