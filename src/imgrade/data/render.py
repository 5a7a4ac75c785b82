"""The renderer of the synthetic cucumbers: scene, body, skin, background, shadow and rim.

:func:`render_photos` turns the geometry ``imgrade.data.synthetic`` samples into photos: it draws
each photo's plain scene (position, lighting, skin, background), randomises it when asked
(:func:`_randomize_scene`; the camera effects are ``imgrade.data.randomize``'s), and renders the
cucumbers as distance fields, supersampled and box-filtered, in chunks on a few threads.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from imgrade.data.randomize import apply_effects, draw_effects

_BLUENESS = np.array([-4.0, -3.0, 13.0])  # one step of the background top's bluer-or-greyer axis
_SUPERSAMPLE = 4
_CHUNK = 64  # images rendered at once: bounds memory to a few tens of MB at 32x32 per thread
_MAX_WORKERS = 8  # render threads at most
_SPECK_CELL = 0.028  # speck grid along the body, in image widths (about one pixel at 32x32)
_SPECK_BANDS = 4  # speck rows across the body's width
_SPECK_CELLS = 40  # cells per speck row: enough for the longest body


def render_photos(
    attributes: dict[str, np.ndarray],
    image_size: int,
    rng: np.random.Generator,
    randomize: float = 0.0,
    randomize_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """uint8 (N, image_size, image_size, 3) photos of the cucumbers described by ``attributes``.

    ``attributes`` holds float arrays (N,) of length, thickness, bend and deformity, in image
    widths as ``imgrade.data.synthetic`` samples them. ``rng`` draws the plain scene;
    ``randomize_rng`` (used only when ``randomize`` > 0) draws everything domain randomisation
    adds, so the plain scene is the same at every strength.

    >>> geometry = {"length": [0.8], "thickness": [0.12], "bend": [0.05], "deformity": [0.1]}
    >>> render_photos({k: np.array(v) for k, v in geometry.items()}, 32, np.random.default_rng(0)).shape
    (1, 32, 32, 3)
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
