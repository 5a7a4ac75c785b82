"""Significance of a paired gain measured over resamples (cross-validation folds x seeds).

Folds of one data set share most of their training images, so the J differences they give are
correlated and the plain paired t-test (variance s^2 / J) is far too confident: it rejects a true
null much more often than its nominal 5%. Nadeau and Bengio (2003, "Inference for the
generalization error", Machine Learning 52) correct the variance by the share of test to training
images, which approximates that correlation.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import t as student_t

from imgrade.core.errors import ImgradeError


def corrected_ttest(differences, n_train: int, n_test: int) -> dict[str, float]:
    """Nadeau-Bengio corrected resampled t-test of J paired differences (k folds x r seeds = J).

    variance = (1/J + n_test/n_train) * s^2 with s^2 the sample variance of the differences;
    t = mean / sqrt(variance) on J - 1 degrees of freedom, two-sided p from Student's t. When every
    difference is the same there is no spread to test against: t and p are nan.

    Args:
        differences: one score difference per resample (A minus B on the same test images).
        n_train: training images per resample.
        n_test: test images per resample.

    Returns:
        ``{"mean", "se", "t", "df", "p"}``; ``se`` is the corrected standard error of the mean.

    >>> r = corrected_ttest([0.02, 0.04, 0.00, 0.06, 0.03], n_train=80, n_test=20)
    >>> round(r["mean"], 6), round(r["se"], 6), round(r["t"], 6), r["df"], round(r["p"], 4)
    (0.03, 0.015, 2.0, 4, 0.1161)
    """
    differences = np.asarray(differences, dtype=np.float64).reshape(-1)
    J = len(differences)
    if J < 2:
        raise ImgradeError(f"the corrected t-test needs at least 2 paired differences, got {J}: use 2 or more folds")
    if not np.all(np.isfinite(differences)):
        raise ImgradeError(f"paired differences must be finite, got {differences.tolist()}")
    if n_train < 1 or n_test < 1:
        raise ImgradeError(f"n_train and n_test must be positive image counts, got {n_train} and {n_test}")
    mean = float(np.mean(differences))
    variance = (1.0 / J + n_test / n_train) * float(np.var(differences, ddof=1))
    se = math.sqrt(variance)
    if se == 0.0:
        return {"mean": mean, "se": 0.0, "t": math.nan, "df": J - 1, "p": math.nan}
    t = mean / se
    p = float(2.0 * student_t.sf(abs(t), J - 1))
    return {"mean": mean, "se": se, "t": t, "df": J - 1, "p": p}
