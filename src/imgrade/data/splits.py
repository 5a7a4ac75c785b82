"""Stratified, seeded train/val/test splits, saved in the run so evaluation reuses them."""

from __future__ import annotations

import numpy as np

from imgrade.core.errors import DataError
from imgrade.data.imageset import SPLIT_NAMES, ImageSet


def stratify_labels(imageset: ImageSet, bins: int = 5) -> np.ndarray:
    """Integer strata: the grade for ordinal sets, quantile bins of the target for continuous ones."""
    if imageset.is_ordinal:
        return imageset.targets.astype(np.int64)
    edges = np.quantile(imageset.targets, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, imageset.targets, side="right")


def stratified_split(
    strata: np.ndarray, fractions: tuple[float, ...], seed: int, groups: np.ndarray | None = None
) -> list[np.ndarray]:
    """Split indexes into len(fractions) parts, stratified by ``strata`` and seeded.

    Items sharing a group id go to the same part (stratified by the group's first stratum).

    >>> parts = stratified_split(np.array([0] * 10 + [1] * 5), (0.6, 0.2, 0.2), seed=0)
    >>> [len(p) for p in parts]
    [9, 3, 3]
    >>> parts = stratified_split(np.repeat(np.arange(9), 7), (0.6, 0.2, 0.2), seed=0)
    >>> [len(p) for p in parts]  # 5,1,1 per stratum would give 45, 9, 9
    [38, 13, 12]
    """
    if groups is None:
        groups = np.arange(len(strata))
    unique_groups, first = np.unique(groups, return_index=True)
    group_strata = strata[first]
    rng = np.random.default_rng(seed)
    fractions_arr = np.asarray(fractions, dtype=float)
    parts: list[list[int]] = [[] for _ in fractions]
    assigned = np.zeros(len(fractions))
    seen = 0
    for stratum in np.unique(group_strata):
        members = unique_groups[group_strata == stratum]
        members = members[rng.permutation(len(members))]
        # floor per stratum, then give its leftover items to the parts furthest below their
        # share of everything seen so far, so the totals match the fractions too
        seen += len(members)
        counts = np.floor(len(members) * fractions_arr).astype(int)
        deficit = seen * fractions_arr - (assigned + counts)
        for k in np.argsort(-deficit, kind="stable")[: len(members) - counts.sum()]:
            counts[k] += 1
        assigned += counts
        start = 0
        for k, count in enumerate(counts):
            parts[k].extend(members[start : start + count].tolist())
            start += count
    # map groups back to item indexes, sorted for readability of split.json
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    result = []
    for chosen in parts:
        chosen = np.asarray(sorted(chosen), dtype=groups.dtype)
        lo = np.searchsorted(sorted_groups, chosen, side="left")
        hi = np.searchsorted(sorted_groups, chosen, side="right")
        idx = np.concatenate([order[a:b] for a, b in zip(lo, hi)]) if len(chosen) else np.array([], dtype=np.int64)
        result.append(np.sort(idx).astype(np.int64))
    return result


def make_split(imageset: ImageSet, spec: str | tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """Train/val/test indexes for ``imageset`` by ``spec`` (see DataConfig.split).

    ``auto`` uses the set's own train/val/test assignment when it has one for every image, else
    0.6,0.2,0.2. ``published`` keeps the set's own test images and splits the rest into train and
    val 3:1 (the 0.6:0.2 proportion), stratified.
    """
    own = imageset.split
    if spec == "auto":
        if own is not None and (own == "train").any() and (own != "").all():
            spec = "own"
        else:
            spec = (0.6, 0.2, 0.2)
    strata = stratify_labels(imageset)
    if spec == "own":
        split = {name: np.flatnonzero(own == name) for name in SPLIT_NAMES}
    elif spec == "published":
        if own is None or not (own == "test").any():
            raise DataError(
                f"--split published needs a set with its own test images, but {imageset.source} has none: "
                "use --split 0.6,0.2,0.2"
            )
        test = np.flatnonzero(own == "test")
        rest = np.flatnonzero(own != "test")
        sub_groups = None if imageset.groups is None else imageset.groups[rest]
        train, val = stratified_split(strata[rest], (0.75, 0.25), seed, sub_groups)
        split = {"train": rest[train], "val": rest[val], "test": test}
    else:
        train, val, test = stratified_split(strata, tuple(spec), seed, imageset.groups)
        split = {"train": train, "val": val, "test": test}
    if len(split["train"]) == 0 or len(split["val"]) == 0:
        raise DataError(
            f"the split of {imageset.source} leaves {len(split['train'])} training and {len(split['val'])} "
            f"validation images out of {len(imageset)}: add images or change --split"
        )
    return split


def hold_out_calibration(
    split: dict[str, np.ndarray], imageset: ImageSet, fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Move ``fraction`` of the validation images (stratified, seeded) into a "cal" split.

    >>> from imgrade.data.imageset import ImageSet
    >>> s = ImageSet(np.zeros((8, 2, 2, 3), np.uint8), np.array([0, 1] * 4, np.float32), ["a", "b"], list("abcdefgh"))
    >>> parts = hold_out_calibration({"train": np.arange(4), "val": np.arange(4, 8), "test": np.array([], int)}, s, 0.5, 0)
    >>> len(parts["val"]), len(parts["cal"]), sorted(parts["val"].tolist() + parts["cal"].tolist())
    (2, 2, [4, 5, 6, 7])
    """
    if fraction <= 0:
        return split
    val = split["val"]
    groups = None if imageset.groups is None else imageset.groups[val]
    keep, cal = stratified_split(stratify_labels(imageset)[val], (1 - fraction, fraction), seed, groups)
    if len(keep) == 0 or len(cal) == 0:
        raise DataError(
            f"--calibration-holdout {fraction} leaves {len(keep)} validation and {len(cal)} calibration images "
            f"out of {len(val)}: use a fraction nearer 0.5 or a larger validation split"
        )
    return {**split, "val": val[keep], "cal": val[cal]}
