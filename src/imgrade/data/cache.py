"""Decode image files once: in parallel DataLoader workers, into a uint8 cache file on disk.

Folder and CSV sets are photos (JPEG, PNG, ...) that cost far more to decode than to train on
at 32x32. ``decode_images`` decodes each file once, in ``workers`` processes, straight into a
NumPy ``.npy`` file under the cache folder, and returns it memory-mapped: later epochs, later
runs and sets larger than memory read pixels from the page cache instead of decoding again.

The cache key is the image size and resize mode, the decoder's version and every file's path,
size and modification time, so an edited, added or removed photo gives a new entry. The file is written
under a temporary name and renamed when complete: a crash leaves no half-written entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from imgrade.core.errors import ConfigError, DataError
from imgrade.data.images import PROGRESS_MIN_IMAGES, load_image
from imgrade.data.resize import DEFAULT_MODE, Resize

logger = logging.getLogger(__name__)

DECODER_VERSION = 2
"""Bump when decode_image's output changes for the same file: old cache entries stop matching."""

CACHE_ENV = "IMGRADE_CACHE_DIR"
"""Environment variable naming the cache folder (default: $XDG_CACHE_HOME/imgrade or ~/.cache/imgrade)."""

CHUNK = 64
"""Images per work item handed to a DataLoader worker."""


@dataclass(frozen=True)
class DecodeOptions:
    """How folder and CSV images are decoded (``--workers``, ``--cache``)."""

    workers: int = 0
    """Worker processes decoding in parallel; 0 decodes in this process."""
    cache_dir: Path | None = None
    """Where decoded sets are kept; None keeps nothing."""

    @classmethod
    def from_config(cls, workers: int, cache: str) -> DecodeOptions:
        """From the data config: ``cache`` is "auto" (the default folder), "off", or a folder."""
        if workers < 0:
            raise ConfigError(
                f"--workers {workers} is negative: use 0 (decode here) or the number of processes, e.g. 4"
            )
        if cache == "off":
            return cls(workers, None)
        return cls(workers, default_cache_dir() if cache == "auto" else Path(cache).expanduser())


def default_cache_dir() -> Path:
    """$IMGRADE_CACHE_DIR, else $XDG_CACHE_HOME/imgrade, else ~/.cache/imgrade."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imgrade"


def cache_key(paths: list[Path], resize: Resize | int) -> str:
    """A hex digest of what the decoded pixels depend on: size and resize mode, decoder, every file's identity.

    Raises:
        DataError: a file is missing (naming it).
    """
    resize = Resize.of(resize)
    # squash keeps the key it had before there were modes: the caches already written stay valid
    mode = "" if resize.mode == DEFAULT_MODE else f" resize {resize.mode}"
    digest = hashlib.sha256(f"imgrade-decoded v{DECODER_VERSION} size {resize.size}{mode}\n".encode())
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise DataError(f"{path} does not exist: check the path, or remove it from the set") from None
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def decode_images(paths: list[Path], resize: Resize | int, options: DecodeOptions | None = None) -> np.ndarray:
    """(N, S, S, 3) uint8 for ``paths`` (S = ``resize.size``), from the cache when it holds them.

    Without a cache folder the pixels are decoded into memory. With one, a hit is returned
    memory-mapped (read-only) and a miss is decoded into a new cache file first.

    Raises:
        DataError: naming the first file that is missing, not an image or corrupt.
        ConfigError: the cache folder cannot be written.
    """
    options = options or DecodeOptions()
    resize = Resize.of(resize)
    shape = (len(paths), resize.size, resize.size, 3)
    if options.cache_dir is None:
        images = np.empty(shape, dtype=np.uint8)
        _decode_into(images, paths, resize, options.workers)
        return images
    folder = options.cache_dir / "decoded"
    mode = "" if resize.mode == DEFAULT_MODE else f"-{resize.mode}"
    entry = folder / f"{cache_key(paths, resize)}-{len(paths)}x{resize.size}{mode}.npy"
    cached = _open_entry(entry, shape)
    if cached is not None:
        logger.info(f"data: {len(paths):,} decoded images from the cache {entry}")
        return cached
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{entry.name}.{os.getpid()}.tmp"
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    except OSError as e:
        raise ConfigError(
            f"cannot write the decoded-image cache in {folder} ({e.strerror}): pass --cache DIR elsewhere, or --cache off"
        ) from None
    try:
        t0 = time.perf_counter()
        _decode_into(images, paths, resize, options.workers)
        images.flush()
        del images
        os.replace(tmp, entry)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    how = f"{options.workers} workers" if options.workers else "1 process"
    logger.info(
        f"data: decoded {len(paths):,} images with {how} in {time.perf_counter() - t0:.1f} s; cached in {entry}"
    )
    return np.load(entry, mmap_mode="r")


def _open_entry(entry: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cache entry memory-mapped, or None when absent or unreadable (it is then rebuilt)."""
    if not entry.is_file():
        return None
    try:
        images = np.load(entry, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return images if images.shape == shape and images.dtype == np.uint8 else None


def _decode_into(out: np.ndarray, paths: list[Path], resize: Resize, workers: int) -> None:
    quiet = len(paths) <= PROGRESS_MIN_IMAGES or not sys.stderr.isatty()
    bar = tqdm(total=len(paths), desc="decoding images", unit="img", disable=quiet, file=sys.stderr)
    with bar:
        if workers == 0 or len(paths) <= CHUNK:
            for i, path in enumerate(paths):
                out[i] = load_image(path, resize)
                bar.update(1)
            return
        for start, pixels, error in _worker_chunks(paths, resize, workers):
            if error is not None:
                raise DataError(error)
            out[start : start + len(pixels)] = pixels
            bar.update(len(pixels))


def _worker_chunks(paths: list[Path], resize: Resize, workers: int):
    """(start, pixels, error message or None) per chunk of CHUNK files, decoded by a DataLoader."""
    import torch
    from torch.utils.data import DataLoader

    chunks = _Chunks([str(p) for p in paths], resize)
    # A generator of its own: the DataLoader draws its workers' seed from it, and drawing from the
    # global one would make a run that decodes initialise its model differently from one that hits the cache.
    loader = DataLoader(
        chunks, batch_size=None, num_workers=workers, collate_fn=_as_is, prefetch_factor=4, generator=torch.Generator()
    )
    yield from loader


def _as_is(item):
    """The DataLoader's collate: a chunk is already one array (a module function, so spawn can pickle it)."""
    return item


class _Chunks:
    """A map-style dataset: item k decodes files [k * CHUNK, (k + 1) * CHUNK) in a worker.

    A DataError is returned as its message, not raised: the DataLoader would re-raise it in the
    main process wrapped in a multi-line traceback, and the user gets one line.
    """

    def __init__(self, paths: list[str], resize: Resize):
        self.paths = paths
        self.resize = resize

    def __len__(self) -> int:
        return (len(self.paths) + CHUNK - 1) // CHUNK

    def __getitem__(self, k: int):
        start = k * CHUNK
        files = self.paths[start : start + CHUNK]
        side = self.resize.size
        pixels = np.empty((len(files), side, side, 3), dtype=np.uint8)
        try:
            for i, path in enumerate(files):
                pixels[i] = load_image(path, self.resize)
        except DataError as e:
            return start, pixels[:0], str(e)
        return start, pixels, None
