import numpy as np
import pytest

from imgrade.core.errors import DataError
from imgrade.data.imageset import ImageSet
from imgrade.data.splits import make_split, stratified_split


def make_set(targets, split=None, groups=None, grade_names=("a", "b", "c")):
    n = len(targets)
    return ImageSet(
        images=np.zeros((n, 4, 4, 3), np.uint8),
        targets=np.asarray(targets, np.float32),
        grade_names=list(grade_names) if grade_names else None,
        ids=[f"i{k}" for k in range(n)],
        source="test set",
        split=None if split is None else np.asarray(split),
        groups=groups,
    )


@pytest.mark.parametrize("n_per_grade", [1, 2, 5, 7, 11])
def test_totals_follow_the_fractions_even_for_small_grades(n_per_grade):
    strata = np.repeat(np.arange(9), n_per_grade)
    n = len(strata)
    parts = stratified_split(strata, (0.6, 0.2, 0.2), seed=0)
    for part, fraction in zip(parts, (0.6, 0.2, 0.2)):
        assert abs(len(part) - fraction * n) < 1
    for grade in range(9):  # and each grade is split within one image of its share
        counts = [(strata[p] == grade).sum() for p in parts]
        assert sum(counts) == n_per_grade
        assert all(abs(c - f * n_per_grade) < 1 + 1e-9 for c, f in zip(counts, (0.6, 0.2, 0.2)))


def test_stratified_622_per_grade_and_disjoint():
    targets = [0] * 50 + [1] * 30 + [2] * 20
    split = make_split(make_set(targets), (0.6, 0.2, 0.2), seed=0)
    all_idx = np.concatenate([split["train"], split["val"], split["test"]])
    assert sorted(all_idx.tolist()) == list(range(100))
    y = np.asarray(targets)
    for grade, n in [(0, 50), (1, 30), (2, 20)]:
        assert (y[split["train"]] == grade).sum() == round(0.6 * n)
        assert (y[split["val"]] == grade).sum() == round(0.2 * n)
        assert (y[split["test"]] == grade).sum() == round(0.2 * n)


def test_same_seed_same_split_other_seed_other_split():
    s = make_set([0, 1, 2] * 30)
    a, b, c = make_split(s, (0.6, 0.2, 0.2), 1), make_split(s, (0.6, 0.2, 0.2), 1), make_split(s, (0.6, 0.2, 0.2), 2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])


def test_groups_stay_together():
    groups = np.repeat(np.arange(30), 3)
    s = make_set(np.repeat([0, 1, 2] * 10, 3), groups=groups)
    split = make_split(s, (0.6, 0.2, 0.2), 0)
    owner = {}
    for name, idx in split.items():
        for g in groups[idx]:
            assert owner.setdefault(g, name) == name


def test_published_keeps_the_sets_own_test_images():
    own = np.array([""] * 80 + ["test"] * 20)
    s = make_set([0, 1, 2, 0] * 25, split=own)
    split = make_split(s, "published", 0)
    assert split["test"].tolist() == list(range(80, 100))
    assert len(split["train"]) == 60 and len(split["val"]) == 20


def test_auto_uses_own_train_val_test_when_every_image_has_one():
    own = np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 2)
    split = make_split(make_set([0, 1] * 5, split=own), "auto", 0)
    assert split["val"].tolist() == [6, 7] and split["test"].tolist() == [8, 9]
    # CUCUMBER-9 marks only its test batch: auto falls back to the 6:2:2 split over everything
    split = make_split(make_set([0, 1] * 50, split=np.array([""] * 80 + ["test"] * 20)), "auto", 0)
    assert len(split["test"]) == 20 and not set(split["test"]) <= set(range(80, 100))


def test_published_without_a_test_set_is_an_error():
    with pytest.raises(DataError, match="--split 0.6,0.2,0.2"):
        make_split(make_set([0, 1, 2] * 5), "published", 0)


def test_continuous_targets_are_stratified_by_quantile():
    targets = np.linspace(0, 1, 100)
    split = make_split(make_set(targets, grade_names=None), (0.6, 0.2, 0.2), 0)
    assert len(split["test"]) == 20
    assert targets[split["test"]].min() < 0.2 and targets[split["test"]].max() > 0.8


def test_too_small_set_is_an_error():
    with pytest.raises(DataError, match="add images or change --split"):
        make_split(make_set([0]), (0.6, 0.2, 0.2), 0)


def test_stratified_split_indexes_are_sorted_ints():
    parts = stratified_split(np.array([0, 1] * 10), (0.5, 0.5), seed=3)
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)
