"""Grade tables and the axes head: parsing, errors, log-probabilities by hand, masked loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imgrade.config import ModelConfig
from imgrade.core.checkpoint import save_checkpoint
from imgrade.core.errors import ConfigError
from imgrade.models.axes import (
    CUCUMBER9_GRADES,
    AxesHead,
    GradeAxes,
    find_grade_axes,
    parse_grade_axes,
    read_grade_axes,
)
from imgrade.models.factory import build_model
from imgrade.training.warm_start import plan_init

C9 = list(CUCUMBER9_GRADES)


def test_the_built_in_cucumber9_table():
    table, where = find_grade_axes(None, None, C9)
    assert where == "built-in CUCUMBER-9"
    assert table.axes == ("size", "shape")
    assert table.levels == (("2L", "L", "M", "S", "2S"), ("straight", "bent", "C"))
    cells = dict(zip(table.grades, table.cells))
    assert cells["2L"] == ("2L", "straight") and cells["2S"] == ("2S", "straight")
    assert cells["BL"] == ("L", "bent") and cells["BM"] == ("M", "bent") and cells["BS"] == ("S", "bent")
    assert cells["C"] == (None, "C")  # C has no size
    assert table.gather_matrix().shape == (5 + 3, 9)
    # the same names in another order are not CUCUMBER-9's scheme: no silent built-in table
    with pytest.raises(ConfigError, match="task axes needs a grade table.*--axes FILE.csv"):
        find_grade_axes(None, None, C9[::-1])


def test_a_user_table_in_its_own_row_order(tmp_path):
    path = tmp_path / "mine.csv"
    # a spreadsheet's BOM, spaces, rows in another order than the grades
    path.write_text(
        "\ufeffgrade, ripeness ,colour\nlate, ripe, red\nearly,green,\n mid ,half,red\n\nrotten,ripe,brown\n",
        encoding="utf-8",
    )
    table = read_grade_axes(path, ["early", "mid", "late", "rotten"])
    assert table.grades == ("early", "mid", "late", "rotten")  # the data's order
    assert table.axes == ("ripeness", "colour")
    assert table.levels == (("ripe", "green", "half"), ("red", "brown"))  # first appearance down the file
    assert table.cells == (("green", None), ("half", "red"), ("ripe", "red"), ("ripe", "brown"))
    assert table.level_index().tolist() == [[1, -1], [2, 0], [0, 0], [0, 1]]
    assert GradeAxes.from_dict(table.to_dict()) == table  # what a checkpoint stores gives the same table


@pytest.mark.parametrize(
    "text, expected",
    [
        ("grade,size\nA,big\n", "has no row for grade\\(s\\) B: add one row per grade of the data \\(A,B\\)"),
        (
            "grade,size\nA,big\nB,small\nX,small\n",
            "line 4: grade 'X' is not one of the data's grades \\(A,B\\): fix its name or remove the row",
        ),
        (
            "grade,size,shape\nA,big,round\nB,small,round\n",
            "axis 'shape' has one level \\('round'\\), so it cannot tell grades apart: give it two levels or more, or drop the column",
        ),
        ("grade,size,shape\nA,big,\nB,small,\n", "axis 'shape' has no level"),
        ("name,size\nA,big\nB,small\n", "the first line must be 'grade' and one named column per axis"),
        ("grade,size\nA,big,extra\nB,small\n", "line 2: 3 cells but the header has 2"),
        ("grade,size\nA,big\nA,small\nB,small\n", "line 3: grade 'A' has a second row: keep one row per grade"),
        ("grade,size,size\nA,big,x\nB,small,y\n", "names an axis twice"),
    ],
)
def test_bad_tables_are_one_line_errors_naming_the_file_and_the_fix(tmp_path, text, expected):
    path = tmp_path / "table.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as caught:
        read_grade_axes(path, ["A", "B"])
    message = str(caught.value)
    assert str(path) in message and "\n" not in message


def test_grades_the_axes_cannot_tell_apart_are_refused():
    # C is "big" of any shape, so a big round photo would be both A and C
    with pytest.raises(
        ConfigError, match="t.csv: grades 'A' and 'C' overlap .*: give them different levels on some axis"
    ):
        parse_grade_axes("grade,size,shape\nA,big,round\nB,small,long\nC,big,\n", ["A", "B", "C"], "t.csv")
    parse_grade_axes(
        "grade,size,shape\nA,big,round\nB,small,round\nC,,long\n", ["A", "B", "C"]
    )  # C: long, any size: fine
    with pytest.raises(ConfigError, match="grades 'B' and 'C' overlap"):
        parse_grade_axes("grade,size,shape\nA,big,round\nB,small,long\nC,small,long\n", ["A", "B", "C"])


def test_missing_file_and_the_table_beside_the_data(tmp_path):
    with pytest.raises(ConfigError, match="grade table .*nope.csv does not exist: check the --axes path"):
        find_grade_axes(str(tmp_path / "nope.csv"), None, ["A", "B"])
    data = tmp_path / "photos"
    data.mkdir()
    (data / "grade_axes.csv").write_text("grade,size\nA,big\nB,small\n")
    table, where = find_grade_axes(None, str(data), ["A", "B"])
    assert where == str(data / "grade_axes.csv") and table.levels == (("big", "small"),)
    # beside a data file (a CSV manifest, an archive) too; --axes wins over it
    table, _ = find_grade_axes(None, str(data / "manifest.csv"), ["A", "B"])
    assert table.levels == (("big", "small"),)
    explicit = tmp_path / "other.csv"
    explicit.write_text("grade,weight\nA,heavy\nB,light\n")
    assert find_grade_axes(str(explicit), str(data), ["A", "B"])[0].axes == ("weight",)


# A 2-axis example by hand. Axis a: levels a0, a1; axis b: levels b0, b1, b2.
# Grades: x = (a0, b0), y = (any, b1), z = (a1, b2).
# Outputs chosen so that softmax(a) = (0.6, 0.4) and softmax(b) = (0.5, 0.2, 0.3):
#   x: log 0.6 + log 0.5 -> 0.30
#   y: log 0.2 (a is marginalised: adds 0) -> 0.20
#   z: log 0.4 + log 0.3 -> 0.12
# The table leaves (a1, b0) and (a0, b2) to no grade, so the three sum to 0.62 and are renormalised:
#   p = (0.30, 0.20, 0.12) / 0.62 = (0.483871, 0.322581, 0.193548)
#   score = 0 * 0.483871 + 1 * 0.322581 + 2 * 0.193548 = 0.709677; most probable grade: x (0)
HAND_TABLE = "grade,a,b\nx,a0,b0\ny,,b1\nz,a1,b2\n"


def _hand_head() -> tuple[AxesHead, torch.Tensor]:
    head = AxesHead(4, 3, grade_axes=parse_grade_axes(HAND_TABLE, ["x", "y", "z"]))
    outputs = torch.log(torch.tensor([[0.6, 0.4, 0.5, 0.2, 0.3]]))
    return head, outputs + torch.tensor([[1.7, 1.7, -0.4, -0.4, -0.4]])  # a shift within an axis changes nothing


def test_grade_log_probabilities_by_hand():
    head, outputs = _hand_head()
    assert head.gather.tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    scores = head.grade_log_scores(outputs)
    torch.testing.assert_close(scores, torch.tensor([[math.log(0.30), math.log(0.20), math.log(0.12)]]))
    probabilities = head.probabilities(outputs)
    torch.testing.assert_close(probabilities, torch.tensor([[0.30, 0.20, 0.12]]) / 0.62)
    assert float(head.decode(outputs)) == pytest.approx(0.20 / 0.62 + 2 * 0.12 / 0.62, abs=1e-6)
    assert float(head.decode(outputs)) == pytest.approx(0.709677, abs=1e-6)
    assert head.predict_grade(outputs).tolist() == [0]


def test_the_loss_skips_an_axis_the_grade_leaves_open():
    head, outputs = _hand_head()
    outputs = outputs.repeat(2, 1).requires_grad_(True)
    # x: -log 0.6 - log 0.5; y: only axis b, -log 0.2 (its "any" on axis a adds nothing)
    loss = head.loss(outputs, torch.tensor([0.0, 1.0]))
    expected = (-math.log(0.6) - math.log(0.5) - math.log(0.2)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert outputs.grad[1, :2].abs().max() == 0  # grade y teaches axis a nothing
    assert outputs.grad[0, :2].abs().max() > 0
    weighted = AxesHead(4, 3, class_weights=torch.tensor([1.0, 3.0, 1.0]), grade_axes=head.grade_axes)
    per_sample = (-math.log(0.6) - math.log(0.5), -math.log(0.2))
    assert weighted.loss(outputs, torch.tensor([0.0, 1.0])).item() == pytest.approx(
        (per_sample[0] + 3 * per_sample[1]) / 4, abs=1e-6
    )


def test_probabilities_sum_to_one_and_agree_with_the_decisions():
    torch.manual_seed(0)
    model = build_model(
        depth=11, task="axes", num_grades=9, state={"grade_axes": find_grade_axes(None, None, C9)[0].to_dict()}
    )
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 8)  # 5 sizes + 3 shapes
    outputs = 10 * torch.randn(64, 8)  # confident and extreme logits too
    probabilities = model.probabilities(outputs)
    assert probabilities.shape == (64, 9) and (probabilities >= 0).all()
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(64))
    torch.testing.assert_close(model.decode(outputs), probabilities @ torch.arange(9.0))
    assert torch.equal(model.predict_grade(outputs), probabilities.argmax(dim=1))
    # the table is derived from the checkpoint's copy, never part of the weights
    assert not any("gather" in key or "levels_of" in key for key in model.state_dict())


def test_average_is_the_mean_of_each_axis_probabilities():
    head, _ = _hand_head()
    members = torch.randn(3, 4, 5)  # (M, B, O)
    averaged = head.average(members)
    assert averaged.shape == (4, 5)
    mean = torch.stack([head.axis_log_probabilities(m) for m in members]).exp().mean(dim=0)
    torch.testing.assert_close(head.axis_log_probabilities(averaged).exp(), mean)
    same = head.average(members[:1].repeat(2, 1, 1))
    torch.testing.assert_close(head.probabilities(same), head.probabilities(members[0]))


def test_output_biases_start_at_each_axis_prior():
    head = AxesHead(4, 3, grade_axes=parse_grade_axes(HAND_TABLE, ["x", "y", "z"]))
    head.init_from_targets(np.array([0, 0, 0, 1, 2]))  # a: x x x z -> (3/4, 1/4); b: x x x y z -> (3/5, 1/5, 1/5)
    axes = head.axis_log_probabilities(head(torch.zeros(1, 4))).exp()
    torch.testing.assert_close(axes, torch.tensor([[0.75, 0.25, 0.6, 0.2, 0.2]]))


def test_init_loads_the_head_only_from_a_run_with_the_same_table(tmp_path):
    table = find_grade_axes(None, None, C9)[0].to_dict()
    source = tmp_path / "source.pt"
    config = {"model": {"depth": 11, "task": "axes", "head": "auto"}}
    save_checkpoint(
        source, {"config": config, "grade_names": C9, "head_state": {"grade_axes": table}, "model_state": {}}
    )
    model = ModelConfig(depth=11, task="axes")
    assert plan_init(source, model, C9, {"grade_axes": table}).fresh_head is None
    other = {
        "axes": {"shape": ["straight", "bent", "C"], "size": table["axes"]["size"]},
        "grades": {g: cells[::-1] for g, cells in table["grades"].items()},
    }
    assert "the head's state differs" in plan_init(source, model, C9, {"grade_axes": other}).fresh_head
