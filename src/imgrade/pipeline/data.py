"""``imgrade data info | download | synth``: describe, fetch or generate image sets."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from imgrade.config import DataConfig
from imgrade.core.errors import ConfigError
from imgrade.core.io import write_text
from imgrade.data.cucumber9_writer import write_cucumber9
from imgrade.data.download import download_cucumber9
from imgrade.data.loader import detect_format, load_dataset
from imgrade.data.synthetic import generate_cucumbers, write_folders
from imgrade.pipeline.runs import data_summary, log


def data_info(path: str, *, grades: list[str] | None = None, view: str = "above", image_size: int | None = None) -> dict[str, Any]:
    """Describe a data set: format detected, images per grade, image size, what was dropped."""
    kind = detect_format(path)
    native = image_size or 32
    imageset = load_dataset(DataConfig(path=path, grades=grades, view=view, image_size=native))
    info = data_summary(imageset)
    info["format"] = kind
    lines = [f"format:     {kind} ({imageset.source})", f"images:     {len(imageset)}"]
    if kind == "cucumber9":
        lines.append(f"image size: {imageset.image_size[0]}x{imageset.image_size[1]} RGB")
    else:
        lines.append(f"image size: read and resized to {native}x{native} RGB (--image-size)")
    if imageset.split is not None:
        own = {name: int((imageset.split == name).sum()) for name in ("train", "val", "test")}
        lines.append("own split:  " + ", ".join(f"{k} {v}" for k, v in own.items() if v))
    if imageset.is_ordinal:
        counts = imageset.counts()
        width = max(len(g) for g in counts)
        lines.append("per grade:")
        lines += [f"  {g:<{width}}  {c:>6}" for g, c in counts.items()]
    else:
        t = info["target"]
        lines.append(f"target:     continuous, min {t['min']:.4g}, mean {t['mean']:.4g}, max {t['max']:.4g}")
    dropped = ", ".join(f"{k} {v}" for k, v in imageset.dropped.items()) or "nothing"
    lines.append(f"dropped:    {dropped}")
    print("\n".join(lines))
    return info


def data_download(dataset: str, *, prototype: int = 1, dest: str = "data", base_url: str | None = None) -> Path:
    """Download a public data set archive into ``dest``; returns the archive path."""
    if dataset != "cucumber9":
        raise ConfigError(f"unknown data set {dataset!r}: the downloadable set is cucumber9")
    path = download_cucumber9(prototype, dest, base_url=base_url)
    log(f"saved {path}; train with: imgrade train --data {path} --out runs/cucumber9-p{prototype}")
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
        write_cucumber9(out, s.images, s.targets.astype(np.int64), list(s.grade_names), num_batches=5, test_fraction=1 / 6)
        _write_attributes(out / "attributes.csv", synthetic)
    randomized = f", randomize {randomize:g}" if randomize else ""
    log(f"wrote {n} synthetic cucumbers ({fmt}, {image_size}x{image_size}{randomized}) to {out}")
    return out


def _write_attributes(path: Path, synthetic) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = list(synthetic.attributes)
    writer.writerow(["id", "grade", *names])
    s = synthetic.imageset
    for i, image_id in enumerate(s.ids):
        writer.writerow([image_id, s.grade_names[int(s.targets[i])], *(f"{synthetic.attributes[k][i]:.4f}" for k in names)])
    write_text(path, buffer.getvalue())
