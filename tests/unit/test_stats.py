import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from imgrade.core.errors import ImgradeError
from imgrade.evaluation.comparison import paired_test
from imgrade.evaluation.stats import corrected_ttest


def test_corrected_ttest_by_hand():
    # 5 folds of 100 images: n_test = 20, n_train = 80; gains 0.02, 0.04, 0.00, 0.06, 0.03.
    # mean = 0.15 / 5 = 0.03
    # deviations -0.01, 0.01, -0.03, 0.03, 0 -> squares sum to 0.0001 + 0.0001 + 0.0009 + 0.0009 = 0.002
    # s^2 = 0.002 / (J - 1) = 0.002 / 4 = 0.0005
    # corrected variance = (1/5 + 20/80) * 0.0005 = 0.45 * 0.0005 = 0.000225 -> se = 0.015
    # t = 0.03 / 0.015 = 2.0 on df = 4
    # Student t with 4 df: P(T <= x) = 1/2 + (3/8) x/sqrt(1 + x^2/4) (1 - x^2 / (12 (1 + x^2/4)))
    #   x = 2: 1/2 + (3/8)(2/sqrt(2))(1 - 4/24) = 1/2 + (3/8) sqrt(2) (5/6) = 1/2 + (5/16) sqrt(2)
    #   two-sided p = 2 (1 - that) = 1 - (5/8) sqrt(2) = 0.11612
    r = corrected_ttest([0.02, 0.04, 0.00, 0.06, 0.03], n_train=80, n_test=20)
    assert r["mean"] == pytest.approx(0.03)
    assert r["se"] == pytest.approx(0.015)
    assert r["t"] == pytest.approx(2.0)
    assert r["df"] == 4
    assert r["p"] == pytest.approx(1 - 5 / 8 * math.sqrt(2))


def test_corrected_ttest_is_more_cautious_than_the_plain_one_and_matches_it_without_the_correction():
    diff = np.array([0.05, 0.01, 0.03, 0.04, 0.02, 0.06, 0.00, 0.03, 0.05, 0.01])
    plain = scipy_stats.ttest_1samp(diff, 0.0)
    corrected = corrected_ttest(diff, n_train=90, n_test=10)
    # (1/J + n_test/n_train) / (1/J) = (0.1 + 0.111...) / 0.1: the standard error grows by sqrt(2.111)
    assert corrected["t"] == pytest.approx(plain.statistic / math.sqrt(1 + 10 * 10 / 90))
    assert corrected["p"] > plain.pvalue
    # With a vanishing test share the correction vanishes and it is the plain one-sample t-test.
    assert corrected_ttest(diff, n_train=10**12, n_test=1)["p"] == pytest.approx(plain.pvalue)


def test_corrected_ttest_without_spread_or_with_one_difference():
    same = corrected_ttest([0.02, 0.02, 0.02], n_train=60, n_test=20)
    assert same["mean"] == pytest.approx(0.02) and same["se"] == 0.0 and math.isnan(same["p"]) and math.isnan(same["t"])
    with pytest.raises(ImgradeError, match="at least 2 paired differences, got 1"):
        corrected_ttest([0.1], n_train=60, n_test=20)


def _rows(values, **extra):
    return [{"fold": f, "run_seed": s, "qwk": v, **extra} for (f, s), v in values.items()]


def test_paired_test_pairs_by_fold_and_seed_not_by_row_order():
    # 2 folds x 2 seeds. The reference is listed in another order than the candidate.
    reference = _rows({(1, 1): 0.40, (0, 0): 0.50, (1, 0): 0.60, (0, 1): 0.70})
    candidate = _rows({(0, 0): 0.55, (0, 1): 0.70, (1, 0): 0.70, (1, 1): 0.45}, n_train=45, n_test=30)
    # differences: (0,0) +0.05, (0,1) 0, (1,0) +0.10, (1,1) +0.05 -> mean 0.05
    # s^2 = (0 + 0.0025 + 0.0025 + 0) / 3 = 0.005 / 3
    # corrected variance = (1/4 + 30/45) * 0.005 / 3 = (11/12) * (0.005 / 3); se = sqrt of that
    gain = paired_test(candidate, reference, "qwk", folds=2)
    se = math.sqrt(11 / 12 * 0.005 / 3)
    assert gain["diff"] == pytest.approx(0.05) and gain["pairs"] == 4
    assert gain["diff_se"] == pytest.approx(se)
    assert gain["p"] == pytest.approx(2 * scipy_stats.t.sf(0.05 / se, 3))


def test_paired_test_on_one_split_is_the_plain_paired_ttest():
    reference = _rows({(0, 0): 0.50, (0, 1): 0.60, (0, 2): 0.55})
    candidate = _rows({(0, 2): 0.65, (0, 0): 0.58, (0, 1): 0.61})
    gain = paired_test(candidate, reference, "qwk", folds=0)
    # differences (seed order 2, 0, 1): 0.10, 0.08, 0.01 -> mean 0.19 / 3
    assert gain["diff"] == pytest.approx(0.19 / 3)
    assert gain["p"] == pytest.approx(scipy_stats.ttest_rel([0.65, 0.58, 0.61], [0.55, 0.50, 0.60]).pvalue)
    assert gain["diff_se"] == pytest.approx(np.std([0.10, 0.08, 0.01], ddof=1) / math.sqrt(3))


def test_paired_test_averages_the_rows_of_one_resample_and_skips_unshared_ones():
    reference = _rows({(0, 0): 0.50, (1, 0): 0.60})
    # two ensemble members scored in fold 0 (averaged: 0.60) and one row of a fold the reference lacks
    members = _rows({(0, 0): 0.55}) + _rows({(0, 0): 0.65}) + _rows({(2, 0): 0.99})
    gain = paired_test(members, reference, "qwk", folds=3)
    assert gain["diff"] == pytest.approx(0.10) and gain["pairs"] == 1 and gain["p"] is None
    assert paired_test(_rows({(5, 5): 0.5}), reference, "qwk", folds=3) is None
