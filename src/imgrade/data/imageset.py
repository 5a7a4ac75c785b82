"""The in-memory image set every reader returns and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class ImageSet:
    """Images with their targets, as one uint8 array (the whole set fits in memory).

    Attributes:
        images: uint8 array (N, H, W, 3), RGB.
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

    images: np.ndarray
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

    def subset(self, index: np.ndarray) -> "ImageSet":
        """The images at ``index``, keeping grade names and source."""
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(
            images=self.images[index],
            targets=self.targets[index],
            grade_names=self.grade_names,
            ids=[self.ids[i] for i in index],
            source=self.source,
            split=None if self.split is None else self.split[index],
            dropped=dict(self.dropped),
            groups=None if self.groups is None else self.groups[index],
        )
