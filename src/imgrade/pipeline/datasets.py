"""``imgrade data info | download | synth``: describe, fetch or generate image sets."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from imgrade.config import DataConfig
from imgrade.core.errors import ConfigError
from imgrade.core.io import write_text
from imgrade.data.cucumber9_writer import write_cucumber9
from imgrade.data.download import download_cucumber9
from imgrade.data.loader import detect_format, load_dataset, resize_of, source_sizes
from imgrade.data.resize import DONE, MAX_SHRINK
from imgrade.data.synthetic import generate_cucumbers, write_folders
from imgrade.pipeline.runs import data_summary

logger = logging.getLogger(__name__)


def data_info(
    path: str,
    *,
    grades: list[str] | None = None,
    view: str = "above",
    image_size: int | None = None,
    resize: str = "squash",
) -> dict[str, Any]:
    """Describe a data set: format detected, images per grade, photo sizes and how they are
    resized, its own split, what was dropped.

    Logs a WARNING when the typical (median) photo is shrunk more than ``MAX_SHRINK`` times to
    ``image_size``: fine detail is lost, and a larger ``--image-size`` keeps it.

    Returns data.json's summary plus ``format``, ``resize``, ``photo_sizes`` and ``own_split``;
    :func:`format_data_info` shows it.
    """
    kind = detect_format(path)
    cfg = DataConfig(path=path, grades=grades, view=view, image_size=image_size or 32, resize=resize)
    imageset = load_dataset(cfg)
    info = data_summary(imageset)
    info["format"] = kind
    info["resize"] = resize
    sizes = source_sizes(cfg, imageset)  # (N, 2) width, height
    width, height = sizes[:, 0], sizes[:, 1]
    info["photo_sizes"] = {
        "width": [int(width.min()), int(np.median(width)), int(width.max())],
        "height": [int(height.min()), int(np.median(height)), int(height.max())],
        "not_square": int((width != height).sum()),
    }
    _warn_if_shrunk(resize_of(cfg).shrink(width, height), cfg)
    if imageset.split is not None:
        own = {name: int((imageset.split == name).sum()) for name in ("train", "val", "test")}
        info["own_split"] = {name: n for name, n in own.items() if n}
    return info


def _warn_if_shrunk(shrink: np.ndarray, cfg: DataConfig) -> None:
    """One WARNING line when the median photo is shrunk more than ``MAX_SHRINK`` times."""
    typical = float(np.median(shrink))
    if typical <= MAX_SHRINK:
        return
    size = cfg.image_size
    # the smallest multiple of 32 that shrinks the median photo at most MAX_SHRINK times
    suggested = min(1024, 32 * int(np.ceil(typical * size / MAX_SHRINK / 32)))
    logger.warning(
        f"warning: {int((shrink > MAX_SHRINK).sum())} of {len(shrink)} photos are shrunk more than {MAX_SHRINK:g}x to "
        f"{size}x{size} (median {typical:.1f}x), losing fine detail: try --image-size {suggested} "
        f"(slower to train); photos that are not square are {DONE[cfg.resize]} (--resize {cfg.resize})"
    )


def format_data_info(info: dict[str, Any]) -> str:
    """:func:`data_info`'s answer as the aligned lines ``imgrade data info`` prints.

    >>> print(format_data_info({"format": "folders", "source": "class folders x", "n": 3, "image_size": [32, 32],
    ...     "resize": "crop", "photo_sizes": {"width": [64, 160, 160], "height": [64, 80, 80], "not_square": 2},
    ...     "dropped": {}, "grades": ["A", "B"], "counts": {"A": 2, "B": 1}}))
    format:     folders (class folders x)
    images:     3
    photos:     width 64..160 (median 160), height 64..80 (median 80); 2 of 3 not square
    image size: read and resized to 32x32 RGB (--image-size); photos not square are cropped (--resize crop)
    per grade:
      A       2
      B       1
    dropped:    nothing
    """
    height, width = info["image_size"]
    lines = [f"format:     {info['format']} ({info['source']})", f"images:     {info['n']}"]
    sizes = info.get("photo_sizes")
    if sizes is not None:
        (w_min, w_median, w_max), (h_min, h_median, h_max) = sizes["width"], sizes["height"]
        if w_min == w_max and h_min == h_max:
            shape = f"all {w_min}x{h_min}"
        else:
            shape = f"width {w_min}..{w_max} (median {w_median}), height {h_min}..{h_max} (median {h_median})"
        lines.append(f"photos:     {shape}; {sizes['not_square']} of {info['n']} not square")
    resize = info.get("resize", "squash")
    how = f"; photos not square are {DONE[resize]} (--resize {resize})"
    if info["format"] == "cucumber9" and (sizes is None or sizes["width"][0] == width):
        lines.append(f"image size: {height}x{width} RGB")
    else:
        lines.append(f"image size: read and resized to {height}x{width} RGB (--image-size){how}")
    if info.get("own_split"):
        lines.append("own split:  " + ", ".join(f"{k} {v}" for k, v in info["own_split"].items()))
    if "counts" in info:
        name_width = max(len(g) for g in info["counts"])
        lines.append("per grade:")
        lines += [f"  {g:<{name_width}}  {c:>6}" for g, c in info["counts"].items()]
    else:
        t = info["target"]
        lines.append(f"target:     continuous, min {t['min']:.4g}, mean {t['mean']:.4g}, max {t['max']:.4g}")
    dropped = ", ".join(f"{k} {v}" for k, v in info["dropped"].items()) or "nothing"
    lines.append(f"dropped:    {dropped}")
    return "\n".join(lines)


def data_download(dataset: str, *, prototype: int = 1, dest: str = "data", base_url: str | None = None) -> Path:
    """Download a public data set archive into ``dest``; returns the archive path."""
    if dataset != "cucumber9":
        raise ConfigError(f"unknown data set {dataset!r}: the downloadable set is cucumber9")
    path = download_cucumber9(prototype, dest, base_url=base_url)
    logger.info(f"saved {path}; train with: imgrade train --data {path} --out runs/cucumber9-p{prototype}")
    return path


def data_synth(
    out: str | Path,
    *,
    n: int = 2000,
    fmt: str = "cucumber9",
    image_size: int = 32,
    seed: int = 0,
    label_noise: float = 0.0,
    randomize: float = 0.0,
) -> Path:
    """Generate synthetic cucumbers into ``out`` as CUCUMBER-9 batches or class folders.

    ``randomize`` (0..1) is the domain randomisation strength: 0 the plain photos, 1 the most
    varied lighting, background, framing, edges and camera effects (geometry and grades unchanged).
    """
    if n < 10:
        raise ConfigError(f"--n {n} is too small to train on: generate at least 10 images")
    if not 0 <= label_noise < 1:
        raise ConfigError(f"--label-noise {label_noise} must be in [0, 1)")
    if fmt not in ("cucumber9", "folders"):
        raise ConfigError(f"--format {fmt!r} is not cucumber9 or folders")
    if not 0 <= randomize <= 1:
        raise ConfigError(f"--randomize {randomize} must be in [0, 1] (0 plain photos, 1 the most varied)")
    synthetic = generate_cucumbers(n, image_size=image_size, seed=seed, label_noise=label_noise, randomize=randomize)
    out = Path(out)
    if fmt == "folders":
        write_folders(synthetic, out)
    else:
        s = synthetic.imageset
        write_cucumber9(
            out,
            s.images,
            s.targets.astype(np.int64),
            list(s.grade_names),
            num_batches=5,
            test_fraction=1 / 6,
            synthetic=True,
        )
        _write_attributes(out / "attributes.csv", synthetic)
    randomized = f", randomize {randomize:g}" if randomize else ""
    logger.info(f"wrote {n} synthetic cucumbers ({fmt}, {image_size}x{image_size}{randomized}) to {out}")
    return out


def _write_attributes(path: Path, synthetic) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = list(synthetic.attributes)
    writer.writerow(["id", "grade", *names])
    s = synthetic.imageset
    for i, image_id in enumerate(s.ids):
        writer.writerow(
            [image_id, s.grade_names[int(s.targets[i])], *(f"{synthetic.attributes[k][i]:.4f}" for k in names)]
        )
    write_text(path, buffer.getvalue())
