"""The one layout of predict's rows (both engines, every format): columns, rows, Arrow schema, --out checks."""

import pytest

from imgrade.calibration import Conformal
from imgrade.calibration.decision import Calibration
from imgrade.core.errors import ConfigError, OutputError
from imgrade.pipeline.rows import RowLayout, json_record, output_format
from imgrade.runtime.grading import Engine, Grade

GRADES = ("2L", "L", "M")


class _Grader(Engine):
    """A grader's description, without a network."""

    def __init__(self, task, grade_names=GRADES, calibrated=False):
        self.task = task
        self.grade_names = list(grade_names) if grade_names is not None else None
        conformal = Conformal(kind="aps", alpha=0.1, qhat=0.8, n=50) if calibrated else None
        self.calibration = Calibration(None, conformal) if calibrated else None


@pytest.mark.parametrize(
    "grader, columns",
    [
        (_Grader("regression"), ["image", "score", "grade", "error"]),
        (_Grader("regression", calibrated=True), ["image", "score", "grade", "grade_set", "error"]),
        (_Grader("coral"), ["image", "score", "grade", "p_2L", "p_L", "p_M", "error"]),
        (_Grader("corn", calibrated=True), ["image", "score", "grade", "grade_set", "p_2L", "p_L", "p_M", "error"]),
        (_Grader("regression", grade_names=None), ["image", "score", "error"]),
    ],
)
def test_the_columns_follow_what_the_grader_gives(grader, columns):
    assert RowLayout.of(grader).columns == columns


def test_a_graded_row_and_an_error_row_have_every_column():
    layout = RowLayout(GRADES, grade_sets=True, probabilities=True)
    grade = Grade("a.png", 1.23456, "L", 1, ["L", "M"], {"2L": 0.12344, "L": 0.54321, "M": 0.33336})
    assert layout.row("a.png", grade.to_dict()) == {
        "image": "a.png",
        "score": 1.2346,
        "grade": "L",
        "grade_set": "L|M",
        "p_2L": 0.1234,
        "p_L": 0.5432,
        "p_M": 0.3334,
        "error": None,
    }
    failed = layout.row("b.png", error="b.png is empty (0 bytes): replace it")
    assert list(failed) == layout.columns
    assert failed == {
        **dict.fromkeys(layout.columns),
        "image": "b.png",
        "error": "b.png is empty (0 bytes): replace it",
    }


def test_a_continuous_target_row_has_only_its_score():
    layout = RowLayout(None, grade_sets=False, probabilities=False)
    record = Grade("c.png", 17.25, None, None, None, None).to_dict()
    assert layout.row("c.png", record) == {"image": "c.png", "score": 17.25, "error": None}


def test_the_arrow_schema_types_numbers_as_float64_and_the_rest_as_strings():
    pa = pytest.importorskip("pyarrow")
    layout = RowLayout(GRADES, grade_sets=True, probabilities=True)
    schema = layout.schema()
    assert schema.names == layout.columns
    assert [name for name in schema.names if schema.field(name).type == pa.float64()] == [
        "score",
        "p_2L",
        "p_L",
        "p_M",
    ]
    table = layout.table([layout.row("b.png", error="broken")])
    assert table.to_pylist() == [layout.row("b.png", error="broken")]


def test_a_json_record_of_a_graded_photo_is_its_grade_as_served():
    grade = Grade("a.png", 1.2, "L", 1, ["L", "M"], None)
    assert json_record("a.png", grade.to_dict()) == grade.to_dict()
    failed = json_record("b.png", error="broken")
    assert set(failed) == {*grade.to_dict(), "error"} and failed["score"] is None and failed["error"] == "broken"


def test_out_is_checked_before_anything_is_graded(tmp_path):
    assert [output_format(tmp_path / f"g{s}") for s in (".csv", ".JSONL", ".parquet")] == ["csv", "jsonl", "parquet"]
    with pytest.raises(ConfigError, match=r"--out .*g\.json is not a \.csv, \.jsonl or \.parquet file: name it g\.csv"):
        output_format(tmp_path / "g.json")
    with pytest.raises(OutputError, match="the folder .*missing does not exist"):
        output_format(tmp_path / "missing" / "g.csv")
