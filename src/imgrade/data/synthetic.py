"""Synthetic cucumbers: photos drawn like CUCUMBER-9's, graded by a rule on their geometry.

The project's built-in demo data. Each image is a top view of one cucumber on a grey-blue
gradient background: a dark green tube with light specks (the warty skin), a soft shadow, and a
little jitter in position, rotation and lighting. The geometry is sampled first, the grade is
then the rule below applied to it, so a model can learn the grade and a regressor can learn any
of the recorded attributes. ``randomize`` > 0 varies what a camera and a scene vary (lighting,
background, framing, aliased edges, colour, blur, noise, JPEG; see ``_randomize_scene`` and
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
probability, then its geometry uniformly inside that region (C: a third strongly bent, two
thirds misshapen, shorter than most like the real C), so the grades come out balanced like the
real set; the label is then recomputed from the recorded geometry. Label noise moves a chosen
fraction of labels to an adjacent grade in ``GRADE_NAMES`` order (the regression axis) and
records which.
"""

from __future__ import annotations

import csv
import io
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from imgrade.core.errors import ConfigError
from imgrade.core.io import write_text
from imgrade.data.cucumber9 import DEFAULT_GRADE_ORDER
from imgrade.data.imageset import ImageSet
from imgrade.data.randomize import apply_effects, draw_effects

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

_BLUENESS = np.array([-4.0, -3.0, 13.0])  # one step of the background top's bluer-or-greyer axis
_SUPERSAMPLE = 4
_CHUNK = 64  # images rendered at once: bounds memory to a few tens of MB at 32x32 per thread
_MAX_WORKERS = 8  # render threads at most
_SPECK_CELL = 0.028  # speck grid along the body, in image widths (about one pixel at 32x32)
_SPECK_BANDS = 4  # speck rows across the body's width
_SPECK_CELLS = 40  # cells per speck row: enough for the longest body


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
    images = _render(attributes, image_size, render_rng, randomize, randomize_rng)
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
    bend = np.where(region < 5, BENT_MIN_BEND * u[2], BENT_MIN_BEND + (C_MIN_BEND - BENT_MIN_BEND) * u[2])
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


def _render(
    attributes: dict[str, np.ndarray],
    image_size: int,
    rng: np.random.Generator,
    randomize: float = 0.0,
    randomize_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """uint8 (N, image_size, image_size, 3) photos of the cucumbers described by ``attributes``.

    ``rng`` draws the plain scene; ``randomize_rng`` (used only when ``randomize`` > 0) draws
    everything domain randomisation adds, so the plain scene is the same at every strength.
    """
    n = len(attributes["length"])
    # Nuisance parameters are drawn per image up front, so they do not depend on image_size.
    scene = {
        "direction": rng.choice([-1.0, 1.0], size=n),  # bows up or down
        "angle": rng.normal(0.0, 0.09, size=n),  # radians
        "centre_x": rng.normal(0.0, 0.025, size=n),
        "centre_y": rng.normal(0.03, 0.04, size=n),  # a little above the middle, like CUCUMBER-9
        "flip": rng.choice([-1.0, 1.0], size=n),  # which end is the stem end
        "taper_mix": rng.random(n),
        "waist_at": rng.uniform(0.3, 0.7, size=n),
        "skin": rng.normal(1.0, 0.12, size=n),
        "skin_hue": rng.normal(0.0, 0.05, size=n),
        "brightness": rng.normal(0.0, 1.0, size=n),
        "blueness": np.clip(rng.normal(0.0, 1.0, size=n), -2.0, 1.5),
        "bottom": rng.normal(0.0, 1.0, size=n),
        "fade_start": rng.uniform(0.15, 0.45, size=n),
        "speck_rate": rng.uniform(0.12, 0.3, size=n),
        "specks": rng.random((n, _SPECK_BANDS, _SPECK_CELLS), dtype=np.float32),
        "shadow": rng.uniform(0.12, 0.28, size=n),
        "rim": rng.uniform(0.02, 0.05, size=n),
    }
    effects = None
    if randomize > 0:
        scene = _randomize_scene(scene, attributes, randomize, randomize_rng)
        effects = draw_effects(n, randomize, randomize_rng)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)

    def render_part(part: slice, noise: np.ndarray, camera_noise: np.ndarray | None) -> None:
        chunk = {k: v[part] for k, v in {**attributes, **scene}.items()}
        if effects is None:
            images[part] = _render_chunk(chunk, image_size, noise)
        else:
            image = _render_chunk(chunk, image_size, noise, quantize=False)
            images[part] = apply_effects(image, {k: v[part] for k, v in effects.items()}, camera_noise)

    # Chunks render on threads (numpy releases the GIL in its array loops). Their random numbers
    # are drawn here, in chunk order, so the photos do not depend on the number of threads.
    workers = _render_workers(n)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for start in range(0, n, _CHUNK):
            part = slice(start, min(start + _CHUNK, n))
            shape = (part.stop - part.start, image_size, image_size, 3)
            noise = rng.normal(0.0, 2.0, size=shape)
            camera_noise = None if effects is None else randomize_rng.standard_normal(shape, dtype=np.float32)
            pending.append(pool.submit(render_part, part, noise, camera_noise))
            if len(pending) >= 2 * workers:  # bounds the noise drawn ahead, and so the memory
                pending.popleft().result()
        for future in pending:
            future.result()
    return images


def _render_workers(n: int) -> int:
    """Threads to render ``n`` photos on: the CPUs this process may use, up to ``_MAX_WORKERS``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, _MAX_WORKERS, -(-n // _CHUNK)))


def _randomize_scene(
    scene: dict[str, np.ndarray], attributes: dict[str, np.ndarray], strength: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The scene with domain randomisation at ``strength`` (0..1); the ranges below are at 1,
    their spread scaled by it. Geometry is never touched: the grade stays true.

    ============  ==================================================================================
    framing       rotation + N(0, 0.05) rad; shift + N(0, 0.03) across and N(0, 0.01) down, never
                  pushing a tip further out of the frame than it was; no scaling (the grade is the
                  length in image widths)
    edges         85% of the photos point-sampled, one sample per pixel (hard, aliased edges, like
                  a nearest-neighbour downscale: the real photos' are), the rest box-filtered over
                  4 x 4 sub-pixels like the plain ones; point-sampled skin x 1.2, as light as box
                  filtering's mixed edge pixels make the others look
    skin          specks' area x (1 + U(-0.8, -0.4)), their brightness x (1 + U(-0.3, 0)) (the real
                  photos show fewer, dimmer ones); hue + N(0, 0.05)
    lighting      turned U(-1.2, 1.2) rad from above towards one end; contrast x (1 + U(-0.6, 1))
    background    gradient turned N(0, 0.25) rad, its strength x (1 + U(-0.6, 0.9)) in lightness
                  only (the real one is a little stronger than the plain one, the real bottom
                  stays grey); top and bottom tinted N(0, 2.5) per channel, the top also bluer or
                  greyer by N(0, 0.8) steps of ``_BLUENESS``, the bottom lighter or darker N(0, 8)
    ============  ==================================================================================
    """
    n, s = len(attributes["length"]), float(strength)
    scene = dict(scene)
    scene["angle"] = scene["angle"] + rng.normal(0.0, 0.05 * s, size=n)
    # keep both tips inside the frame where they were inside (the chord is at most the length)
    length, thickness = attributes["length"], attributes["thickness"]
    half_width = 0.5 * (length * np.abs(np.cos(scene["angle"])) + thickness * np.abs(np.sin(scene["angle"])))
    room = np.maximum(0.5 - half_width, np.abs(scene["centre_x"]))
    scene["centre_x"] = np.clip(scene["centre_x"] + rng.normal(0.0, 0.03 * s, size=n), -room, room)
    scene["centre_y"] = scene["centre_y"] + rng.normal(0.0, 0.01 * s, size=n)
    scene["skin_hue"] = scene["skin_hue"] + rng.normal(0.0, 0.05 * s, size=n)
    scene["light_turn"] = s * rng.uniform(-1.2, 1.2, size=n)
    scene["light_contrast"] = 1 + s * rng.uniform(-0.6, 1.0, size=n)
    scene["gradient_turn"] = rng.normal(0.0, 0.25 * s, size=n)
    scene["gradient"] = 1 + s * rng.uniform(-0.6, 0.9, size=n)
    scene["top_tint"] = rng.normal(0.0, 2.5 * s, size=(n, 3)) + rng.normal(0.0, 0.8 * s, size=(n, 1)) * _BLUENESS
    scene["bottom_tint"] = rng.normal(0.0, 2.5 * s, size=(n, 3)) + rng.normal(0.0, 8.0 * s, size=(n, 1))
    scene["speck_size"] = 0.2 * (1 + s * rng.uniform(-0.8, -0.4, size=n))
    scene["speck_shade"] = 1 + s * rng.uniform(-0.3, 0.0, size=n)
    scene["aliased"] = rng.random(n) < 0.85 * s
    # point sampling drops the light edge pixels box filtering mixes into the body; the real
    # photos' bodies are as light as the box-filtered ones on average
    scene["skin"] = np.where(scene["aliased"], scene["skin"] * 1.2, scene["skin"])
    return scene


def _grid(image_size: int, supersample: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in image widths: x right, y up, (0, 0) the image centre."""
    steps = (np.arange(image_size * supersample, dtype=np.float32) + 0.5) / (image_size * supersample) - 0.5
    return steps[None, None, :], -steps[None, :, None]  # (1, 1, W), (1, H, 1)


def _column(values) -> np.ndarray:
    """A per-image value as a (B, 1, 1) float32 array, to broadcast over pixels."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def _radius_change(c: dict[str, np.ndarray], s: np.ndarray) -> np.ndarray:
    """Radius factor along the body (s = 0..1): a taper and a waist mixed at random, peak change = deformity."""
    mix, flip, waist = _column(c["taper_mix"]), _column(c["flip"]), _column(c["waist_at"])

    def shape(s):
        return mix * flip * (2 * s - 1) - (1 - mix) * np.exp(-(((s - waist) / 0.15) ** 2))

    peak = np.abs(shape(np.linspace(0.0, 1.0, 65, dtype=np.float32))).max(axis=2, keepdims=True)
    return np.maximum(1 + _column(c["deformity"]) * shape(s) / peak, 0.25)


def _body(c: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
    """Each cucumber's distance field at image points ``x``, ``y`` (image widths, y up).

    The centre line is a circular arc (signed curvature ``kappa``) through the local origin;
    ``v`` is the signed offset from its circle, ``t`` the arc length along it.

    Returns:
        (margin, across, s, arc): how far inside the body each point is (image widths, negative
        outside), the position across the width (-1 lower edge .. 1 upper edge, in the
        cucumber's frame), the position along the centre line (0..1), and each centre line's
        length (B, 1, 1).
    """
    radius = _column(c["thickness"] / 2)
    end_radius = radius * 0.6
    ends = np.zeros((1, 1, 1), dtype=np.float32)
    cap_lengths = end_radius * (_radius_change(c, ends) + _radius_change(c, ends + 1))
    arc = _column(c["length"]) - cap_lengths  # so that tip to tip is the recorded length
    direction = _column(c["direction"])
    theta = 4 * np.arctan(2 * _column(c["bend"])) * direction  # turning angle, from sagitta / chord
    kappa = theta / arc
    sagitta = arc * np.sinc(theta / (2 * np.pi)) * _column(c["bend"]) * direction  # chord * bend
    cos_a, sin_a = np.cos(_column(c["angle"])), np.sin(_column(c["angle"]))
    dx, dy = x - _column(c["centre_x"]), y - _column(c["centre_y"])
    lx = cos_a * dx + sin_a * dy
    ly = -sin_a * dx + cos_a * dy + sagitta / 2  # centre the bow's bounding box, not its midpoint
    # R - rho written as (2y - k(x^2 + y^2)) / (1 + |k| rho): exact, and stays finite as k -> 0
    v = (2 * ly - kappa * (lx * lx + ly * ly)) / (1 + np.sqrt((kappa * lx) ** 2 + (1 - kappa * ly) ** 2))
    safe = np.where(np.abs(kappa) < 1e-6, 1e-6, kappa)
    t = np.where(np.abs(kappa) < 1e-6, lx, np.arctan2(safe * lx, 1 - safe * ly) / safe)
    s = np.clip(t / arc + 0.5, 0.0, 1.0)
    beyond = np.maximum(np.abs(t) - arc / 2, 0.0) * (1 - kappa * v)  # along the circle at this offset
    distance = np.sqrt(v * v + beyond * beyond)
    regular = end_radius + (radius - end_radius) * np.sqrt(1 - np.abs(2 * s - 1) ** 3)  # rounded ends
    profile = regular * _radius_change(c, s)
    across = np.clip(v / profile, -1.0, 1.0)
    return profile - distance, across, s, arc


def _render_chunk(c: dict[str, np.ndarray], image_size: int, noise: np.ndarray, quantize: bool = True) -> np.ndarray:
    """uint8 (B, image_size, image_size, 3) photos of one chunk of cucumbers and their scenes
    (float, unclipped, where not ``quantize``)."""
    if "aliased" not in c:
        cover, body = _cucumbers(c, image_size)
        image = _background(c, image_size) * (1 - cover[..., None]) + body + noise
    else:  # randomised: point-sample some photos (16x cheaper), box-filter the others
        image = np.empty(noise.shape, dtype=np.float64)
        for chosen, supersample in ((c["aliased"], 1), (~c["aliased"], _SUPERSAMPLE)):
            if chosen.any():
                part = {k: v[chosen] for k, v in c.items()}
                cover, body = _cucumbers(part, image_size, supersample)
                image[chosen] = _background(part, image_size) * (1 - cover[..., None]) + body + noise[chosen]
    if not quantize:
        return image
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _cucumbers(
    c: dict[str, np.ndarray], image_size: int, supersample: int = _SUPERSAMPLE
) -> tuple[np.ndarray, np.ndarray]:
    """Each cucumber's coverage (B, H, W) and premultiplied colour (B, H, W, 3): the mean of
    ``supersample`` x ``supersample`` samples per pixel (antialiased), or one (aliased) if 1."""
    b, ss = len(c["length"]), supersample
    margin, across, s, arc = _body(c, *_grid(image_size, ss))
    # a ramp of a quarter pixel whatever the sampling: one sub-pixel when antialiased
    alpha = np.clip(margin * (image_size * _SUPERSAMPLE) + 0.5, 0.0, 1.0)  # (B, H*ss, W*ss)
    # Roundness: lit from above, a darker lower flank.
    if "light_turn" not in c:
        light = 0.6 + 0.35 * np.sqrt(np.maximum(1 - across * across, 0.0)) + 0.15 * across
    else:  # randomised: the lamp turned towards one end, a harder or softer key
        turn, key = _column(c["light_turn"]), 0.15 * _column(c["light_contrast"])
        side = np.cos(turn) * across + np.sin(turn) * (2 * s - 1)
        light = 0.6 + 0.35 * np.sqrt(np.maximum(1 - across * across, 0.0)) + key * side
    # Warty skin: a grid of cells along the body and across it; each cell's random number sets
    # its shade and, below the speck rate, puts a light dot in it.
    band = np.clip(((across + 1) / 2 * _SPECK_BANDS).astype(np.int64), 0, _SPECK_BANDS - 1)
    along = s * arc / _SPECK_CELL
    cell = np.clip(along.astype(np.int64), 0, _SPECK_CELLS - 1)
    chance = np.take_along_axis(c["specks"].reshape(b, -1), (band * _SPECK_CELLS + cell).reshape(b, -1), axis=1)
    chance = chance.reshape(alpha.shape)
    band_rate = np.array([0.2, 0.6, 1.4, 1.4], dtype=np.float32)[band]  # specks mostly on the lit side
    rate = _column(c["speck_rate"]) * band_rate
    jitter = chance / rate - 0.5  # uniform in (-0.5, 0.5) where a speck is: moves it off the grid
    frac_along, frac_across = along % 1.0, (across + 1) / 2 * _SPECK_BANDS % 1.0
    speck_size = _column(c["speck_size"]) if "speck_size" in c else 0.2  # squared radius, in cells
    dot = ((frac_along - 0.5 - 0.4 * jitter) ** 2 + (frac_across - 0.5 + 0.3 * jitter) ** 2) < speck_size
    speck = (chance < rate) & dot
    mottle = 0.8 + 0.4 * chance
    # Box-downsample coverage, shaded skin and specks (premultiplied by coverage). Colour is
    # linear in the last two, so it is applied after, on 16x fewer pixels.
    shape = (b, image_size, ss, image_size, ss)
    cover = alpha.reshape(shape).mean(axis=(2, 4))
    shaded = np.where(speck, 0.0, alpha * light * mottle).reshape(shape).mean(axis=(2, 4))
    dots = np.where(speck, alpha, 0.0).reshape(shape).mean(axis=(2, 4))
    if "speck_shade" in c:
        dots = dots * _column(c["speck_shade"])
    skin, speck_colour = np.array([33.0, 56.0, 23.0]), np.array([112.0, 138.0, 84.0])
    tint = np.stack([1 + c["skin_hue"], np.ones(b), 1 - c["skin_hue"]], axis=1) * c["skin"][:, None]  # (B, 3)
    body = (shaded[..., None] * skin + dots[..., None] * speck_colour) * tint[:, None, None, :]
    return cover, body


def _background(c: dict[str, np.ndarray], image_size: int) -> np.ndarray:
    """The empty scene (B, H, W, 3): a lit gradient with each cucumber's shadow and rim."""
    x, y = _grid(image_size, 1)
    # Blue-grey top fading to a darker grey-olive bottom. The lamp and white balance vary along
    # two axes: brighter or darker, bluer or greyer.
    top = (
        np.array([177.0, 184.0, 200.0])
        + c["brightness"][:, None] * np.array([11.0, 10.0, 11.0])
        + c["blueness"][:, None] * _BLUENESS
    )
    bottom = np.array([117.0, 120.0, 110.0]) + (0.5 * c["brightness"] + c["bottom"])[:, None] * 20.0
    fade_start = _column(c["fade_start"])
    from_top = 0.5 - y  # 0 at the top edge, 1 at the bottom edge
    randomized = "gradient" in c
    if randomized:  # a tinted lamp, the gradient turned and stronger or weaker
        turn = _column(c["gradient_turn"])
        from_top = 0.5 - (np.cos(turn) * y - np.sin(turn) * x)
        top, bottom = top + c["top_tint"], bottom + c["bottom_tint"]
        # a weaker or stronger gradient in lightness only: the real bottoms stay neutral grey
        bottom = bottom + (top - bottom).mean(axis=1, keepdims=True) * (1 - c["gradient"][:, None])
    fade = np.clip((from_top - fade_start) / (1 - fade_start), 0.0, 1.0) ** 1.5
    background = top[:, None, None, :] + (bottom - top)[:, None, None, :] * fade[..., None]
    background = background * (1 - 0.12 * (x * x + y * y))[..., None]  # slight vignette
    # Soft shadow: the body's distance field, a little lower, fading over ~1.5 px at 32x32.
    lowered = dict(c, centre_y=c["centre_y"] - 0.012, thickness=c["thickness"] * 1.1)
    outside = np.maximum(-_body(lowered, x, y)[0], 0.0)
    shadow = np.exp(-((outside / 0.045) ** 2)) * _column(c["shadow"])
    # A dark rim along the upper edge: CUCUMBER-9's camera sees a little of the far side.
    raised = dict(c, centre_y=c["centre_y"] + c["rim"])
    # a 1 px ramp, as hard as the body's (a quarter pixel) where that is point-sampled
    steepness = image_size * np.where(_column(c["aliased"]), _SUPERSAMPLE, 1) if randomized else image_size
    rim = np.clip(_body(raised, x, y)[0] * steepness + 0.5, 0.0, 1.0) * 0.45
    return background * (1 - np.maximum(shadow, rim))[..., None]
