"""Decoding in bands, within a memory budget: the same pixels as whole-image decoding, bounded memory."""

from __future__ import annotations

import asyncio
import io
import itertools
import tracemalloc

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgrade.core.errors import DataError
from imgrade.data import pixels
from imgrade.data.images import decode_image
from imgrade.data.resize import Resize


def whole_image_pixels(image: Image.Image, resize: Resize, bits: int | None = None) -> np.ndarray:
    """The oracle: each step on the whole image, in float64 where it composites (decoding as it was
    before it worked in bands)."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in pixels.INTEGER_MODE_BITS:
        scale = 255.0 / (2 ** min(bits or pixels.INTEGER_MODE_BITS[mode], 31) - 1)
        rgb = grey_to_rgb(np.asarray(image).astype(np.float64) * scale)
    elif mode == "F":
        grey = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        rgb = grey_to_rgb(grey * (255.0 if grey.size and grey.max() <= 1.0 else 1.0))
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        alpha = rgba[..., 3:] / 255.0
        rgb = np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    else:
        rgb = np.array(image.convert("RGB"))
    return resize(rgb)


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(np.rint(np.clip(grey, 0.0, 255.0)).astype(np.uint8)[..., None], 3, axis=2)


def make_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I;16B"):
        values = rng.integers(0, 65536, (height, width)).astype("<u2" if mode == "I;16" else ">u2")
        return Image.frombytes(mode, (width, height), values.tobytes())
    if mode == "I":
        return Image.frombytes(
            "I", (width, height), rng.integers(-(2**20), 2**31 - 1, (height, width)).astype("<i4").tobytes()
        )
    if mode == "F":
        values = rng.random((height, width), dtype=np.float32) * (300.0 if seed % 2 else 1.0)
        values.flat[seed % values.size] = np.nan
        return Image.frombytes("F", (width, height), values.astype("<f4").tobytes())
    base = mode.split("+")[0]
    bands = len(Image.new(base, (1, 1)).getbands())
    array = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    if base in ("P", "1", "L"):
        image = Image.frombytes("L" if base == "1" else base, (width, height), array[..., 0].tobytes())
        if base == "1":
            image = image.convert("1")
        if base == "P":
            image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
    else:
        image = Image.frombytes(base, (width, height), array.tobytes())
    if mode.endswith("+trns"):
        image.info["transparency"] = (7, 8, 9) if base == "RGB" else 7
    return image


def with_orientation(image: Image.Image, orientation: int) -> Image.Image:
    if orientation > 1:
        image.getexif()[pixels.EXIF_ORIENTATION] = orientation
    return image


MODES = [
    "1",
    "L",
    "L+trns",
    "P",
    "P+trns",
    "LA",
    "PA",
    "RGB",
    "RGB+trns",
    "RGBA",
    "CMYK",
    "YCbCr",
    "I;16",
    "I;16B",
    "I",
    "F",
]
SHAPES = [(37, 11), (11, 37), (23, 23), (8, 8), (5, 3), (1, 40), (40, 1), (8, 13)]


@pytest.mark.parametrize("mode", MODES)
def test_bands_give_the_whole_image_pixels_in_every_mode_shape_orientation_and_resize(mode, monkeypatch):
    monkeypatch.setattr(pixels, "BAND_PIXELS", 29)  # many bands, most of them cut mid-row-count
    for (width, height), orientation, resize_mode in itertools.product(SHAPES, range(1, 9), ("squash", "crop", "pad")):
        seed = width * 100 + height + orientation
        image = with_orientation(make_image(mode, width, height, seed), orientation)
        resize = Resize(8, resize_mode)
        want = whole_image_pixels(image, resize)
        got = pixels.square_pixels(image, resize, "x.png")
        assert got.dtype == np.uint8 and got.shape == (8, 8, 3)
        assert np.array_equal(got, want), (mode, width, height, orientation, resize_mode)


def test_compositing_in_integers_rounds_as_float64_did_for_every_colour_and_alpha():
    colour, alpha = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([colour, colour, colour, alpha], axis=-1).astype(np.uint8)  # (256, 256, 4)
    want = np.rint(colour * (alpha / 255.0) + 255.0 * (1.0 - alpha / 255.0)).astype(np.uint8)
    got = pixels._on_white(Image.fromarray(rgba, "RGBA"))
    assert np.array_equal(got[..., 0], want)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_a_large_rgba_photo_never_has_a_full_resolution_array():
    # 3000x3000 RGBA: compositing the whole image in float64 took arrays of 3000*3000*4*8 = 288 MB
    side = 3000
    data = png(Image.new("RGBA", (side, side), (200, 30, 40, 128)))
    tracemalloc.start()
    try:
        decoded = decode_image(data, "cut-out.png", 32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded[0, 0].tolist() == [227, 142, 147]
    assert peak < side * side  # numpy's arrays (Pillow's own memory is not traced): under a byte a pixel


def test_an_image_over_the_decode_budget_is_refused_before_decoding_in_one_line():
    data = png(Image.new("RGBA", (3000, 3000), (1, 2, 3, 4)))  # 36 MB decoded, and 2 MB of bands
    with pytest.raises(DataError) as caught:
        decode_image(data, "bomb.png", 32, max_decode_mb=30)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("bomb.png would take 38 MB of memory to decode (3000x3000 RGBA), over the 30 MB budget")
    assert "downscale the image" in message
    assert decode_image(data, "bomb.png", 32, max_decode_mb=40).shape == (32, 32, 3)


def test_a_jpeg_over_the_budget_decodes_at_a_smaller_scale_and_grades_the_same_photo():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    photo = Image.fromarray(small).resize((3200, 2400), Image.Resampling.BILINEAR)  # smooth: no JPEG edges
    data = jpeg(photo)
    full = decode_image(data, "big.jpg", 32)  # 3200*2400*4 = 31 MB: within the default budget
    drafted = decode_image(data, "big.jpg", 32, max_decode_mb=4)  # only 1/4 scale (1.9 MB + bands) fits
    assert np.abs(full.astype(int) - drafted.astype(int)).max() <= 3
    with pytest.raises(DataError, match=r"over the 0.01 MB budget"):
        decode_image(data, "big.jpg", 32, max_decode_mb=0.01)  # not even 1/8 scale fits
    assert np.array_equal(full, decode_image(data, "big.jpg", 32, max_decode_mb=40))  # drafted only when over


def test_a_check_that_raises_stops_the_decoding_part_way():
    data = png(Image.fromarray(np.random.default_rng(1).integers(0, 256, (600, 600, 4), dtype=np.uint8)))
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        decode_image(data, "slow.png", 32, check=check)
    assert len(calls) == 3  # stopped at the third step, not at the end
    steps = []
    decode_image(data, "slow.png", 32, check=lambda: steps.append(1))
    assert len(steps) > 6  # the file is read, then converted, a block at a time


def test_opaque_bands_and_see_through_bands_of_one_photo_composite_alike(monkeypatch):
    monkeypatch.setattr(pixels, "BAND_PIXELS", 64)  # bands of 2 rows: the top ones opaque
    rgba = np.random.default_rng(2).integers(0, 256, (40, 32, 4), dtype=np.uint8)
    rgba[:20, :, 3] = 255
    image = Image.fromarray(rgba, "RGBA")
    for resize in (Resize(8), Resize(32), Resize(50)):
        assert np.array_equal(pixels.square_pixels(image, resize, "x.png"), whole_image_pixels(image, resize))


@pytest.mark.parametrize("options", [{"lossless": True}, {"quality": 80}])
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_a_webp_header_gives_its_size_in_each_of_its_three_formats(options, mode):
    buffer = io.BytesIO()
    Image.new(mode, (301, 17), (1, 2, 3)).save(buffer, format="WEBP", **options)
    assert pixels._webp_size(buffer.getvalue()) == (301, 17)
    assert pixels._webp_size(png(Image.new(mode, (301, 17)))) is None


def test_a_webp_over_the_budget_is_refused_from_its_header_before_libwebp_opens_it():
    buffer = io.BytesIO()
    Image.new("RGB", (5000, 5000), (10, 200, 30)).save(buffer, format="WEBP", lossless=True)  # a few KB
    with pytest.raises(DataError, match=r"^huge.webp would take 403 MB of memory to decode \(5000x5000 WebP\)"):
        decode_image(buffer.getvalue(), "huge.webp", 32)
    small = io.BytesIO()
    Image.new("RGB", (500, 500), (10, 200, 30)).save(small, format="WEBP", lossless=True)
    assert decode_image(small.getvalue(), "ok.webp", 32)[0, 0].tolist() == [10, 200, 30]
