"""Decoding bombs: small image files that decode huge, each just under imgrade's pixel limit.

Every bomb is a plain picture (a green bar, the "cucumber", on a background of one colour) in a
mode whose decoding costs more than 3 bytes a pixel: RGBA, LA, 16-bit grey, a palette with
transparency, CMYK, float32 and int32 TIFF, plus 8-bit grey and RGB JPEG at the full size, and
one over the limit that must be refused from its header. Being mostly one colour they compress
to a few hundred kB (the deflate ceiling is about 1:1000). The PNGs are written here, row by
row through zlib, so a 64 MP bomb never exists in memory; the TIFFs and JPEGs go through Pillow
(at most 256 MB).

Used by ``decode_bombs.py`` (``imgrade predict`` on each) and ``serve_bombs.py`` (uploads to
``imgrade serve``); ``special_entries`` makes the FIFO, device links and socket that readers
must refuse without reading. Files are cached in the caller's folder under names that carry
their size, so a second run reuses them.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from imgrade.core.io import atomic_write
from imgrade.data.images import MAX_PIXELS

FULL_SIDE = math.isqrt(MAX_PIXELS - 1)
"""7999: the largest square side whose pixel count is under MAX_PIXELS."""
OVER_SIDE = 9000
"""The over-the-limit bomb is OVER_SIDE x OVER_SIDE (81 MP), whatever side the others have."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IDAT_BYTES = 1 << 18
"""Compressed bytes per IDAT chunk."""
ZLIB_LEVEL = 6
"""Within 4% of level 9's size, twice as fast on these rows (RGBA 7999x7999: 269 kB in 1.7 s)."""


@dataclass(frozen=True)
class Bomb:
    """One kind of decoding bomb: how to write it and what Pillow sees when it opens it."""

    name: str
    extension: str
    mode: str
    """Pillow's mode for the opened file (before any conversion)."""
    what: str
    """One line for tables: the format and mode."""
    write: Callable[[Path, int, int], None]
    """Writes a ``width`` x ``height`` bomb to the path (atomically)."""
    over_limit: bool = False
    """Sized OVER_SIDE x OVER_SIDE, over MAX_PIXELS: must be refused from the header."""

    def size(self, side: int = FULL_SIDE) -> tuple[int, int]:
        """Width and height of this bomb when the others are ``side`` x ``side``."""
        return (OVER_SIDE, OVER_SIDE) if self.over_limit else (side, side)

    def file_name(self, side: int = FULL_SIDE) -> str:
        width, height = self.size(side)
        return f"{self.name}-{width}x{height}.{self.extension}"


# ----------------------------------------------------------------------------- the picture


def _bar(width: int, height: int) -> tuple[int, int, int, int]:
    """The cucumber's box (left, top, right, bottom): the middle half across, the middle third down."""
    return width // 4, height // 3, width - width // 4, height - height // 3


def _rows(width: int, height: int, background: bytes, bar: bytes) -> tuple[bytes, bytes, range]:
    """The two distinct rows of the picture (without the filter byte) and the rows holding the bar."""
    left, top, right, bottom = _bar(width, height)
    plain = background * width
    barred = background * left + bar * (right - left) + background * (width - right)
    return plain, barred, range(top, bottom)


# ----------------------------------------------------------------------------- PNG, streamed


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(
    path: Path,
    width: int,
    height: int,
    *,
    color_type: int,
    bit_depth: int,
    background: bytes,
    bar: bytes,
    chunks: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """A PNG compressed one row at a time: memory stays at two rows plus the zlib window.

    ``background`` and ``bar`` are one pixel's bytes as the PNG stores them (big-endian samples).
    """
    plain, barred, bar_rows = _rows(width, height, background, bar)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    compressor = zlib.compressobj(ZLIB_LEVEL)
    with atomic_write(path) as file:
        file.write(PNG_SIGNATURE + _chunk(b"IHDR", header))
        for kind, data in chunks:
            file.write(_chunk(kind, data))
        pending = bytearray()
        for y in range(height):
            pending += compressor.compress(b"\0" + (barred if y in bar_rows else plain))  # filter 0: none
            if len(pending) >= IDAT_BYTES:
                file.write(_chunk(b"IDAT", bytes(pending)))
                pending.clear()
        pending += compressor.flush()
        file.write(_chunk(b"IDAT", bytes(pending)) + _chunk(b"IEND", b""))


def _png_writer(color_type: int, bit_depth: int, background: bytes, bar: bytes, **extra) -> Callable:
    def write(path: Path, width: int, height: int) -> None:
        _png(path, width, height, color_type=color_type, bit_depth=bit_depth, background=background, bar=bar, **extra)

    return write


# ----------------------------------------------------------------------------- TIFF and JPEG, through Pillow


def _pillow_writer(mode: str, background, bar, **save) -> Callable:
    """Writes an image of ``mode`` made in memory (4 bytes a pixel at most: 256 MB at 64 MP)."""

    def write(path: Path, width: int, height: int) -> None:
        image = Image.new(mode, (width, height), background)
        image.paste(bar, _bar(width, height))
        with atomic_write(path) as file:
            image.save(file, **save)

    return write


_TIFF = {"format": "TIFF", "compression": "tiff_adobe_deflate"}
_JPEG = {"format": "JPEG", "quality": 90}

BOMBS: dict[str, Bomb] = {
    bomb.name: bomb
    for bomb in (
        Bomb(
            "rgba", "png", "RGBA", "RGBA PNG, 8-bit, transparent background",
            _png_writer(6, 8, bytes([255, 255, 255, 0]), bytes([70, 140, 60, 255])),
        ),
        Bomb("la", "png", "LA", "grey + alpha PNG, 8-bit", _png_writer(4, 8, bytes([255, 0]), bytes([120, 255]))),
        Bomb("grey16", "png", "I;16", "16-bit greyscale PNG", _png_writer(0, 16, struct.pack(">H", 52000), struct.pack(">H", 21000))),
        Bomb(
            "palette_trns", "png", "P", "palette PNG with a transparent entry (tRNS)",
            _png_writer(3, 8, b"\0", b"\1", chunks=((b"PLTE", bytes([255, 255, 255, 70, 140, 60])), (b"tRNS", b"\0\xff"))),
        ),
        Bomb("grey", "png", "L", "8-bit greyscale PNG", _png_writer(0, 8, bytes([230]), bytes([90]))),
        Bomb("cmyk_jpeg", "jpg", "CMYK", "CMYK JPEG", _pillow_writer("CMYK", (0, 0, 0, 10), (60, 0, 70, 40), **_JPEG)),
        Bomb(
            "cmyk_tiff", "tif", "CMYK", "CMYK TIFF, deflate",
            _pillow_writer("CMYK", (0, 0, 0, 10), (60, 0, 70, 40), **_TIFF),
        ),
        Bomb("float_tiff", "tif", "F", "float32 greyscale TIFF, deflate", _pillow_writer("F", 0.9, 0.35, **_TIFF)),
        Bomb(
            "int32_tiff", "tif", "I", "32-bit integer greyscale TIFF, deflate",
            _pillow_writer("I", 2_000_000_000, 800_000_000, **_TIFF),
        ),
        Bomb("rgb_jpeg", "jpg", "RGB", "RGB JPEG", _pillow_writer("RGB", (235, 235, 230), (70, 140, 60), **_JPEG)),
        Bomb(
            "webp", "webp", "RGB", "lossless WebP (libwebp's decoding holds it four times over)",
            _pillow_writer("RGB", (235, 235, 230), (70, 140, 60), format="WEBP", lossless=True),
        ),
        Bomb(
            "over_limit", "png", "L", f"8-bit greyscale PNG, {OVER_SIDE}x{OVER_SIDE}: over the pixel limit",
            _png_writer(0, 8, bytes([230]), bytes([90])), over_limit=True,
        ),
    )
}  # fmt: skip
"""Every bomb by name."""


def write_bomb(name: str, folder: str | os.PathLike, side: int = FULL_SIDE) -> Path:
    """The bomb ``name`` in ``folder`` (``side`` x ``side``, see :meth:`Bomb.size`), written unless already there."""
    bomb = BOMBS[name]
    path = Path(folder) / bomb.file_name(side)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        bomb.write(path, *bomb.size(side))
    return path


def write_bombs(folder: str | os.PathLike, side: int = FULL_SIDE, names: list[str] | None = None) -> dict[str, Path]:
    """Every bomb (or those ``names``) in ``folder``: name -> path. Seconds the first time, then cached."""
    return {name: write_bomb(name, folder, side) for name in (names or BOMBS)}


# ----------------------------------------------------------------------------- entries that are not files


SPECIAL_ENTRIES = ("fifo", "zero", "null", "sock")
"""A FIFO (open blocks for a writer), links to /dev/zero (endless) and /dev/null, a Unix socket."""


def special_entries(folder: str | os.PathLike) -> dict[str, Path]:
    """``fifo.png`` (a FIFO), ``zero.png`` -> /dev/zero, ``null.png`` -> /dev/null and ``sock.png``
    (a bound Unix socket) in ``folder``, made afresh: name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.png" for name in SPECIAL_ENTRIES}
    for path in paths.values():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    os.mkfifo(paths["fifo"])
    paths["zero"].symlink_to("/dev/zero")
    paths["null"].symlink_to("/dev/null")
    _bind_socket(paths["sock"])
    return paths


def _bind_socket(path: Path) -> None:
    """Leave a Unix socket's file at ``path``. A socket's path must fit in 108 bytes, so a long one is
    bound in a short temporary folder and renamed into place (same file system as /tmp only)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        if len(os.fsencode(path)) < 100:
            sock.bind(str(path))
            return
        with tempfile.TemporaryDirectory() as short:
            sock.bind(os.path.join(short, "s"))
            os.rename(os.path.join(short, "s"), path)


def status_kb(pid: int, field: str) -> int:
    """A ``Vm...`` line of /proc/PID/status (VmRSS, VmHWM) in kB; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0
