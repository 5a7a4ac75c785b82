import json
import math
from fractions import Fraction

import numpy as np
import pytest

from imgrade.calibration import (
    MIN_GAP,
    OBJECTIVES,
    Conformal,
    ThresholdChoice,
    apply_thresholds,
    choose_thresholds,
    default_thresholds,
    fit_conformal,
    fit_thresholds,
    has_min_gap,
    min_calibration_size,
    objective_value,
    prediction_sets,
    set_summary,
)
from imgrade.core.errors import CheckpointError, ConfigError, ImgradeError
from imgrade.core.grades import format_set, round_to_grades

K = 5


def shifted(per_grade: int, seed: int):
    """Every grade reads 0.4 high (+-0.3): rounding misgrades a third, cut points near k + 0.9 none."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), per_grade)
    return y, y + 0.4 + rng.uniform(-0.3, 0.3, len(y))


def noise(n: int, seed: int):
    """Scores that know nothing about the grades."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, K, n), rng.uniform(0, K - 1, n)


# ---------------------------------------------------------------- cut points


def test_apply_thresholds_ties_go_up_and_out_of_range_scores_land_in_the_end_grades():
    grades = apply_thresholds([-5.0, 0.4999, 0.5, 1.5, 2.5, 2.5001, 100.0], [0.5, 1.5, 2.5])
    assert grades.tolist() == [0, 0, 1, 2, 3, 3, 3]
    assert grades.dtype == np.int64


def test_default_thresholds_agree_with_round_to_grades():
    assert default_thresholds(3).tolist() == [0.5, 1.5]
    scores = np.concatenate([np.random.default_rng(0).uniform(-2, 7, 500), np.arange(-1, 6, 0.5)])
    assert np.array_equal(apply_thresholds(scores, default_thresholds(K)), round_to_grades(scores, K))


def test_one_grade_has_no_cut_points():
    assert default_thresholds(1).shape == (0,)
    assert apply_thresholds([-3.0, 0.0, 8.0], default_thresholds(1)).tolist() == [0, 0, 0]


def test_apply_thresholds_rejects_descending_cut_points_and_nan_scores():
    with pytest.raises(ImgradeError, match=r"ascending, got \[1.5, 0.5\]"):
        apply_thresholds([1.0], [1.5, 0.5])
    with pytest.raises(ImgradeError, match="1 of 2 scores are NaN"):
        apply_thresholds([1.0, float("nan")], [0.5])


def test_objective_value_by_hand():
    y, pred = [0, 1, 2, 2], [0, 2, 2, 1]
    assert objective_value(y, pred, 3, "qwk") == pytest.approx(7 / 11)
    assert objective_value(y, pred, 3, "accuracy") == 0.5
    assert objective_value(y, pred, 3, "mae") == -0.5
    assert objective_value([2, 2, 2], [2, 2, 2], 3, "qwk") == 0.0  # undefined kappa counts as chance
    with pytest.raises(ConfigError, match="'f1' is not one of qwk, accuracy, mae"):
        objective_value(y, pred, 3, "f1")


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_fit_thresholds_finds_the_known_cut_points_of_a_shifted_model(objective):
    y, scores = shifted(40, seed=0)
    rounding = default_thresholds(K)
    tuned = fit_thresholds(y, scores, K, objective)
    assert tuned.shape == (K - 1,) and np.all(np.diff(tuned) > 0)
    # Grade k reads in [k + 0.1, k + 0.7]: any cut point in (k + 0.7, k + 1.1) grades every image right.
    assert np.all((tuned > np.arange(K - 1) + 0.7) & (tuned < np.arange(K - 1) + 1.1)), tuned
    assert objective_value(y, apply_thresholds(scores, tuned), K, "accuracy") == 1.0
    assert objective_value(y, apply_thresholds(scores, rounding), K, "accuracy") < 0.8
    assert objective_value(y, apply_thresholds(scores, tuned), K, "qwk") > objective_value(
        y, apply_thresholds(scores, rounding), K, "qwk"
    )
    assert np.array_equal(tuned, fit_thresholds(y, scores, K, objective))  # deterministic


def test_fit_thresholds_is_never_worse_than_rounding_and_keeps_it_when_nothing_beats_it():
    y, scores = noise(60, seed=1)
    tuned = fit_thresholds(y, scores, K, "qwk")
    assert np.all(np.diff(tuned) >= 0)
    assert objective_value(y, apply_thresholds(scores, tuned), K, "qwk") >= objective_value(
        y, round_to_grades(scores, K), K, "qwk"
    )
    perfect = fit_thresholds([0, 1, 2, 3, 4], [0.0, 1.1, 1.9, 3.0, 4.2], K, "accuracy")
    assert perfect.tolist() == default_thresholds(K).tolist()


def reachable_grades(thresholds) -> list[int]:
    """The grades that some score reaches: one probe below, between and above the cut points."""
    t = np.asarray(thresholds, dtype=np.float64)
    probes = np.concatenate([[t[0] - 1.0], (t[:-1] + t[1:]) / 2, [t[-1] + 1.0]])
    return sorted(set(apply_thresholds(probes, t).tolist()))


# Grade 1 is rare and its two images read like grade 0 (0.8) and grade 2 (1.9): every objective
# scores best when no image is graded 1, which put both cut points in the gap 0.9..1.3 (at 1.1, 1.1).
RARE_Y = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2]
RARE_SCORES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 1.9, 1.3, 1.6, 1.7, 2.0, 2.1, 2.2]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_fit_thresholds_keeps_a_rare_grade_reachable_instead_of_collapsing_two_cut_points(objective):
    tuned = fit_thresholds(RARE_Y, RARE_SCORES, 3, objective)
    assert has_min_gap(tuned) and np.all(np.diff(tuned) >= MIN_GAP), tuned
    assert reachable_grades(tuned) == [0, 1, 2]
    # Both cut points share the gap between 0.9 and 1.3 and split it in three: no validation image
    # changes grade, so the objective is that of the collapsed optimum (13 of 14 right).
    assert tuned.tolist() == pytest.approx([0.9 + 0.4 / 3, 0.9 + 0.8 / 3])
    assert objective_value(RARE_Y, apply_thresholds(RARE_SCORES, tuned), 3, "accuracy") == pytest.approx(12 / 14)
    # The gap is too narrow when grade 2's lowest image reads 0.95 (0.9..0.95 holds one cut point, not
    # two): the fit then moves a cut point elsewhere, still MIN_GAP apart and never worse than rounding.
    scores = [0.95 if s == 1.3 else s for s in RARE_SCORES]
    narrow = fit_thresholds(RARE_Y, scores, 3, objective)
    assert has_min_gap(narrow) and reachable_grades(narrow) == [0, 1, 2], narrow
    assert objective_value(RARE_Y, apply_thresholds(scores, narrow), 3, objective) >= objective_value(
        RARE_Y, apply_thresholds(scores, default_thresholds(3)), 3, objective
    )


def test_every_fitted_cut_point_vector_keeps_the_min_gap_and_every_grade_reachable():
    # Small, noisy, biased, sometimes coarsely rounded scores: before MIN_GAP about a third of these
    # fits put two cut points on one value (seeds 3, 5, 8 and 9).
    for seed in range(12):
        rng = np.random.default_rng(seed)
        k, n = int(rng.integers(2, 10)), int(rng.integers(5, 60))
        y = rng.integers(0, k, n)
        scores = y + rng.normal(0, rng.uniform(0.2, 2.0), n) + rng.uniform(-1, 1)
        if seed % 2:
            scores = np.round(scores, 1)
        for objective in OBJECTIVES:
            tuned = fit_thresholds(y, scores, k, objective)
            assert tuned.shape == (k - 1,)
            if k > 2:
                assert np.all(np.diff(tuned) >= MIN_GAP), (seed, objective, tuned)
            assert reachable_grades(tuned) == list(range(k)), (seed, objective, tuned)
            rounding = apply_thresholds(scores, default_thresholds(k))
            assert objective_value(y, apply_thresholds(scores, tuned), k, objective) >= objective_value(
                y, rounding, k, objective
            )


def test_has_min_gap_rejects_the_reported_collapsed_cut_points():
    assert not has_min_gap([2.362, 2.362, 3.063, 3.361, 3.361, 4.5, 5.5, 6.5])
    assert not has_min_gap([0.5, 0.5 + MIN_GAP / 2])
    assert has_min_gap([0.5, 0.5 + 2 * MIN_GAP, 1.5]) and has_min_gap(default_thresholds(9)) and has_min_gap([0.5])


def test_choose_thresholds_picks_tuned_on_a_shifted_model_and_says_why():
    y, scores = shifted(40, seed=2)
    choice = choose_thresholds(y, scores, K, "qwk", folds=5, seed=0)
    assert choice.kind == "tuned"
    assert choice.cv_tuned > choice.cv_rounding
    assert choice.reason.startswith("using tuned cut points: they scored QWK")
    assert "out of fold" in choice.reason and "(5 folds of 200 validation images)" in choice.reason
    assert choice.thresholds == fit_thresholds(y, scores, K, "qwk").tolist()
    d = json.loads(json.dumps(choice.to_dict(), allow_nan=False))
    assert d["kind"] == "tuned" and d["folds"] == 5 and len(d["thresholds"]) == K - 1


@pytest.mark.parametrize("model", ["pure noise", "unbiased"])
def test_choose_thresholds_keeps_rounding_when_tuning_only_fits_noise(model):
    # Out-of-fold gains are random here, so tuning wins a draw now and then (here 1 of 10 pure-noise
    # draws); the two-standard-error margin keeps that rare instead of a coin flip.
    kept = []
    for seed in range(10):
        if model == "pure noise":
            y, scores = noise(200, seed)
        else:
            rng = np.random.default_rng(seed)
            y = rng.integers(0, K, 200)
            scores = y + rng.normal(0, 0.6, 200)
        choice = choose_thresholds(y, scores, K, "qwk", seed=seed)
        kept.append(choice.kind == "rounding")
        if choice.kind == "rounding":
            assert choice.thresholds == [0.5, 1.5, 2.5, 3.5]
            assert choice.reason.startswith("kept plain rounding: tuned cut points scored QWK")
            assert "for rounding (5 folds of 200 validation images)" in choice.reason
    assert sum(kept) >= 8, kept


def test_choose_thresholds_keeps_rounding_on_tiny_or_single_grade_sets():
    y, scores = shifted(1, seed=0)  # 5 images: the shift is real, but 5 images cannot show it
    tiny = choose_thresholds(y, scores, K, folds=5)
    assert tiny.kind == "rounding" and math.isnan(tiny.cv_tuned)
    assert tiny.reason == (
        "kept plain rounding: 5 validation images are too few to tune cut points "
        "(tuning needs at least 10, 2 per fold for 5 folds)"
    )
    d = tiny.to_dict()
    assert d["cv_tuned"] is None and d["cv_rounding"] is None
    json.dumps(d, allow_nan=False)

    single = choose_thresholds([2] * 30, np.linspace(1.6, 2.4, 30), K)
    assert single.kind == "rounding" and "every validation image has grade 2" in single.reason


def test_choose_thresholds_rejects_one_fold():
    with pytest.raises(ConfigError, match="folds 1 must be at least 2"):
        choose_thresholds([0, 1], [0.0, 1.0], 2, folds=1)


def test_threshold_choice_to_dict_holds_plain_values():
    choice = ThresholdChoice([np.float64(0.9)], "tuned", "mae", np.float64(-0.1), -0.3, 5, "why")
    d = choice.to_dict()
    assert d == {
        "thresholds": [0.9],
        "kind": "tuned",
        "objective": "mae",
        "cv_tuned": -0.1,
        "cv_rounding": -0.3,
        "folds": 5,
        "reason": "why",
    }
    assert all(type(v) in (list, str, float, int) for v in d.values())


# ---------------------------------------------------------------- conformal


def test_min_calibration_size_matches_its_definition():
    assert [min_calibration_size(a) for a in (0.1, 0.05, 0.2, 0.5, 0.9)] == [9, 19, 4, 1, 1]
    for alpha in np.arange(0.01, 0.99, 0.01):
        exact = Fraction(float(alpha)).limit_denominator(1000)
        smallest = next(n for n in range(1, 200) if math.ceil((n + 1) * (1 - exact)) <= n)
        assert min_calibration_size(float(alpha)) == smallest, alpha


def test_interval_qhat_on_nine_images_by_hand():
    y = [0, 1, 2, 3, 4, 0, 1, 2, 3]
    scores = [0.1, 1.5, 2.0, 2.2, 4.3, 0.6, 0.8, 2.05, 3.4]  # |residuals| .1 .5 0 .8 .3 .6 .2 .05 .4
    # n = 9, alpha = 0.1: k = ceil(10 * 0.9) = 9 -> the largest residual.
    c = fit_conformal(y, scores=scores, alpha=0.1)
    assert (c.kind, c.n, c.alpha) == ("interval", 9, 0.1) and c.qhat == pytest.approx(0.8)
    # alpha = 0.3: k = ceil(10 * 0.7) = 7 -> 7th smallest of 0 .05 .1 .2 .3 .4 .5 .6 .8 = 0.5.
    assert fit_conformal(y, scores=scores, alpha=0.3).qhat == pytest.approx(0.5)
    sets = prediction_sets(Conformal("interval", 0.3, 0.5, 9), scores=[2.5, -3.0, 0.7], num_grades=K)
    assert sets.astype(int).tolist() == [[0, 0, 1, 1, 0], [1, 0, 0, 0, 0], [0, 1, 0, 0, 0]]


def test_aps_qhat_on_nine_images_by_hand():
    probabilities = [
        [0.7, 0.2, 0.1],  # true 0: mass 0.7
        [0.7, 0.2, 0.1],  # true 1: 0.7 + 0.2 = 0.9
        [0.1, 0.6, 0.3],  # true 1: 0.6
        [0.1, 0.6, 0.3],  # true 2: 0.9
        [0.2, 0.3, 0.5],  # true 2: 0.5
        [0.2, 0.3, 0.5],  # true 0: 1.0
        [0.5, 0.5, 0.0],  # true 1: tie ranks grade 0 first -> 1.0
        [0.4, 0.4, 0.2],  # true 0: 0.4
        [0.3, 0.3, 0.4],  # true 2: 0.4
    ]
    y = [0, 1, 1, 2, 2, 0, 1, 0, 2]
    # Sorted masses .4 .4 .5 .6 .7 .9 .9 1 1; alpha 0.3 -> 7th smallest = 0.9; alpha 0.5 -> ceil(5) = 5th = 0.7.
    assert fit_conformal(y, probabilities=probabilities, alpha=0.3).qhat == pytest.approx(0.9)
    c = fit_conformal(y, probabilities=probabilities, scores=np.zeros(9), alpha=0.5)
    assert c.kind == "aps" and c.qhat == pytest.approx(0.7)
    sets = prediction_sets(c, probabilities=[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.34, 0.33, 0.33]], num_grades=3)
    # Grades whose mass (own + more likely grades) is <= 0.7: 0.7 | 0.6 (then 0.9) | 0.34, 0.67 (then 1.0).
    assert sets.astype(int).tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]


@pytest.mark.parametrize("alpha", [0, 1, 1.5, -0.1])
def test_alpha_outside_zero_one_is_rejected(alpha):
    with pytest.raises(ImgradeError, match=rf"^--alpha {alpha} must be between 0 and 1 \(exclusive\), e.g. 0.1$"):
        fit_conformal([0] * 20, scores=[0.0] * 20, alpha=alpha)


def test_too_few_calibration_images_says_how_many_are_needed():
    with pytest.raises(
        ImgradeError,
        match="alpha 0.1 needs at least 9 validation images .* got 8: raise --alpha or enlarge the validation split",
    ):
        fit_conformal([0] * 8, scores=[0.0] * 8, alpha=0.1)
    with pytest.raises(ImgradeError, match="at least 19 validation images"):
        fit_conformal([0] * 18, probabilities=[[1.0, 0.0]] * 18, alpha=0.05)
    with pytest.raises(ImgradeError, match="needs scores or probabilities"):
        fit_conformal([0] * 20)


def _softmax_around(latent: np.ndarray, width: float) -> np.ndarray:
    logits = -((np.arange(K)[None, :] - latent[:, None]) ** 2) / (2 * width**2)  # (N, K)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["interval", "aps"])
def test_conformal_sets_cover_one_minus_alpha_over_many_draws(kind):
    rng = np.random.default_rng(123)
    alpha, n_cal, n_test = 0.1, 100, 100
    coverages, sizes = [], []
    for _ in range(200):
        y = rng.integers(0, K, n_cal + n_test)
        scores = y + rng.normal(0, 0.7, len(y))
        inputs = {"scores": scores} if kind == "interval" else {"probabilities": _softmax_around(scores, 0.8)}
        cal = {name: value[:n_cal] for name, value in inputs.items()}
        test = {name: value[n_cal:] for name, value in inputs.items()}
        conformal = fit_conformal(y[:n_cal], alpha=alpha, **cal)
        assert conformal.kind == kind
        sets = prediction_sets(conformal, num_grades=K, **test)
        assert sets.any(axis=1).all()
        summary = set_summary(sets, y[n_cal:], list("ABCDE"))
        coverages.append(summary["coverage"])
        sizes.append(summary["mean_size"])
    # Theory: k / (n + 1) = 91 / 101 = 0.901 <= E[coverage] <= 1 - alpha + 1 / (n + 1) = 0.910.
    assert 1 - alpha - 0.02 <= np.mean(coverages) <= 1 - alpha + 1 / (n_cal + 1) + 0.02
    assert np.mean(sizes) < 3.5  # informative: well below all 5 grades


def test_prediction_sets_are_never_empty():
    interval = prediction_sets(Conformal("interval", 0.1, 0.0, 50), scores=[1.3, 7.0, -2.0], num_grades=3)
    assert interval.astype(int).tolist() == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]
    aps = prediction_sets(Conformal("aps", 0.1, 0.0, 50), probabilities=[[0.2, 0.5, 0.3]], num_grades=3)
    assert aps.astype(int).tolist() == [[0, 1, 0]]


def test_prediction_sets_need_the_input_their_kind_was_fitted_on():
    with pytest.raises(ImgradeError, match="calibrated on grade probabilities"):
        prediction_sets(Conformal("aps", 0.1, 0.9, 50), scores=[1.0], num_grades=3)
    with pytest.raises(ImgradeError, match=r"shape \(1, 2\), expected \(N, 3\)"):
        prediction_sets(Conformal("aps", 0.1, 0.9, 50), probabilities=[[0.5, 0.5]], num_grades=3)
    with pytest.raises(ImgradeError, match="sum to 1"):
        fit_conformal([0] * 10, probabilities=[[0.5, 0.7]] * 10)


def test_conformal_round_trips_through_a_plain_dict():
    c = Conformal("aps", 0.1, np.float64(0.93), 120)
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == {"kind": "aps", "alpha": 0.1, "qhat": 0.93, "n": 120}
    assert Conformal.from_dict(d) == c
    with pytest.raises(CheckpointError, match="lacks \\['qhat'\\]"):
        Conformal.from_dict({"kind": "aps", "alpha": 0.1, "n": 3})
    with pytest.raises(CheckpointError, match="kind 'raps'"):
        Conformal.from_dict({"kind": "raps", "alpha": 0.1, "qhat": 0.9, "n": 3})


# ---------------------------------------------------------------- reporting


def test_set_summary_by_hand():
    sets = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=bool)
    summary = set_summary(sets, [0, 2, 2, 0], ["L", "M", "S"])
    assert summary == {
        "coverage": 0.75,
        "mean_size": 2.0,
        "per_grade": {
            "L": {"n": 2, "coverage": 1.0, "mean_size": 2.5},
            "M": {"n": 0, "coverage": None, "mean_size": None},
            "S": {"n": 2, "coverage": 0.5, "mean_size": 1.5},
        },
    }
    json.dumps(summary, allow_nan=False)
    with pytest.raises(ImgradeError, match=r"shape \(4, 3\) but 2 grades are named"):
        set_summary(sets, [0, 1, 1, 0], ["L", "M"])


def test_format_set():
    assert format_set([False, True, True, True], ["L", "M", "S", "2S"]) == "M|S|2S"
    assert format_set(np.array([1, 0, 0, 0]), ["L", "M", "S", "2S"]) == "L"
    with pytest.raises(ImgradeError, match="3 entries but 4 grades"):
        format_set([True, False, True], ["L", "M", "S", "2S"])
