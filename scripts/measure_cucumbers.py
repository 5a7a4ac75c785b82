"""Measure cucumbers in real CUCUMBER-9 photos and synthetic ones: a per-grade table, real vs synthetic.

    .venv/bin/python scripts/measure_cucumbers.py
    .venv/bin/python scripts/measure_cucumbers.py path/to/cucumber-9-python --n 1800 --randomize 1

The cucumber is found by colour (green above red and blue, darker than the background), its
largest 8-connected piece kept. In the frame of that piece's principal axis:

=========  ==================================================================================
length     tip to tip along the axis, pixels (the chord for bent ones)
thick      area / length, pixels
bend       sagitta / chord of a parabola fitted to the centre line (the rule's ``bend``)
row        centroid row, pixels from the top (15.5 is the middle)
angle      the principal axis's tilt, degrees (absolute)
body       mean RGB of the cucumber's pixels
top, bot   mean RGB of the background's top and bottom 6 rows (cucumber and 1 px around it left out)
edge       sharpness: the luminance step across the body's edge in 1 pixel over the step in 3
           pixels (1 = a hard, aliased edge; about 0.5 = an edge blurred over two pixels)
noise      background grain: std of luminance minus its 3x3 mean, in the top 6 rows
=========  ==================================================================================

The real photos default to the sample in ../shared (see ../shared/data/CUCUMBER9.md); they are
only read, never copied into the repository. Numbers are per-grade medians (colours: means).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from imgrade.data.cucumber9 import read_cucumber9
from imgrade.data.images import LUMA_WEIGHTS
from imgrade.data.synthetic import GRADE_NAMES, generate_cucumbers

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "cucumber9-p1-sample" / "cucumber-9-python"
LUMA = np.array(LUMA_WEIGHTS)
BAND = 6  # background rows measured at the top and at the bottom
SCALARS = ("length", "thick", "bend", "row", "angle", "edge", "noise")
COLOURS = ("body", "top", "bot")


def cucumber_mask(image: np.ndarray) -> np.ndarray:
    """The largest 8-connected piece of green, darkish pixels of one (H, W, 3) uint8 photo."""
    rgb = image.astype(np.float32)
    green_lead = rgb[..., 1] - np.maximum(rgb[..., 0], rgb[..., 2])
    mask = (green_lead > 8) & (rgb.mean(axis=-1) < 130)
    mask = ndimage.binary_closing(mask, structure=np.ones((2, 2)))  # bridge single-pixel specks
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
    return labels == 1 + int(np.argmax(sizes))


def measure_one(image: np.ndarray) -> dict[str, object]:
    """The table's measurements of one photo (NaN where there is no cucumber)."""
    mask = cucumber_mask(image)
    rgb = image.astype(np.float64)
    luma = rgb @ LUMA
    rows, cols = np.nonzero(mask)
    if len(rows) < 8:  # no cucumber found
        return {k: np.nan for k in SCALARS} | {k: np.full(3, np.nan) for k in COLOURS}
    y, x = rows - rows.mean(), cols - cols.mean()
    axis = np.linalg.eigh(np.cov(np.stack([x, y])))[1][:, 1]  # the principal axis: along the body
    if axis[0] < 0:
        axis = -axis
    along, across = x * axis[0] + y * axis[1], -x * axis[1] + y * axis[0]
    length = along.max() - along.min() + 1
    # centre line: the mean offset of each 1-px slice along the axis; a parabola through it
    bins = np.rint(along - along.min()).astype(int)
    counts = np.bincount(bins)
    centre = np.bincount(bins, weights=across) / np.maximum(counts, 1)
    position = np.arange(len(counts)) - (len(counts) - 1) / 2
    keep = counts > 0
    a = np.polyfit(position[keep], centre[keep], 2, w=np.sqrt(counts[keep]))[0]
    chord = length - 1
    out: dict[str, object] = {}
    out["length"] = length
    out["thick"] = mask.sum() / length
    out["bend"] = abs(a) * (chord / 2) ** 2 / chord
    out["row"] = rows.mean()
    out["angle"] = abs(np.degrees(np.arctan2(axis[1], axis[0])))
    out["body"] = rgb[mask].mean(axis=0)
    around = ndimage.binary_dilation(mask, structure=np.ones((3, 3)))
    free = ~around
    out["top"] = rgb[:BAND][free[:BAND]].mean(axis=0) if free[:BAND].any() else np.full(3, np.nan)
    out["bot"] = rgb[-BAND:][free[-BAND:]].mean(axis=0) if free[-BAND:].any() else np.full(3, np.nan)
    out["edge"] = _edge_sharpness(mask, luma)
    smooth = ndimage.uniform_filter(luma, size=3, mode="nearest")
    grain = (luma - smooth)[1 : BAND - 1, 1:-1][free[1 : BAND - 1, 1:-1]]
    out["noise"] = grain.std() if grain.size > 10 else np.nan
    return out


def _edge_sharpness(mask: np.ndarray, luma: np.ndarray) -> float:
    """Mean over edge crossings (rows and columns) of |step in 1 px| / |step in 3 px|."""
    ratios = []
    for inside, light in ((mask, luma), (mask.T, luma.T)):
        r, j = np.nonzero(inside[:, 1:] != inside[:, :-1])  # the edge runs between columns j and j + 1
        keep = (j >= 1) & (j + 2 < inside.shape[1])
        r, j = r[keep], j[keep]
        one = np.abs(light[r, j + 1] - light[r, j])
        three = np.abs(light[r, j + 2] - light[r, j - 1])
        big = three > 25
        ratios.append(np.minimum(one[big] / three[big], 1.0))
    ratios = np.concatenate(ratios)
    return float(ratios.mean()) if len(ratios) else np.nan


def measure(images: np.ndarray) -> dict[str, np.ndarray]:
    """Each measurement for every photo: (N,) arrays, (N, 3) for colours."""
    rows = [measure_one(image) for image in images]
    return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in rows[0]}


def table(real: dict, synthetic: dict, real_grades: np.ndarray, synthetic_grades: np.ndarray) -> str:
    """The per-grade comparison, a real line and a synthetic line per grade."""
    header = f"{'grade':5} {'src':4} {'n':>4} " + " ".join(f"{k:>6}" for k in SCALARS)
    header += " " + " ".join(f"{k:>12}" for k in COLOURS)
    lines = [header]
    for g, grade in enumerate([*GRADE_NAMES, "all"]):
        for name, values, grades in (("real", real, real_grades), ("syn", synthetic, synthetic_grades)):
            chosen = grades == g if grade != "all" else np.ones(len(grades), dtype=bool)
            medians = {k: np.nanmedian(values[k][chosen]) for k in SCALARS}
            cells = [f"{medians[k]:6.3f}" if k == "bend" else f"{medians[k]:6.2f}" for k in SCALARS]
            cells += ["{:4.0f}{:4.0f}{:4.0f}".format(*np.nanmean(values[k][chosen], axis=0)) for k in COLOURS]
            lines.append(f"{grade:5} {name:4} {chosen.sum():4d} " + " ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("real", nargs="?", default=str(DEFAULT_REAL), help="CUCUMBER-9 folder or .tar.gz")
    parser.add_argument("--n", type=int, default=1800, help="synthetic photos to measure")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic set")
    parser.add_argument("--randomize", type=float, default=0.0, help="domain randomisation of the synthetic set")
    parser.add_argument("--spread", action="store_true", help="also print 10th-90th percentiles of length and thick")
    args = parser.parse_args(argv)
    real = read_cucumber9(args.real)
    size = real.image_size[0]
    synthetic = generate_cucumbers(args.n, image_size=size, seed=args.seed, randomize=args.randomize).imageset
    real_values, synthetic_values = measure(real.images), measure(synthetic.images)
    real_grades, synthetic_grades = real.targets.astype(np.int64), synthetic.targets.astype(np.int64)
    print(table(real_values, synthetic_values, real_grades, synthetic_grades))
    if args.spread:
        print("\n10th-90th percentile per grade: length, thick (real | synthetic)")
        for g, grade in enumerate(GRADE_NAMES):
            cells = []
            for values, grades in ((real_values, real_grades), (synthetic_values, synthetic_grades)):
                chosen = grades == g
                spreads = [np.nanpercentile(values[k][chosen], [10, 90]) for k in ("length", "thick")]
                cells.append(" ".join(f"{low:5.1f}-{high:4.1f}" for low, high in spreads))
            print(f"{grade:5} {cells[0]} | {cells[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
