"""compare with --recipes: config changes per formulation, corrected t-test over folds, ensemble members."""

import csv
import json
import shutil

import numpy as np
import pytest
import yaml

from imgrade.cli import main
from imgrade.config import DataConfig, RunConfig
from imgrade.data.loader import load_dataset
from imgrade.evaluation.comparison import summarise
from imgrade.evaluation.metrics import compared
from imgrade.pipeline.comparer import score_recipe_run
from imgrade.pipeline.recipe import parse_recipe


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_compare_recipes_over_folds_name_the_formulations_and_use_the_corrected_ttest(synth_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                "--data",
                str(synth_dir),
                "--recipes",
                "regression,classification+class-weight=balanced",
                "--folds",
                "2",
                "--seeds",
                "1",
                "--epochs",
                "1",
                "--depth",
                "11",
                "--metric",
                "both",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "corrected resampled t-test of Nadeau and Bengio" in printed
    last = printed.strip().splitlines()[-1]
    assert "at least as good as every other on qwk and accuracy" in last or last.startswith(
        "no formulation is best on both"
    )
    rows = _csv(out / "results.csv")
    assert {r["formulation"] for r in rows} == {
        "regression, rounding",
        "regression, calibrated",
        "classification+class-weight=balanced, own rule",
        "classification+class-weight=balanced, calibrated",
    }
    # each row carries its split's sizes; the two folds split 90 images into disjoint test sets
    assert sum(int(r["n_test"]) for r in rows if r["formulation"] == "regression, rounding") == 90
    run = out / "runs" / "classification+class-weight=balanced-fold1"
    split = json.loads((run / "split.json").read_text())
    fold1 = [r for r in rows if r["fold"] == "1"]
    assert {(int(r["n_train"]), int(r["n_test"])) for r in fold1} == {(len(split["train"]), len(split["test"]))}
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train"]["class_weight"] == "balanced" and config["model"]["task"] == "classification"
    assert (
        yaml.safe_load((out / "runs" / "regression-fold1" / "config.yaml").read_text())["train"]["class_weight"]
        == "none"
    )
    summary = {r["formulation"]: r for r in _csv(out / "summary.csv")}
    calibrated = summary["classification+class-weight=balanced, calibrated"]
    assert calibrated["qwk_pairs"] == "2" and float(calibrated["qwk_diff_se"]) >= 0
    assert "| classification+class-weight=balanced, own rule |" in printed


def test_a_bad_recipe_fails_before_any_training(synth_dir, tmp_path, capsys):
    out = tmp_path / "bad"
    assert (
        main(
            [
                "compare",
                "--data",
                str(synth_dir),
                "--recipes",
                "regression,corn+class-weigth=balanced",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert (
        "recipe 'corn+class-weigth=balanced': unknown key 'class_weigth'; the closest key is 'class_weight'"
        in capsys.readouterr().err
    )
    assert not (out / "runs").exists()
    assert (
        main(["compare", "--data", str(synth_dir), "--recipes", "regression", "--tasks", "corn", "--out", str(out)])
        == 2
    )
    assert "give --recipes or --tasks, not both" in capsys.readouterr().err


@pytest.fixture(scope="module")
def two_runs(synth_dir, tmp_path_factory):
    """Two tiny regression runs (seeds 3 and 5) on the synthetic set."""
    root = tmp_path_factory.mktemp("members")
    for seed in (3, 5):
        assert (
            main(
                [
                    "train",
                    "--data",
                    str(synth_dir),
                    "--epochs",
                    "1",
                    "--depth",
                    "11",
                    "--seed",
                    str(seed),
                    "--out",
                    str(root / f"seed{seed}"),
                ]
            )
            == 0
        )
    return root / "seed3", root / "seed5"


def test_an_ensemble_runs_members_are_scored_as_rows_of_their_own(synth_dir, two_runs, tmp_path):
    first, second = two_runs
    ensemble = tmp_path / "ensemble"
    shutil.copytree(first, ensemble)  # stands in for the ensemble's own combined model
    shutil.copytree(first, ensemble / "members" / "m0")
    shutil.copytree(second, ensemble / "members" / "m1")
    test_set = load_dataset(DataConfig(path=str(synth_dir))).subset(np.arange(0, 90, 3))
    recipe = parse_recipe("regression")
    rows = score_recipe_run(ensemble, test_set, recipe, fold=0, seed=0, seconds=1.5)
    assert [r["formulation"] for r in rows] == [
        "regression, rounding",
        "regression, calibrated",
        "regression member, rounding",
        "regression member, calibrated",
        "regression member, rounding",
        "regression member, calibrated",
    ]
    assert [r["seed"] for r in rows] == [0, 0, 3, 3, 5, 5]  # a member's seed comes from its config.yaml
    assert all(r["run_seed"] == 0 for r in rows)  # members pair with the ensemble's resample
    assert [r["train_seconds"] for r in rows] == [1.5, 1.5, None, None, None, None]
    assert all(set(r) == set(rows[0]) for r in rows)
    # each member row is what its run scores on its own
    for member, own in ((first, rows[2:4]), (second, rows[4:6])):
        alone = score_recipe_run(member, test_set, recipe, fold=0, seed=0, seconds=None)
        assert [r["qwk"] for r in alone] == [r["qwk"] for r in own] and [r["accuracy"] for r in alone] == [
            r["accuracy"] for r in own
        ]
    assert rows[2]["accuracy"] != rows[4]["accuracy"] or rows[2]["mae"] != rows[4]["mae"]  # two different networks

    result = summarise(rows, tmp_path / "cmp", RunConfig(), recipes=["regression"], seeds=1, folds=0)
    member = next(s for s in result["summary"] if s["formulation"] == "regression member, calibrated")
    assert member["runs"] == 2 and member["qwk_pairs"] == 1
    assert member["accuracy_diff"] == pytest.approx(
        (rows[3]["accuracy"] + rows[5]["accuracy"]) / 2 - rows[0]["accuracy"]
    )


def test_a_comparison_without_regression_still_writes_its_tables_plot_and_report(tmp_path):
    rows = [
        {
            "formulation": f"{recipe}, own rule",
            "recipe": recipe,
            "task": "corn",
            "decision": "own rule",
            "fold": 0,
            "seed": seed,
            "run_seed": seed,
            "tta": False,
            "thresholds": "own",
            **{m: 0.5 + 0.1 * seed + (0.05 if recipe == "corn+amp=bf16" else 0.0) for m in compared()},
            "train_seconds": 1.0,
            "n_train": 60,
            "n_test": 20,
        }
        for recipe in ("corn+amp=off", "corn+amp=bf16")
        for seed in (0, 1)
    ]
    result = summarise(rows, tmp_path / "cmp", RunConfig(), recipes=["corn+amp=off", "corn+amp=bf16"], seeds=2, folds=0)
    assert [s["formulation"] for s in result["summary"]] == ["corn+amp=off, own rule", "corn+amp=bf16, own rule"]
    assert (tmp_path / "cmp" / "boxes.png").stat().st_size > 10_000
    assert "no gains: no regression, rounding runs to pair against" in (tmp_path / "cmp" / "summary.md").read_text()
    assert "corn+amp=bf16" in (tmp_path / "cmp" / "report.html").read_text()
