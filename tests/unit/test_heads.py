"""Every formulation of the grade as a head: shapes, losses, decoding by hand, class weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coral_pytorch.dataset import levels_from_labelbatch
from coral_pytorch.losses import coral_loss, corn_loss

from imgrade.core.errors import ConfigError, DataError
from imgrade.core.registry import task_names
from imgrade.models.factory import HEADS, build_model
from imgrade.models.heads import (
    ClassificationHead,
    RegressionHead,
    balanced_class_weights,
)
from imgrade.models.ordinal import CoralHead, CornHead, SordHead, grade_probabilities, sord_targets

K = 4
TASKS = task_names()
GRADED = [t for t in TASKS if t != "regression"]
WIDTH = {
    "regression": 1,
    "classification": K,
    "coral": K - 1,
    "corn": K - 1,
    "sord": K,
    "axes": K,
}  # outputs per image (axes: one axis of K levels without a table)


def logit(p):
    return torch.logit(torch.tensor(p, dtype=torch.float64)).float()


@pytest.mark.parametrize("head", ["reference", "linear"])
@pytest.mark.parametrize("task", TASKS)
def test_every_task_and_head_on_a_batch(task, head):
    torch.manual_seed(0)
    model = build_model(depth=11, task=task, head=head, num_grades=K).train()
    outputs = model(torch.randn(2, 3, 32, 32))
    assert outputs.shape == (2, WIDTH[task])
    assert model.task == task and model.num_grades == K

    value = model.loss(outputs, torch.tensor([0.0, 3.0]))
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad.abs().sum() > 0 for p in model.head.layers[-1].parameters())

    with torch.no_grad():
        score = model.decode(outputs)
        grade = model.predict_grade(outputs)
        probabilities = model.probabilities(outputs)
        hidden = model.head.hidden(model.features(torch.randn(2, 3, 32, 32)))
    assert score.shape == (2,) and score.dtype == torch.float32 and torch.isfinite(score).all()
    assert grade.shape == (2,) and grade.dtype == torch.long
    assert ((grade >= 0) & (grade <= K - 1)).all()
    if task == "regression":
        assert probabilities is None
    else:
        assert probabilities.shape == (2, K) and (probabilities >= 0).all()
        torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2))
        assert ((score >= 0) & (score <= K - 1)).all()
    if head == "reference":
        assert hidden.shape == (2, 8) and (hidden >= 0).all()
    else:
        assert hidden is None


def test_auto_head_is_reference_for_regression_and_linear_otherwise():
    assert build_model(depth=11).head.architecture == "reference"
    for task in GRADED:
        assert build_model(depth=11, task=task, num_grades=3).head.architecture == "linear"
    assert HEADS == ("auto", "reference", "linear")


# --- decoding from fixed outputs, by hand ---


def test_regression_decoding():
    head = RegressionHead(4, num_grades=3)
    outputs = torch.tensor([[-0.7], [0.5], [1.49], [1.5], [9.0]])
    torch.testing.assert_close(head.decode(outputs), outputs[:, 0])
    assert head.predict_grade(outputs).tolist() == [0, 1, 1, 2, 2]  # ties go up, then clip
    assert RegressionHead(4).predict_grade(torch.tensor([[-0.7], [9.0]])).tolist() == [-1, 9]  # no K: no clip
    assert head.probabilities(outputs) is None


def test_classification_decoding():
    head = ClassificationHead(4, num_grades=3)
    outputs = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
    torch.testing.assert_close(head.probabilities(outputs), torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
    torch.testing.assert_close(head.decode(outputs), torch.tensor([0.5 + 0.6, 0.1 + 0.6]))
    assert head.predict_grade(outputs).tolist() == [1, 0]


def test_coral_decoding():
    head = CoralHead(4, num_grades=4)
    outputs = logit([[0.9, 0.6, 0.2], [0.4, 0.3, 0.1]])  # P(y > k)
    torch.testing.assert_close(head.exceed_probabilities(outputs), torch.tensor([[0.9, 0.6, 0.2], [0.4, 0.3, 0.1]]))
    assert head.predict_grade(outputs).tolist() == [2, 0]
    torch.testing.assert_close(head.decode(outputs), torch.tensor([1.7, 0.8]))
    expected = torch.tensor([[0.1, 0.3, 0.4, 0.2], [0.6, 0.1, 0.2, 0.1]])
    torch.testing.assert_close(head.probabilities(outputs), expected)
    # the score is also the expected grade under those probabilities
    torch.testing.assert_close(expected @ torch.arange(4.0), head.decode(outputs))


def test_corn_decoding():
    head = CornHead(4, num_grades=4)
    outputs = logit([[0.9, 0.5, 0.5], [0.4, 0.9, 0.9]])  # P(y > k | y > k-1)
    exceed = torch.tensor([[0.9, 0.45, 0.225], [0.4, 0.36, 0.324]])
    torch.testing.assert_close(head.exceed_probabilities(outputs), exceed)
    assert head.predict_grade(outputs).tolist() == [1, 0]
    torch.testing.assert_close(head.decode(outputs), exceed.sum(dim=1))
    torch.testing.assert_close(
        head.probabilities(outputs),
        torch.tensor([[0.1, 0.45, 0.225, 0.225], [0.6, 0.04, 0.036, 0.324]]),
    )


def test_grade_probabilities_clips_an_inconsistent_row():
    probabilities = grade_probabilities(torch.tensor([[0.3, 0.6]]))  # raw [0.7, -0.3, 0.6]
    torch.testing.assert_close(probabilities, torch.tensor([[0.7, 0.0, 0.6]]) / 1.3)


def test_coral_is_rank_consistent():
    torch.manual_seed(0)
    head = CoralHead(16, num_grades=6)
    with torch.no_grad():  # any descending biases keep the thresholds ordered, whatever the input
        head.layers[0].coral_bias.copy_(torch.sort(torch.randn(5) * 3, descending=True).values)
        outputs = head(torch.randn(64, 16) * 5)
    exceed = head.exceed_probabilities(outputs)
    assert (exceed[:, 1:] <= exceed[:, :-1]).all()
    unclipped = torch.cat([torch.ones(64, 1), exceed], 1) - torch.cat([exceed, torch.zeros(64, 1)], 1)
    assert (unclipped >= 0).all()
    torch.testing.assert_close(head.probabilities(outputs), unclipped)
    assert head.layers[0].coral_weights.weight.shape == (1, 16)  # one weight vector for all thresholds


def test_coral_levels_match_coral_pytorch():
    head = CoralHead(4, num_grades=5)
    labels = [2, 1, 4, 0]
    expected = levels_from_labelbatch(labels, num_classes=5)
    torch.testing.assert_close(head.levels(torch.tensor(labels, dtype=torch.float32)), expected)


# --- losses and class weights, by hand ---


def test_unweighted_losses_are_the_libraries():
    torch.manual_seed(0)
    target = torch.tensor([0.0, 2.0, 3.0, 1.0])
    logits = torch.randn(4, K - 1)
    torch.testing.assert_close(
        CoralHead(4, K).loss(logits, target), coral_loss(logits, levels_from_labelbatch([0, 2, 3, 1], K))
    )
    torch.testing.assert_close(CornHead(4, K).loss(logits, target), corn_loss(logits, target.long(), K))
    scores = torch.randn(4, K)
    torch.testing.assert_close(ClassificationHead(4, K).loss(scores, target), F.cross_entropy(scores, target.long()))


def test_class_weights_by_hand():
    log2, log43 = math.log(2), math.log(4 / 3)

    # regression: squared errors 0 and 4 for grades 0 and 1, weights 1 and 3
    head = RegressionHead(4, num_grades=2, class_weights=torch.tensor([1.0, 3.0]))
    value = head.loss(torch.tensor([[0.0], [3.0]]), torch.tensor([0.0, 1.0]))
    assert float(value) == pytest.approx((1 * 0 + 3 * 4) / (1 + 3))

    # classification: probabilities [0.5, 0.25, 0.25]; losses log 2 (grade 0) and log 4 (grade 1)
    weights = torch.tensor([1.0, 3.0, 1.0])
    head = ClassificationHead(4, 3, class_weights=weights)
    outputs = torch.log(torch.tensor([[0.5, 0.25, 0.25]] * 2))
    target = torch.tensor([0.0, 1.0])
    assert float(head.loss(outputs, target)) == pytest.approx((1 * log2 + 3 * 2 * log2) / 4)
    assert float(ClassificationHead(4, 3).loss(outputs, target)) == pytest.approx(1.5 * log2)

    # coral, K=3: P(y > 0) = 0.75, P(y > 1) = 0.25 for both samples
    outputs = logit([[0.75, 0.25]] * 2)
    target = torch.tensor([1.0, 2.0])
    grade1 = -math.log(0.75) - math.log(0.75)  # levels [1, 0]
    grade2 = -math.log(0.75) - math.log(0.25)  # levels [1, 1]
    head = CoralHead(4, 3, class_weights=torch.tensor([1.0, 1.0, 3.0]))
    assert float(head.loss(outputs, target)) == pytest.approx((grade1 + 3 * grade2) / 4)
    assert float(CoralHead(4, 3).loss(outputs, target)) == pytest.approx((grade1 + grade2) / 2)

    # corn, K=3: both conditional sigmoids 0.75; grade 0 sees task 0 only (label 0: -log 0.25),
    # grade 2 sees tasks 0 and 1 (labels 1, 1: -log 0.75 each)
    outputs = logit([[0.75, 0.75]] * 2)
    target = torch.tensor([0.0, 2.0])
    head = CornHead(4, 3, class_weights=torch.tensor([3.0, 1.0, 1.0]))
    assert float(head.loss(outputs, target)) == pytest.approx((3 * 2 * log2 + 2 * log43) / (3 * 1 + 1 * 2))
    assert float(CornHead(4, 3).loss(outputs, target)) == pytest.approx((2 * log2 + 2 * log43) / 3)


@pytest.mark.parametrize("task", TASKS)
def test_equal_class_weights_of_any_scale_change_nothing(task):
    torch.manual_seed(0)
    plain = build_model(depth=11, task=task, num_grades=K)
    weighted = build_model(depth=11, task=task, num_grades=K, class_weights=torch.full((K,), 2.5))
    outputs = torch.randn(5, WIDTH[task])
    target = torch.tensor([0.0, 1.0, 3.0, 3.0, 2.0])
    torch.testing.assert_close(weighted.loss(outputs, target), plain.loss(outputs, target))


def test_classification_weights_are_cross_entropy_weights():
    torch.manual_seed(0)
    weights = torch.tensor([0.5, 2.0, 1.0, 4.0])
    outputs, target = torch.randn(6, K), torch.tensor([0.0, 1.0, 1.0, 3.0, 2.0, 0.0])
    expected = F.cross_entropy(outputs, target.long(), weight=weights)
    torch.testing.assert_close(ClassificationHead(4, K, class_weights=weights).loss(outputs, target), expected)


def test_class_weights_follow_the_device_but_stay_out_of_checkpoints():
    weighted = build_model(depth=11, task="coral", num_grades=3, class_weights=np.array([1.0, 2.0, 3.0]))
    assert weighted.head.class_weights.dtype == torch.float32
    assert not any("class_weights" in key for key in weighted.state_dict())
    build_model(depth=11, task="coral", num_grades=3).load_state_dict(weighted.state_dict())
    assert weighted.to(torch.float64).head.class_weights.dtype == torch.float64  # a buffer: moves with .to()


def test_balanced_class_weights():
    weights = balanced_class_weights(np.array([0, 0, 0, 1, 3, 3]), 4)
    np.testing.assert_allclose(weights, [6 / (4 * 3), 6 / (4 * 1), 1.0, 6 / (4 * 2)])  # grade 2 unseen: 1
    np.testing.assert_allclose(balanced_class_weights(np.array([0, 1, 2, 0, 1, 2]), 3), [1.0, 1.0, 1.0])
    counts = np.bincount([0, 0, 0, 1, 3, 3], minlength=4)
    np.testing.assert_allclose((weights * counts)[counts > 0], 6 / 4)  # each seen grade weighs n / K in all
    with pytest.raises(DataError, match="grade index 4 but there are only 4 grades"):
        balanced_class_weights(np.array([0, 4]), 4)


# --- bad settings name their flags ---


@pytest.mark.parametrize("task", GRADED)
def test_graded_tasks_refuse_a_continuous_target(task):
    message = f"task {task} needs integer grades; this data set has a continuous target: use --task regression"
    with pytest.raises(ConfigError, match=message):
        build_model(depth=11, task=task, num_grades=None)
    with pytest.raises(ConfigError, match="at least 2 grades.*--task regression"):
        build_model(depth=11, task=task, num_grades=1)


def test_bad_class_weights_name_the_flag():
    with pytest.raises(ConfigError, match="shape \\(3,\\) but there are 4 grades.*--class-weight"):
        build_model(depth=11, task="corn", num_grades=4, class_weights=torch.ones(3))
    with pytest.raises(ConfigError, match="finite and positive.*--class-weight"):
        build_model(depth=11, task="classification", num_grades=2, class_weights=torch.tensor([1.0, 0.0]))
    with pytest.raises(ConfigError, match="continuous.*--class-weight"):
        build_model(depth=11, task="regression", class_weights=torch.ones(3))


# --- a few optimisation steps learn a separable toy problem ---


@pytest.mark.parametrize("task", TASKS)
def test_a_few_steps_reduce_the_loss(task):
    torch.manual_seed(0)
    target = torch.arange(K, dtype=torch.float32).repeat(2)  # (8,): two images per grade
    x = target[:, None, None, None] / (K - 1) + 0.05 * torch.randn(8, 3, 16, 16)  # brightness = grade
    model = build_model(depth=11, task=task, num_grades=K).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = model.loss(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        losses.append(model.loss(model(x), target).item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_output_biases_start_at_the_training_prior():
    targets = np.array([0] * 5 + [1] * 3 + [2] * 2)  # P(y > 0) = 0.5, P(y > 1) = 0.2
    coral = CoralHead(4, num_grades=3)
    coral.init_from_targets(targets)
    assert torch.allclose(torch.sigmoid(coral.layers[-1].coral_bias), torch.tensor([0.5, 0.2]), atol=1e-6)
    corn = CornHead(4, num_grades=3)
    corn.init_from_targets(targets)  # P(y > 0) = 0.5, P(y > 1 | y >= 1) = 2/5
    assert torch.allclose(torch.sigmoid(corn.layers[-1].bias), torch.tensor([0.5, 0.4]), atol=1e-6)
    clf = ClassificationHead(4, num_grades=3)
    clf.init_from_targets(targets)
    assert torch.allclose(torch.softmax(clf.layers[-1].bias, 0), torch.tensor([0.5, 0.3, 0.2]), atol=1e-6)
    # with zero features the heads' first predictions are exactly the prior
    features = torch.zeros(1, 4)
    assert torch.allclose(clf.probabilities(clf(features)), torch.tensor([[0.5, 0.3, 0.2]]), atol=1e-6)
    assert torch.allclose(coral.probabilities(coral(features)), torch.tensor([[0.5, 0.3, 0.2]]), atol=1e-6)
    reg = RegressionHead(4)
    before = [p.clone() for p in reg.parameters()]
    reg.init_from_targets(targets)  # the reference head keeps its zero bias
    assert all(torch.equal(a, b) for a, b in zip(before, reg.parameters()))


# --- averaging M networks (ensembles, test-time augmentation) ---


def _head(task: str, num_grades: int = K):
    return build_model(depth=11, task=task, num_grades=num_grades).head


def _members(task: str, scale: float, num_grades: int = K, m: int = 5, b: int = 7) -> torch.Tensor:
    """Outputs (M, B, O) of M members; a large scale makes members sure (saturated sigmoids)."""
    width = {"regression": 1, "classification": num_grades, "sord": num_grades, "axes": num_grades}.get(
        task, num_grades - 1
    )
    outputs = torch.randn(m, b, width, generator=torch.Generator().manual_seed(int(scale))) * scale
    if task == "coral":  # a CoralLayer's thresholds are ordered (rank consistency): descending logits
        outputs = outputs.sort(dim=2, descending=True).values
    return outputs


# axes averages each axis's probabilities: its grade probabilities, a normalised product over the
# axes, are then not the members' mean (tests/unit/test_axes.py checks what it does promise)
@pytest.mark.parametrize("scale", [1.0, 8.0, 60.0])
@pytest.mark.parametrize("task", [t for t in TASKS if t != "axes"])
def test_average_decodes_to_the_mean_of_the_members(task, scale):
    head = _head(task, num_grades=9)
    members = _members(task, scale, num_grades=9)
    averaged = head.average(members)
    assert averaged.shape == members.shape[1:] and torch.isfinite(averaged).all()
    mean_score = torch.stack([head.decode(m) for m in members]).mean(dim=0)
    torch.testing.assert_close(head.decode(averaged), mean_score, atol=1e-5, rtol=0)
    if task == "regression":
        assert head.probabilities(averaged) is None
        return
    mean_probabilities = torch.stack([head.probabilities(m) for m in members]).mean(dim=0)
    torch.testing.assert_close(head.probabilities(averaged), mean_probabilities, atol=1e-5, rtol=0)


@pytest.mark.parametrize("task", TASKS)
def test_averaging_one_member_gives_that_member(task):
    head = _head(task)
    member = _members(task, 3.0, m=1)
    averaged = head.average(member)
    torch.testing.assert_close(head.decode(averaged), head.decode(member[0]), atol=1e-6, rtol=0)
    assert head.predict_grade(averaged).tolist() == head.predict_grade(member[0]).tolist()
    if task != "regression":
        torch.testing.assert_close(head.probabilities(averaged), head.probabilities(member[0]), atol=1e-6, rtol=0)


def test_average_by_hand():
    # two members disagree; the averaged decision follows the mean probabilities, not a vote
    classification = ClassificationHead(4, num_grades=3)
    members = torch.log(torch.tensor([[[0.5, 0.4, 0.1]], [[0.1, 0.5, 0.4]]]))
    averaged = classification.average(members)
    torch.testing.assert_close(classification.probabilities(averaged), torch.tensor([[0.3, 0.45, 0.25]]))
    assert classification.predict_grade(averaged).tolist() == [1]

    coral = CoralHead(4, num_grades=3)  # P(y > k): [0.9, 0.2] and [0.3, 0.1] -> [0.6, 0.15]
    averaged = coral.average(logit([[[0.9, 0.2]], [[0.3, 0.1]]]))
    torch.testing.assert_close(coral.exceed_probabilities(averaged), torch.tensor([[0.6, 0.15]]))
    assert coral.predict_grade(averaged).tolist() == [1]

    corn = CornHead(4, num_grades=3)  # conditionals [0.9, 0.5] and [0.5, 0.2] -> P(y > k) [0.45, 0.05] and [0.5, 0.1]
    averaged = corn.average(logit([[[0.9, 0.5]], [[0.5, 0.2]]]))
    torch.testing.assert_close(corn.exceed_probabilities(averaged), torch.tensor([[0.7, 0.275]]))
    torch.testing.assert_close(torch.sigmoid(averaged), torch.tensor([[0.7, 0.275 / 0.7]]))


class _Averaged(torch.nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, stacked):
        averaged = self.head.average(stacked)
        return self.head.decode(averaged), self.head.predict_grade(averaged)


@pytest.mark.parametrize("task", ["classification", "coral", "corn"])
def test_average_exports_to_onnx(task):
    import onnxruntime

    head = _head(task).eval()
    members = _members(task, 8.0, m=3)
    program = torch.onnx.export(_Averaged(head).eval(), (members,), dynamo=True, opset_version=18, verbose=False)
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString())
    score, grade = session.run(None, {session.get_inputs()[0].name: members.numpy()})
    expected_score, expected_grade = _Averaged(head)(members)
    np.testing.assert_allclose(score, expected_score.numpy(), atol=1e-5)
    np.testing.assert_array_equal(grade, expected_grade.numpy())


# --- SORD: soft ordinal labels ---


def test_sord_soft_targets_by_hand():
    e1, e4 = math.exp(-1), math.exp(-4)
    # K=3, y=1, beta=1: weights e^-1, 1, e^-1
    expected = torch.tensor([[e1, 1.0, e1]]) / (1 + 2 * e1)
    torch.testing.assert_close(sord_targets(torch.tensor([1.0]), 3, beta=1.0), expected)
    # K=3, y=0: distances 0, 1, 2 -> weights 1, e^-1, e^-4
    torch.testing.assert_close(
        sord_targets(torch.tensor([0]), 3, beta=1.0), torch.tensor([[1.0, e1, e4]]) / (1 + e1 + e4)
    )
    # beta=2 doubles the exponents
    e2 = math.exp(-2)
    torch.testing.assert_close(
        sord_targets(torch.tensor([2]), 3, beta=2.0), torch.tensor([[math.exp(-8), e2, 1.0]]) / (math.exp(-8) + e2 + 1)
    )


def test_sord_loss_by_hand():
    head = SordHead(4, num_grades=3, beta=1.0)
    e1 = math.exp(-1)
    q = [e1 / (1 + 2 * e1), 1 / (1 + 2 * e1), e1 / (1 + 2 * e1)]
    p = [0.2, 0.5, 0.3]
    outputs = torch.log(torch.tensor([p]))  # log-probabilities are logits whose softmax is p
    expected = -sum(qk * math.log(pk) for qk, pk in zip(q, p))
    assert float(head.loss(outputs, torch.tensor([1.0]))) == pytest.approx(expected, rel=1e-6)
    # two samples with class weights: sum(w_i * loss_i) / sum(w_i)
    weighted = SordHead(4, num_grades=3, beta=1.0, class_weights=torch.tensor([1.0, 3.0, 1.0]))
    q0 = [1 / (1 + e1 + math.exp(-4)), e1 / (1 + e1 + math.exp(-4)), math.exp(-4) / (1 + e1 + math.exp(-4))]
    loss0 = -sum(qk * math.log(pk) for qk, pk in zip(q0, p))
    got = weighted.loss(outputs.repeat(2, 1), torch.tensor([1.0, 0.0]))
    assert float(got) == pytest.approx((3 * expected + 1 * loss0) / 4, rel=1e-6)


def test_sord_with_a_large_beta_is_cross_entropy():
    torch.manual_seed(0)
    outputs, target = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 1, 2])
    sharp = SordHead(4, num_grades=4, beta=50.0)
    torch.testing.assert_close(sharp.loss(outputs, target.float()), F.cross_entropy(outputs, target))


def test_sord_decodes_like_classification():
    sord, classification = SordHead(4, num_grades=3), ClassificationHead(4, num_grades=3)
    outputs = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
    torch.testing.assert_close(sord.probabilities(outputs), torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
    torch.testing.assert_close(sord.decode(outputs), torch.tensor([0.5 + 0.6, 0.1 + 0.6]))
    assert sord.predict_grade(outputs).tolist() == classification.predict_grade(outputs).tolist() == [1, 0]


def test_sord_beta_reaches_the_head_and_is_validated():
    assert build_model(depth=11, task="sord", num_grades=3, sord_beta=2.5).head.beta == 2.5
    assert build_model(depth=11, task="sord", num_grades=3).head.beta == 1.0
    for beta in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="--sord-beta"):
            build_model(depth=11, task="sord", num_grades=3, sord_beta=beta)
