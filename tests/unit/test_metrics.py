"""Evaluation metrics and the printed summary, against values computed by hand."""

import json
import math

import numpy as np
import pytest

from imgrade.core.errors import ImgradeError
from imgrade.evaluation.metrics import (
    Metric,
    confusion_matrix,
    continuous_metrics,
    ordinal_metrics,
    precision_recall_f1,
    quadratic_weighted_kappa,
    round_to_grades,
)
from imgrade.evaluation.report import format_metrics_table

# Four samples, four grades, the last grade ("2S") without samples.
NAMES = ["L", "M", "S", "2S"]
Y_TRUE = [0, 1, 2, 2]
SCORES = [0.2, 1.6, 2.4, 0.9]
# errors (score - true) = [0.2, 0.6, 0.4, -1.1]; rounded = [0, 2, 2, 1]


def test_rounding_ties_go_up_and_clip():
    assert round_to_grades([0.5, 1.5, 2.5, -0.5, 0.4999], 4).tolist() == [1, 2, 3, 0, 0]
    assert round_to_grades([-3.0, 3.49, 3.5, 100.0], 4).tolist() == [0, 3, 3, 3]
    assert round_to_grades(np.array([[0.6]]), 2).dtype == np.int64


def test_rounding_rejects_nan_scores():
    with pytest.raises(ImgradeError, match="1 of 3 scores are NaN"):
        round_to_grades([0.0, np.nan, 1.0], 3)


def test_confusion_matrix_rows_true_columns_predicted():
    confusion = confusion_matrix([0, 0, 1, 2], [1, 1, 1, 0], 3)
    assert confusion.tolist() == [[0, 2, 0], [0, 1, 0], [1, 0, 0]]
    assert confusion.sum() == 4


def test_confusion_matrix_accepts_integral_floats_and_names_a_bad_index():
    assert confusion_matrix(np.array([0.0, 2.0], dtype=np.float32), [0, 2], 3).trace() == 2
    with pytest.raises(ImgradeError, match="grade index 9 but only 9 grades"):
        confusion_matrix([0, 9], [0, 0], 9)
    with pytest.raises(ImgradeError, match="whole grade indices, found 1.5"):
        confusion_matrix([0, 1.5], [0, 0], 3)


def test_qwk_hand_computed():
    # O = [[1,0,0],[0,0,1],[0,1,1]], rows [1,1,2], cols [1,1,2], n = 4, W = (i-j)^2 / 4.
    # sum W*O = 0.25 + 0.25 = 0.5; E = outer(rows, cols) / 4, sum W*E = 1.375; kappa = 1 - 0.5/1.375 = 7/11.
    assert quadratic_weighted_kappa([0, 1, 2, 2], [0, 2, 2, 1], 3) == pytest.approx(7 / 11)
    # The (K-1)^2 normalisation cancels: an extra empty grade changes nothing.
    assert quadratic_weighted_kappa([0, 1, 2, 2], [0, 2, 2, 1], 4) == pytest.approx(7 / 11)


def test_qwk_perfect_reversed_and_undefined():
    assert quadratic_weighted_kappa([0, 1, 2], [0, 1, 2], 3) == 1.0
    # Fully reversed on two grades: observed disagreement 1 per sample, expected 0.5.
    assert quadratic_weighted_kappa([0, 1], [1, 0], 2) == pytest.approx(-1.0)
    assert math.isnan(quadratic_weighted_kappa([2, 2, 2], [2, 2, 2], 5))  # one grade: undefined
    assert math.isnan(quadratic_weighted_kappa([], [], 5))
    assert math.isnan(quadratic_weighted_kappa([0, 0], [0, 0], 1))


def _qwk_from_definition(y_true, y_pred, num_grades):
    """Cohen's kappa with quadratic weights, written out with loops over the K x K cells."""
    n = len(y_true)
    observed = [[0.0] * num_grades for _ in range(num_grades)]
    for t, p in zip(y_true, y_pred):
        observed[t][p] += 1
    rows = [sum(observed[i]) for i in range(num_grades)]
    cols = [sum(observed[i][j] for i in range(num_grades)) for j in range(num_grades)]
    numerator = denominator = 0.0
    for i in range(num_grades):
        for j in range(num_grades):
            weight = (i - j) ** 2 / (num_grades - 1) ** 2
            numerator += weight * observed[i][j]
            denominator += weight * rows[i] * cols[j] / n
    return 1.0 - numerator / denominator


def _qwk_from_pairs(y_true, y_pred):
    """The same kappa as squared error against the mean squared error over all (true, pred) pairs."""
    t, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    return 1.0 - np.sum((t - p) ** 2) / (np.sum((t[:, None] - p[None, :]) ** 2) / len(t))


@pytest.mark.parametrize("seed", range(5))
def test_qwk_matches_the_definition_on_random_data(seed):
    rng = np.random.default_rng(seed)
    num_grades = int(rng.integers(2, 10))
    y_true = rng.integers(0, num_grades, size=200)
    y_pred = np.clip(y_true + rng.integers(-2, 3, size=200), 0, num_grades - 1)
    kappa = quadratic_weighted_kappa(y_true, y_pred, num_grades)
    assert kappa == pytest.approx(_qwk_from_definition(y_true.tolist(), y_pred.tolist(), num_grades))
    assert kappa == pytest.approx(_qwk_from_pairs(y_true, y_pred))


def test_ordinal_metrics_hand_computed():
    m = ordinal_metrics(Y_TRUE, SCORES, NAMES)
    assert m["n"] == 4
    assert m["mae"] == pytest.approx((0.2 + 0.6 + 0.4 + 1.1) / 4)  # 0.575
    assert m["rmse"] == pytest.approx(math.sqrt((0.04 + 0.36 + 0.16 + 1.21) / 4))
    assert m["accuracy"] == 0.5  # rounded [0, 2, 2, 1]: grades 0 and the first 2 are right
    assert m["within1"] == 1.0
    assert m["qwk"] == pytest.approx(7 / 11)
    assert m["confusion"] == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert list(m["per_grade"]) == NAMES
    # rounded [0, 2, 2, 1]: L graded once (right); M graded once (wrongly, a true S); S graded twice, once right
    L, M, S = (
        {"precision": p, "recall": r, "f1": f} for p, r, f in ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0.5, 0.5, 0.5))
    )
    assert m["per_grade"]["L"] == pytest.approx({"n": 1, "mae": 0.2, "mean_error": 0.2, **L})
    assert m["per_grade"]["M"] == pytest.approx({"n": 1, "mae": 0.6, "mean_error": 0.6, **M})
    assert m["per_grade"]["S"] == pytest.approx({"n": 2, "mae": 0.75, "mean_error": -0.35, **S})
    assert m["per_grade"]["2S"] == dict.fromkeys(("mae", "mean_error", "precision", "recall", "f1")) | {"n": 0}


def test_precision_recall_f1_hand_computed():
    # confusion (rows true, columns graded): [[2, 1, 0], [1, 1, 0], [0, 2, 0]]
    m = precision_recall_f1([0, 0, 0, 1, 1, 2, 2], [0, 0, 1, 0, 1, 1, 1], num_grades=3)
    assert m["precision"] == pytest.approx([2 / 3, 1 / 4, None])  # grade 2 is never predicted: undefined, not 0
    assert m["recall"] == pytest.approx([2 / 3, 1 / 2, 0.0])
    assert m["f1"][0] == pytest.approx(2 / 3)
    assert m["f1"][1] == pytest.approx(2 * (1 / 4) * (1 / 2) / (1 / 4 + 1 / 2))  # 1/3
    assert m["f1"][2] is None


def test_precision_of_a_grade_without_true_images_counts_its_wrong_predictions():
    m = precision_recall_f1([0, 0], [0, 2], num_grades=3)
    assert m["precision"] == [1.0, None, 0.0]  # graded 2 once, never truly 2
    assert m["recall"] == [0.5, None, None]
    assert m["f1"] == pytest.approx([2 / 3, None, None])
    per_grade = ordinal_metrics([0, 0], [0.0, 2.0], ["a", "b", "c"])["per_grade"]
    assert per_grade["c"]["precision"] == 0.0 and per_grade["c"]["recall"] is None and per_grade["c"]["n"] == 0


def test_a_metric_over_all_the_images_per_grade_is_per_grade_only():
    def by_grade(p):
        return [0.0] * p.num_grades

    with pytest.raises(ImgradeError, match="'bad' has by_grade: set compute=None, headline=False and per_grade=True"):
        Metric("bad", "bad", needs="grades", by_grade=by_grade, per_grade=True)  # headline by default
    assert Metric("ok", "ok", needs="grades", by_grade=by_grade, headline=False, per_grade=True).compute is None


def test_precision_and_recall_of_a_wholly_missed_grade_give_f1_zero():
    m = precision_recall_f1([0, 1], [1, 0], num_grades=2)
    assert m == {"precision": [0.0, 0.0], "recall": [0.0, 0.0], "f1": [0.0, 0.0]}


def test_per_grade_table_prints_precision_recall_f1_and_a_dash_when_undefined():
    text = format_metrics_table(ordinal_metrics([0, 0, 1], [0.0, 0.0, 0.0], ["a", "b"]), ["a", "b"])
    header, row_a, row_b = text.split("per grade:\n")[1].splitlines()
    assert header.split() == ["grade", "n", "MAE", "mean", "error", "precision", "recall", "F1"]
    assert row_a.split()[-3:] == ["0.667", "1.000", "0.800"]
    assert row_b.split()[-3:] == ["-", "0.000", "-"]  # nothing graded b: precision undefined, so is F1


def test_ordinal_metrics_within1_and_clipping():
    # Scores beyond the scale clip to the end grades before accuracy; 2.6 rounds to 3, two off from 1.
    m = ordinal_metrics([0, 3, 1], [-4.0, 9.0, 2.6], ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["within1"] == pytest.approx(2 / 3)
    assert m["mae"] == pytest.approx((4.0 + 6.0 + 1.6) / 3)


def test_ordinal_metrics_are_plain_json():
    m = ordinal_metrics(np.array(Y_TRUE, dtype=np.float32), np.array(SCORES, dtype=np.float32), NAMES)
    text = json.dumps(m, allow_nan=False)
    assert json.loads(text)["confusion"] == m["confusion"]
    assert type(m["n"]) is int and type(m["mae"]) is float and type(m["per_grade"]["L"]["n"]) is int


def test_ordinal_metrics_single_grade_has_no_qwk():
    m = ordinal_metrics([1, 1, 1], [1.0, 1.2, 0.9], ["a", "b", "c"])
    assert m["qwk"] is None and m["accuracy"] == 1.0
    json.dumps(m, allow_nan=False)


@pytest.mark.parametrize(
    ("y_true", "scores", "names", "message"),
    [
        ([], [], ["a", "b"], "no samples"),
        ([0, 1], [0.0], ["a", "b"], "differ in length: 2 vs 1"),
        ([0, 5], [0.0, 1.0], ["a", "b"], "grade index 5 but only 2 grades"),
        ([0, 1], [0.0, np.nan], ["a", "b"], "NaN"),
        ([0, 1], [0.0, 1.0], ["a", "a"], "unique"),
    ],
)
def test_ordinal_metrics_bad_input(y_true, scores, names, message):
    with pytest.raises(ImgradeError, match=message):
        ordinal_metrics(y_true, scores, names)


def test_continuous_metrics_hand_computed():
    # errors [0.5, 0, -0.5, 0]; SS_res = 0.5, SS_tot = 5; centred true [-1.5,-.5,.5,1.5], pred [-1,-.5,0,1.5].
    m = continuous_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 4.0])
    assert m["n"] == 4
    assert m["mae"] == pytest.approx(0.25)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5 / 4))
    assert m["r2"] == pytest.approx(0.9)
    assert m["pearson"] == pytest.approx(4.0 / math.sqrt(5.0 * 3.5))
    json.dumps(m, allow_nan=False)


def test_continuous_metrics_pearson_matches_numpy():
    rng = np.random.default_rng(3)
    y = rng.normal(size=50)
    p = y + rng.normal(scale=0.5, size=50)
    assert continuous_metrics(y, p)["pearson"] == pytest.approx(np.corrcoef(y, p)[0, 1])


def test_continuous_metrics_undefined_values_are_none():
    constant_truth = continuous_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert constant_truth["r2"] is None and constant_truth["pearson"] is None
    assert constant_truth["mae"] == pytest.approx(2 / 3)
    constant_prediction = continuous_metrics([1.0, 2.0], [5.0, 5.0])
    assert constant_prediction["pearson"] is None and constant_prediction["r2"] is not None
    single = continuous_metrics([1.0], [1.5])
    assert single["pearson"] is None and single["r2"] is None and single["mae"] == 0.5
    with pytest.raises(ImgradeError, match="no samples"):
        continuous_metrics([], [])
    with pytest.raises(ImgradeError, match="y_pred are NaN"):
        continuous_metrics([1.0, 2.0], [1.0, np.inf])


def test_format_metrics_table_ordinal():
    text = format_metrics_table(ordinal_metrics(Y_TRUE, SCORES, NAMES), NAMES)
    lines = text.splitlines()
    assert lines[0].split() == ["n", "4"]
    for label, value in [("MAE", "0.575"), ("accuracy", "0.500"), ("within-1", "1.000"), ("QWK", "0.636")]:
        assert any(line.split() == [label, value] for line in lines), (label, text)
    header = lines[lines.index("per grade:") + 1]
    assert header.split() == ["grade", "n", "MAE", "mean", "error", "precision", "recall", "F1"]
    rows = {line.split()[0]: line.split() for line in lines[lines.index(header) + 1 :]}
    assert list(rows) == NAMES
    assert rows["S"] == ["S", "2", "0.750", "-0.350", "0.500", "0.500", "0.500"]
    assert rows["L"] == ["L", "1", "0.200", "+0.200", "1.000", "1.000", "1.000"]
    assert rows["2S"] == ["2S", "0", "-", "-", "-", "-", "-"]
    # Aligned columns: every table row ends at the same width (numbers right-aligned).
    table = lines[lines.index(header) :]
    assert len({len(line) for line in table}) == 1


def test_format_metrics_table_undefined_qwk_and_continuous():
    text = format_metrics_table(ordinal_metrics([1, 1], [1.0, 1.1], ["a", "b"]), ["a", "b"])
    assert any(line.split() == ["QWK", "n/a"] for line in text.splitlines())
    text = format_metrics_table(continuous_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 4.0]), None)
    assert [line.split()[0] for line in text.splitlines()] == ["n", "MAE", "RMSE", "R2", "Pearson"]
    assert any(line.split() == ["R2", "0.900"] for line in text.splitlines())
    assert "grade" not in text
