"""Write CUCUMBER-9 batch files in the published on-disk format (Python 2 cPickle protocol 2).

Used by the synthetic generator (``imgrade data synth``) and by tests that need true-format
fixtures; the reader is :mod:`imgrade.data.cucumber9`.
"""

from __future__ import annotations

import struct
import tarfile
from pathlib import Path

import numpy as np

from imgrade.core.errors import ConfigError, DataError
from imgrade.core.io import atomic_write
from imgrade.data.cucumber9 import _BATCH_NAME, META_NAME


def _pickle_into(obj, out: list[bytes]) -> None:
    if obj is None:
        out.append(b"N")
    elif isinstance(obj, bool):
        out.append(b"\x88" if obj else b"\x89")
    elif isinstance(obj, (int, np.integer)):
        value = int(obj)
        if 0 <= value <= 0xFF:
            out.append(b"K" + struct.pack("<B", value))
        elif 0 <= value <= 0xFFFF:
            out.append(b"M" + struct.pack("<H", value))
        else:
            out.append(b"J" + struct.pack("<i", value))
    elif isinstance(obj, (str, bytes)):  # a Python 2 str either way
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        head = b"U" + struct.pack("<B", len(raw)) if len(raw) < 256 else b"T" + struct.pack("<I", len(raw))
        out.append(head + raw)
    elif isinstance(obj, tuple):
        if len(obj) > 3:
            out.append(b"(")
        for item in obj:
            _pickle_into(item, out)
        out.append({0: b")", 1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(obj), b"t"))
    elif isinstance(obj, list):
        out.append(b"](")
        for item in obj:
            _pickle_into(item, out)
        out.append(b"e")
    elif isinstance(obj, dict):
        out.append(b"}(")
        for key, value in obj.items():
            _pickle_into(key, out)
            _pickle_into(value, out)
        out.append(b"u")
    elif isinstance(obj, np.ndarray) and obj.dtype == np.uint8:
        # numpy 1.x's reduction: _reconstruct(ndarray, (0,), 'b') then __setstate__(state)
        out.append(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R")
        out.append(b"(K\x01")
        _pickle_into(tuple(obj.shape), out)
        # dtype('u1') with its state (3, '|', None, None, None, -1, -1, 0); then fortran_order=False
        out.append(b"cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R")
        out.append(b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89")
        _pickle_into(np.ascontiguousarray(obj).tobytes(), out)
        out.append(b"tb")
    else:
        raise TypeError(f"cannot write {type(obj).__name__} into a CUCUMBER-9 file")


def _py2_pickle(obj) -> bytes:
    """Protocol-2 bytes as Python 2's cPickle wrote them (byte strings, no memo)."""
    out = [b"\x80\x02"]
    _pickle_into(obj, out)
    out.append(b".")
    return b"".join(out)


def write_cucumber9(
    folder,
    images: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    *,
    num_batches: int = 5,
    test_fraction: float | None = None,
    prototype: int = 1,
    synthetic: bool = False,
) -> Path:
    """Write images in the published CUCUMBER-9 format (read back by :func:`read_cucumber9`).

    Writes data_batch_1..num_batches (nearly equal, in order), test_batch when ``test_fraction``
    is given, and batches.meta last (num_cases_per_batch = the largest data batch, num_vis =
    3*H*W as published). Each file is written atomically; batch files from an earlier write
    that this one does not produce are removed, so the folder reads back as exactly these images.

    Args:
        folder: the folder to write into (created; name it cucumber-9-python to mimic the archive).
        images: uint8 (N, H, W, 3) RGB, H == W. For prototype 2 either (N, 3, H, W, 3) with the
            views above, below, side, or (N, H, W, 3), written as all three views.
        labels: (N,) ints, indexes into ``label_names``.
        label_names: the names batches.meta lists (the published order is not the grade order).
        num_batches: number of data batches.
        test_fraction: if given (0 < f < 1), the last round(N * f) images (at least one) go to
            test_batch.
        prototype: 1 (3 colour planes per image) or 2 (9: three views).
        synthetic: mark the set as generated (``"synthetic": True`` in batches.meta, a key the
            published files do not have), so the reader names its source "synthetic cucumbers".

    Returns:
        ``folder`` as a Path.
    """
    if prototype not in (1, 2):
        raise ConfigError(f"prototype must be 1 or 2, got {prototype!r}")
    if test_fraction is not None and not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"images must be uint8, got {images.dtype}")
    if prototype == 2 and images.ndim == 4:
        images = np.repeat(images[:, None], 3, axis=1)
    views = images[:, None] if prototype == 1 else images  # (N, views, H, W, 3)
    expected_views = 1 if prototype == 1 else 3
    square_rgb = views.ndim == 5 and views.shape[2] == views.shape[3] and views.shape[4] == 3
    if not square_rgb or views.shape[1] != expected_views:
        wanted = "(N, S, S, 3)" if prototype == 1 else "(N, 3, S, S, 3) or (N, S, S, 3)"
        raise DataError(f"prototype {prototype} images must be square uint8 {wanted}, got shape {images.shape}")
    labels = np.asarray(labels)
    num_images, size = len(views), views.shape[2]
    if labels.shape != (num_images,) or (num_images and (labels.min() < 0 or labels.max() >= len(label_names))):
        raise DataError(f"labels must be {num_images} indexes into the {len(label_names)} label_names, got {labels}")
    num_test = 0 if test_fraction is None else max(1, int(round(num_images * test_fraction)))
    num_train = num_images - num_test
    if num_batches < 1 or num_train < num_batches:
        raise ConfigError(
            f"cannot write {num_train} training images into {num_batches} batches: pass 1 <= num_batches <= {num_train}"
        )

    # one colour plane per row: (N, views, 3, S, S) -> (N * views * 3, S * S)
    rows = views.transpose(0, 1, 4, 2, 3).reshape(num_images * expected_views * 3, size * size)
    planes_per_image = expected_views * 3
    parts = np.array_split(np.arange(num_train), num_batches)
    batches = [
        (f"data_batch_{k + 1}", f"training batch {k + 1} of {num_batches}", part) for k, part in enumerate(parts)
    ]
    if num_test:
        batches.append(("test_batch", "testing batch 1 of 1", np.arange(num_train, num_images)))

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if _BATCH_NAME.fullmatch(stale.name) and stale.name not in {name for name, _, _ in batches}:
            stale.unlink()
    for name, batch_label, index in batches:
        plane_index = (index[:, None] * planes_per_image + np.arange(planes_per_image)).ravel()
        batch = {
            "batch_label": batch_label,
            "labels": [int(label) for label in labels[index]],
            "data": rows[plane_index],
            "filenames": [f"{i:05d}.png" for i in index],
        }
        with atomic_write(folder / name) as f:
            f.write(_py2_pickle(batch))
    meta = {
        "label_names": [str(name) for name in label_names],
        "num_cases_per_batch": max(len(part) for part in parts),
        "num_vis": 3 * size * size,
        **({"synthetic": True} if synthetic else {}),
    }
    with atomic_write(folder / META_NAME) as f:
        f.write(_py2_pickle(meta))
    return folder


def write_tar_gz(folder, archive_path) -> Path:
    """Pack a CUCUMBER-9 folder as the published archive does: members ``<folder name>/<file>``."""
    folder, archive_path = Path(folder), Path(archive_path)
    with atomic_write(archive_path) as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name, recursive=False)
        for path in sorted(folder.iterdir()):
            if path.is_file():
                tar.add(path, arcname=f"{folder.name}/{path.name}")
    return archive_path
