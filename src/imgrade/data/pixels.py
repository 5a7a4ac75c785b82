"""From a decoded Pillow image to the network's square input, a band of rows at a time, within a
memory budget.

A photo is turned upright, converted to RGB, made square and resized (see ``decode_image``). Done
on the whole image, each step holds a full-resolution copy: a 267 KB PNG of 8000x8000 RGBA pixels
then takes gigabytes. Here every step but the file's own decoding works on bands of a few hundred
thousand pixels: a band of the stored image is cut out, turned upright, converted to RGB and
shrunk along its rows (the resize's horizontal pass, which treats each row on its own), so that
only the decoded image and the resize's narrow intermediate (height x side) are ever whole. The
pixels are the same, byte for byte, as converting and resizing the whole image: the horizontal pass
of every row and the conversion of every pixel are what they would be.

:func:`working_bytes` says from a file's header how much memory that takes, so that a photo over
the budget is refused before any of it is decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

from imgrade.core.errors import DataError
from imgrade.data.budget import MB
from imgrade.data.resize import Resize, edge_colour

BAND_PIXELS = 1 << 16
"""Pixels of the stored image converted at once (a band of about 1.5 MB of working arrays)."""

EXIF_ORIENTATION = 0x0112
"""The EXIF tag that says how a camera held the photo."""

# What ImageOps.exif_transpose does for each EXIF orientation; 5 to 8 swap width and height.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_QUARTER_TURNS = (
    Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSVERSE,
    Image.Transpose.ROTATE_90,
)

# Integer modes and the bit depth their values span when the file does not say otherwise.
INTEGER_MODE_BITS = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_ONE_BYTE_MODES = ("1", "L", "P")

Box = tuple[int, int, int, int]


def bytes_per_pixel(mode: str, image_format: str | None = None) -> int:
    """Bytes a pixel takes in memory while it decodes: Pillow keeps 8-bit images of 2 to 4 bands
    in 4 bytes a pixel (RGB too); a GIF may load as RGBA; a WebP is held four times over (libwebp's
    frame, the bytes Pillow copies it to, its raw decoder's input and the image).

    >>> bytes_per_pixel("L"), bytes_per_pixel("I;16"), bytes_per_pixel("RGB"), bytes_per_pixel("RGB", "WEBP")
    (1, 2, 4, 16)
    """
    if image_format == "WEBP":
        return 16
    if image_format == "GIF":
        return 4
    return 1 if mode in _ONE_BYTE_MODES else 2 if mode.startswith("I;16") else 4


def working_bytes(width: int, height: int, mode: str, side: int, image_format: str | None = None) -> int:
    """The memory it takes to decode a ``width`` x ``height`` image of ``mode`` into a square of
    ``side``: the decoded image, plus the resize's intermediate of up to max(width, height) rows of
    ``side`` pixels (uint8 RGB, and Pillow's 4-byte copy of it), plus one band's working arrays.

    >>> round(working_bytes(7999, 7999, "RGBA", 32) / 1e6, 1)
    259.3
    """
    intermediate = max(width, height) * side * (3 + 4)
    return width * height * bytes_per_pixel(mode, image_format) + intermediate + BAND_PIXELS * 24


def fit_budget(image: Image.Image, name: str, side: int, max_decode_mb: float) -> int:
    """Make an opened image decode within ``max_decode_mb`` (a JPEG decodes at a smaller scale), or
    refuse it; the bytes its decoding will take.

    Raises:
        DataError: the image would take more, naming it, the MB and the budget.
    """
    budget = max_decode_mb * MB
    width, height = image.size
    need = working_bytes(width, height, image.mode, side, image.format)
    if need > budget and image.format in ("JPEG", "MPO"):
        for scale in (2, 4, 8):  # the scales a JPEG decoder can shrink by while decoding
            if working_bytes(-(-width // scale), -(-height // scale), image.mode, side) <= budget:
                image.draft(image.mode, (width // scale, height // scale))
                need = working_bytes(*image.size, image.mode, side)
                break
    if need > budget:
        raise DataError(_over_budget(name, need, f"{width}x{height} {image.mode}", max_decode_mb))
    return need


def refuse_webp_over_budget(data: bytes, name: str, side: int, max_decode_mb: float) -> None:
    """Refuse a WebP file whose header claims more than ``max_decode_mb`` would hold, before Pillow
    opens it: opening one makes libwebp allocate (and zero) its whole canvas.

    >>> header = b"RIFF" + bytes(4) + b"WEBPVP8X" + bytes(8) + (7999 - 1).to_bytes(3, "little") * 2
    >>> refuse_webp_over_budget(header, "huge.webp", 32, 300)
    Traceback (most recent call last):
    imgrade.core.errors.DataError: huge.webp would take 1,027 MB of memory to decode (7999x7999 WebP), over the 300 MB budget (a guard against decompression bombs): downscale the image before grading it
    """
    size = _webp_size(data)
    if size is not None:
        need = working_bytes(*size, "RGBA", side, "WEBP")
        if need > max_decode_mb * MB:
            raise DataError(_over_budget(name, need, f"{size[0]}x{size[1]} WebP", max_decode_mb))


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP file's first chunk; None for another format or a short header."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    kind = data[12:16]
    if kind == b"VP8X":  # the extended format: the canvas, 24 bits each, minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if kind == b"VP8L" and data[20] == 0x2F:  # lossless: 14 bits each, minus one
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: 14 bits each
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


def _over_budget(name: str, need: int, what: str, max_decode_mb: float) -> str:
    return (
        f"{name} would take {need / MB:,.0f} MB of memory to decode ({what}), over the {max_decode_mb:g} MB "
        "budget (a guard against decompression bombs): downscale the image before grading it"
    )


def orientation(image: Image.Image) -> int | None:
    """The EXIF orientation (1 to 8) of a loaded image; None when it has none or it cannot be read
    (a malformed EXIF block does not spoil the pixels: the image is then kept as stored)."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION)
    except Exception:
        return None
    return value if isinstance(value, int) else None


def square_pixels(
    image: Image.Image,
    resize: Resize,
    name: str,
    bits: int | None = None,
    check: Callable[[], None] | None = None,
) -> np.ndarray:
    """A loaded image as (S, S, 3) uint8 RGB, S = ``resize.size``: upright by its EXIF orientation,
    every mode converted as ``decode_image`` says, made square by ``resize.mode`` and resized.

    Args:
        image: a loaded Pillow image, in any mode.
        resize: the side and mode of the square.
        name: the image's name, for error messages.
        bits: the bit depth integer greyscale spans (a TIFF's BitsPerSample), else None.
        check: called between bands; it raises to stop the work (a request past its deadline).

    Raises:
        DataError: a mode with no RGB meaning.

    >>> square_pixels(Image.new("LA", (40, 20), color=(0, 0)), Resize(8), "cut-out")[0, 0].tolist()
    [255, 255, 255]
    """
    check = check or _no_check
    upright = _Upright(image, _TRANSPOSE.get(orientation(image)))
    convert = _converter(image, bits, name, check)
    size = resize.size
    width, height = upright.size
    box: Box = (0, 0, width, height)  # the part of the upright image that is kept
    pad = resize.mode == "pad" and width != height
    if resize.mode == "crop" and width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    out_width, out_height = (max(width, height),) * 2 if pad else (box[2] - box[0], box[3] - box[1])
    if out_width == out_height == size:
        return convert(upright.region(box))
    shrinking = out_width >= size and out_height >= size
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR

    def along_rows(band: np.ndarray) -> np.ndarray:  # (n, w, 3) -> (n, size, 3): the horizontal pass
        if band.shape[1] == size:
            return band
        return np.asarray(Image.fromarray(band).resize((size, band.shape[0]), resample))

    rows = np.empty((out_height, size, 3), dtype=np.uint8)  # the horizontal pass of the whole square
    fill = _pad_colour(upright, convert, width > height) if pad else None
    offset = 0
    if pad and width > height:  # bands above and below
        top = (width - height) // 2
        rows[:top] = rows[top + height :] = along_rows(np.broadcast_to(fill, (1, width, 3)).copy())
        offset = top
    for band_box in _bands(box):
        band = convert(upright.region(band_box))
        if pad and height > width:  # bands left and right
            padded = np.empty((band.shape[0], height, 3), dtype=np.uint8)
            padded[...] = fill
            left = (height - width) // 2
            padded[:, left : left + width] = band
            band = padded
        start = band_box[1] - box[1] + offset
        rows[start : start + band.shape[0]] = along_rows(band)
        check()
    if out_height == size:
        return rows
    return np.asarray(Image.fromarray(rows).resize((size, size), resample)).copy()


class _Upright:
    """Regions of an image as they are once turned upright, without turning the whole image."""

    def __init__(self, image: Image.Image, method: Image.Transpose | None) -> None:
        self.image = image
        self.method = method
        stored_width, stored_height = image.size
        self.size = (stored_height, stored_width) if method in _QUARTER_TURNS else (stored_width, stored_height)

    def region(self, box: Box) -> Image.Image:
        """The upright image's ``box`` (left, top, right, bottom): that region of the stored image, turned."""
        if self.method is None:
            return self.image.crop(box)
        (x0, y0), (x1, y1) = self._stored(box[0], box[1]), self._stored(box[2], box[3])
        stored_box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        return self.image.crop(stored_box).transpose(self.method)

    def _stored(self, x: int, y: int) -> tuple[int, int]:
        """The stored image's point (pixel corners) that turning takes to the upright (x, y)."""
        width, height = self.image.size
        transpose = Image.Transpose
        return {
            transpose.FLIP_LEFT_RIGHT: (width - x, y),
            transpose.ROTATE_180: (width - x, height - y),
            transpose.FLIP_TOP_BOTTOM: (x, height - y),
            transpose.TRANSPOSE: (y, x),
            transpose.ROTATE_90: (width - y, x),
            transpose.ROTATE_270: (y, height - x),
            transpose.TRANSVERSE: (width - y, height - x),
        }[self.method]


def _bands(box: Box) -> Iterator[Box]:
    left, top, right, bottom = box
    rows = max(1, BAND_PIXELS // max(1, right - left))
    for start in range(top, bottom, rows):
        yield (left, start, right, min(start + rows, bottom))


def _pad_colour(upright: _Upright, convert: Callable[[Image.Image], np.ndarray], wide: bool) -> np.ndarray:
    """The colour of the pad: the two edges it extends, as ``resize.pad_square`` takes them."""
    width, height = upright.size
    if wide:  # the top and bottom rows
        edges = np.concatenate(
            [convert(upright.region((0, 0, width, 1)))[0], convert(upright.region((0, height - 1, width, height)))[0]]
        )
    else:  # the left and right columns
        edges = np.concatenate(
            [
                convert(upright.region((0, 0, 1, height)))[:, 0],
                convert(upright.region((width - 1, 0, width, height)))[:, 0],
            ]
        )
    return edge_colour(edges)


def _no_check() -> None:
    return None


def _converter(
    image: Image.Image, bits: int | None, name: str, check: Callable[[], None]
) -> Callable[[Image.Image], np.ndarray]:
    """The conversion of a band of ``image`` (in ``image``'s mode) to (n, w, 3) uint8 RGB."""
    mode = image.mode
    if mode in INTEGER_MODE_BITS:
        # Pillow's I is signed 32-bit, so its largest value is 2**31 - 1; negatives become black.
        scale = 255.0 / (2 ** min(bits or INTEGER_MODE_BITS[mode], 31) - 1)
        return lambda band: _grey_to_rgb(np.asarray(band).astype(np.float64) * scale)
    if mode == "F":
        # read as 0..1 when no value exceeds 1: a property of the whole image, found band by band
        largest = max((_finite(band).max(initial=-np.inf) for band in _stored_bands(image, check)), default=0.0)
        scale = 255.0 if image.width * image.height and largest <= 1.0 else 1.0
        return lambda band: _grey_to_rgb(_finite(band) * scale)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return _on_white
    if mode == "RGB":
        return lambda band: np.asarray(band)
    try:
        image.crop((0, 0, 1, 1)).convert("RGB")
    except ValueError as error:
        raise DataError(
            f"{name} uses the image mode {mode}, which has no RGB conversion: save it as an RGB or greyscale PNG/JPEG"
        ) from error
    return lambda band: np.asarray(band.convert("RGB"))


def _stored_bands(image: Image.Image, check: Callable[[], None]) -> Iterator[Image.Image]:
    for box in _bands((0, 0, image.width, image.height)):
        yield image.crop(box)
        check()


def _finite(band: Image.Image) -> np.ndarray:
    return np.nan_to_num(np.asarray(band, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _on_white(band: Image.Image) -> np.ndarray:
    """RGB of a band composited on white: round((rgb * a + 255 * (255 - a)) / 255), in integers.

    The fraction is never exactly one half (255 is odd), so adding 127 before the integer division
    rounds as ``np.rint`` of the same sum in floats does.

    >>> _on_white(Image.new("RGBA", (1, 1), (100, 0, 255, 128))).tolist()
    [[[177, 127, 255]]]
    """
    rgba = np.asarray(band.convert("RGBA"))
    if rgba[..., 3].min(initial=255) == 255:  # opaque: most bands of most photos
        return np.ascontiguousarray(rgba[..., :3])
    alpha = rgba[..., 3].astype(np.uint16)
    white = 255 * (255 - alpha) + 127
    out = np.empty(rgba.shape[:2] + (3,), dtype=np.uint8)
    for channel in range(3):  # a plane at a time: numpy is slow on a last axis of 3
        total = rgba[..., channel] * alpha  # uint16: the sum below stays under 65,153
        total += white
        total += (total >> 8) + 1  # then >> 8: total // 255 for every total under 65,536
        total >>= 8
        out[..., channel] = total
    return out


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    grey = np.rint(np.clip(grey, 0.0, 255.0)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)
