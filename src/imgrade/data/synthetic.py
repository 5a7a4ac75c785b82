"""Synthetic cucumbers: photos drawn like CUCUMBER-9's, graded by a rule on their geometry.

The project's built-in demo data. Each image is a top view of one cucumber on a grey-blue
gradient background: a dark green tube with light specks (the warty skin), a soft shadow, and a
little jitter in position, rotation and lighting. The geometry is sampled first, the grade is
then the rule below applied to it, so a model can learn the grade and a regressor can learn any
of the recorded attributes. ``randomize`` > 0 varies what a camera and a scene vary (lighting,
background, framing, aliased edges, colour, blur, noise, JPEG; see ``imgrade.data.render`` and
``imgrade.data.randomize``) and leaves geometry and grades as they are.

The length edges, ranges and thickness were tuned so that the per-grade length and thickness
in pixels, measured by colour segmentation, match CUCUMBER-9's photos (248 real prototype-1
ones; ``scripts/measure_cucumbers.py`` prints the comparison).

Attributes (recorded to 4 decimals, in ``ATTRIBUTES`` order; the grade uses exactly these values):

=========  ==================================================================================
length     tip to tip along the centre line, as a fraction of the image width (0.64 - 0.97;
           grade C 0.62 - 0.86)
thickness  diameter of the regular body, as a fraction of the image width (0.11 - 0.14)
bend       depth of the centre line's arc over its chord (sagitta / chord): 0 is straight,
           0.1 a clear bow, 0.5 would be a half circle (0 - 0.35)
deformity  largest relative change of the body's radius from a regular cucumber (a thin end,
           a thick end or a waist): 0 is regular, 0.3 means some part is 30% thinner or
           thicker (0 - 0.65)
=========  ==================================================================================

Grade rule (``grade_from_geometry``), first matching row wins:

=====  ===================================================  ===============
grade  condition                                            length
=====  ===================================================  ===============
C      bend >= 0.20 or deformity >= 0.35                    any
2L     straight: bend < 0.10                                >= 0.88
L      straight                                             0.84 - 0.88
M      straight                                             0.76 - 0.84
S      straight                                             0.72 - 0.76
2S     straight                                             < 0.72
BL     bent: 0.10 <= bend < 0.20                            >= 0.84
BM     bent                                                 0.74 - 0.84
BS     bent                                                 < 0.74
=====  ===================================================  ===============

Sampling: each image first draws one of the nine grade regions of this table with equal
probability, then its geometry inside that region: length and thickness uniformly, bend skewed
toward the straight/bent edge from both sides (``STRAIGHT_BEND_POWER``, ``BENT_BEND_POWER``; C: a
third strongly bent, two thirds misshapen, shorter than most like the real C), so the grades
come out balanced like the real set; the label is then recomputed from the recorded geometry.
Label noise moves a chosen fraction of labels to an adjacent grade in ``GRADE_NAMES`` order (the
regression axis) and records which.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgrade.core.errors import ConfigError
from imgrade.core.io import write_text
from imgrade.data.cucumber9 import DEFAULT_GRADE_ORDER
from imgrade.data.imageset import ImageSet
from imgrade.data.render import render_photos

GRADE_NAMES = DEFAULT_GRADE_ORDER  # the CUCUMBER-9 grades, in rank order
ATTRIBUTES = ("length", "thickness", "bend", "deformity")

BENT_MIN_BEND = 0.10
"""bend at and above which a cucumber is bent (BL/BM/BS)."""
C_MIN_BEND = 0.20
"""bend at and above which a cucumber is grade C."""
C_MIN_DEFORMITY = 0.35
"""deformity at and above which a cucumber is grade C."""
STRAIGHT_LENGTH_EDGES = (0.88, 0.84, 0.76, 0.72)
"""Shortest length of 2L, L, M, S; shorter straight ones are 2S."""
BENT_LENGTH_EDGES = (0.84, 0.74)
"""Shortest length of BL, BM; shorter bent ones are BS."""
LENGTH_RANGE = (0.64, 0.97)
THICKNESS_RANGE = (0.11, 0.14)
C_LENGTH_RANGE = (0.62, 0.86)
"""Lengths of grade C, whatever makes it C: CUCUMBER-9's C are mostly short to medium."""
C_BENT_FRACTION = 1 / 3
"""Fraction of grade C drawn strongly bent; the rest are misshapen (CUCUMBER-9's C are mostly misshapen)."""
C_MISSHAPEN_MAX_BEND = 0.20
"""Misshapen C are drawn with any bend up to this (strongly bent ones are the other C)."""


STRAIGHT_BEND_POWER = 0.4
"""Straight cucumbers' bend is BENT_MIN_BEND * u ** this (u uniform): below 1, most are slightly
bent. Real "straight" cucumbers of the sample measure a median bend of 0.06-0.09 from their
outline, about as much as real BS and BM (0.085, 0.104); scripts/measure_cucumbers.py."""
BENT_BEND_POWER = 2.0
"""Bent cucumbers' bend is BENT_MIN_BEND + (C_MIN_BEND - BENT_MIN_BEND) * u ** this: above 1, most
are only a little past the edge, like the real bent ones."""


def grade_from_geometry(length, bend, deformity) -> np.ndarray:
    """The grade index (into ``GRADE_NAMES``) of each cucumber, by the rule table above.

    >>> grade_from_geometry([0.90, 0.80, 0.66, 0.85, 0.75, 0.65], [0.0] * 3 + [0.1] * 3, [0.1] * 6)
    array([0, 2, 4, 5, 6, 7])
    >>> [GRADE_NAMES[g] for g in grade_from_geometry([0.9, 0.9, 0.9], [0.25, 0.0, 0.10], [0.0, 0.4, 0.0])]
    ['C', 'C', 'BL']
    """
    length, bend, deformity = (np.asarray(a, dtype=np.float64) for a in (length, bend, deformity))
    # the edges fall with the grade index, so count the edges a cucumber is shorter than
    straight = np.searchsorted(-np.asarray(STRAIGHT_LENGTH_EDGES), -length, side="left")
    bent = 5 + np.searchsorted(-np.asarray(BENT_LENGTH_EDGES), -length, side="left")
    grade = np.where(bend >= BENT_MIN_BEND, bent, straight)
    grade = np.where((bend >= C_MIN_BEND) | (deformity >= C_MIN_DEFORMITY), 8, grade)
    return grade.astype(np.int64)


@dataclass
class SyntheticSet:
    """Generated cucumbers with the geometry behind their grades.

    Attributes:
        imageset: the images, targets (grade index, after label noise) and ids.
        attributes: one float64 array (N,) per name in ``ATTRIBUTES``.
        noisy: bool array (N,): True where label noise changed the grade the rule gives.
    """

    imageset: ImageSet
    attributes: dict[str, np.ndarray]
    noisy: np.ndarray


def generate_cucumbers(
    n: int, *, image_size: int = 32, seed: int = 0, label_noise: float = 0.0, randomize: float = 0.0
) -> SyntheticSet:
    """Draw ``n`` cucumber photos of ``image_size`` x ``image_size`` pixels, graded by the rule table.

    The same seed gives the same geometry and labels at every image size and every ``randomize``.

    Args:
        n: number of photos.
        image_size: width and height in pixels.
        seed: the random seed; geometry, scene, label noise and randomisation each draw from
            their own stream of it, so changing one leaves the others as they were.
        label_noise: fraction of labels moved to an adjacent grade.
        randomize: domain randomisation strength, 0..1: 0 draws the plain photos; above 0 the
            lighting direction, background tint and gradient, framing (shift and rotation, never
            scale), edge aliasing, and the camera effects of ``imgrade.data.randomize`` vary,
            more the larger it is. Geometry and labels do not change.

    Raises:
        ConfigError: n, image_size, label_noise or randomize is out of range.
    """
    if n < 1:
        raise ConfigError(f"n={n}: ask for at least 1 synthetic image")
    if image_size < 8:
        raise ConfigError(
            f"image_size={image_size} is too small to draw a cucumber: use 8 or more (32 like CUCUMBER-9)"
        )
    if not 0.0 <= label_noise <= 1.0:
        raise ConfigError(f"label_noise={label_noise} must be a fraction between 0 and 1 (0.1 = 10% of labels)")
    if not 0.0 <= randomize <= 1.0:
        raise ConfigError(f"randomize={randomize} must be a strength between 0 (plain photos) and 1 (most varied)")
    # spawn(4)'s first three children are spawn(3)'s: adding the randomisation stream leaves the
    # photos drawn before it existed unchanged.
    streams = np.random.SeedSequence(seed).spawn(4)
    geometry_rng, render_rng, noise_rng, randomize_rng = (np.random.default_rng(s) for s in streams)
    attributes = _sample_geometry(n, geometry_rng)
    clean = grade_from_geometry(attributes["length"], attributes["bend"], attributes["deformity"])
    grades, noisy = _add_label_noise(clean, label_noise, noise_rng)
    images = render_photos(attributes, image_size, render_rng, randomize, randomize_rng)
    imageset = ImageSet(
        images=images,
        targets=grades.astype(np.float32),
        grade_names=list(GRADE_NAMES),
        ids=[f"synthetic:{i:05d}" for i in range(n)],
        source=f"synthetic cucumbers (seed {seed})",
        split=None,
    )
    return SyntheticSet(imageset=imageset, attributes=attributes, noisy=noisy)


def write_folders(synthetic: SyntheticSet, out_dir: str | os.PathLike) -> Path:
    """Write one folder per grade, ``grades.txt`` and ``attributes.csv``; return ``out_dir``.

    Images go to ``out_dir/<grade>/<id>.png`` with ``:`` in the id written as ``_`` (file systems
    differ on colons). ``attributes.csv`` has columns path,target,grade,length,thickness,bend,
    deformity (path relative to ``out_dir``, target the grade index), so it serves as a CSV
    manifest with ``target`` or any attribute as the target. Folders and targets follow the labels
    after label noise; the attributes are the true geometry. The images are written directly, the
    two text files last and atomically: their presence means the images are complete.
    """
    out_dir = Path(out_dir)
    imageset = synthetic.imageset
    grade_names = imageset.grade_names or list(GRADE_NAMES)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["path", "target", "grade", *ATTRIBUTES])
    for i, (image, target, image_id) in enumerate(zip(imageset.images, imageset.targets, imageset.ids)):
        grade = grade_names[int(target)]
        relative = f"{grade}/{image_id.replace(':', '_')}.png"
        (out_dir / grade).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(out_dir / relative)
        values = [f"{synthetic.attributes[name][i]:.4f}" for name in ATTRIBUTES]
        writer.writerow([relative, int(target), grade, *values])
    write_text(out_dir / "grades.txt", "".join(f"{name}\n" for name in grade_names))
    write_text(out_dir / "attributes.csv", rows.getvalue())
    return out_dir


def _sample_geometry(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Geometry drawn uniformly inside a uniformly chosen grade region of the rule table."""
    region = rng.integers(0, len(GRADE_NAMES), size=n)
    u = rng.random((4, n))
    straight_edges = (LENGTH_RANGE[1], *STRAIGHT_LENGTH_EDGES, LENGTH_RANGE[0])
    bent_edges = (LENGTH_RANGE[1], *BENT_LENGTH_EDGES, LENGTH_RANGE[0])
    # (longest, shortest) length of each region; C has its own range
    high = np.array([*straight_edges[:5], *bent_edges[:3], C_LENGTH_RANGE[1]])[region]
    low = np.array([*straight_edges[1:], *bent_edges[1:], C_LENGTH_RANGE[0]])[region]
    length = low + (high - low) * u[0]
    thickness = THICKNESS_RANGE[0] + (THICKNESS_RANGE[1] - THICKNESS_RANGE[0]) * u[1]
    # skewed toward the straight/bent edge from both sides, as the real ones are (see the constants)
    straight_bend = BENT_MIN_BEND * u[2] ** STRAIGHT_BEND_POWER
    bent_bend = BENT_MIN_BEND + (C_MIN_BEND - BENT_MIN_BEND) * u[2] ** BENT_BEND_POWER
    bend = np.where(region < 5, straight_bend, bent_bend)
    deformity = C_MIN_DEFORMITY * u[3]
    # C: strongly bent (any deformity up to 0.5) or misshapen (any bend up to C_MISSHAPEN_MAX_BEND)
    is_c = region == 8
    strongly_bent = rng.random(n) < C_BENT_FRACTION
    bend = np.where(is_c & strongly_bent, C_MIN_BEND + 0.15 * u[2], bend)
    bend = np.where(is_c & ~strongly_bent, C_MISSHAPEN_MAX_BEND * u[2], bend)
    deformity = np.where(is_c & strongly_bent, 0.50 * u[3], deformity)
    deformity = np.where(is_c & ~strongly_bent, C_MIN_DEFORMITY + 0.30 * u[3], deformity)
    values = {"length": length, "thickness": thickness, "bend": bend, "deformity": deformity}
    return {name: np.round(values[name], 4) for name in ATTRIBUTES}


def _add_label_noise(grades: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Move ``round(fraction * N)`` labels one step up or down the grade order (inward at the ends)."""
    n = len(grades)
    chosen = rng.choice(n, size=int(round(fraction * n)), replace=False)
    step = rng.choice([-1, 1], size=len(chosen))
    moved = grades[chosen] + step
    moved = np.where(moved < 0, 1, np.where(moved >= len(GRADE_NAMES), len(GRADE_NAMES) - 2, moved))
    noisy_grades = grades.copy()
    noisy_grades[chosen] = moved
    noisy = np.zeros(n, dtype=bool)
    noisy[chosen] = True
    return noisy_grades, noisy
