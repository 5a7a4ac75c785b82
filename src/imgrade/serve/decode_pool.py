"""Decoding uploads on the server's own threads, within a memory budget, stopped at the deadline.

A small file can decode to hundreds of megabytes (a PNG of one colour at 64 MP is 260 KB). Each
photo's cost is read from its header before anything is decoded (``decode_cost``), and the pool
holds what the photos decoding at once may take:

- a photo over ``max_decode_mb`` is refused (400, by ``decode_image``'s own budget);
- a large photo (over an eighth of that) needs one of ``cores - 1`` large slots (at least one),
  so large photos never take every core from the others;
- small photos (every ordinary photo: 12 MP is 48 MB) share a budget of their own, ``max_decode_mb``,
  which large ones cannot exhaust.

When the photo's share is taken, the request is answered 503 at once (``PoolFull``) rather than
queued: a queue would only hold memory and the client's connection until its deadline. When the
request's deadline passes (or its client leaves), the coroutine awaiting the decode is cancelled
and sets the request's stop flag, which the decoding thread checks between the file's 64 KB blocks
and between bands of rows: the thread stops within a fraction of a second, rather than decoding
on for a request nobody waits for.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from imgrade.core.threads import affinity_cpus, cpu_quota
from imgrade.data.budget import MB
from imgrade.data.images import decode_cost, decode_image
from imgrade.data.resize import Resize

LARGE_SHARE = 8
"""A photo is large when it takes more than 1/LARGE_SHARE of the per-photo budget to decode."""


class PoolFull(Exception):
    """The pool's share for this photo is taken: the server answers 503 at once."""


class _Stopped(BaseException):
    """Raised in a decoding thread whose request was cancelled; a BaseException so that no
    ``except Exception`` on the way (Pillow's, imgrade's) mistakes it for a broken file."""


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota."""
    cores = len(affinity_cpus())
    quota = cpu_quota()
    return max(1, min(cores, int(quota)) if quota else cores)


class DecodePool:
    """Decodes each request's photos on a thread of its own pool, within ``max_decode_mb`` a photo.

    >>> pool = DecodePool(max_decode_mb=300, cores=4)
    >>> pool.large_slots, pool.threads
    (3, 5)
    >>> pool.close()
    """

    def __init__(self, max_decode_mb: float, cores: int | None = None) -> None:
        cores = cores or usable_cores()
        self.max_decode_mb = max_decode_mb
        self.budget = int(max_decode_mb * MB)
        self.large_slots = max(1, cores - 1)
        # every large slot may be busy while small photos still decode on their own threads
        self.threads = self.large_slots + 2
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="imgrade-decode")
        self._lock = threading.Lock()
        self._large_in_use = 0
        self._small_bytes = 0

    async def decode(self, uploads: list[tuple[str, bytes]], resize: Resize) -> np.ndarray:
        """(N, S, S, 3) uint8 pixels of ``uploads`` (file name, bytes), S = ``resize.size``.

        Raises:
            DataError: a file that is not an image, or over a limit (the message names it).
            PoolFull: the pool cannot take a photo now.
        """
        stop = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._decode_all, uploads, resize, stop)
        try:
            return await future
        except asyncio.CancelledError:
            stop.set()  # the deadline passed, or the client left: the thread stops at its next check
            raise

    def close(self) -> None:
        """Stop taking work; running decodes finish (or stop at their request's deadline)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def in_use(self) -> tuple[int, int]:
        """(large photos decoding, bytes reserved by small ones) now."""
        with self._lock:
            return self._large_in_use, self._small_bytes

    def _decode_all(self, uploads: list[tuple[str, bytes]], resize: Resize, stop: threading.Event) -> np.ndarray:
        def check() -> None:
            if stop.is_set():
                raise _Stopped

        images = np.empty((len(uploads), resize.size, resize.size, 3), dtype=np.uint8)
        for i, (name, data) in enumerate(uploads):
            check()
            with self._reserve(decode_cost(data, name, resize, max_decode_mb=self.max_decode_mb)):
                images[i] = decode_image(data, name, resize, max_decode_mb=self.max_decode_mb, check=check)
        return images

    @contextmanager
    def _reserve(self, cost: int) -> Iterator[None]:
        large = cost > self.budget // LARGE_SHARE
        with self._lock:
            if large and self._large_in_use >= self.large_slots:
                raise PoolFull(
                    f"the server is already decoding {self.large_slots} large photo(s), its most at once: "
                    "try again in a moment, or send photos under "
                    f"{self.budget // LARGE_SHARE / MB:g} MB decoded (about {self.budget // LARGE_SHARE // 4 / 1e6:g} MP)"
                )
            if not large and self._small_bytes + cost > self.budget:
                raise PoolFull(
                    f"the server is decoding {self._small_bytes / MB:,.0f} MB of photos, its most at once: "
                    "try again in a moment"
                )
            if large:
                self._large_in_use += 1
            else:
                self._small_bytes += cost
        try:
            yield
        finally:
            with self._lock:
                if large:
                    self._large_in_use -= 1
                else:
                    self._small_bytes -= cost
