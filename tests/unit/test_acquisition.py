"""Which photos to label next: uncertainty measures and the greedy pick, against hand-computed values."""

import numpy as np
import pytest

from imgrade.evaluation.acquisition import (
    balanced,
    cut_point_closeness,
    expected_grade_error,
    select,
    thumbnails,
)


def test_expected_grade_error_is_the_mean_distance_to_the_median():
    p = np.array(
        [
            [0.0, 1.0, 0.0, 0.0],  # sure: 0
            [0.6, 0.0, 0.0, 0.4],  # median grade 0: 0.4 * 3
            [0.2, 0.3, 0.3, 0.2],  # median 1 (or 2): 0.2 * 1 + 0.3 * 1 + 0.2 * 2
            [0.0, 0.5, 0.5, 0.0],  # neighbours: 0.5, half the 0.6/0.4 far split's error
        ]
    )
    assert expected_grade_error(p) == pytest.approx([0.0, 1.2, 0.9, 0.5])


def test_cut_point_closeness_peaks_on_a_cut_point():
    assert cut_point_closeness(np.array([1.5, 1.4, 1.25, 1.0, -3.0]), [0.5, 1.5]) == pytest.approx(
        [1.0, 0.8, 0.5, 0.0, 0.0]
    )


def test_balanced_gives_each_block_unit_total_variance():
    rng = np.random.default_rng(0)
    wide, narrow = rng.normal(0, 50, (40, 30)), rng.normal(0, 0.01, (40, 2))
    both = balanced(wide, narrow)
    assert both.shape == (40, 32)
    assert both[:, :30].var(axis=0).sum() == pytest.approx(1.0)
    assert both[:, 30:].var(axis=0).sum() == pytest.approx(1.0)


def _duplicates_and_distinct():
    """Ten near-copies of one uncertain look (0..9), then five distinct, less uncertain photos (10..14)."""
    rng = np.random.default_rng(1)
    copies = np.zeros((10, 4)) + rng.normal(0, 1e-3, (10, 4))
    distinct = np.eye(4)[[0, 1, 2, 3, 0]] * np.array([[5], [5], [5], [5], [-5]])
    uncertainty = np.concatenate([np.linspace(1.0, 0.91, 10), [0.5, 0.45, 0.4, 0.35, 0.3]])
    return uncertainty, np.concatenate([copies, distinct])


def test_the_top_n_are_not_all_copies_of_one_look():
    uncertainty, embedding = _duplicates_and_distinct()
    order = select(uncertainty, embedding, 6)
    assert order[0] == 0  # the most uncertain first
    assert sorted(order[1:].tolist()) == [10, 11, 12, 13, 14]  # then one of each distinct look, not a copy
    assert len(set(order.tolist())) == 6


def test_without_diversity_the_most_uncertain_come_first():
    uncertainty, embedding = _duplicates_and_distinct()
    assert select(uncertainty, embedding, 15, diversity=0.0).tolist() == list(range(15))


def test_pure_diversity_is_k_center_greedy():
    # the most uncertain first (10.0), then each time the photo farthest from those picked
    points = np.array([[0.0], [1.0], [10.0], [6.0], [3.0]])
    uncertainty = np.array([0.1, 0.1, 0.9, 0.1, 0.1])
    # from {10}: 10, 9, -, 4, 7 -> 0.0; from {10, 0}: 1, -, -, 4, 3 -> 6.0; from {10, 0, 6}: 1, -, -, -, 3 -> 3.0
    assert select(uncertainty, points, 5, diversity=1.0).tolist() == [2, 0, 3, 4, 1]


def test_a_hand_computed_trade():
    # u = [1, 0.8, 0.5], e = [0, 0.1, 1]: after 0, scores sqrt(0.8 * 0.1) = 0.283 and sqrt(0.5 * 1) = 0.707
    order = select(np.array([1.0, 0.8, 0.5]), np.array([[0.0], [0.1], [1.0]]), 3)
    assert order.tolist() == [0, 2, 1]


def test_all_certain_or_all_copies_still_gives_n_distinct_photos():
    assert select(np.zeros(4), np.array([[0.0], [3.0], [1.0], [2.0]]), 4).tolist() == [0, 1, 2, 3]
    assert select(np.ones(3), np.zeros((3, 2)), 3).tolist() == [0, 1, 2]


def test_thumbnails_average_blocks():
    images = np.zeros((2, 6, 6, 3), dtype=np.uint8)
    images[1, :3, :, 1] = 255  # the top half green
    small = thumbnails(images, side=2, batch=1).reshape(2, 2, 2, 3)
    assert small[0].max() == 0
    assert small[1, :, :, 1].tolist() == [[1.0, 1.0], [0.0, 0.0]] and small[1, :, :, 0].max() == 0
