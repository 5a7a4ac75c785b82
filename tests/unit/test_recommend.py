import pytest

from imgrade.core.errors import ConfigError
from imgrade.evaluation.comparison import recommend


def entry(name, qwk, accuracy, grade_mae, member=False, **extra):
    row = {"formulation": name, "qwk": qwk, "accuracy": accuracy, "grade_mae": grade_mae, **extra}
    if name != "regression, rounding":
        row |= {"qwk_diff": qwk - 0.800, "accuracy_diff": accuracy - 0.500, "grade_mae_diff": grade_mae - 0.700}
    return row | ({"member": True} if member else {})


# The reference, one recipe best by qwk, one by accuracy, one by grade MAE, and an ensemble member
# that beats them all (members are shown, never recommended).
SUMMARY = [
    entry("regression, rounding", 0.800, 0.500, 0.700),
    entry("corn, own rule", 0.860, 0.480, 0.690),
    entry("classification, own rule", 0.780, 0.560, 0.720),
    entry("coral, calibrated", 0.820, 0.530, 0.600),
    entry("corn+ensemble=3 member, own rule", 0.990, 0.990, 0.010, member=True),
]


def test_qwk_picks_the_best_qwk_and_names_the_most_exact_one_too():
    line = recommend(SUMMARY, "qwk")
    assert line == (
        "use corn, own rule: qwk 0.860, accuracy 0.480 (paired gain over regression, rounding: qwk +0.060, accuracy -0.020); "
        "for the most exact grades use classification, own rule: accuracy 0.560, qwk 0.780"
    )
    assert recommend(SUMMARY) == line  # the default


def test_accuracy_and_mae_pick_their_own_best():
    assert recommend(SUMMARY, "accuracy").startswith(
        "use classification, own rule: accuracy 0.560, qwk 0.780 (paired gain"
    )
    assert recommend(SUMMARY, "accuracy").endswith("; by qwk the best is corn, own rule: qwk 0.860, accuracy 0.480")
    # grade MAE: lower is better; coral's 0.600 beats the reference's 0.700 by 0.100
    assert recommend(SUMMARY, "mae").startswith(
        "use coral, calibrated: grade MAE 0.600, qwk 0.820 (paired gain over regression, rounding: grade MAE -0.100, qwk +0.020)"
    )


def test_both_takes_a_formulation_that_wins_both_when_there_is_one():
    winner = SUMMARY[:3] + [entry("coral, calibrated", 0.860, 0.560, 0.650)]
    assert recommend(winner, "both").startswith(
        "use coral, calibrated, at least as good as every other on qwk and accuracy: qwk 0.860"
    )


def test_both_without_a_winner_takes_the_best_worst_rank_among_the_unbeaten():
    # ranks by qwk: corn 1, coral 2, regression 3, classification 4
    # ranks by accuracy: classification 1, coral 2, regression 3, corn 4
    # regression is beaten on both by coral; of the unbeaten, worst ranks are corn 4, classification 4, coral 2
    line = recommend(SUMMARY, "both")
    assert line.startswith(
        "no formulation is best on both qwk and accuracy; use coral, calibrated, the best compromise "
        "(rank 2 by qwk and 2 by accuracy of 4): qwk 0.820, accuracy 0.530"
    )
    assert line.endswith("also unbeaten on both: corn, own rule, classification, own rule")


def test_differences_below_three_decimals_are_ties_broken_by_the_other_metric():
    summary = [entry("regression, rounding", 0.8001, 0.50, 0.7), entry("corn, own rule", 0.8004, 0.40, 0.7)]
    assert recommend(summary, "qwk").startswith("use regression, rounding:")


def test_undefined_or_unknown_metric():
    assert recommend([entry("regression, rounding", 0.8, 0.5, 0.7) | {"qwk": None}], "qwk").startswith(
        "no formulation produced a defined qwk"
    )
    with pytest.raises(ConfigError, match="--metric 'f1' is not one of qwk, accuracy, mae, both"):
        recommend(SUMMARY, "f1")
