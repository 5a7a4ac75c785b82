"""Ordinal heads: outputs and losses that know the grades are ordered.

- ``coral`` (Cao et al. 2020): one weight vector shared by the K-1 tasks, so the cumulative
  probabilities can never cross (rank consistency).
- ``corn`` (Shi et al. 2021): K-1 conditional tasks "grade > k given grade > k-1", chained by a
  product, so the cumulative probabilities are ordered by construction.
- ``sord`` (Diaz and Marathe 2019): a softmax over the K grades like classification, trained
  against soft labels that give the grades next to the true one part of the target.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from coral_pytorch.dataset import proba_to_label
from coral_pytorch.layers import CoralLayer
from coral_pytorch.losses import coral_loss, corn_loss

from imgrade.core.errors import ConfigError
from imgrade.models.heads import ClassificationHead, GradedHead, _prior_logits, log_mean_exp
from imgrade.models.settings import SordSettings


def grade_probabilities(exceed: torch.Tensor) -> torch.Tensor:
    """Grade probabilities (B, K) from the cumulative ``P(y > k)`` (B, K-1) of an ordinal head.

    ``p_0 = 1 - P(y > 0)``, ``p_k = P(y > k-1) - P(y > k)``, ``p_{K-1} = P(y > K-2)``; negative
    differences (a rank inconsistency) are clipped to 0 and the rows renormalised.

    >>> grade_probabilities(torch.tensor([[0.9, 0.6, 0.2]]))
    tensor([[0.1000, 0.3000, 0.4000, 0.2000]])
    """
    ones = torch.ones_like(exceed[:, :1])
    above = torch.cat([ones, exceed], dim=1)  # (B, K): P(y > k - 1), with P(y > -1) = 1
    below = torch.cat([exceed, torch.zeros_like(ones)], dim=1)  # (B, K): P(y > k), P(y > K-1) = 0
    probabilities = (above - below).clamp_min(0)
    return probabilities / probabilities.sum(dim=1, keepdim=True)


class _OrdinalHead(GradedHead):
    """K-1 logits, one per threshold "grade > k"; subclasses say how they give ``P(y > k)``."""

    def output_width(self, num_grades: int) -> int:
        return num_grades - 1

    def exceed_probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """``P(y > k)`` for k = 0..K-2, (B, K-1), non-increasing along each row."""
        raise NotImplementedError

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return grade_probabilities(self.exceed_probabilities(outputs))  # (B, K)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """Expected grade, ``sum_k P(y > k)`` (equal to ``sum_k k * p_k``)."""
        return self.exceed_probabilities(outputs).sum(dim=1)  # (B,)


class CoralHead(_OrdinalHead):
    """CORAL (Cao, Mirjalili and Raschka 2020): rank-consistent ordinal regression.

    The output layer is coral_pytorch's ``CoralLayer``: one weight vector shared by the K-1
    thresholds plus K-1 biases, so ``P(y > k) = sigmoid(logit_k)`` never increases with k once the
    biases are ordered. Its biases start descending in [0, 1], as coral_pytorch recommends.

    Args:
        in_features: width of the backbone features.
        num_grades: K >= 2.
        architecture: "linear" (the CoralLayer alone; the default), "reference" (Linear(in, 8) +
            ReLU before it) or "auto" (= linear).
        class_weights: per-grade loss weights (K,), applied per sample by its true grade.

    Raises:
        ConfigError: fewer than 2 grades, an unknown architecture or bad class weights.

    >>> head = CoralHead(4, num_grades=4)
    >>> logits = torch.logit(torch.tensor([[0.9, 0.6, 0.2]]))
    >>> head.predict_grade(logits).tolist(), round(float(head.decode(logits)), 4)
    ([2], 1.7)
    """

    name = "coral"

    def output_layer(self, num_grades: int):
        return lambda width: CoralLayer(width, num_grades)  # one shared weight vector + K-1 biases

    def init_from_targets(self, targets: np.ndarray) -> None:
        """Threshold biases = logit P(grade > k) in the training set (not coral_pytorch's [1, 0])."""
        targets = np.asarray(targets, dtype=np.int64)
        exceed = np.array([(targets > k).mean() for k in range(self.num_grades - 1)])
        with torch.no_grad():
            self.layers[-1].coral_bias.copy_(_prior_logits(exceed))

    def levels(self, target: torch.Tensor) -> torch.Tensor:
        """Extended binary labels (B, K-1): ``levels[i, k] = target_i > k``.

        The vectorised ``coral_pytorch.dataset.levels_from_labelbatch``, which loops in Python.

        >>> CoralHead(4, num_grades=4).levels(torch.tensor([0.0, 2.0, 3.0]))
        tensor([[0., 0., 0.],
                [1., 1., 0.],
                [1., 1., 1.]])
        """
        thresholds = torch.arange(self.num_grades - 1, device=target.device)
        return (target.long()[:, None] > thresholds[None, :]).float()  # (B, K-1)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """coral_pytorch's ``coral_loss``: the K-1 binary cross-entropies summed per sample."""
        target = target.long()
        losses = coral_loss(outputs.float(), self.levels(target), reduction=None)  # (B,)
        return self._weighted_mean(losses, target)

    def exceed_probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(outputs.float())  # (B, K-1)

    def average(self, outputs: torch.Tensor) -> torch.Tensor:
        """Logits (B, K-1) of the members' mean ``P(y > k)``.

        ``log(mean P(y > k)) - log(mean P(y <= k))``, both means taken in log space: the sigmoid
        of that is exactly the mean (the two means add up to 1), with no clamp and no infinity
        even where every member is sure. For rank-consistent members (ordered thresholds, what
        CORAL trains) the grade probabilities are the members' mean too.

        >>> head = CoralHead(4, num_grades=3)
        >>> members = torch.logit(torch.tensor([[[0.9, 0.5]], [[0.5, 0.1]]]))  # (M=2, B=1, K-1=2)
        >>> head.exceed_probabilities(head.average(members))
        tensor([[0.7000, 0.3000]])
        """
        logits = outputs.float()  # (M, B, K-1)
        return log_mean_exp(F.logsigmoid(logits)) - log_mean_exp(F.logsigmoid(-logits))  # (B, K-1)

    def predict_grade(self, outputs: torch.Tensor) -> torch.Tensor:
        """The number of thresholds passed, ``sum_k [P(y > k) > 0.5]``."""
        return proba_to_label(self.exceed_probabilities(outputs))  # (B,)


class CornHead(_OrdinalHead):
    """CORN (Shi, Cao and Raschka 2021): ordinal regression by conditional probabilities.

    Logit k models ``P(y > k | y > k-1)``; the chain rule gives ``P(y > k)`` as the running
    product of the sigmoids, ordered by construction with no constraint on the layer.

    Args:
        in_features: width of the backbone features.
        num_grades: K >= 2.
        architecture: "linear" (the default), "reference" or "auto" (= linear).
        class_weights: per-grade loss weights (K,), applied to every binary task of a sample.

    Raises:
        ConfigError: fewer than 2 grades, an unknown architecture or bad class weights.

    >>> head = CornHead(4, num_grades=4)
    >>> logits = torch.logit(torch.tensor([[0.9, 0.5, 0.5]]))
    >>> head.exceed_probabilities(logits), head.predict_grade(logits).tolist()
    (tensor([[0.9000, 0.4500, 0.2250]]), [1])
    """

    name = "corn"

    def init_from_targets(self, targets: np.ndarray) -> None:
        """Task biases = logit P(grade > k | grade >= k) in the training set."""
        targets = np.asarray(targets, dtype=np.int64)
        conditional = [(targets > k).sum() / max((targets >= k).sum(), 1) for k in range(self.num_grades - 1)]
        with torch.no_grad():
            self.layers[-1].bias.copy_(_prior_logits(np.array(conditional)))

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """coral_pytorch's ``corn_loss``: task k trains on the samples with grade > k-1 only.

        With class weights, the same mean over (sample, task) pairs, each pair weighted by its
        sample's class weight: ``sum_i w_i sum_k bce_ik / sum_i w_i n_i`` (n_i tasks of sample i).
        Equal weights give ``corn_loss`` exactly.
        """
        logits, target = outputs.float(), target.long()
        if self.class_weights is None:
            return corn_loss(logits, target, self.num_grades)
        thresholds = torch.arange(self.num_grades - 1, device=target.device)
        in_task = target[:, None] > thresholds[None, :] - 1  # (B, K-1): task k sees grades >= k
        labels = (target[:, None] > thresholds[None, :]).float()  # (B, K-1)
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")  # (B, K-1)
        weights = self.class_weights[target][:, None] * in_task  # (B, K-1)
        return (weights * bce).sum() / weights.sum()

    def exceed_probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        # The running product of sigmoids, as exp(cumsum(log sigmoid)): the same numbers (to float
        # rounding), stable for very negative logits, and exportable (ONNX has CumSum, not CumProd).
        return torch.exp(torch.cumsum(F.logsigmoid(outputs.float()), dim=1))  # (B, K-1)

    def average(self, outputs: torch.Tensor) -> torch.Tensor:
        """Conditional logits (B, K-1) whose chained ``P(y > k)`` is the members' mean ``P(y > k)``.

        With S_k the mean ``P(y > k)`` and E_k the mean ``P(y = k)``, task k's conditional
        probability is ``S_k / S_{k-1} = S_k / (S_k + E_k)``, so its logit is
        ``log S_k - log E_k``. Both means are taken in log space from each member's chain
        (``P(y = k) = P(y > k-1) * sigmoid(-logit_k)``): exact, with no clamp, and finite even
        where every member is sure.

        >>> head = CornHead(4, num_grades=3)
        >>> members = torch.logit(torch.tensor([[[0.8, 0.5]], [[0.4, 0.5]]]))  # (M=2, B=1, K-1=2)
        >>> head.exceed_probabilities(head.average(members))  # means of [0.8, 0.4] and [0.4, 0.2]
        tensor([[0.6000, 0.3000]])
        """
        logits = outputs.float()  # (M, B, K-1)
        log_exceed = torch.cumsum(F.logsigmoid(logits), dim=2)  # (M, B, K-1): log P(y > k)
        log_above = torch.cat([torch.zeros_like(log_exceed[..., :1]), log_exceed[..., :-1]], dim=2)  # log P(y > k-1)
        log_equal = log_above + F.logsigmoid(-logits)  # (M, B, K-1): log P(y = k)
        return log_mean_exp(log_exceed) - log_mean_exp(log_equal)  # (B, K-1)

    def predict_grade(self, outputs: torch.Tensor) -> torch.Tensor:
        """The count of ``P(y > k) > 0.5``, as coral_pytorch's ``corn_label_from_logits``."""
        return (self.exceed_probabilities(outputs) > 0.5).sum(dim=1)  # (B,)


SORD_BETA = SordSettings.sord_beta
"""Default sharpness of SORD's soft labels (see ``ModelConfig.sord_beta``)."""


def sord_targets(target: torch.Tensor, num_grades: int, beta: float = SORD_BETA) -> torch.Tensor:
    """SORD's soft labels (B, K): ``q_k = softmax_k(-beta * (k - y)^2)`` for each true grade y.

    >>> sord_targets(torch.tensor([1]), 3, beta=1.0)  # e^-1 / (1 + 2e^-1), 1 / (1 + 2e^-1), ...
    tensor([[0.2119, 0.5761, 0.2119]])
    """
    grades = torch.arange(num_grades, dtype=torch.float32, device=target.device)
    distance = grades[None, :] - target.float()[:, None]  # (B, K)
    return torch.softmax(-beta * distance.square(), dim=1)  # (B, K)


class SordHead(ClassificationHead):
    """SORD (Diaz and Marathe, CVPR 2019): softmax over K grades, trained on soft ordinal labels.

    The target puts ``softmax_k(-beta * (k - y)^2)`` on grade k, so a grade next to the true one
    costs less than a grade far from it; the loss is the cross-entropy against that distribution.
    Everything after the loss is classification's: softmax probabilities, the expected grade as
    the score, the most probable grade as its own decision.

    Args:
        in_features: width of the backbone features.
        num_grades: K >= 2.
        architecture: "linear" (the default), "reference" or "auto" (= linear).
        class_weights: per-grade loss weights (K,), applied per sample by its true grade.
        beta: sharpness of the soft labels (> 0): larger is closer to one-hot cross-entropy.

    Raises:
        ConfigError: fewer than 2 grades, an unknown architecture, bad class weights or beta <= 0.

    >>> head = SordHead(4, num_grades=3)
    >>> logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    >>> round(float(head.decode(logits)), 4), head.predict_grade(logits).tolist()
    (1.1, [1])
    """

    name = "sord"

    def __init__(
        self,
        in_features: int,
        num_grades: int | None,
        architecture: str = "auto",
        class_weights: torch.Tensor | np.ndarray | None = None,
        beta: float = SORD_BETA,
    ) -> None:
        if not beta > 0:
            raise ConfigError(f"sord beta {beta} must be positive (e.g. {SORD_BETA}): set --sord-beta")
        super().__init__(in_features, num_grades, architecture, class_weights)
        self.beta = float(beta)

    Settings = SordSettings

    @classmethod
    def create(cls, in_features, num_grades, architecture="auto", class_weights=None, settings=None, state=None):
        beta = settings.sord_beta if settings is not None else SORD_BETA
        return cls(in_features, num_grades, architecture, class_weights, beta)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy between the soft labels of ``target`` (grade indices) and the softmax."""
        soft = sord_targets(target, self.num_grades, self.beta)  # (B, K)
        losses = -(soft * torch.log_softmax(outputs.float(), dim=1)).sum(dim=1)  # (B,)
        return self._weighted_mean(losses, target.long())
