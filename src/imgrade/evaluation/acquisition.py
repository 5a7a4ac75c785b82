"""Which photos to label next: how much a label would teach, and a pick that is not all one look.

Arrays in, indexes out (NumPy only); ``imgrade suggest`` (``pipeline/suggester.py``) feeds it a
grader's outputs and an embedding of each photo.

Uncertainty, per photo:

- a head with grade probabilities: :func:`expected_grade_error`, the grades by which the true grade
  is expected to miss the best single guess (the distribution's median) if the distribution is
  right. It counts a 2L/S confusion twice a 2L/L one, as QWK and grade MAE do; entropy would not.
- a head with a score and cut points (regression): :func:`cut_point_closeness`, 1 on a cut point,
  0 half a grade or more away from every one.

The pick (:func:`select`) is greedy: each step takes the photo with the largest
``u ** (1 - diversity) * d ** diversity``, where ``u`` is its uncertainty (over the largest) and
``d`` its distance in the embedding to the nearest photo already picked. A near-duplicate of a
picked photo has ``d`` near 0 and waits, however uncertain; ``diversity=0`` is the uncertainty
order, ``diversity=1`` k-center greedy (Sener and Savarese, 2018), which covers the embedding.
"""

from __future__ import annotations

import numpy as np

DEFAULT_DIVERSITY = 0.5
"""The weight of distance against uncertainty in :func:`select`: their geometric mean."""


def expected_grade_error(probabilities: np.ndarray) -> np.ndarray:
    """(N,) the expected absolute grade error of the best single grade under each row's distribution.

    The best single grade for the absolute error is the distribution's median, so this is
    ``min_g sum_k p_k |k - g|``.

    Args:
        probabilities: (N, K), each row summing to 1.

    >>> expected_grade_error(np.array([[1.0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0.25, 0.5, 0.25]]))
    array([0. , 0.5, 1. , 0.5])
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    grades = np.arange(probabilities.shape[1])
    distance = np.abs(grades[:, None] - grades[None, :])  # (K guesses, K true grades)
    return (probabilities @ distance.T).min(axis=1)  # (N, K) expected error of each guess, then the best


def cut_point_closeness(scores: np.ndarray, cut_points: list[float] | np.ndarray) -> np.ndarray:
    """(N,) how close each score lies to the nearest cut point: 1 on it, 0 half a grade or more away.

    >>> cut_point_closeness(np.array([0.5, 0.75, 1.0, 3.0]), [0.5, 1.5])
    array([1. , 0.5, 0. , 0. ])
    """
    cuts = np.asarray(cut_points, dtype=np.float64)
    distance = np.abs(np.asarray(scores, dtype=np.float64)[:, None] - cuts[None, :]).min(axis=1)
    return np.clip(1.0 - 2.0 * distance, 0.0, 1.0)


def balanced(*blocks: np.ndarray) -> np.ndarray:
    """The columns of ``blocks`` (each (N, D_i)) side by side, each block scaled to a total variance
    of 1, so that no block outweighs another in distances for having more columns or a larger range.

    A block without variance stays as it is (its distances are 0 anyway).

    >>> balanced(np.array([[0.0], [2.0]]), np.array([[0.0, 0.0], [10.0, 10.0]]))
    array([[0.        , 0.        , 0.        ],
           [2.        , 1.41421356, 1.41421356]])
    """
    scaled = []
    for block in blocks:
        block = np.asarray(block, dtype=np.float64).reshape(len(block), -1)
        spread = float(np.sqrt(block.var(axis=0).sum()))
        scaled.append(block / spread if spread > 0 else block)
    return np.concatenate(scaled, axis=1)


def select(uncertainty: np.ndarray, embedding: np.ndarray, n: int, diversity: float = DEFAULT_DIVERSITY) -> np.ndarray:
    """The indexes of ``n`` photos to label, in the order picked (see the module's docstring).

    The first is the most uncertain; each next one maximises ``u ** (1 - diversity) * d ** diversity``
    (``u``: uncertainty over the largest, ``d``: distance to the nearest picked photo). Where every
    candidate scores 0 (all certain, or all duplicates of picked ones), the farthest goes next,
    then the most uncertain; ties go to the earliest index.

    Args:
        uncertainty: (N,) non-negative.
        embedding: (N, D): photos near each other here look alike.
        n: how many to pick, 1..N.
        diversity: 0 (uncertainty only) .. 1 (distance only).

    >>> u = np.array([1.0, 0.9, 0.2])
    >>> e = np.array([[0.0], [0.0], [1.0]])   # photos 0 and 1 are the same look
    >>> select(u, e, 3, diversity=0.0).tolist()
    [0, 1, 2]
    >>> select(u, e, 3, diversity=0.5).tolist()
    [0, 2, 1]
    """
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    embedding = np.asarray(embedding, dtype=np.float64).reshape(len(uncertainty), -1)
    assert 1 <= n <= len(uncertainty) and 0.0 <= diversity <= 1.0, (n, len(uncertainty), diversity)
    assert np.all(uncertainty >= 0), "uncertainty is non-negative"
    top = uncertainty.max()
    u = uncertainty / top if top > 0 else np.zeros_like(uncertainty)
    nearest = np.full(len(u), np.inf)  # distance of each photo to the nearest picked one
    picked = np.zeros(len(u), dtype=bool)
    order = []
    for _ in range(n):
        if order:
            score = u ** (1.0 - diversity) * nearest**diversity
        else:
            score = u.copy()
        score[picked] = -1.0
        if score.max() > 0:
            chosen = int(np.argmax(score))
        else:  # nothing left scores: the farthest, then the most uncertain, then the earliest
            candidates = np.flatnonzero(~picked)
            keys = (candidates, -u[candidates], -np.minimum(nearest[candidates], np.finfo(np.float64).max))
            chosen = int(candidates[np.lexsort(keys)[0]])
        order.append(chosen)
        picked[chosen] = True
        nearest = np.minimum(nearest, np.linalg.norm(embedding - embedding[chosen], axis=1))
    return np.asarray(order, dtype=np.int64)


def thumbnails(images: np.ndarray, side: int = 8, batch: int = 256) -> np.ndarray:
    """(N, side * side * 3) each uint8 image (N, S, S, 3) averaged down to ``side`` x ``side``, in
    [0, 1]: what a photo looks like at a glance, for an embedding where the network gives none.
    Read ``batch`` images at a time (a memory-mapped set is never read whole).

    >>> image = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    >>> image[0, :2, :2] = 255                          # the top-left quarter white
    >>> thumbnails(image, side=2).reshape(2, 2, 3)[:, :, 0]
    array([[1., 0.],
           [0., 0.]])
    """
    size = images.shape[1]
    edges = np.linspace(0, size, min(side, size) + 1).astype(np.int64)
    counts = np.diff(edges).astype(np.float64)
    area = counts[:, None] * counts[None, :]  # (side, side) pixels averaged into each cell
    parts = []
    for i in range(0, len(images), batch):
        x = np.asarray(images[i : i + batch], dtype=np.float64) / 255.0
        sums = np.add.reduceat(np.add.reduceat(x, edges[:-1], axis=1), edges[:-1], axis=2)  # (B, side, side, 3)
        parts.append((sums / area[None, :, :, None]).reshape(len(x), -1))
    return np.concatenate(parts)
