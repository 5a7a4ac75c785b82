"""The loss of a network taught by another model (``--teacher``, ``--unlabeled``, ``--distill``).

A batch mixes labelled photos (a grade) and unlabelled ones (NaN in place of a grade); every
training photo has the teacher's values (grade probabilities, or a score). Per photo the loss is

- labelled: (1 - w) x the task's own loss + w x the loss against the teacher (Hinton et al. 2015);
- unlabelled: the loss against the teacher alone (noisy student, Xie et al. 2020),

averaged over the batch, with w = ``train.distill_weight``. Each photo counts once, so the
unlabelled photos weigh by how many there are.
"""

from __future__ import annotations

import torch


def taught_loss(
    model, outputs: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor, weight: float
) -> torch.Tensor:
    """The batch's loss (scalar) from the head's ``loss`` and ``distill_loss``.

    Args:
        model: the grading model (or its DDP wrapper), offering ``loss`` and ``distill_loss``.
        outputs: the head's outputs (B, O), in fp32.
        target: (B,) the grade, NaN for an unlabelled photo.
        teacher: (B, T) the teacher's values for each photo.
        weight: the teacher's share on labelled photos, in [0, 1].

    >>> from imgrade.models.heads import ClassificationHead
    >>> head = ClassificationHead(4, num_grades=2)
    >>> outputs = torch.zeros(2, 2)  # both photos at p = (0.5, 0.5): every cross-entropy is log 2
    >>> target, teacher = torch.tensor([0.0, float("nan")]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> round(float(taught_loss(head, outputs, target, teacher, 0.5)), 4)
    0.6931
    """
    labelled = ~torch.isnan(target)  # (B,)
    to_teacher = model.distill_loss(outputs, teacher)  # (B,)
    weights = torch.where(labelled, torch.full_like(to_teacher, weight), torch.ones_like(to_teacher))
    total = (weights * to_teacher).sum()
    count = int(labelled.sum())
    if count and weight < 1:
        # the task's loss is a (class-weighted) mean over the labelled photos: as a sum, times (1 - w)
        total = total + (1 - weight) * count * model.loss(outputs[labelled], target[labelled])
    return total / len(target)
