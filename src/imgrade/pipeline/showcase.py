"""``imgrade demo``: the whole pipeline on built-in synthetic cucumbers (generate, train, evaluate)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from imgrade.config import RunConfig
from imgrade.core.errors import ConfigError
from imgrade.pipeline.datasets import data_info, data_synth, format_data_info
from imgrade.pipeline.evaluator import evaluate, format_evaluation
from imgrade.pipeline.trainer import train

logger = logging.getLogger(__name__)


def demo(
    *, out: str | Path = "demo-run", n: int = 2500, epochs: int = 30, seed: int = 0, overwrite: bool = False
) -> dict[str, Any]:
    """The whole pipeline on built-in synthetic cucumbers: generate, train, evaluate."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} already exists and is not empty: pass --overwrite or choose another --out")
        shutil.rmtree(out)
    t0 = time.perf_counter()
    data_dir = data_synth(out / "data", n=n, seed=seed)
    logger.info(format_data_info(data_info(str(data_dir))))
    cfg = RunConfig.from_dict({"data": {"path": str(data_dir)}, "train": {"epochs": epochs, "seed": seed}})
    train(cfg, out / "run")
    metrics = evaluate(out / "run")
    logger.info(format_evaluation(metrics))
    files = metrics["files"]
    logger.info(
        f"\ndemo finished in {time.perf_counter() - t0:.0f}s. Look at:\n"
        f"  {files['report']}\n      everything below in one page, with the photos it grades worst: open it in a browser\n"
        f"  {files['scatter']}\n      predicted score vs true grade: points should hug the diagonal\n"
        f"  {files['violin']}\n      error per grade: violins centred on 0 and inside the dashed +-0.5 band are graded right\n"
        f"  {files['confusion']}\n      which grades are mistaken for which (rows: true grade)\n"
        f"  {files['loss']}\n      training vs validation loss: both should fall; a widening gap is overfitting\n"
        f"Next: imgrade train --data YOUR_DATA --out runs/mine   (see README.md)"
    )
    return metrics
