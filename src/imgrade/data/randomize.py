"""Domain randomisation: camera effects on rendered photos, so that real photos look like more of the same.

A model trained on clean renders learns their quirks (one blur, one white balance, no JPEG);
randomising what a camera does lets the real photos fall inside the training distribution. Each
effect is a pure function over a chunk of photos, (B, H, W, 3) float in 0..255, with one parameter
per photo. :func:`draw_effects` draws those parameters for a whole set at a strength from 0
(every photo untouched) to 1 (the ranges below); :func:`apply_effects` applies them in the order a
camera would. The scene-level randomisation (lighting, background, framing, aliased edges) lives
in the renderer, ``imgrade.data.render``.

==============  ============================================  ==================================
effect          parameter (per photo)                         at strength 1 (scaled down below)
==============  ============================================  ==================================
exposure        one gain for all channels                     exp(N(0, 0.05))
white balance   red and blue gains relative to green          exp(N(0, 0.025)) each
saturation      chroma multiplied around the luminance        U(0.85, 1.15)
blur / sharpen  side weight ``w`` of a 3-tap kernel           U(-0.1, 0.05): w < 0 sharpens
                [w, 1 - 2w, w] along rows and columns
noise           sensor noise std, grey levels                 3 * U(0, 1)^2 (mostly faint)
jpeg            quality of a JPEG encode and decode; 0 skips  30% of the photos, quality U(50, 95)
==============  ============================================  ==================================

Strength s scales each range towards "no change" (the standard deviations, the uniform ranges
around 1 or 0, the noise and the JPEG fraction) by s; the JPEG quality range stays as it is.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from imgrade.data.images import LUMA_WEIGHTS

LUMA = np.array(LUMA_WEIGHTS, dtype=np.float32)
JPEG_QUALITY = (50, 95)
JPEG_FRACTION = 0.3
"""Fraction of the photos JPEG-encoded at strength 1."""


def draw_effects(n: int, strength: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-photo effect parameters for ``n`` photos at ``strength`` (0..1), by the table above.

    >>> effects = draw_effects(3, 0.0, np.random.default_rng(0))
    >>> effects["gains"].tolist(), effects["jpeg_quality"].tolist()
    ([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], [0, 0, 0])
    >>> sorted(draw_effects(3, 1.0, np.random.default_rng(0)))
    ['blur', 'gains', 'jpeg_quality', 'noise', 'saturation']
    """
    s = float(strength)
    exposure = rng.normal(0.0, 0.05 * s, size=(n, 1))
    balance = rng.normal(0.0, 0.025 * s, size=(n, 3)) * np.array([1.0, 0.0, 1.0])
    jpeg_quality = rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, size=n)
    return {
        "gains": np.exp(exposure + balance).astype(np.float32),
        "saturation": (1 + 0.15 * s * rng.uniform(-1.0, 1.0, size=n)).astype(np.float32),
        "blur": (s * rng.uniform(-0.1, 0.05, size=n)).astype(np.float32),
        "noise": (3.0 * s * rng.random(n) ** 2).astype(np.float32),
        "jpeg_quality": np.where(rng.random(n) < JPEG_FRACTION * s, jpeg_quality, 0),
    }


def apply_effects(images: np.ndarray, effects: dict[str, np.ndarray], noise: np.ndarray) -> np.ndarray:
    """uint8 photos from float ``images`` (B, H, W, 3) with this chunk's ``effects``.

    The order is a camera's: colour (exposure, white balance, saturation), optics (blur or
    sharpening), sensor noise (``noise``, standard normal like ``images``, times each photo's
    std), rounding to uint8, then JPEG.

    >>> rng = np.random.default_rng(0)
    >>> images = np.full((2, 8, 8, 3), 300.0)
    >>> out = apply_effects(images, draw_effects(2, 1.0, rng), rng.standard_normal(images.shape))
    >>> out.dtype, out.shape, int(out.max()) <= 255
    (dtype('uint8'), (2, 8, 8, 3), True)
    >>> plain = np.full((1, 8, 8, 3), 99.6)
    >>> bool((apply_effects(plain, draw_effects(1, 0.0, rng), np.ones(plain.shape)) == 100).all())
    True
    """
    images = adjust_colour(images, effects["gains"], effects["saturation"])
    images = blur(images, effects["blur"])
    images = images + noise * effects["noise"][:, None, None, None]
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return jpeg(images, effects["jpeg_quality"])


def adjust_colour(images: np.ndarray, gains: np.ndarray, saturation: np.ndarray) -> np.ndarray:
    """Each photo's channels times its ``gains`` (B, 3), then its chroma times ``saturation`` (B,).

    Saturation 0 leaves the grey of the luminance, 1 the photo as it is.

    >>> pixel = np.array([[[[100.0, 50.0, 0.0]]]])
    >>> adjust_colour(pixel, np.array([[1.0, 2.0, 1.0]]), np.array([1.0])).ravel().tolist()
    [100.0, 100.0, 0.0]
    >>> adjust_colour(pixel, np.ones((1, 3)), np.array([0.0])).ravel().round(2).tolist()
    [59.25, 59.25, 59.25]
    """
    images = images * gains[:, None, None, :]
    luma = (images @ LUMA)[..., None]
    return luma + (images - luma) * saturation[:, None, None, None]


def blur(images: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Filter each photo with the kernel [w, 1 - 2w, w] along rows and columns, w = ``weight`` (B,).

    w = 0.25 is a binomial blur (about 0.7 px), w < 0 sharpens (an unsharp mask); edges repeat.

    >>> row = np.array([0.0, 0.0, 100.0, 100.0]).reshape(1, 1, 4, 1)
    >>> blur(row, np.array([0.25]))[0, 0, :, 0].tolist()
    [0.0, 25.0, 75.0, 100.0]
    >>> blur(row, np.array([-0.25]))[0, 0, :, 0].tolist()
    [0.0, -25.0, 125.0, 100.0]
    """
    w = np.asarray(weight, dtype=np.float32)[:, None, None, None]
    for axis in (1, 2):
        padded = np.pad(images, [(0, 0)] + [(1, 1) if a == axis else (0, 0) for a in (1, 2, 3)], mode="edge")
        before = padded[:, :-2] if axis == 1 else padded[:, :, :-2]
        after = padded[:, 2:] if axis == 1 else padded[:, :, 2:]
        images = (1 - 2 * w) * images + w * (before + after)
    return images


def jpeg(images: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """uint8 photos (B, H, W, 3) after a JPEG encode and decode at each photo's ``quality`` (0 skips).

    Colour is kept at full resolution (4:4:4): at 32x32 the usual 4:2:0 smears the green into
    the background, which the real photos never show.

    >>> photos = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    >>> out = jpeg(photos, np.array([0, 30]))
    >>> bool((out[0] == photos[0]).all()), bool((out[1] == photos[1]).all())
    (True, False)
    """
    out = images.copy()
    for i in np.flatnonzero(quality > 0):
        buffer = io.BytesIO()
        Image.fromarray(images[i]).save(buffer, format="JPEG", quality=int(quality[i]), subsampling=0)
        with Image.open(buffer) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return out
