"""Heads: each owns its layers, its loss and its decoding to a score on the grade axis.

The training loop only calls ``head(features)``, ``head.loss(outputs, target)`` and
``head.decode(outputs)``, so it does not know which head it drives. Four ways to learn a grade:

- ``regression``: one number, MSE (or Huber) on the grade index: the reference.
- ``classification``: softmax over K grades, cross-entropy; blind to the grades' order.
- ``coral`` (Cao et al. 2020): K-1 binary tasks "grade > k" sharing one weight vector, so the
  cumulative probabilities can never cross (rank consistency).
- ``corn`` (Shi et al. 2021): K-1 conditional tasks "grade > k given grade > k-1", chained by a
  product, so the cumulative probabilities are ordered by construction.

Every head turns its outputs into a score on the grade axis (``decode``: 0 = first grade, 1 = the
second, ...) so that scatter plots, violins and thresholds work the same for all of them, and into
its own grade decision (``predict_grade``). The layers before the output are either the
reference's Dense(8, relu) ("reference") or nothing ("linear").

Per-grade loss weights (``class_weights``, shape (K,)) weight each sample's loss by the weight of
its true grade and normalise by the weights, ``sum(w_i * loss_i) / sum(w_i)``: the rule
``F.cross_entropy(weight=...)`` follows, so equal weights give the unweighted loss whatever their
scale. (CORN normalises by the weighted count of its binary tasks instead, as ``corn_loss`` does
by their count.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from imgrade.config.sections import HEADS
from imgrade.core.errors import ConfigError, DataError
from imgrade.models.resnet_v2 import init_keras_
from imgrade.models.settings import REGRESSION_LOSSES, RegressionSettings

ARCHITECTURES = tuple(h for h in HEADS if h != "auto")  # "auto": reference for regression, linear otherwise
REFERENCE_HIDDEN = 8  # the reference's Dense(8, relu)


def balanced_class_weights(targets: np.ndarray, num_grades: int) -> np.ndarray:
    """Per-grade loss weights ``n / (K * count_k)``: each grade then weighs as much in total.

    A grade with no example keeps weight 1: there is nothing to up-weight, and a weight of 0 would
    hide that grade from a validation loss computed with the same weights.

    Args:
        targets: integer grade indices (N,), in [0, num_grades).
        num_grades: K.

    Returns:
        Float weights (K,).

    Raises:
        DataError: a target is outside [0, num_grades).

    >>> balanced_class_weights(np.array([0, 0, 0, 1]), 3).round(3).tolist()
    [0.444, 1.333, 1.0]
    """
    targets = np.asarray(targets).astype(np.int64).ravel()
    if len(targets) and (targets.min() < 0 or targets.max() >= num_grades):
        bad = int(targets.max()) if targets.max() >= num_grades else int(targets.min())
        raise DataError(f"targets use grade index {bad} but there are only {num_grades} grades (0..{num_grades - 1})")
    counts = np.bincount(targets, minlength=num_grades).astype(np.float64)  # (K,)
    weights = np.ones(num_grades, dtype=np.float64)
    seen = counts > 0
    weights[seen] = len(targets) / (num_grades * counts[seen])
    return weights


def _prior_logits(probabilities: np.ndarray) -> torch.Tensor:
    """Logits of probabilities clipped away from 0 and 1.

    >>> [round(v, 3) for v in _prior_logits(np.array([0.5, 0.0, 0.8])).tolist()]
    [0.0, -6.907, 1.386]
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-3, 1 - 1e-3)
    return torch.as_tensor(np.log(p / (1 - p)), dtype=torch.float32)


def log_mean_exp(log_values: torch.Tensor) -> torch.Tensor:
    """``log(mean(exp(x)))`` over the first dimension, without leaving log space.

    How heads average probabilities held as logs: ``logsumexp`` stays finite for probabilities
    far below float32's smallest number, where ``log(mean(p))`` would give -inf.

    >>> log_mean_exp(torch.log(torch.tensor([[0.2], [0.6]]))).exp()
    tensor([0.4000])
    """
    return torch.logsumexp(log_values, dim=0) - math.log(log_values.shape[0])


class Head(nn.Module):
    """Base class: features (B, in_features) -> outputs; subclasses define the layers and methods.

    Args:
        in_features: width of the backbone features.
        out_features: outputs of the last layer.
        architecture: "reference" (Linear(in, 8) + ReLU before the output layer), "linear" (the
            output layer only) or "auto" (the subclass's ``default_architecture``).
        num_grades: K; None for a continuous regression target.
        class_weights: per-grade loss weights (K,), or None.
        output_layer: a factory ``in_width -> module`` for the output layer; default ``nn.Linear``.

    Raises:
        ConfigError: an unknown architecture, or class weights that do not fit the grades.
    """

    name: str = "head"
    default_architecture: str = "linear"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        architecture: str = "auto",
        num_grades: int | None = None,
        class_weights: torch.Tensor | np.ndarray | None = None,
        output_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if architecture == "auto":
            architecture = self.default_architecture
        if architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown head {architecture!r}: set --head to one of auto, {', '.join(ARCHITECTURES)}")
        self.architecture = architecture
        self.num_grades = num_grades
        make_output = output_layer or (lambda width: nn.Linear(width, out_features))
        if architecture == "reference":
            self.layers = nn.Sequential(
                nn.Linear(in_features, REFERENCE_HIDDEN), nn.ReLU(), make_output(REFERENCE_HIDDEN)
            )
        else:
            self.layers = nn.Sequential(make_output(in_features))
        # Not part of the state dict: the weights are a training choice, not part of the model.
        self.register_buffer("class_weights", self._check_weights(class_weights), persistent=False)

    def _check_weights(self, class_weights) -> torch.Tensor | None:
        if class_weights is None:
            return None
        weights = torch.as_tensor(class_weights, dtype=torch.float32).detach().clone()
        if self.num_grades is None:
            raise ConfigError("class weights need graded data, but this target is continuous: drop --class-weight")
        if weights.shape != (self.num_grades,):
            raise ConfigError(
                f"class weights have shape {tuple(weights.shape)} but there are {self.num_grades} grades: "
                "give one weight per grade or drop --class-weight"
            )
        if not (torch.isfinite(weights).all() and (weights > 0).all()):
            raise ConfigError(f"class weights {weights.tolist()} must be finite and positive: fix --class-weight")
        return weights

    Settings: ClassVar[type | None] = None
    """The head's settings dataclass (``register_head`` reads it where no ``settings=`` is given);
    None for a head without settings. Its values reach :meth:`create` as ``settings``."""

    @classmethod
    def create(
        cls,
        in_features: int,
        num_grades: int | None,
        architecture: str = "auto",
        class_weights: torch.Tensor | np.ndarray | None = None,
        settings: Any = None,
        state: Mapping[str, Any] | None = None,
    ) -> Head:
        """Build the head the way ``build_model`` does.

        Args:
            settings: an instance of the head's settings dataclass (None for a head without).
            state: what :meth:`state` returned for the trained head (rebuilding a run), or what
                :meth:`initial_state` made (training); empty for a head without state.
        """
        raise NotImplementedError

    @classmethod
    def initial_state(
        cls, settings: Any, data_path: str | None, grade_names: list[str] | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The head's state for a new run on the data at ``data_path`` with ``grade_names``, and
        the settings to record in the run's config (a file it found, say); both empty by default.

        Called once when a run starts (a resumed run reads its state back from last.pt); the state
        is plain values (lists, dicts, numbers, strings) that travel in every checkpoint.
        """
        return {}, {}

    def state(self) -> dict[str, Any]:
        """The head's own plain values beyond its weights, saved in the checkpoint and handed back
        to :meth:`create` when the run is loaded; empty by default."""
        return {}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)  # (B, out_features)

    def init_from_targets(self, targets: np.ndarray) -> None:
        """Start the output biases at the training set's grade frequencies (the prior).

        Adam moves a bias by about the learning rate per step, so a few hundred steps on a small
        set cannot carry biases from zero to the spread the grade frequencies need (an ordinal
        head's thresholds span several logits); starting at the prior removes that handicap.
        The regression head keeps the reference's zero bias.
        """

    def hidden(self, features: torch.Tensor) -> torch.Tensor | None:
        """Post-ReLU activations (B, 8) of the reference hidden layer; None for a linear head."""
        if self.architecture != "reference":
            return None
        return self.layers[1](self.layers[0](features))  # (B, 8)

    def _weighted_mean(self, losses: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean of per-sample ``losses`` (B,), weighted by the class weight of each ``target``."""
        if self.class_weights is None:
            return losses.mean()
        weights = self.class_weights[target]  # (B,)
        return (weights * losses).sum() / weights.sum()

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss; ``target`` is float (B,), a grade index or a continuous value."""
        raise NotImplementedError

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """Float score (B,) on the grade axis (0 = first grade, 1 = second, ...)."""
        raise NotImplementedError

    teacher_kind: ClassVar[str] = "probabilities"
    """What this head learns from a teacher (``--teacher``, ``--unlabeled``): the teacher's grade
    "probabilities" (B, K), or its "scores" (B, 1) on the grade axis."""

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Per-image loss (B,) of ``outputs`` against a teacher's ``teacher_kind`` values (B, T):
        the cross-entropy with the teacher's grade probabilities, here from :meth:`probabilities`.

        >>> head = ClassificationHead(4, num_grades=2)
        >>> teacher = torch.tensor([[0.5, 0.5]])
        >>> round(float(Head.distill_loss(head, torch.zeros(1, 2), teacher)), 4)  # log 2
        0.6931
        """
        log_p = torch.log(self.probabilities(outputs).float().clamp_min(1e-7))  # (B, K)
        return -(teacher.to(log_p.dtype) * log_p).sum(dim=1)  # (B,)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor | None:
        """Grade probabilities (B, K), rows summing to 1; None where the head has none."""
        raise NotImplementedError

    def predict_grade(self, outputs: torch.Tensor) -> torch.Tensor:
        """The head's own grade decision (B,), long, in [0, K-1]."""
        raise NotImplementedError

    def average(self, outputs: torch.Tensor) -> torch.Tensor:
        """One output row per image from the stacked outputs (M, B, O) of M networks on the same images.

        The result (B, O) is in this head's own output space, and decoding it gives the members'
        averaged prediction (mean score, mean grade probabilities): an ensemble, or test-time
        augmentation, is then one more set of outputs to ``decode``, ``probabilities`` and
        ``predict_grade``. Only ops that torch.onnx exports, so an averaging model exports too.
        """
        raise NotImplementedError


class RegressionHead(Head):
    """One number per image: the reference's Dense(8, relu) -> Dense(1).

    Args:
        in_features: width of the backbone features.
        architecture: "reference" (the default), "linear" or "auto" (= reference).
        loss: "mse", or "huber" (delta 1.0).
        num_grades: K, for ``predict_grade``'s clipping and the class weights; None for a
            continuous target.
        class_weights: per-grade loss weights (K,); a sample's weight is that of its target
            rounded to the nearest grade.

    Raises:
        ConfigError: an unknown architecture or loss, or class weights without grades.

    >>> head = RegressionHead(4, architecture="linear")
    >>> outputs = head(torch.zeros(2, 4))
    >>> outputs.shape, head.decode(outputs).shape
    (torch.Size([2, 1]), torch.Size([2]))
    """

    name = "regression"
    default_architecture = "reference"

    def __init__(
        self,
        in_features: int,
        architecture: str = "auto",
        loss: str = "mse",
        num_grades: int | None = None,
        class_weights: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        if loss not in REGRESSION_LOSSES:
            raise ConfigError(
                f"regression loss {loss!r} is unknown: set --loss to one of {', '.join(REGRESSION_LOSSES)}"
            )
        if num_grades is not None and num_grades < 1:
            raise ConfigError(f"num_grades {num_grades} must be at least 1: check --grades")
        super().__init__(in_features, 1, architecture, num_grades, class_weights)
        self.loss_name = loss
        init_keras_(self)  # he_normal kernels, zero biases, as the reference's Dense layers

    Settings = RegressionSettings

    @classmethod
    def create(cls, in_features, num_grades, architecture="auto", class_weights=None, settings=None, state=None):
        loss = settings.loss if settings is not None else "mse"
        return cls(in_features, architecture, loss, num_grades, class_weights)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared (or Huber) error between the output and the target score.

        >>> head = RegressionHead(4)
        >>> float(head.loss(torch.tensor([[1.0], [3.0]]), torch.tensor([1.0, 1.0])))
        2.0
        """
        prediction = outputs[:, 0].float()  # (B,)
        target = target.to(prediction.dtype)
        if self.loss_name == "huber":
            losses = F.huber_loss(prediction, target, delta=1.0, reduction="none")
        else:
            losses = F.mse_loss(prediction, target, reduction="none")
        grade = None
        if self.class_weights is not None:
            grade = torch.floor(target + 0.5).long().clamp(0, self.num_grades - 1)  # (B,)
        return self._weighted_mean(losses, grade)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """The output itself, as (B,)."""
        return outputs[:, 0].float()  # (B,)

    teacher_kind = "scores"

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Squared (or Huber) error (B,) between the output and the teacher's score (B, 1).

        >>> RegressionHead(4).distill_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[1.0], [1.0]]))
        tensor([0., 4.])
        """
        prediction, score = outputs[:, 0].float(), teacher[:, 0].float()  # (B,)
        if self.loss_name == "huber":
            return F.huber_loss(prediction, score, delta=1.0, reduction="none")
        return F.mse_loss(prediction, score, reduction="none")

    def probabilities(self, outputs: torch.Tensor) -> None:
        """None: one number carries no distribution over grades."""
        return None

    def average(self, outputs: torch.Tensor) -> torch.Tensor:
        """The mean output (B, 1) of the members (M, B, 1).

        >>> RegressionHead(4).average(torch.tensor([[[1.0]], [[2.0]]]))
        tensor([[1.5000]])
        """
        return outputs.float().mean(dim=0)  # (B, 1)

    def predict_grade(self, outputs: torch.Tensor) -> torch.Tensor:
        """The nearest grade, ties up (``floor(x + 0.5)``), clipped to [0, K-1] when K is known.

        >>> RegressionHead(4, num_grades=3).predict_grade(torch.tensor([[-0.7], [0.5], [1.49], [9.0]]))
        tensor([0, 1, 1, 2])
        """
        grade = torch.floor(self.decode(outputs) + 0.5)  # (B,)
        if self.num_grades is not None:
            grade = grade.clamp(0, self.num_grades - 1)
        return grade.long()


def _check_grades(name: str, num_grades: int | None) -> int:
    if num_grades is None:
        raise ConfigError(
            f"task {name} needs integer grades; this data set has a continuous target: use --task regression"
        )
    if num_grades < 2:
        raise ConfigError(
            f"task {name} needs at least 2 grades but the data has {num_grades}: add grades or use --task regression"
        )
    return num_grades


class GradedHead(Head):
    """A head for integer grades: K >= 2, ``output_width(K)`` outputs, Keras (he_normal) init."""

    def __init__(
        self,
        in_features: int,
        num_grades: int | None,
        architecture: str = "auto",
        class_weights: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        num_grades = _check_grades(self.name, num_grades)
        super().__init__(
            in_features,
            self.output_width(num_grades),
            architecture,
            num_grades,
            class_weights,
            output_layer=self.output_layer(num_grades),
        )
        init_keras_(self)  # a CoralLayer's own biases are not touched: init_from_targets sets them

    @classmethod
    def create(cls, in_features, num_grades, architecture="auto", class_weights=None, settings=None, state=None):
        return cls(in_features, num_grades, architecture, class_weights)

    def output_width(self, num_grades: int) -> int:
        return num_grades

    def output_layer(self, num_grades: int) -> Callable[[int], nn.Module] | None:
        """A factory for the output layer, or None for a plain ``nn.Linear``."""
        return None


class ClassificationHead(GradedHead):
    """Softmax over K grades with cross-entropy; score = expected grade, decision = argmax.

    Args:
        in_features: width of the backbone features.
        num_grades: K >= 2.
        architecture: "linear" (the default), "reference" or "auto" (= linear).
        class_weights: per-grade loss weights (K,), the ``weight`` of ``F.cross_entropy``.

    Raises:
        ConfigError: fewer than 2 grades, an unknown architecture or bad class weights.

    >>> head = ClassificationHead(4, num_grades=3)
    >>> logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    >>> round(float(head.decode(logits)), 4), head.predict_grade(logits).tolist()
    (1.1, [1])
    """

    name = "classification"

    def init_from_targets(self, targets: np.ndarray) -> None:
        """Output biases = log grade frequencies, so the first softmax is the training prior."""
        counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=self.num_grades)
        log_prior = np.log(np.clip(counts / max(counts.sum(), 1), 1e-3, None))
        with torch.no_grad():
            self.layers[-1].bias.copy_(torch.as_tensor(log_prior - log_prior.mean(), dtype=torch.float32))

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with the true grade (``target`` holds grade indices)."""
        return F.cross_entropy(outputs.float(), target.long(), weight=self.class_weights)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs.float(), dim=1)  # (B, K)

    def distill_loss(self, outputs: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (B,) between the teacher's probabilities (B, K) and the softmax.

        >>> head = ClassificationHead(4, num_grades=2)
        >>> head.distill_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
        tensor([0.6931])
        """
        return -(teacher.float() * torch.log_softmax(outputs.float(), dim=1)).sum(dim=1)  # (B,)

    def average(self, outputs: torch.Tensor) -> torch.Tensor:
        """Log of the members' mean softmax (B, K): its softmax is that mean.

        >>> head = ClassificationHead(4, num_grades=2)
        >>> members = torch.log(torch.tensor([[[0.2, 0.8]], [[0.6, 0.4]]]))  # (M=2, B=1, K=2)
        >>> head.probabilities(head.average(members))
        tensor([[0.4000, 0.6000]])
        """
        return log_mean_exp(torch.log_softmax(outputs.float(), dim=2))  # (B, K)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """Expected grade under the softmax, ``sum_k k * p_k``."""
        probabilities = self.probabilities(outputs)
        grades = torch.arange(self.num_grades, dtype=probabilities.dtype, device=probabilities.device)
        return probabilities @ grades  # (B,)

    def predict_grade(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.argmax(dim=1)  # (B,)
