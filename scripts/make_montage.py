"""Draw docs/img/synthetic_vs_real.png: real CUCUMBER-9 photos beside synthetic ones, a row per grade.

    .venv/bin/python scripts/make_montage.py
    .venv/bin/python scripts/make_montage.py path/to/cucumber-9-python --out /tmp/montage.png --seed 3
    .venv/bin/python scripts/make_montage.py --randomize 0 --out /tmp/plain.png

The synthetic side shows domain-randomised photos at ``--randomize`` (default 1.0, what few-shot
pretraining draws); 0 shows the plain renders.

The real photos default to the sample in ../shared (see ../shared/data/CUCUMBER9.md); they are
only read, never copied into the repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from imgrade.core.io import atomic_write
from imgrade.data.cucumber9 import read_cucumber9
from imgrade.data.imageset import ImageSet
from imgrade.data.synthetic import GRADE_NAMES, generate_cucumbers

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "cucumber9-p1-sample" / "cucumber-9-python"
DEFAULT_OUT = REPO / "docs" / "img" / "synthetic_vs_real.png"
PER_SIDE = 6  # photos per grade on each side
SCALE = 3  # nearest-neighbour upscaling, so 32x32 pixels stay visible
GAP = 3  # pixels between photos
LABEL_WIDTH = 44
HEADER_HEIGHT = 30
SIDE_GAP = 24  # between the real and the synthetic half
FONT_SIZE = 15


def first_of_grade(imageset: ImageSet, grade: str, count: int) -> np.ndarray:
    """The first ``count`` images of ``grade`` (fewer if the set has fewer), in reading order."""
    index = imageset.grade_names.index(grade)
    chosen = np.flatnonzero(imageset.targets.astype(np.int64) == index)[:count]
    return imageset.images[chosen]


def upscale(image: np.ndarray) -> Image.Image:
    """A uint8 (H, W, 3) photo ``SCALE`` times larger, nearest neighbour so its pixels stay sharp."""
    return Image.fromarray(image).resize((image.shape[1] * SCALE, image.shape[0] * SCALE), Image.NEAREST)


def draw_montage(real: ImageSet, synthetic: ImageSet, synthetic_title: str = "synthetic (imgrade)") -> Image.Image:
    """One row per grade: ``PER_SIDE`` real photos left, ``PER_SIDE`` synthetic ones right."""
    cell = 32 * SCALE + GAP
    side_width = PER_SIDE * cell
    width = LABEL_WIDTH + 2 * side_width + SIDE_GAP
    height = HEADER_HEIGHT + len(GRADE_NAMES) * cell
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    right = LABEL_WIDTH + side_width + SIDE_GAP
    draw.text((LABEL_WIDTH, 6), "real (CUCUMBER-9 by workpiles, CC BY 4.0)", fill="black", font=font)
    draw.text((right, 6), synthetic_title, fill="black", font=font)
    for row, grade in enumerate(GRADE_NAMES):
        top = HEADER_HEIGHT + row * cell
        draw.text((6, top + 32 * SCALE // 2 - 9), grade, fill="black", font=font)
        for left, imageset in ((LABEL_WIDTH, real), (right, synthetic)):
            for column, image in enumerate(first_of_grade(imageset, grade, PER_SIDE)):
                canvas.paste(upscale(image), (left + column * cell, top))
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("real", nargs="?", default=str(DEFAULT_REAL), help="CUCUMBER-9 folder or .tar.gz")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic set")
    parser.add_argument("--randomize", type=float, default=1.0, help="domain randomisation strength, 0..1")
    args = parser.parse_args(argv)
    real = read_cucumber9(args.real)
    synthetic = generate_cucumbers(
        20 * len(GRADE_NAMES), image_size=real.image_size[0], seed=args.seed, randomize=args.randomize
    ).imageset
    montage = draw_montage(real, synthetic, f"synthetic (imgrade, randomize {args.randomize:g})")
    # 256 colours are plenty for 32x32 photos and keep the PNG small enough for the docs
    montage = montage.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    with atomic_write(args.out, "wb") as f:
        montage.save(f, format="PNG", optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
