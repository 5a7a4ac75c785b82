"""The taught loss: the task's loss on labelled photos, the teacher's on all, weighted as documented."""

import math

import pytest
import torch

from imgrade.models.factory import head_class
from imgrade.models.heads import ClassificationHead, RegressionHead
from imgrade.models.ordinal import SordHead
from imgrade.training.loop import FitData, teacher_batch
from imgrade.training.teaching import taught_loss

NAN = float("nan")


def test_weight_zero_is_the_task_loss_on_labelled_photos_plus_the_teacher_on_unlabelled():
    head = ClassificationHead(4, num_grades=3)
    outputs = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    target = torch.tensor([0.0, 1.0, NAN])
    teacher = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5]])
    log_p = torch.log_softmax(outputs, dim=1)
    hard = -(log_p[0, 0] + log_p[1, 1]) / 2  # cross-entropy of the two labelled photos
    soft_unlabelled = -(teacher[2] * log_p[2]).sum()
    expected = (2 * hard + soft_unlabelled) / 3
    assert torch.isclose(taught_loss(head, outputs, target, teacher, 0.0), expected)
    # weight 1: the teacher alone, on every photo
    soft = -(teacher * log_p).sum(dim=1)
    assert torch.isclose(taught_loss(head, outputs, target, teacher, 1.0), soft.mean())


def test_a_teacher_agreeing_with_one_hot_grades_gives_the_plain_loss():
    head = ClassificationHead(4, num_grades=3)
    outputs = torch.randn(5, 3)
    target = torch.tensor([0.0, 2.0, 1.0, 1.0, 0.0])
    one_hot = torch.nn.functional.one_hot(target.long(), 3).float()
    for weight in (0.0, 0.3, 1.0):
        assert torch.isclose(taught_loss(head, outputs, target, one_hot, weight), head.loss(outputs, target), atol=1e-6)


def test_sord_learns_the_teacher_through_its_softmax_and_regression_the_teachers_score():
    sord = SordHead(4, num_grades=3)
    outputs = torch.log(torch.tensor([[0.2, 0.3, 0.5]]))
    assert math.isclose(
        float(sord.distill_loss(outputs, torch.tensor([[0.2, 0.3, 0.5]]))),
        -sum(p * math.log(p) for p in (0.2, 0.3, 0.5)),
        rel_tol=1e-5,
    )
    regression = RegressionHead(4)
    assert regression.teacher_kind == "scores" and sord.teacher_kind == "probabilities"
    assert regression.distill_loss(torch.tensor([[2.0]]), torch.tensor([[0.5]])).tolist() == [2.25]


@pytest.mark.parametrize("task", ["coral", "corn", "classification", "sord"])
def test_every_graded_head_is_taught_by_probabilities_with_gradients(task):
    head = head_class(task).create(4, 5)
    outputs = torch.randn(3, head.output_width(5), requires_grad=True)
    teacher = torch.softmax(torch.randn(3, 5), dim=1)
    loss = taught_loss(head, outputs, torch.tensor([1.0, NAN, 4.0]), teacher, 0.5)
    loss.backward()
    assert torch.isfinite(loss) and outputs.grad.abs().sum() > 0
    # the cross-entropy is smallest when the head's probabilities are the teacher's
    entropy = -(teacher * teacher.log()).sum(dim=1)  # Gibbs: the cross-entropy of each photo is at least this
    assert (head.distill_loss(outputs, teacher).detach() >= entropy - 1e-4).all()


def test_a_batch_takes_the_teacher_rows_of_its_photos_and_each_rank_its_share():
    x = torch.zeros(6, 3, 4, 4, dtype=torch.uint8)
    teacher = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    data = FitData.from_set(
        x, torch.zeros(6), torch.tensor([5, 1, 3]), torch.tensor([0]), torch.zeros(3, 4, 4), teacher
    )
    index = torch.tensor([2, 0])  # training rows 3 and 5
    assert teacher_batch(data, index, "cpu").tolist() == [[6.0, 7.0], [10.0, 11.0]]
    assert teacher_batch(data, index, "cpu", shard=(1, 2)).tolist() == [[10.0, 11.0]]
    untaught = FitData.from_set(x, torch.zeros(6), torch.tensor([0]), torch.tensor([1]), torch.zeros(3, 4, 4))
    assert teacher_batch(untaught, index, "cpu") is None
