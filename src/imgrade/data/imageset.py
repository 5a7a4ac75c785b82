"""The image set every reader returns and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


class ImageRows:
    """Some rows of a memory-mapped image array, read only when sliced: a subset that copies nothing.

    ``ImageSet.subset`` of a memory-mapped set (a decoded-image cache file) holds its images as
    this, so the validation or test split of a set larger than memory costs only its index.
    Indexing or slicing it reads those rows, in file order, into an ordinary array; so does
    ``np.asarray``, for all of them.

    >>> base = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    >>> rows = ImageRows(base, np.array([3, 1]))
    >>> rows.shape, np.array_equal(rows[1:], base[[1]]), np.array_equal(np.asarray(rows), base[[3, 1]])
    ((2, 2, 2, 3), True, True)
    """

    def __init__(self, base: np.ndarray, index: np.ndarray):
        self.base = base
        self.index = np.asarray(index, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def ndim(self) -> int:
        return self.base.ndim

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key) -> np.ndarray:
        rows = self.index[key]
        if rows.ndim == 0:
            return np.array(self.base[rows])
        order = np.argsort(rows, kind="stable")  # ascending rows: each page of the file is read once, in order
        images = np.empty((len(rows), *self.base.shape[1:]), dtype=self.base.dtype)
        images[order] = self.base[rows[order]]
        return images

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        images = self[:]
        return images if dtype is None else images.astype(dtype)


@dataclass
class ImageSet:
    """Images with their targets, as one uint8 array, in memory or memory-mapped from a file.

    Attributes:
        images: uint8 array (N, H, W, 3), RGB. Folder and CSV sets decoded into the cache are a
            read-only ``np.memmap`` of the cache file, and their subsets ``ImageRows`` of it:
            read them a slice at a time (``images[i : i + batch]``), as training, evaluation and
            ``TorchEngine.outputs`` do, and a set larger than memory never has to fit in it.
        targets: float32 array (N,): the grade index into ``grade_names`` for ordinal sets,
            or the continuous value when ``grade_names`` is None.
        grade_names: grade names in rank order (index 0 = best/first grade), or None for a
            continuous target.
        ids: one identifier per image (a file path, or ``data_batch_1:17`` for batch files).
        source: a human description of where the images came from and the format detected.
        split: optional str array (N,) of "train", "val", "test" when the set brings its own
            split (CUCUMBER-9 test_batch, train/val/test folders, a CSV split column);
            "" where an image has none. None when the set has no split of its own.
        dropped: what a reader left out and how many, e.g. ``{"OTHER": 12}``.
        groups: optional int array (N,): images with the same group id show the same item
            (CUCUMBER-9 prototype 2's three views) and always land in the same split.
    """

    images: np.ndarray | ImageRows
    targets: np.ndarray
    grade_names: list[str] | None
    ids: list[str]
    source: str = ""
    split: np.ndarray | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        assert self.images.dtype == np.uint8 and self.images.ndim == 4 and self.images.shape[3] == 3, (
            f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}"
        )
        assert len(self.targets) == len(self.images) == len(self.ids)
        assert self.split is None or len(self.split) == len(self.images)
        assert self.groups is None or len(self.groups) == len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def is_ordinal(self) -> bool:
        return self.grade_names is not None

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def counts(self) -> dict[str, int]:
        """Images per grade, in grade order (ordinal sets only)."""
        assert self.grade_names is not None
        idx = self.targets.astype(np.int64)
        return {name: int((idx == i).sum()) for i, name in enumerate(self.grade_names)}

    def subset(self, index: np.ndarray) -> ImageSet:
        """The images at ``index``, keeping grade names and source.

        In memory the images are copied; memory-mapped ones are not read: the subset's images are
        ``ImageRows`` of the same file.
        """
        index = np.asarray(index, dtype=np.int64)
        if isinstance(self.images, ImageRows):
            images = ImageRows(self.images.base, self.images.index[index])
        elif isinstance(self.images, np.memmap):
            images = ImageRows(self.images, index)
        else:
            images = self.images[index]
        return ImageSet(
            images=images,
            targets=self.targets[index],
            grade_names=self.grade_names,
            ids=[self.ids[i] for i in index],
            source=self.source,
            split=None if self.split is None else self.split[index],
            dropped=dict(self.dropped),
            groups=None if self.groups is None else self.groups[index],
        )
