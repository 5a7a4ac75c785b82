"""One function per verb: turn the parsed flags into a call of the same-named pipeline function."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from imgrade.core.errors import ConfigError

log = logging.getLogger(__name__)


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The run flags given on the command line, by config key (``{"train.epochs": 30}``)."""
    return {k: v for k, v in vars(args).items() if "." in k and v is not None}


def cmd_train(args) -> int:
    from imgrade import pipeline
    from imgrade.config import load_config

    overrides = run_overrides(args)
    if args.resume:
        check_resume_flags(Path(args.out), overrides, config=args.config, preset=args.preset)
        cfg = None  # the pipeline continues with the run's saved config
    else:
        cfg = load_config(args.config, preset=args.preset).with_overrides(overrides)
    pipeline.train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    log.info(f"next: imgrade evaluate {args.out}")
    return 0


def check_resume_flags(
    out: Path, overrides: dict[str, Any], *, config: str | None = None, preset: str | None = None
) -> None:
    """Accept flags (and ``--config``/``--preset``) that agree with the run's saved config; name
    each that differs, with both values.

    Raises:
        ConfigError: a flag, or the config that --config/--preset give, differs from the run's.
    """
    from imgrade.cli.run_flags import flag_of, format_value, run_flags
    from imgrade.config import differences, load_config

    saved_file = out / "config.yaml"
    if not saved_file.is_file():
        return  # the pipeline says there is no run to resume
    saved = load_config(saved_file)
    if config or preset:
        given, keys = load_config(config, preset=preset).with_overrides(overrides), None
    else:
        given, keys = saved.with_overrides(overrides), list(overrides)
    source = " ".join(f for f in (f"--config {config}" if config else "", f"--preset {preset}" if preset else "") if f)
    problems = []
    for key, mine, theirs in differences(given, saved, keys):
        if key not in overrides:
            problems.append(f"{source} sets {key} {format_value(mine)}, the run's is {format_value(theirs)}")
        elif {f.key: f for f in run_flags()}[key].const is not None:
            problems.append(f"{flag_of(key)} differs from the run's {key.split('.')[1]} {format_value(theirs)}")
        else:
            problems.append(f"{flag_of(key)} {format_value(mine)} differs from the run's {format_value(theirs)}")
    if problems:
        them = "it" if len(problems) == 1 else "them"
        raise ConfigError(f"{'; '.join(problems)}: drop {them} to continue, or train a new run in another --out")


def cmd_calibrate(args) -> int:
    from imgrade import pipeline

    pipeline.calibrate(args.run, objective=args.objective, alpha=args.alpha, folds=args.folds, device=args.device)
    return 0


def cmd_compare(args) -> int:
    from imgrade import pipeline
    from imgrade.config import load_config

    cfg = load_config(args.config).with_overrides(run_overrides(args))
    result = pipeline.compare(
        cfg, args.out, tasks=args.tasks, recipes=args.recipes, seeds=args.seeds, folds=args.folds, metric=args.metric
    )
    print(result["markdown"])
    return 0


def cmd_fewshot(args) -> int:
    from imgrade import pipeline
    from imgrade.pipeline.fewshot_trainer import format_stages, recipe_config

    cfg = recipe_config(args.config, run_overrides(args))
    result = pipeline.fewshot(
        cfg, args.out, synthetic_n=args.synthetic_n, pretrain_epochs=args.pretrain_epochs, randomize=args.randomize
    )
    print(
        f"\nfewshot stages (real rows: the {result['test_images']} photos of the real test split):\n{format_stages(result['stages'])}"
    )
    return 0


def cmd_evaluate(args) -> int:
    from imgrade import pipeline
    from imgrade.pipeline.evaluator import format_evaluation

    print(
        format_evaluation(
            pipeline.evaluate(
                args.run,
                data=args.data,
                out=args.out,
                device=args.device,
                tta=args.tta,
                gallery=args.gallery,
                runtime=args.runtime,
            )
        )
    )
    return 0


def cmd_predict(args) -> int:
    """0 when every photo was graded, 1 when some could not be (their rows say why)."""
    from imgrade.pipeline.predictor import predict

    if args.engine == "ray":
        return predict_on_ray(args)
    if args.address or args.workers:
        raise ConfigError("--address and --workers are for --engine ray: add --engine ray, or drop them")
    result = predict(
        args.run,
        args.inputs,
        out=args.out,
        fmt=args.format,
        device=args.device,
        runtime=args.runtime,
        tta=args.tta,
        keep_grades=False,  # the rows are written as they come: memory stays flat for any folder
        decode_threads=args.decode_threads,
    )
    return photos_status(result.failed, result.photos, result.out, field="error" if args.format == "json" else None)


def predict_on_ray(args) -> int:
    """``predict --engine ray``: exit status as for ``predict``."""
    from imgrade.batch import grade_batch, import_ray
    from imgrade.pipeline.rows import FORMAT_OR_OUT

    if args.out is not None and args.format is not None:
        raise ConfigError(FORMAT_OR_OUT)
    if args.format not in (None, "csv") or args.runtime == "torch" or args.device != "auto":
        raise ConfigError(
            "--engine ray grades an .onnx file into CSV, JSON lines or Parquet: drop --format json, --runtime torch, --device"
        )
    if args.decode_threads is not None:
        raise ConfigError("--decode-threads is for --engine local: each Ray actor decodes its photos on its own CPU")
    import_ray()  # Ray Data sets up its loggers when imported: quiet its progress lines after that, unless -v
    if not args.verbosity or args.verbosity < 1:
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)
    result = grade_batch(
        args.run,
        args.inputs,
        out=args.out,
        address=args.address,
        num_cpus=args.workers,
        num_actors=args.workers,
        tta=args.tta,
        runtime=args.runtime,
    )
    where = f" into {result.out}" if result.out else ""
    log.info(
        f"graded {result.graded} of {result.photos} photos{where} with {result.actors} Ray actors in {result.seconds:.1f} s"
    )
    return photos_status(result.failed, result.photos, result.out)


def photos_status(failed: int, photos: int, out: str | None, field: str | None = None) -> int:
    """The exit status of a job that grades photos: 0 when every one was graded; else 1, and one
    line on stderr that says how many failed and where to read why (``field``: a JSON field, not a column)."""
    if not failed:
        return 0
    column = f"the {field} field of their records" if field else "the error column"
    where = f"{column} of {out}" if out else f"{column} on stdout"
    print(f"imgrade: {failed} of {photos} photos could not be graded: see {where}", file=sys.stderr)
    return 1


def cmd_suggest(args) -> int:
    from imgrade.pipeline.suggester import suggest

    result = suggest(
        args.run,
        args.photos,
        n=args.n,
        out=args.out,
        labelled=args.labelled,
        diversity=args.diversity,
        overwrite=args.overwrite,
        device=args.device,
        runtime=args.runtime,
    )
    log.info(result.summary())
    log.info(f"next: fill in the target column of {result.out}, then train with --data {result.out}")
    return 0


def cmd_export(args) -> int:
    from imgrade import pipeline
    from imgrade.pipeline.exporter import format_export

    summary = pipeline.export(
        args.run,
        out=args.out,
        fmt=args.format,
        tta=args.tta,
        any_size=args.any_size,
        int8=args.int8,
        int8_tolerance=args.int8_tolerance,
    )
    print(format_export(summary))
    return 0


def cmd_serve(args) -> int:
    from imgrade.serve import Limits, serve

    serve(
        args.model,
        host=args.host,
        port=args.port,
        runtime=args.runtime,
        device=args.device,
        token=args.token if args.token is not None else os.environ.get("IMGRADE_TOKEN") or None,
        limits=Limits.from_flags(args),
        threads=args.threads,
        tta=args.tta,
        collect=args.collect,
        collect_quota_mb=args.collect_quota_mb,
        label=args.label,
        labels=args.labels,
    )
    return 0


def cmd_data_info(args) -> int:
    from imgrade import pipeline
    from imgrade.config import DataConfig
    from imgrade.pipeline.datasets import format_data_info

    grades = DataConfig(grades=args.grades).grades
    info = pipeline.data_info(args.path, grades=grades, view=args.view, image_size=args.image_size, resize=args.resize)
    print(format_data_info(info))
    return 0


def cmd_data_download(args) -> int:
    from imgrade import pipeline

    pipeline.data_download(args.dataset, prototype=args.prototype, dest=args.dest, base_url=args.base_url)
    return 0


def cmd_data_synth(args) -> int:
    from imgrade import pipeline

    pipeline.data_synth(
        args.out,
        n=args.n,
        fmt=args.format,
        image_size=args.image_size,
        seed=args.seed,
        label_noise=args.label_noise,
        randomize=args.randomize,
    )
    return 0


def cmd_model_summary(args) -> int:
    from imgrade import pipeline

    print(
        pipeline.model_summary(
            depth=args.depth,
            image_size=args.image_size,
            task=args.task,
            head=args.head,
            num_grades=args.num_grades,
            backbone=args.backbone,
        )
    )
    return 0


def cmd_demo(args) -> int:
    from imgrade import pipeline

    pipeline.demo(out=args.out, n=args.n, epochs=args.epochs, seed=args.seed, overwrite=args.overwrite)
    return 0
