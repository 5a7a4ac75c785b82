"""Few real photos: pretrain on synthetic cucumbers, fine-tune on the real ones, measure the gap.

``imgrade fewshot --data REAL --out RUN`` runs the whole recipe into one folder:

    RUN/synthetic/   generated cucumbers with REAL's grade names (CUCUMBER-9 batch files)
    RUN/pretrain/    a run trained on them alone (domain-randomised photos)
    RUN/finetune/    that run fine-tuned on REAL's train split, calibrated on its val split
    RUN/fewshot.json the metrics of every stage; RUN/summary.md the same as a table

and prints each stage's metrics on REAL's test split: zero-shot (synthetic only) next to
fine-tuned, with the pretrain run's own synthetic test split for the sim-to-real gap. A stage
whose run already finished is reused, so an interrupted recipe continues where it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from imgrade.config import FINETUNE_DEFAULTS, RunConfig, load_config, parse_split, read_config_file
from imgrade.core.checkpoint import LAST, save_json
from imgrade.core.errors import CheckpointError, ConfigError, DataError, ImgradeError
from imgrade.core.io import write_text
from imgrade.data.cucumber9_writer import write_cucumber9
from imgrade.data.imageset import ImageSet
from imgrade.data.loader import load_dataset
from imgrade.data.splits import make_split
from imgrade.data.synthetic import GRADE_NAMES, generate_cucumbers
from imgrade.evaluation.metrics import METRICS, grade_decision_metrics
from imgrade.evaluation.report import format_number
from imgrade.pipeline.evaluator import evaluate, score
from imgrade.pipeline.runs import finished_training, recorded_compile
from imgrade.pipeline.trainer import speed_settings, train
from imgrade.runtime.run import RunFolder
from imgrade.runtime.run_checkpoint import Checkpoint
from imgrade.runtime.torch_engine import TorchEngine

logger = logging.getLogger(__name__)

PRETRAIN_SPLIT = "0.8,0.1,0.1"  # synthetic images are free: most go to training


def recipe_config(config_path: str | None, overrides: dict[str, Any]) -> RunConfig:
    """The fine-tuning config: code defaults < ``FINETUNE_DEFAULTS`` < ``--config`` file < flags."""
    raw = RunConfig().with_overrides(FINETUNE_DEFAULTS).to_dict()
    if config_path is not None:
        load_config(config_path)  # validates the file (and names it) before it is merged
        for section, values in read_config_file(config_path).items():
            raw[section].update(values or {})
    return RunConfig.from_dict(raw, source=str(config_path or "fewshot defaults")).with_overrides(overrides)


def synthetic_for(imageset: ImageSet, n: int, *, image_size: int, seed: int, randomize: float):
    """``n`` generated cucumbers graded with ``imageset``'s grade names, in its grade order.

    Raises:
        DataError: the set is not graded, or names a grade the generator does not draw.
    """
    if not imageset.is_ordinal:
        raise DataError(f"{imageset.source}: fewshot needs graded photos, but this target is continuous")
    names = list(imageset.grade_names)
    unknown = [g for g in names if g not in GRADE_NAMES]
    if unknown:
        raise DataError(
            f"{imageset.source} has grades {', '.join(unknown)} that the cucumber generator does not draw "
            f"(it draws {', '.join(GRADE_NAMES)}): fewshot pretrains on synthetic cucumbers only; "
            "use `imgrade train --init` with a run pretrained on photos of your own items"
        )
    keep = np.array([GRADE_NAMES.index(g) for g in names])
    # grades are drawn evenly, so n * 9 / k images hold about n of the k kept grades; draw a
    # margin over that, and twice as many in the rare case that is still short
    total = int(np.ceil(n * len(GRADE_NAMES) / len(keep) * 1.1)) + 50
    while True:
        synthetic = generate_cucumbers(total, image_size=image_size, seed=seed, randomize=randomize)
        drawn = synthetic.imageset.targets.astype(np.int64)
        chosen = np.flatnonzero(np.isin(drawn, keep))[:n]
        if len(chosen) == n:
            break
        total *= 2
    relabel = {int(g): i for i, g in enumerate(keep)}
    labels = np.array([relabel[int(g)] for g in drawn[chosen]], dtype=np.int64)
    return synthetic.imageset.images[chosen], labels, names


def fewshot(
    cfg: RunConfig, out: str | Path, *, synthetic_n: int = 20000, pretrain_epochs: int = 15, randomize: float = 1.0
) -> dict[str, Any]:
    """Pretrain on synthetic cucumbers, fine-tune on ``cfg.data.path``'s photos; metrics of every stage."""
    return run_fewshot(cfg, out, synthetic_n=synthetic_n, pretrain_epochs=pretrain_epochs, randomize=randomize)


def run_fewshot(
    cfg: RunConfig,
    out: str | Path,
    *,
    synthetic_n: int = 20000,
    pretrain_epochs: int = 15,
    randomize: float = 1.0,
    split: dict[str, np.ndarray] | None = None,
    imageset: ImageSet | None = None,
) -> dict[str, Any]:
    """The recipe (see the module docstring); ``cfg`` is the fine-tuning run's config.

    ``cfg.train.init``, when set, names an already pretrained run to fine-tune from: no
    synthetic photos are generated. ``split`` and ``imageset`` let a benchmark give every fold's
    recipe the same images without reading them again.
    """
    out = Path(out)
    if cfg.data.path is None:
        raise ConfigError("no data given: pass --data with the real photos")
    if synthetic_n < 100:
        raise ConfigError(
            f"--synthetic-n {synthetic_n} is too few to pretrain on: use 100 or more (20000 is the recipe)"
        )
    if pretrain_epochs < 1:
        raise ConfigError(f"--pretrain-epochs {pretrain_epochs} must be at least 1")
    if not 0 <= randomize <= 1:
        raise ConfigError(f"--randomize {randomize} must be between 0 and 1")
    if (out / "fewshot.json").exists():
        raise ConfigError(f"{out} already holds a finished fewshot recipe: choose another --out")
    if cfg.data.unlabeled or cfg.train.teacher or cfg.train.distill:
        raise ConfigError(
            "fewshot does not teach (--unlabeled, --teacher, --distill): fine-tune its result instead, "
            f"imgrade train --data {cfg.data.path} --init {out / 'finetune'} --unlabeled PHOTOS ..."
        )
    real = imageset if imageset is not None else load_dataset(cfg.data)
    if split is None:
        split = make_split(real, parse_split(cfg.data.split), cfg.train.seed)
    test = real.subset(split["test"])
    if len(test) == 0:
        raise DataError(
            f"{cfg.data.path}: the test split is empty, so nothing measures the recipe: set --split (e.g. 0.6,0.2,0.2)"
        )
    stages: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    cfg = speed_settings(cfg)  # the pretraining and the fine-tuning compute alike

    if cfg.train.init:
        pretrained = Path(cfg.train.init)
    else:
        pretrained = pretrain(cfg, real, out, synthetic_n=synthetic_n, epochs=pretrain_epochs, randomize=randomize)
        if cfg.train.compile == "auto":  # decided once, by the pretraining's probe: fine-tuning does the same
            cfg = cfg.with_overrides({"train.compile": recorded_compile(pretrained)})
    synthetic_model = TorchEngine.from_run(pretrained)
    own = _own_test_metrics(synthetic_model, pretrained)
    if own is not None:
        stages["synthetic (pretrain test split)"] = own
        logger.info(f"synthetic test split: {_brief(own)}")
    logger.info(f"[3/4] zero-shot: the synthetic-only model on {len(test)} real test photos")
    stages["zero-shot on real"] = score(synthetic_model, test)[0]
    logger.info(f"zero-shot on real: {_brief(stages['zero-shot on real'])}")

    finetuned = out / "finetune"
    ft_cfg = replace(cfg, train=replace(cfg.train, init=str(pretrained.resolve())))
    logger.info(f"[4/4] fine-tuning on {len(split['train'])} real photos -> {finetuned}")
    _train_or_reuse(ft_cfg, finetuned, split=split, imageset=real)
    evaluate(finetuned)  # the report and pictures of the final model, on the same real test split
    stages["fine-tuned on real"] = score(TorchEngine.from_run(finetuned), test)[0]

    result = {
        "data": real.source,
        "test_images": len(test),
        "synthetic_n": synthetic_n,
        "pretrained": str(pretrained),
        "finetuned": str(finetuned),
        "stages": stages,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    table = format_stages(stages)
    save_json(out / "fewshot.json", result)
    write_text(out / "summary.md", table + "\n")
    logger.info(f"next: imgrade evaluate {finetuned}   |   imgrade export {finetuned} --out fewshot.onnx")
    return result


def pretrain(cfg: RunConfig, real: ImageSet, out: Path, *, synthetic_n: int, epochs: int, randomize: float) -> Path:
    """Generate synthetic cucumbers graded like ``real`` into OUT/synthetic and train OUT/pretrain on them.

    The pretraining run has ``cfg``'s network (backbone, depth, task, head, loss) and device settings, and
    the training defaults of `imgrade train` (shifts and flips, the reference schedule).
    """
    synthetic_dir, run = out / "synthetic", out / "pretrain"
    if not (synthetic_dir / "batches.meta").exists():  # written last: its presence means the batches are complete
        logger.info(f"[1/4] generating {synthetic_n} synthetic cucumbers (randomize {randomize}) -> {synthetic_dir}")
        images, labels, names = synthetic_for(
            real, synthetic_n, image_size=cfg.data.image_size, seed=cfg.train.seed, randomize=randomize
        )
        write_cucumber9(synthetic_dir, images, labels, names, num_batches=5, synthetic=True)
    pre_cfg = RunConfig.from_dict(
        {
            "data": {"path": str(synthetic_dir.resolve()), "image_size": cfg.data.image_size, "split": PRETRAIN_SPLIT},
            "model": {
                "depth": cfg.model.depth,
                "task": cfg.model.task,
                "head": cfg.model.head,
                **cfg.model.head_settings(),  # the head learns the same way on both stages
                "backbone": cfg.model.backbone,
                "pretrained": cfg.model.pretrained,
            },
            "train": {
                "epochs": epochs,
                "seed": cfg.train.seed,
                "device": cfg.train.device,
                "threads": cfg.train.threads,
                "amp": cfg.train.amp,
                "compile": cfg.train.compile,
            },
        }
    )
    logger.info(f"[2/4] pretraining on synthetic cucumbers -> {run}")
    _train_or_reuse(pre_cfg, run)
    return run


def _train_or_reuse(cfg: RunConfig, run: Path, **kwargs) -> None:
    """Train ``run``; a finished run there is kept, an interrupted one continues."""
    state = None
    if (run / LAST).exists():
        try:
            state = Checkpoint.load(run / LAST)
        except CheckpointError:
            state = None
    if state is not None and finished_training(state):
        logger.info(f"{run} already finished: reusing it")
        return
    train(None if state is not None else cfg, run, resume=state is not None, **kwargs)


def _own_test_metrics(predictor, run: Path) -> dict[str, Any] | None:
    """The metrics of ``run`` (loaded as ``predictor``) on its own test split; None (with a log line) when its data is gone."""
    try:
        imageset, split = RunFolder.open(run).data()
    except ImgradeError as e:
        logger.info(f"no synthetic test row: the pretrained run's own data cannot be read ({e})")
        return None
    return score(predictor, imageset.subset(split["test"]))[0]


def format_stages(stages: dict[str, dict[str, Any]]) -> str:
    """The stages as a markdown table, with the sim-to-real gap (zero-shot minus synthetic).

    >>> print(format_stages({"a": {"n": 2, "accuracy": 1.0, "within1": 1.0, "grade_mae": 0.0, "qwk": 1.0}}))
    | stage | n | accuracy | within-1 | grade MAE | QWK |
    |---|---|---|---|---|---|
    | a | 2 | 1.000 | 1.000 | 0.000 | 1.000 |
    """
    keys = grade_decision_metrics()
    lines = [
        "| " + " | ".join(["stage", "n", *(METRICS[k].label for k in keys)]) + " |",
        "|---" * (len(keys) + 2) + "|",
    ]
    for name, m in stages.items():
        lines.append(f"| {name} | {m['n']} | " + " | ".join(format_number(m[k]) for k in keys) + " |")
    sim, zero = stages.get("synthetic (pretrain test split)"), stages.get("zero-shot on real")
    if sim and zero:
        gap = [None if sim[k] is None or zero[k] is None else zero[k] - sim[k] for k in keys]
        lines.append(
            "| sim-to-real gap (zero-shot - synthetic) | | "
            + " | ".join(format_number(g, signed=True) for g in gap)
            + " |"
        )
    return "\n".join(lines)


def _brief(m: dict[str, Any]) -> str:
    return ", ".join(f"{METRICS[k].label} {format_number(m[k])}" for k in grade_decision_metrics())
