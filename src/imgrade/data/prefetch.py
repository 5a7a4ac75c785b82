"""Decode photos a chunk ahead of the grader: a small pool of threads fills the next chunks while
the current one is graded, and the chunks come out in input order.

``imgrade predict`` grades a folder ``CHUNK`` photos at a time. Decoded one after another in the
grading thread, the photos wait for the network and the network waits for the photos; here a
pool of ``threads`` decoder threads works on chunks k+1 and k+2 (``AHEAD``) while chunk k is
graded. Each chunk is split into one part per thread, so the threads finish the next chunk
together and at most ``AHEAD + 1`` chunks of pixels exist at a time, however many photos there
are and however many threads decode.

Threads, not processes. What the threads buy is overlap with the network, which releases the GIL
while it computes (ONNX Runtime, OpenVINO, PyTorch): on 2 cores, in quiet rounds, the reference
network graded 500 PNG photos of 32x32 at 467-472 photos/s decoding in the grading thread, and
491-495 with one decoder thread beside it (medians of 6 rounds each; ``predict`` in one process).
Among themselves, threads decode such small photos no faster than one thread (2,500 against 2,900
photos/s): most of the time goes to Python code that holds the GIL. Two processes decoded 5,500
photos/s, but a second decoder has no core to use on 2 cores, where the network keeps both busy
(2 decoder threads: 454-463 photos/s; the network on one thread beside one decoder: 306), while a
process pool brings what threads do not need: forking a process that runs the network's threads
(or spawning one that imports NumPy and Pillow again), a copy of every chunk through a pipe, and
Ctrl-C delivered to every worker, each of which must be kept from printing a traceback and joined.
A thread stops between two photos, or inside one (``decode_image`` checks in as it reads), when
the pool is closed.

A photo that cannot be read gets its one-line message (``Decoded.errors``), exactly as when it is
decoded in the grading thread; any other exception in a decoder thread (a bug, MemoryError) is
raised again in the thread that reads the chunks, in order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgrade.core.errors import DataError, ImgradeError
from imgrade.data.images import load_image
from imgrade.data.resize import Resize

AHEAD = 2
"""Chunks decoded ahead of the one being graded: one would leave the threads idle whenever a chunk
takes longer to decode than its neighbour, more only holds more pixels in memory."""
THREAD_NAME = "imgrade-decode"
"""The decoder threads' name prefix (``threading.enumerate()`` shows them)."""


@dataclass
class Decoded:
    """One chunk of photos, decoded."""

    paths: list[str]
    """The chunk's paths, in input order."""
    images: np.ndarray
    """(G, S, S, 3) uint8: the photos that decoded, in input order."""
    good: list[int]
    """Positions in ``paths`` of the photos in ``images``."""
    errors: dict[int, str]
    """Position in ``paths`` -> why that photo could not be decoded (one line)."""


def auto_decode_threads(cores: int) -> int:
    """Decoder threads beside a network that computes on ``cores`` threads: half as many, at least one.

    The network keeps its threads (on 2 cores, ``predict`` with the network on one thread beside one
    decoder did 306 photos/s, with two beside one 491), and one decoder thread beside it was the
    fastest on 2 cores (the module's docstring). On more cores, half is a middle course, not
    measured, between small photos, for which the network is the slower part, and large ones, for
    which decoding is; ``predict --decode-threads`` overrides it.

    >>> auto_decode_threads(1), auto_decode_threads(2), auto_decode_threads(16)
    (1, 1, 8)
    """
    return max(1, cores // 2)


class _Stopped(BaseException):
    """Raised inside a decoder thread when the pool closes: not an Exception, so it passes through
    ``decode_image`` and Pillow and ends the part at once."""


def decode_photos(paths: list[str], resize: Resize | int, base: Path | None = None) -> Decoded:
    """Decode ``paths`` one after another in this thread: the photos that decode, and why the others did not.

    A relative path is read below ``base`` where given (an absolute one stays as it is).

    >>> decoded = decode_photos(["", "no-such-photo.png"], 32)
    >>> decoded.images.shape, decoded.good, decoded.errors[0]
    ((0, 32, 32, 3), [], "an empty path: give each photo's path")
    """
    resize = Resize.of(resize)
    pixels = np.empty((len(paths), resize.size, resize.size, 3), dtype=np.uint8)
    errors = _decode_into(pixels, 0, paths, resize, base, None)
    return _compact(paths, pixels, errors)


def _decode_into(
    pixels: np.ndarray,
    offset: int,
    paths: list[str],
    resize: Resize,
    base: Path | None,
    stop: threading.Event | None,
) -> dict[int, str]:
    """Decode ``paths`` into ``pixels[offset:]``; the errors by position in ``pixels``."""
    check = None if stop is None else lambda: _check(stop)
    errors = {}
    for i, path in enumerate(paths):
        if check is not None:
            check()
        try:
            if not path:
                raise DataError("an empty path: give each photo's path")
            pixels[offset + i] = load_image(base / path if base is not None else path, resize, check=check)
        except ImgradeError as error:
            errors[offset + i] = str(error)
    return errors


def _check(stop: threading.Event) -> None:
    if stop.is_set():
        raise _Stopped


def _compact(paths: list[str], pixels: np.ndarray, errors: dict[int, str]) -> Decoded:
    """The decoded photos packed to the front (a copy only where some failed)."""
    if not errors:
        return Decoded(paths, pixels, list(range(len(paths))), {})
    good = [i for i in range(len(paths)) if i not in errors]
    return Decoded(paths, pixels[good], good, errors)


class ChunkDecoder:
    """The photos of ``paths``, ``chunk`` at a time, decoded by ``threads`` threads ahead of the reader.

    Use it as a context manager: leaving the block (at the end, or on an exception, Ctrl-C or
    SIGTERM in the reading thread) stops the threads between two photos and waits for them, so
    none is left running::

        with ChunkDecoder(paths, resize, chunk=256, threads=2) as chunks:
            for decoded in chunks:
                grade(decoded)

    With ``threads=0`` each chunk is decoded in the reading thread when it is asked for (no pool).
    """

    def __init__(
        self, paths: list[str], resize: Resize | int, *, chunk: int, threads: int, base: Path | None = None
    ) -> None:
        assert chunk >= 1 and threads >= 0, (chunk, threads)
        self.paths = paths
        self.resize = Resize.of(resize)
        self.chunk = chunk
        self.threads = threads
        self.base = base
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> ChunkDecoder:
        if self.threads > 0:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=THREAD_NAME)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop the threads (those decoding stop at their next photo, the queued parts never start) and wait for them."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[Decoded]:
        starts = range(0, len(self.paths), self.chunk)
        if self._pool is None:
            for start in starts:
                yield decode_photos(self.paths[start : start + self.chunk], self.resize, self.base)
            return
        pending: deque[tuple[list[str], np.ndarray, list[Future]]] = deque()
        queued = 0
        for k in range(len(starts)):
            # chunk k + AHEAD is queued only once the reader is done with chunk k - 1: memory stays bounded
            while queued < len(starts) and queued <= k + AHEAD:
                pending.append(self._submit(self.paths[starts[queued] : starts[queued] + self.chunk]))
                queued += 1
            paths, pixels, parts = pending.popleft()
            errors = {}
            for part in parts:
                errors.update(part.result())  # in order; a decoder thread's exception is raised here
            yield _compact(paths, pixels, errors)

    def _submit(self, paths: list[str]) -> tuple[list[str], np.ndarray, list[Future]]:
        """Queue one chunk as one contiguous part per thread, decoded into one array."""
        assert self._pool is not None
        side = self.resize.size
        pixels = np.empty((len(paths), side, side, 3), dtype=np.uint8)
        size = -(-len(paths) // self.threads)
        parts = [
            self._pool.submit(
                _decode_into, pixels, start, paths[start : start + size], self.resize, self.base, self._stop
            )
            for start in range(0, len(paths), size)
        ]
        return paths, pixels, parts
