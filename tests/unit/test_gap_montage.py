"""scripts/gap_montage.py on a tiny fake real set in the CUCUMBER-9 format and a hand-made predictions CSV."""

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgrade.data.cucumber9_writer import write_cucumber9

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
P1_NAMES = ["2L", "BM", "BL", "M", "S", "L", "2S", "BS", "C"]  # as published: not the grade order

# (true, predicted) of row 4 per photo, photo i being data_batch_1:i. By hand: M is wrong 3/4,
# mostly BM (2), 2 of 3 across the straight/bent boundary; BM wrong 2/3, M and BS tie so M (the
# earlier grade) shows first, 1 of 2 across; 2L all right; C wrong 1/1, never across.
# All: 6/10 wrong, 3 across.
ROW_4 = [
    ("M", "M"), ("M", "BM"), ("M", "S"), ("M", "BM"),
    ("BM", "BM"), ("BM", "BS"), ("BM", "M"),
    ("2L", "2L"), ("2L", "2L"),
    ("C", "BS"),
]  # fmt: skip


def _load_gap_montage():
    """scripts/gap_montage.py as a module (scripts/ is not a package; it imports make_montage beside it)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location("gap_montage", SCRIPTS / "gap_montage.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


gap_montage = _load_gap_montage()


def colour(i: int) -> np.ndarray:
    """A distinct flat colour per photo, so a pixel of the montage names the photo drawn there."""
    return np.array([40 + 20 * i, 200 - 15 * i, (97 * i) % 256], dtype=np.uint8)


@pytest.fixture
def real(tmp_path) -> Path:
    images = np.stack([np.broadcast_to(colour(i), (32, 32, 3)) for i in range(len(ROW_4))])
    labels = np.array([P1_NAMES.index(true) for true, _ in ROW_4])
    return write_cucumber9(tmp_path / "cucumber-9-python", images, labels, P1_NAMES, num_batches=1)


def write_predictions(path: Path, lines: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    return path


STAGES = {3: "synthetic only (zero-shot)", 4: "pretrained + fine-tuned"}  # as benchmarks/few_real.py names them


@pytest.fixture
def predictions(tmp_path) -> Path:
    # row 3 (all right) must not leak into row 4's counts
    lines = [
        {
            "row": row,
            "stage": f"{row} {STAGES[row]}",
            "fold": i % 5,
            "id": f"data_batch_1:{i}",
            "true": true,
            "predicted": true,
        }
        for row in (3, 4)
        for i, (true, _) in enumerate(ROW_4)
    ]
    for line, (_, predicted) in zip(lines[len(ROW_4) :], ROW_4):
        line["predicted"] = predicted
    return write_predictions(tmp_path / "predictions.csv", lines)


def test_table_and_picture(real, predictions, capsys):
    assert gap_montage.main([str(predictions), "--data", str(real)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "row 4 pretrained + fine-tuned: 6/10 wrong, 3/6 (50%) of them across the straight/bent boundary"
    assert [line.split() for line in table[2:]] == [
        ["2L", "2", "0", "-", "-"],
        ["M", "4", "3", "BM", "2", "2/3", "(67%)"],
        ["BM", "3", "2", "M", "1", "1/2", "(50%)"],
        ["C", "1", "1", "BS", "1", "0/1", "(0%)"],
        ["all", "10", "6", "3/6", "(50%)"],
    ]
    # four lines (grades with photos), eight cells each, the counts column; no synthetic block
    cell = 32 * gap_montage.SCALE + gap_montage.GAP
    line_height = 32 * gap_montage.SCALE + gap_montage.CAPTION_HEIGHT + gap_montage.GAP
    picture = Image.open(predictions.with_name("gap_row4.png")).convert("RGB")
    assert picture.size == (
        gap_montage.LABEL_WIDTH + 8 * cell + gap_montage.STATS_WIDTH,
        gap_montage.HEADER_HEIGHT + 4 * line_height,
    )
    # line 2 (M) starts with its most common wrong prediction, photo 1; then photo 3 (BM), photo 2 (S)
    top = gap_montage.HEADER_HEIGHT + line_height + 16
    for column, photo in enumerate((1, 3, 2)):
        drawn = picture.getpixel((gap_montage.LABEL_WIDTH + column * cell + 16, top))
        assert np.abs(np.subtract(drawn, colour(photo), dtype=int)).max() <= 8


def test_synthetic_block_on_the_right(real, predictions, tmp_path):
    out = tmp_path / "gap.png"
    argv = [str(predictions), "--data", str(real), "--synthetic", "--per-grade", "2", "--out", str(out)]
    assert gap_montage.main(argv) == 0
    cell = 32 * gap_montage.SCALE + gap_montage.GAP
    line_height = 32 * gap_montage.SCALE + gap_montage.CAPTION_HEIGHT + gap_montage.GAP
    synthetic_left = gap_montage.LABEL_WIDTH + 2 * cell + gap_montage.STATS_WIDTH + gap_montage.SIDE_GAP
    picture = Image.open(out).convert("RGB")
    assert picture.size == (
        synthetic_left + gap_montage.SYNTHETIC_PER_GRADE * cell,
        gap_montage.HEADER_HEIGHT + 4 * line_height,
    )
    # 2L has no wrong prediction, so no synthetic photos; M's line shows synthetic BM photos
    first_line, second_line = (gap_montage.HEADER_HEIGHT + line * line_height + 48 for line in (0, 1))
    assert picture.getpixel((synthetic_left + 48, first_line)) == (255, 255, 255)
    assert picture.getpixel((synthetic_left + 48, second_line)) != (255, 255, 255)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda line: {k: v for k, v in line.items() if k != "predicted"}, "lacks column(s) predicted"),
        (lambda line: {**line, "id": "data_batch_7:3"}, "id 'data_batch_7:3' (line 2 of"),
        (lambda line: {**line, "row": 2}, "row 4 is not in"),
    ],
    ids=["missing column", "unknown id", "missing row"],
)
def test_bad_predictions_exit_with_one_line(real, tmp_path, edit, message):
    line = {"row": 4, "fold": 0, "id": "data_batch_1:0", "true": "M", "predicted": "S"}
    predictions = write_predictions(tmp_path / "predictions.csv", [edit(line)])
    with pytest.raises(SystemExit, match=r"^[^\n]+$") as error:
        gap_montage.main([str(predictions), "--data", str(real)])
    assert message in str(error.value)
    assert not (tmp_path / "gap_row4.png").exists()


def test_the_title_is_the_row_number_when_the_file_names_no_stage(real, predictions, tmp_path, capsys):
    with open(predictions, newline="") as f:
        lines = [{k: v for k, v in line.items() if k != "stage"} for line in csv.DictReader(f)]
    bare = write_predictions(tmp_path / "bare.csv", lines)
    assert gap_montage.main([str(bare), "--data", str(real), "--out", str(tmp_path / "bare.png")]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("row 4: 6/10 wrong")
