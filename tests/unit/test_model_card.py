"""The model card's Markdown from a hand-made dict, and names instead of paths."""

import copy

import pytest

from imgrade.core.names import without_paths
from imgrade.evaluation.card import render_model_card

GRADES = ["L", "M", "S"]


def _ordinal_card() -> dict:
    per_grade = {
        "L": {"n": 12, "mae": 0.25, "mean_error": -0.125, "precision": 0.9, "recall": 0.75, "f1": 0.818},
        "M": {"n": 4, "mae": 0.5, "mean_error": 0.5, "precision": 0.4, "recall": 0.5, "f1": 0.444},
        "S": {"n": 0, "mae": None, "mean_error": None, "precision": 0.0, "recall": None, "f1": None},
    }
    return {
        "name": "p1",
        "imgrade_version": "9.9",
        "data": {
            "source": "CUCUMBER-9 prototype 1 (folder cucumber-9)",
            "n": 40,
            "image_size": [32, 32],
            "view": "above",
            "grades": GRADES,
            "counts": {"L": 20, "M": 12, "S": 8},
            "split_rule": "auto",
            "split": {
                "train": {"n": 16, "counts": {"L": 6, "M": 6, "S": 4}},
                "val": {"n": 8, "counts": {"L": 2, "M": 2, "S": 4}},
                "test": {"n": 16, "counts": {"L": 12, "M": 4, "S": 0}},
            },
        },
        "recipe": {
            "task": "coral",
            "network": "ResNet v2 depth 11",
            "epochs": 3,
            "seed": 1,
            "tta": False,
            "pretrained": "weights|v2.pt",
            "init": None,
            "ensemble": {"members": 3, "seeds": [3, 4, 5]},
        },
        "test": {
            "n": 16,
            "accuracy": 0.6875,
            "within1": 1.0,
            "grade_mae": 0.3125,
            "qwk": 0.5,
            "mae": 0.3125,
            "rmse": 0.4,
            "per_grade": per_grade,
            "decisions": {"used": "tuned thresholds"},
            "grade_sets": {
                "coverage": 0.9375,
                "mean_size": 1.5,
                "per_grade": {
                    "L": {"n": 12, "coverage": 1.0, "mean_size": 1.25},
                    "M": {"n": 4, "coverage": 0.75, "mean_size": 2.25},
                    "S": {"n": 0, "coverage": None, "mean_size": None},
                },
            },
        },
        "calibration": {
            "rule": "tuned cut points",
            "cut_points": [0.4, 1.6],
            "reason": "tuned cut points scored QWK 0.6 out of fold vs 0.5",
            "objective": "qwk",
            "folds": 5,
            "grade_sets": {"kind": "aps", "alpha": 0.1, "n": 8},
        },
    }


def _sections(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def test_an_ordinal_card_has_every_section_and_the_figures_it_was_given():
    text = render_model_card(_ordinal_card())
    assert _sections(text) == [
        "# Model card: p1",
        "## Data",
        "## Recipe",
        "## Test metrics",
        "## Calibration",
        "## Intended use and limits",
    ]
    assert "an ensemble of 3 ResNet v2 depth 11 networks" in text and "imgrade 9.9" in text
    # the split per grade, and every image once
    assert "| split | images | L | M | S |" in text
    assert "| test | 16 | 12 | 4 | 0 |" in text and "| all | 40 | 20 | 12 | 8 |" in text
    assert "| ensemble | 3 members (seeds 3, 4, 5), graded by their average |" in text
    assert "| started from | none |" in text and "| test-time augmentation | no |" in text
    # the calibrated decision's metrics, then per grade with the grade sets' coverage
    assert "decision: tuned thresholds" in text
    assert "| 0.688 | 1.000 | 0.312 | 0.500 | 0.312 | 0.400 |" in text
    assert "| L | 12 | 0.750 | 0.900 | 0.250 | -0.125 | 1.000 | 1.25 |" in text
    assert "| S | 0 | - | 0.000 | - | - | - | - |" in text
    assert "- Decision: tuned cut points at 0.400, 1.600" in text
    assert "alpha 0.1 (each set should hold the true grade 90% of the time), fitted on 8 images" in text
    assert "coverage 0.938, mean size 1.50 grades" in text
    # a pipe in a name cannot break a table, and the limits name what the figures rest on
    assert "| pretrained weights | weights\\|v2.pt |" in text
    assert "Fewer than 10 test images for M, S" in text and "The test split holds 16 images" in text
    assert "It can only answer one of L, M, S" in text


def test_a_continuous_target_has_its_range_and_no_calibration():
    card = _ordinal_card()
    card["data"] = {
        "source": "CSV manifest attributes.csv",
        "n": 60,
        "image_size": [32, 32],
        "target": {"min": 10.0, "max": 35.5, "mean": 20.0},
        "split": {"train": {"n": 36}, "val": {"n": 12}, "test": {"n": 12}},
    }
    card["recipe"] = {"task": "regression", "network": "ResNet v2 depth 11", "ensemble": None}
    card["test"] = {"n": 12, "mae": 1.5, "rmse": 2.0, "r2": 0.75, "pearson": None}
    card["calibration"] = None
    text = render_model_card(card)
    assert "## Calibration" not in _sections(text)
    assert "| MAE | RMSE | R2 | Pearson |" in text and "| 1.500 | 2.000 | 0.750 | - |" in text
    assert "range 10 to 35.5 (mean 20)" in text
    assert "targets from 10 to 35.5: predictions outside that range are extrapolation" in text
    assert "| test | 12 |" in text and "ensemble" not in text


def test_an_empty_test_split_and_an_uncalibrated_run_say_so():
    card = _ordinal_card()
    card["test"], card["calibration"] = None, None
    text = render_model_card(card)
    assert "Not measured: the test split is empty" in text
    assert "Not calibrated: grades come from the head's own rule" in text


def test_rendering_reads_nothing_but_the_dict():
    card = _ordinal_card()
    before = copy.deepcopy(card)
    assert render_model_card(card) == render_model_card(copy.deepcopy(card))
    assert card == before


@pytest.mark.parametrize(
    "text, paths, expected",
    [
        (
            "CUCUMBER-9 prototype 1 (folder /home/x/data/cucumber-9-python)",
            [],
            "CUCUMBER-9 prototype 1 (folder cucumber-9-python)",
        ),
        ("class folders /mnt/my photos/set", ["/mnt/my photos/set"], "class folders set"),
        (
            "CSV manifest /data/a.csv; synthetic cucumbers (seed 1)",
            [None],
            "CSV manifest a.csv; synthetic cucumbers (seed 1)",
        ),
        (
            "split 80/10/10 of runs/p1, see https://example.org/x",
            [],
            "split 80/10/10 of runs/p1, see https://example.org/x",
        ),
        ("weights D:\\models\\resnet.pt", [], "weights resnet.pt"),
    ],
)
def test_absolute_paths_become_their_names(text, paths, expected):
    assert without_paths(text, paths) == expected
