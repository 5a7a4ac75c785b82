"""Draw what the synthetic-to-real gap is made of: the misgraded real photos of one row of few_real.

    .venv/bin/python scripts/gap_montage.py bench-few/predictions.csv
    .venv/bin/python scripts/gap_montage.py bench-few/predictions.csv --row 3 --synthetic
    .venv/bin/python scripts/gap_montage.py bench-few/predictions.csv --per-grade 12 --out /tmp/gap.png

Reads the per-photo predictions that benchmarks/few_real.py writes (columns row, stage, fold, id,
true, predicted; row 3 = synthetic only, row 4 = the same model fine-tuned on real photos) and draws one
line per true grade: up to ``--per-grade`` misgraded real photos, the most common wrong prediction
first, each with its predicted grade under it, then "wrong/total" and the most common wrong
prediction. ``--synthetic`` adds, on the right, synthetic photos of that most common wrong grade:
what the model learnt that grade looks like.

Prints a table per grade to stdout: photos, wrong ones, the most common wrong prediction, and the
share of wrong predictions that cross the straight/bent boundary (straight 2L L M S 2S, bent BL BM
BS; C is on neither side, so its errors and errors into C never cross it).

The real photos default to the sample in ../shared (see ../shared/data/CUCUMBER9.md); they are
only read, never copied into the repository.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# scripts/ is sys.path[0] when this file runs as a script: share make_montage's look
from make_montage import (
    DEFAULT_REAL,
    FONT_SIZE,
    GAP,
    HEADER_HEIGHT,
    LABEL_WIDTH,
    SCALE,
    SIDE_GAP,
    first_of_grade,
    upscale,
)
from PIL import Image, ImageDraw, ImageFont

from imgrade.core.errors import ImgradeError
from imgrade.core.io import atomic_write
from imgrade.data.cucumber9 import read_cucumber9
from imgrade.data.imageset import ImageSet
from imgrade.data.synthetic import GRADE_NAMES, generate_cucumbers

REQUIRED_COLUMNS = ("row", "id", "true", "predicted")
STRAIGHT = ("2L", "L", "M", "S", "2S")
BENT = ("BL", "BM", "BS")
PER_GRADE = 8  # misgraded photos per line
SYNTHETIC_PER_GRADE = 4
SYNTHETIC_SEED = 0
CAPTION_HEIGHT = 18  # the predicted grade under each photo
STATS_WIDTH = 130  # "wrong 5/30" and "mostly BM (3)" at the end of a line


@dataclass
class GradeGap:
    """The predictions for the real photos of one true grade."""

    grade: str
    total: int
    wrong: list[tuple[int, str]]
    """(index into the real set, predicted grade) per misgraded photo, most common prediction first."""
    most_common: str | None
    most_common_count: int
    across_boundary: int
    """Wrong predictions on the other side of the straight/bent boundary."""


def crosses_boundary(true: str, predicted: str) -> bool:
    """Whether a prediction puts a straight cucumber among the bent grades or a bent one among the straight.

    >>> crosses_boundary("M", "BM"), crosses_boundary("BS", "S"), crosses_boundary("M", "S"), crosses_boundary("M", "C")
    (True, True, False, False)
    """
    return (true in STRAIGHT and predicted in BENT) or (true in BENT and predicted in STRAIGHT)


def row_title(path: Path, row: int) -> str:
    """ "row N" and the stage few_real names in its ``stage`` column ("row 4 pretrained + fine-tuned"), when it wrote one."""
    with open(path, newline="") as f:
        for line in csv.DictReader(f):
            if (line.get("row") or "").strip() == str(row) and (line.get("stage") or "").strip():
                return f"row {line['stage'].strip()}"
    return f"row {row}"


def read_predictions(path: Path, row: int, real: ImageSet, data_path: str) -> list[tuple[int, str, str]]:
    """The (index into ``real``, true grade, predicted grade) of each prediction of ``row``, in file order.

    Raises:
        SystemExit: a missing file or column, a row the file does not hold, an id not in
            ``real``, an unknown grade, or a true grade that disagrees with ``real``.
    """
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: pass the predictions.csv that benchmarks/few_real.py wrote")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns, lines = reader.fieldnames or [], list(reader)
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise SystemExit(
            f"{path} lacks column(s) {', '.join(missing)} (it has {', '.join(columns) or 'none'}): pass the "
            "predictions.csv of benchmarks/few_real.py (row,fold,id,true,predicted)"
        )
    rows_held = sorted({(line["row"] or "").strip() for line in lines})  # a short line leaves None
    if str(row) not in rows_held:
        raise SystemExit(
            f"row {row} is not in {path}: it holds row(s) {', '.join(rows_held)}; pass --row {rows_held[0]}"
        )
    index_of_id = {image_id: i for i, image_id in enumerate(real.ids)}
    predictions = []
    for number, line in enumerate(lines, start=2):  # line 1 is the header
        if (line["row"] or "").strip() != str(row):
            continue
        index = index_of_id.get(line["id"])
        if index is None:
            raise SystemExit(
                f"id {line['id']!r} (line {number} of {path}) is not in {data_path}: pass --data the set the "
                "predictions were made on"
            )
        for column in ("true", "predicted"):
            if line[column] not in real.grade_names:
                raise SystemExit(
                    f"{column} grade {line[column]!r} on line {number} of {path} is not one of "
                    f"{' '.join(real.grade_names)}"
                )
        label = real.grade_names[int(real.targets[index])]
        if line["true"] != label:
            raise SystemExit(
                f"id {line['id']} is grade {line['true']} on line {number} of {path} but {label} in {data_path}: "
                "pass --data the set the predictions were made on"
            )
        predictions.append((index, line["true"], line["predicted"]))
    return predictions


def gaps_by_grade(predictions: list[tuple[int, str, str]], grade_names: list[str]) -> list[GradeGap]:
    """One GradeGap per grade that has predictions, in the order of ``grade_names``.

    >>> gaps = gaps_by_grade([(0, "M", "M"), (1, "M", "BM"), (2, "M", "S"), (3, "M", "BM")], ["M", "S", "BM"])
    >>> gaps[0].total, gaps[0].wrong, gaps[0].most_common, gaps[0].across_boundary
    (4, [(1, 'BM'), (3, 'BM'), (2, 'S')], 'BM', 2)
    """
    gaps = []
    for grade in grade_names:
        mine = [(index, predicted) for index, true, predicted in predictions if true == grade]
        if not mine:
            continue
        wrong = [(index, predicted) for index, predicted in mine if predicted != grade]
        counts = Counter(predicted for _, predicted in wrong)
        # the dominant confusion together at the start of the line, then by grade order
        wrong.sort(key=lambda item: (-counts[item[1]], grade_names.index(item[1])))
        most_common = wrong[0][1] if wrong else None
        most_common_count = counts[most_common] if wrong else 0
        across = sum(crosses_boundary(grade, predicted) for _, predicted in wrong)
        gaps.append(GradeGap(grade, len(mine), wrong, most_common, most_common_count, across))
    return gaps


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.0%})" if whole else "-"


def format_table(gaps: list[GradeGap], title: str) -> str:
    """The per-grade table that main prints."""
    num_wrong = sum(len(gap.wrong) for gap in gaps)
    num_across = sum(gap.across_boundary for gap in gaps)
    lines = [
        f"{title}: {num_wrong}/{sum(gap.total for gap in gaps)} wrong, {_share(num_across, num_wrong)} of them "
        "across the straight/bent boundary",
        f"{'grade':<6}{'n':>5}{'wrong':>7}  {'most common wrong':<19}{'straight<->bent'}",
    ]
    for gap in gaps:
        common = f"{gap.most_common} {gap.most_common_count}" if gap.most_common else "-"
        across = _share(gap.across_boundary, len(gap.wrong))
        lines.append(f"{gap.grade:<6}{gap.total:>5}{len(gap.wrong):>7}  {common:<19}{across}")
    num_photos = sum(gap.total for gap in gaps)
    lines.append(f"{'all':<6}{num_photos:>5}{num_wrong:>7}  {'':<19}{_share(num_across, num_wrong)}")
    return "\n".join(lines)


def draw_gap(
    real: ImageSet, gaps: list[GradeGap], title: str, per_grade: int = PER_GRADE, synthetic: ImageSet | None = None
) -> Image.Image:
    """One line per grade: misgraded photos with their predicted grade, the counts, then (with
    ``synthetic``) synthetic photos of the most common wrong grade."""
    photo_height, photo_width = (size * SCALE for size in real.image_size)
    cell = photo_width + GAP
    line_height = photo_height + CAPTION_HEIGHT + GAP
    stats_left = LABEL_WIDTH + per_grade * cell
    synthetic_left = stats_left + STATS_WIDTH + SIDE_GAP
    width = synthetic_left + SYNTHETIC_PER_GRADE * cell if synthetic is not None else stats_left + STATS_WIDTH
    canvas = Image.new("RGB", (width, HEADER_HEIGHT + len(gaps) * line_height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)

    def photo(image, caption: str, colour: str, left: int, top: int) -> None:
        canvas.paste(upscale(image), (left, top))
        draw.text((left + photo_width // 2, top + photo_height + 1), caption, fill=colour, font=font, anchor="mt")

    draw.text((LABEL_WIDTH, 6), f"{title}: misgraded real photos, predicted grade under each", fill="black", font=font)
    if synthetic is not None:
        draw.text((synthetic_left, 6), "synthetic photos of the most common wrong grade", fill="black", font=font)
    for line, gap in enumerate(gaps):
        top = HEADER_HEIGHT + line * line_height
        draw.text((6, top + photo_height // 2 - 9), gap.grade, fill="black", font=font)
        for column, (index, predicted) in enumerate(gap.wrong[:per_grade]):
            photo(real.images[index], predicted, "firebrick", LABEL_WIDTH + column * cell, top)
        middle = top + photo_height // 2
        draw.text((stats_left + 6, middle - 20), f"wrong {len(gap.wrong)}/{gap.total}", fill="black", font=font)
        if gap.most_common is None:
            continue
        common = f"mostly {gap.most_common} ({gap.most_common_count})"
        draw.text((stats_left + 6, middle + 2), common, fill="firebrick", font=font)
        if synthetic is not None:
            for column, image in enumerate(first_of_grade(synthetic, gap.most_common, SYNTHETIC_PER_GRADE)):
                photo(image, gap.most_common, "gray", synthetic_left + column * cell, top)
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", help="predictions.csv written by benchmarks/few_real.py")
    parser.add_argument("--data", default=str(DEFAULT_REAL), help="CUCUMBER-9 folder or .tar.gz the predictions are of")
    parser.add_argument("--row", type=int, default=4, help="benchmark row: 3 synthetic only, 4 fine-tuned")
    parser.add_argument("--per-grade", type=int, default=PER_GRADE, help="misgraded photos shown per grade")
    parser.add_argument("--synthetic", action="store_true", help="add synthetic photos of the most common wrong grade")
    parser.add_argument("--out", help="PNG to write (default: gap_row<ROW>.png beside the CSV)")
    args = parser.parse_args(argv)
    if args.per_grade < 1:
        raise SystemExit(f"--per-grade {args.per_grade}: show at least 1 photo per grade")
    predictions_path = Path(args.predictions)
    out = Path(args.out) if args.out else predictions_path.with_name(f"gap_row{args.row}.png")
    try:
        real = read_cucumber9(args.data)
    except ImgradeError as error:
        raise SystemExit(str(error)) from None
    predictions = read_predictions(predictions_path, args.row, real, args.data)
    gaps = gaps_by_grade(predictions, real.grade_names)
    title = row_title(predictions_path, args.row)
    print(format_table(gaps, title))
    synthetic = None
    if args.synthetic:
        synthetic = generate_cucumbers(
            40 * len(GRADE_NAMES), image_size=real.image_size[0], seed=SYNTHETIC_SEED, randomize=1.0
        ).imageset
    montage = draw_gap(real, gaps, title, args.per_grade, synthetic)
    # 256 colours are plenty for 32x32 photos and keep the PNG small enough for the docs
    montage = montage.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    with atomic_write(out, "wb") as f:
        montage.save(f, format="PNG", optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
