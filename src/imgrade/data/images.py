"""Decode image files of any common format and mode into square uint8 RGB arrays.

Every reader (class folders, CSV manifests) and ``predict`` goes through ``decode_image``, so a
photo is turned into pixels the same way in training and in production.
"""

from __future__ import annotations

import io
import os
import re
import stat
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from imgrade.core.errors import DataError
from imgrade.core.io import not_regular_file, open_regular_file, read_regular_file
from imgrade.data.budget import DECODE_BUDGET_MB
from imgrade.data.pixels import EXIF_ORIENTATION, INTEGER_MODE_BITS, fit_budget, refuse_webp_over_budget, square_pixels
from imgrade.data.resize import Resize

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R 601 luminance weights of R, G, B, as JPEG, PIL's ``convert("L")`` and torchvision use them."""

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# Shown in messages in this order: the usual photo formats first.
_EXTENSIONS_TEXT = ".png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp"

Image.init()  # registers every plugin, so that TIFF and WebP are known below
PILLOW_FORMATS = tuple(f for f in ("PNG", "JPEG", "MPO", "BMP", "GIF", "TIFF", "WEBP") if f in Image.OPEN)
"""The only decoders Pillow may use: the formats of IMAGE_EXTENSIONS (MPO, a phone's multi-picture
JPEG, has a decoder of its own in older Pillows and goes through JPEG's in newer ones).
Pillow knows 40+ others, some of which hand the bytes to outside programs (EPS to Ghostscript):
a photo from a client must never reach those."""

MAX_PIXELS = 64_000_000
"""Images with more pixels are refused before decoding (a decompression-bomb guard); 64 MP is
above any phone or DSLR photo, while a malicious 50 kB PNG can claim billions of pixels."""

PROGRESS_MIN_IMAGES = 500
"""Loading more images than this shows a progress bar (on stderr, when it is a terminal)."""

_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped, for an error message that must stay on one line
    (a file name from a CSV cell or an upload, or a decoder's message, can hold any character).

    >>> print(one_line("a\\nb.png"))
    a\\nb.png
    """
    return text.translate(_LINE_BREAKS)


def natural_sort_key(text: str) -> list:
    """A sort key that orders the digit runs in ``text`` by value, so img2 sorts before img10.

    >>> sorted(["img10.png", "img2.png", "Img1.png"], key=natural_sort_key)
    ['Img1.png', 'img2.png', 'img10.png']
    """
    # re.split with a capture group alternates text, number, text, ...: the positions of ints and
    # strs line up between any two keys, so the lists always compare.
    parts = re.split(r"(\d+)", text)
    return [int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)]


def decode_image(
    data: bytes,
    name: str,
    resize: Resize | int,
    *,
    max_decode_mb: float = DECODE_BUDGET_MB,
    check: Callable[[], None] | None = None,
) -> np.ndarray:
    """Decode the bytes of one image file into a (S, S, 3) uint8 RGB array, S = ``resize.size``.

    The EXIF orientation is applied, so a phone photo comes out upright. Every mode becomes RGB:
    greyscale is repeated into R=G=B; 16- and 32-bit greyscale is scaled by its bit depth
    (65535 -> 255), never clipped; float greyscale is read as 0..1 when no value exceeds 1, else
    as 0..255. Transparent pixels are composited on WHITE: cut-out product photos are shown on
    white, and the colour stored under a fully transparent pixel is arbitrary (often black), so
    white keeps the item's outline as the photographer saw it. The image is then made square as
    ``resize.mode`` says (by default squash: the whole image, no crop, as a grade can depend on
    the item's full length; see :class:`Resize`) and resized, averaging pixels (BOX) when
    shrinking and interpolating (BILINEAR) when enlarging; an image already of that size is
    returned unchanged, byte for byte.

    Memory is bounded by ``max_decode_mb``, counted from the file's header before anything is
    decoded (:func:`imgrade.data.pixels.working_bytes`): the decoded image is the only
    full-resolution copy, the rest works in bands (:mod:`imgrade.data.pixels`). A JPEG over the
    budget is decoded at 1/2, 1/4 or 1/8 scale where that fits (the format can shrink while
    decoding); any other image over it is refused.

    Args:
        data: the file's bytes.
        name: the file name, used in error messages.
        resize: the side and mode of the square output; a number is a side, squashed.
        max_decode_mb: the most memory decoding may take, in MB.
        check: called between decoding steps; to stop the work (a request past its deadline) it
            raises a BaseException that is not an Exception, such as ``asyncio.CancelledError``,
            which passes through here and through Pillow.

    Raises:
        DataError: the bytes are empty, not an image, truncated or corrupt, over ``MAX_PIXELS``
            or the decode budget, or in a mode that has no RGB meaning.

    >>> buffer = io.BytesIO()
    >>> Image.new("L", (64, 48), color=200).save(buffer, format="PNG")
    >>> pixels = decode_image(buffer.getvalue(), "grey.png", 32)
    >>> pixels.shape, pixels.dtype, pixels[0, 0].tolist()
    ((32, 32, 3), dtype('uint8'), [200, 200, 200])
    """
    resize = Resize.of(resize)
    name = one_line(name)
    with _opened(data, name, resize.size, max_decode_mb, check) as (image, _):
        image.load()  # decode every byte now, so truncated files fail here
        return square_pixels(image, resize, name, _stored_bit_depth(image), check)


def decode_cost(data: bytes, name: str, resize: Resize | int, *, max_decode_mb: float = DECODE_BUDGET_MB) -> int:
    """The bytes of memory ``decode_image`` will take on ``data``, read from its header alone (a
    server reserves them before it decodes).

    Raises:
        DataError: as ``decode_image`` would before decoding (not an image, over a limit).

    >>> buffer = io.BytesIO()
    >>> Image.new("RGBA", (4000, 3000)).save(buffer, format="PNG")
    >>> round(decode_cost(buffer.getvalue(), "big.png", 32) / 1e6)
    50
    """
    with _opened(data, one_line(name), Resize.of(resize).size, max_decode_mb, None) as (_, need):
        return need


@contextmanager
def _opened(
    data: bytes, name: str, side: int, max_decode_mb: float, check: Callable[[], None] | None
) -> Iterator[tuple[Image.Image, int]]:
    """The image in ``data``, opened (its header read, nothing decoded), checked against
    ``MAX_PIXELS`` and made to fit ``max_decode_mb`` (``fit_budget``), with the bytes its decoding
    will take; any error of Pillow's, here or in the ``with`` body, becomes a one-line DataError."""
    if len(data) == 0:
        raise DataError(f"{name} is empty (0 bytes): replace it with a valid image file or delete it")
    refuse_webp_over_budget(data, name, side, max_decode_mb)  # before Pillow opens it and allocates
    try:
        # Pillow's own bomb check warns (then errors) at ~89 MP, inside Image.open; turn the warning
        # into an error so that no huge image is ever decoded.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(_CheckedReader(data, check), formats=PILLOW_FORMATS) as image:
                width, height = image.size  # from the header: nothing is decoded yet
                if width * height > MAX_PIXELS:
                    raise DataError(
                        f"{name} is {width}x{height} = {width * height:,} pixels, over the "
                        f"{MAX_PIXELS:,} limit (a guard against decompression bombs): "
                        "downscale the image before grading it"
                    )
                yield image, fit_budget(image, name, side, max_decode_mb)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(
            f"{name} claims too many pixels ({one_line(str(error))}): downscale the image before grading it"
        ) from error
    except UnidentifiedImageError as error:
        raise DataError(
            f"{name} is not an image Pillow can read: expected a file in one of {_EXTENSIONS_TEXT}"
        ) from error
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error, ...
        raise DataError(
            f"{name} is truncated or corrupt ({type(error).__name__}: {one_line(str(error))}): "
            "re-export or re-download the file, or delete it"
        ) from error


def image_pixels(image: Image.Image, name: str, resize: Resize | int) -> np.ndarray:
    """A Pillow image as (S, S, 3) uint8 RGB (S = ``resize.size``), exactly as ``decode_image`` turns its
    file into pixels (EXIF orientation, any mode to RGB, transparency on white, the same resize).

    Raises:
        DataError: ``image`` cannot be read (a closed file) or has a mode with no RGB meaning.

    >>> image_pixels(Image.new("LA", (40, 20), color=(0, 0)), "cut-out", 8)[0, 0].tolist()
    [255, 255, 255]
    """
    resize = Resize.of(resize)
    name = one_line(name)
    try:
        image.load()
    except Exception as error:  # a lazily opened file that is closed, truncated or corrupt
        raise DataError(
            f"{name} is a Pillow image that cannot be read ({type(error).__name__}: {one_line(str(error))}): "
            "pass it while its file is open, or pass the file's path"
        ) from error
    return square_pixels(image, resize, name, _stored_bit_depth(image))


def array_pixels(array: np.ndarray, name: str, resize: Resize | int) -> np.ndarray:
    """An array of pixels as (S, S, 3) uint8 RGB (S = ``resize.size``), as if it were a PNG file's.

    Takes (H, W) grey, (H, W, 1) grey, (H, W, 3) RGB or (H, W, 4) RGBA, as uint8 0..255 or as
    floats in [0, 1] (rounded to the nearest of 0..255); RGBA is composited on white and the
    result resized as ``decode_image`` does.

    Raises:
        DataError: another shape or dtype, or floats outside [0, 1].

    >>> array_pixels(np.full((10, 20), 0.5), "grey", 4)[0, 0].tolist()
    [128, 128, 128]
    """
    resize = Resize.of(resize)
    name = one_line(name)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))) or min(array.shape[:2]) < 1:
        raise DataError(
            f"{name} is an array of shape {array.shape}: pass (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA pixels"
        )
    if array.dtype.kind == "f":
        if array.size and not (np.all(np.isfinite(array)) and array.min() >= 0.0 and array.max() <= 1.0):
            finite = array[np.isfinite(array)]
            seen = f"{finite.min():g}..{finite.max():g}" if finite.size == array.size else "NaN or infinite"
            raise DataError(f"{name} holds float values {seen}: float pixels must lie in [0, 1] (or pass uint8 0..255)")
        array = np.rint(array.astype(np.float64) * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise DataError(
            f"{name} is an array of {array.dtype}: pass uint8 pixels (0..255) or floats in [0, 1], "
            "e.g. array.astype(np.uint8)"
        )
    # Pillow reads (H, W) uint8 as L, (H, W, 3) as RGB and (H, W, 4) as RGBA
    return square_pixels(Image.fromarray(np.ascontiguousarray(array)), resize, name)


def load_image(path: str | os.PathLike, resize: Resize | int, *, check: Callable[[], None] | None = None) -> np.ndarray:
    """Read one image file into a (S, S, 3) uint8 RGB array, S = ``resize.size`` (see decode_image,
    which calls ``check`` between its steps).

    Only a regular file (a link to one too) of at most ``MAX_FILE_BYTES`` is read: a FIFO, a
    device or a socket is refused at once (``imgrade.core.io.read_regular_file``).
    """
    path = Path(path)
    name = one_line(str(path))
    try:
        data = read_regular_file(path, name)
    except FileNotFoundError as error:
        raise DataError(_missing(path)) from error
    except OSError as error:
        raise DataError(f"{name} cannot be read ({error.strerror or error}): check its permissions") from error
    return decode_image(data, str(path), resize, check=check)


def stored_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file as ``decode_image`` sees it, upright by its EXIF orientation,
    read from the file's header: nothing is decoded.

    Raises:
        DataError: the file is missing, not a regular file, or not an image Pillow can read.
    """
    name = one_line(str(path))
    try:
        with open_regular_file(path, name) as file, Image.open(file, formats=PILLOW_FORMATS) as image:
            width, height = image.size
            try:
                turned = image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8)  # a quarter turn
            except Exception:  # a malformed EXIF block: decode_image keeps the image as stored
                turned = False
    except DataError:
        raise
    except FileNotFoundError as error:
        raise DataError(_missing(Path(path))) from error
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DataError(
            f"{name} is not an image Pillow can read ({one_line(str(error))}): re-export it or delete it"
        ) from error
    return (height, width) if turned else (width, height)


def list_images(path: str | os.PathLike, *, regular_only: bool = False) -> list[Path]:
    """The image files at ``path``: the file itself, or a folder's image files, recursively.

    Files are matched by extension (any case: .JPG counts). Names starting with "." are skipped,
    files and folders alike: they are hidden system files such as macOS's ``._photo.jpg``.
    Files come in natural order of their path below ``path`` (img2 before img10).

    An entry with an image name that is not a regular file (a FIFO, a device, a socket, or a link
    to one) is listed, and ``load_image`` refuses it when it comes to read it (``predict`` gives it
    an error row); with ``regular_only`` listing refuses it, so that training fails before decoding.

    Raises:
        DataError: ``path`` does not exist, is a file without an image extension, or is a folder
            with no image files; with ``regular_only``, an image entry that is not a regular file.
    """
    path = Path(path)
    if not path.is_dir():
        if not path.exists():  # links followed: a dangling link does not exist
            raise DataError(_missing(path))
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(
                f"{one_line(str(path))} is not an image file: expected a file ending in {_EXTENSIONS_TEXT}, "
                "or a folder of images"
            )
        return [path]
    images: list[Path] = []
    others: list[str] = []
    for folder, subfolders, files in os.walk(path):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                images.append(Path(folder, name))
                if regular_only:
                    _refuse_special(images[-1])
            else:
                others.append(name)
    if not images:
        seen = f" (found {len(others)} other files, e.g. {sorted(others)[0]})" if others else ""
        raise DataError(f"no images in {path}{seen}: expected files ending in {_EXTENSIONS_TEXT}")
    return sorted(images, key=lambda file: natural_sort_key(file.relative_to(path).as_posix()))


def _refuse_special(path: Path) -> None:
    """DataError if ``path`` (links followed) exists but is not a regular file; a stat never blocks."""
    try:
        mode = path.stat().st_mode
    except OSError:  # missing (a dangling link) or unreadable: load_image says which
        return
    if not stat.S_ISREG(mode):
        raise not_regular_file(one_line(str(path)), mode, path)


def load_images(paths: list[Path], resize: Resize | int) -> np.ndarray:
    """Decode ``paths`` into one preallocated (N, S, S, 3) uint8 array, S = ``resize.size``.

    A progress bar goes to stderr for more than ``PROGRESS_MIN_IMAGES`` images.

    Raises:
        DataError: naming the first file that is missing, not an image or corrupt.
    """
    resize = Resize.of(resize)
    images = np.empty((len(paths), resize.size, resize.size, 3), dtype=np.uint8)
    quiet = len(paths) <= PROGRESS_MIN_IMAGES or not sys.stderr.isatty()
    for i, path in enumerate(tqdm(paths, desc="decoding images", unit="img", disable=quiet)):
        images[i] = load_image(path, resize)
    return images


def _missing(path: Path) -> str:
    where = "" if path.is_absolute() else f" (relative paths start from {Path.cwd()})"
    return f"{one_line(str(path))} does not exist: check the path{where}"


def _stored_bit_depth(image: Image.Image) -> int | None:
    """Bits per sample the file declares for integer greyscale (TIFF), else None."""
    if image.mode not in INTEGER_MODE_BITS:
        return None
    tags = getattr(image, "tag_v2", None)  # TIFF only
    bits = tags.get(258) if tags is not None else None  # 258 = BitsPerSample
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if bits else None


class _CheckedReader(io.BytesIO):
    """The file's bytes, read by Pillow a block at a time; ``check`` runs before each block, so a
    decode can be stopped part way (Pillow's PNG and JPEG decoders read 64 KB at a time)."""

    def __init__(self, data: bytes, check: Callable[[], None] | None) -> None:
        super().__init__(data)
        self._check = check

    def read(self, size: int | None = -1, /) -> bytes:
        if self._check is not None:
            self._check()
        return super().read(size)
