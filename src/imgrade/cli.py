"""The command line: parse, call the verb's function in pipeline.py, print, exit. No torch math."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from imgrade.config import AMP_CHOICES, PRESETS
from imgrade.core.allocator import reexec_with_tcmalloc, started_as_imgrade
from imgrade.core.errors import ImgradeError
from imgrade.core.registry import describe_tasks, task_names

EXAMPLES = """\
examples:
  imgrade demo                                             # the whole pipeline on synthetic cucumbers (~5 min on 2 cores)
  imgrade data info path/to/cucumber-9-python              # format, images per grade, image size
  imgrade train --data path/to/cucumber-9-python --epochs 30 --out runs/p1
  imgrade evaluate runs/p1                                 # metrics and pictures for the run's test split
  imgrade compare --data DATA --folds 5 --epochs 60 --out cmp   # regression vs classification vs ordinal
  imgrade fewshot --data path/to/cucumber-9-python --out runs/few   # pretrain on synthetic, fine-tune on real
  imgrade predict runs/p1 photos/ > grades.csv
  imgrade export runs/p1 --out p1.onnx                     # one file: network, grades, cut points, grade sets
  imgrade serve p1.onnx                                    # HTTP API and web page on http://127.0.0.1:8000/
"""


TTA_HELP = ("grade each image as the average of 6 views of it: itself, its mirror, shifts of 1/16 up, down, left, right "
            "(default: as the run says, calibrate.tta, off unless set)")


def _add_run_flags(p, *, compare: bool = False, preset: bool = False) -> None:
    """The data/model/training/calibration flags shared by train and compare (dest = config key)."""
    p.add_argument("--config", help="YAML file with data/model/train/calibrate sections; flags override it")
    if preset:
        p.add_argument("--preset", choices=list(PRESETS), help="a named recipe under --config and the flags: reference (the defaults) or accurate "
                       "(soft ordinal labels and an ensemble of 3: the best on real photos, 3x the training and grading time)")
    g = p.add_argument_group("data")
    g.add_argument("--data", dest="data.path", help="CUCUMBER-9 folder/.tar.gz, class folders, or CSV manifest")
    g.add_argument("--grades", dest="data.grades", help="grade names in rank order, comma-separated (e.g. 2L,L,M,S)")
    g.add_argument("--view", dest="data.view", help="CUCUMBER-9 prototype 2 view: above, below, side, all")
    g.add_argument("--image-size", dest="data.image_size", type=int, help="input size in pixels (default 32)")
    g.add_argument("--split", dest="data.split", help="train,val,test fractions (default 0.6,0.2,0.2), 'published' or 'auto'")
    g.add_argument("--target-column", dest="data.target_column", help="CSV manifests: the target column (default target)")
    g.add_argument("--target", dest="data.target", help="CSV manifests: auto, ordinal or continuous")
    g.add_argument("--workers", dest="data.workers", type=int, help="folder/CSV sets: processes decoding photos in parallel (default 0: this process)")
    g.add_argument("--cache", dest="data.cache", help="folder/CSV sets: where decoded images are kept, 'auto' (default: $IMGRADE_CACHE_DIR or ~/.cache/imgrade), 'off', or a folder")
    g = p.add_argument_group("model")
    g.add_argument("--backbone", dest="model.backbone", help="reference (default: ResNet v2 of --depth) or timm:NAME, any timm model (pip install 'imgrade[timm]'), e.g. timm:resnet18")
    g.add_argument("--pretrained", dest="model.pretrained", help="timm backbones: start from this .pth/.pt/.safetensors state dict, or 'hub' to download timm's weights")
    g.add_argument("--depth", dest="model.depth", type=int, help="ResNet v2 depth 9n+2 (default 29, the reference)")
    if not compare:
        g.add_argument("--task", dest="model.task", help=f"how the grade is learned: {describe_tasks()}")
    g.add_argument("--axes", dest="model.axes", help="--task axes: CSV grade table grade,AXIS1,AXIS2,... (default: grade_axes.csv beside the data, or the built-in CUCUMBER-9 size x shape table)")
    g.add_argument("--head", dest="model.head", help="auto (default), reference (Dense(8, relu) first) or linear")
    g.add_argument("--loss", dest="model.loss", help="regression loss: mse (default) or huber")
    g.add_argument("--sord-beta", dest="model.sord_beta", type=float, help="--task sord: sharpness of the soft labels, > 0 (default 1.0; larger is closer to one-hot)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", dest="train.epochs", type=int, help="epochs (default 200, the reference)")
    g.add_argument("--batch-size", dest="train.batch_size", type=int, help="batch size (default 32)")
    g.add_argument("--lr", dest="train.lr", type=float, help="Adam learning rate (default 1e-3)")
    g.add_argument("--l2", dest="train.l2", type=float, help="L2 on conv kernels (default 1e-4)")
    g.add_argument("--no-augment", dest="train.augment", action="store_const", const=False, help="no shifts or flips")
    g.add_argument("--color-jitter", dest="train.color_jitter", type=float, help="random brightness, contrast, saturation and colour gains up to this fraction (default 0; 0.1 = +-10%%)")
    g.add_argument("--rotate", dest="train.rotate", type=float, help="random rotations up to this many degrees (default 0)")
    g.add_argument("--blur", dest="train.blur", type=float, help="random Gaussian blur up to this sigma in pixels (default 0)")
    g.add_argument("--class-weight", dest="train.class_weight", help="none (default) or balanced per-grade loss weights")
    g.add_argument("--ensemble", dest="train.ensemble", type=int, help="train this many networks on the same split and grade with their average (default 1)")
    g.add_argument("--bn-stats", dest="train.bn_stats", choices=["epoch", "ema"], help="BatchNorm statistics for evaluation: epoch average (default) or the reference's moving average")
    if not compare:
        g.add_argument("--seed", dest="train.seed", type=int, help="seed for split, init, shuffling (default 0)")
        g.add_argument("--init", dest="train.init", help="start from this run's (or .pt checkpoint's) weights: the backbone, and the head when task and grades match")
    g.add_argument("--freeze-backbone-epochs", dest="train.freeze_backbone_epochs", type=int, help="with --init: train only the head for this many first epochs (default 0)")
    g.add_argument("--ema", dest="train.ema", type=float, help="validate and keep an exponential moving average of the weights with this decay (default 0: off; 0.99-0.999 for a few hundred photos)")
    g.add_argument("--backbone-lr-scale", dest="train.backbone_lr_scale", type=float, help="backbone lr = lr x this (default 1; 0.1 fine-tunes gently)")
    g.add_argument("--device", dest="train.device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--deterministic", dest="train.deterministic", action="store_const", const=True, help="deterministic kernels")
    g.add_argument("--threads", dest="train.threads", type=int, help="CPU threads (default: torch's choice)")
    g.add_argument("--amp", dest="train.amp", choices=AMP_CHOICES, help="mixed precision: auto (default: bf16 on a GPU, fp32 on the CPU), bf16, off")
    g.add_argument("--compile", dest="train.compile", action="store_const", const=True, help="torch.compile the model (worth it on a GPU for long runs)")
    g = p.add_argument_group("calibration (thresholds and grade sets, fitted on the validation split)")
    g.add_argument("--objective", dest="calibrate.objective", help="what tuned cut points maximise: qwk (default), accuracy, mae")
    g.add_argument("--alpha", dest="calibrate.alpha", type=float, help="grade sets miss the true grade at most this often (default 0.1)")
    g.add_argument("--calibration-holdout", dest="calibrate.holdout", type=float, help="fraction of the validation split kept out of epoch selection, for the grade sets only (default 0; 0.5 makes their coverage honest on small sets)")
    g.add_argument("--threshold-folds", dest="calibrate.folds", type=int, help="cross-validation folds deciding tuned cut points vs the plain decision (default 5)")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a grader on an image set", description="Train a grader; writes a run folder.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  imgrade train --data path/to/cucumber-9-python --epochs 30 --out runs/p1")
    p.add_argument("--out", required=True, help="run folder to write (checkpoints, history, config)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    _add_run_flags(p, preset=True)


def cmd_train(args) -> int:
    from imgrade import pipeline
    from imgrade.config import load_config

    overrides = {k: v for k, v in vars(args).items() if "." in k}
    if args.resume:
        given = [k for k, v in overrides.items() if v is not None]
        if given or args.config or args.preset:
            extra = (["--config"] if args.config else []) + (["--preset"] if args.preset else [])
            raise ImgradeError("--resume continues the run with its saved config: drop " + ", ".join(given + extra))
        cfg = None
    else:
        cfg = load_config(args.config, preset=args.preset).with_overrides(overrides)
    pipeline.train(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    pipeline.log(f"next: imgrade evaluate {args.out}")  # once under torchrun too
    return 0


def cmd_calibrate(args) -> int:
    from imgrade import pipeline

    pipeline.calibrate(args.run, objective=args.objective, alpha=args.alpha, folds=args.folds, device=args.device)
    return 0


def cmd_compare(args) -> int:
    from imgrade import pipeline
    from imgrade.config import load_config

    overrides = {k: v for k, v in vars(args).items() if "." in k}
    cfg = load_config(args.config).with_overrides(overrides)
    pipeline.compare(cfg, args.out, tasks=args.tasks, recipes=args.recipes, seeds=args.seeds, folds=args.folds, metric=args.metric)
    return 0


def cmd_fewshot(args) -> int:
    from imgrade import pipeline
    from imgrade.fewshot import recipe_config

    overrides = {k: v for k, v in vars(args).items() if "." in k}
    cfg = recipe_config(args.config, overrides)
    pipeline.fewshot(cfg, args.out, synthetic_n=args.synthetic_n, pretrain_epochs=args.pretrain_epochs, randomize=args.randomize)
    return 0


def cmd_evaluate(args) -> int:
    from imgrade import pipeline

    pipeline.evaluate(args.run, data=args.data, out=args.out, device=args.device, tta=args.tta)
    return 0


def cmd_predict(args) -> int:
    from imgrade.runtime.files import predict

    predict(args.run, args.inputs, fmt=args.format, device=args.device, runtime=args.runtime, tta=args.tta)
    return 0


def cmd_export(args) -> int:
    from imgrade import pipeline

    pipeline.export(args.run, out=args.out, fmt=args.format, tta=args.tta)
    return 0


def cmd_serve(args) -> int:
    from imgrade.serve import Limits, serve

    serve(
        args.model, host=args.host, port=args.port, runtime=args.runtime, device=args.device,
        token=args.token if args.token is not None else os.environ.get("IMGRADE_TOKEN") or None,
        limits=Limits.from_flags(args), threads=args.threads, tta=args.tta,
    )
    return 0


def cmd_data_info(args) -> int:
    from imgrade import pipeline
    from imgrade.config import DataConfig

    grades = DataConfig(grades=args.grades).grades
    pipeline.data_info(args.path, grades=grades, view=args.view, image_size=args.image_size)
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

    pipeline.model_summary(depth=args.depth, image_size=args.image_size, task=args.task, head=args.head, num_grades=args.num_grades, backbone=args.backbone)
    return 0


def cmd_demo(args) -> int:
    from imgrade import pipeline

    pipeline.demo(out=args.out, n=args.n, epochs=args.epochs, seed=args.seed, overwrite=args.overwrite)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgrade", description="Grade items from photos: train, evaluate and use image graders.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")

    _add_train(sub)

    p = sub.add_parser("calibrate", help="refit cut points and grade sets on a run's validation split")
    p.add_argument("run", help="run folder written by train")
    p.add_argument("--objective", default=None, help="qwk (default), accuracy or mae")
    p.add_argument("--alpha", type=float, default=None, help="grade sets miss the true grade at most this often (default 0.1)")
    p.add_argument("--threshold-folds", dest="folds", type=int, default=None, help="cross-validation folds deciding tuned cut points vs the plain decision (default 5)")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("compare", help="every formulation on the same split and budget, side by side",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  imgrade compare --data DATA --tasks regression,classification,coral,corn --seeds 3 --epochs 30 --out cmp\n"
                              "  imgrade compare --data DATA --folds 5 --recipes regression,corn+class-weight=balanced,corn+head=reference --out cmp")
    p.add_argument("--out", required=True, help="folder for the runs, tables, plots and report")
    p.add_argument("--tasks", default=None, help=f"comma-separated tasks, any of {', '.join(task_names())} (default: regression,classification,coral,corn); each is a recipe without changes")
    p.add_argument("--recipes", default=None,
                   help="comma-separated recipes TASK[+key=value][+flag]..., e.g. regression,corn+class-weight=balanced,coral+epochs=60+tta; "
                        "a key is a config field (model, train or calibrate), tta scores with test-time augmentation")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per recipe (default 3)")
    p.add_argument("--metric", choices=("qwk", "accuracy", "mae", "both"), default="qwk",
                   help="what the recommendation optimises: qwk (default), accuracy, mae (grade MAE), or both qwk and accuracy")
    p.add_argument("--folds", type=int, default=0, help="cross-validation folds instead of one split (e.g. 5 for small sets)")
    _add_run_flags(p, compare=True)

    p = sub.add_parser("fewshot", help="few real photos: pretrain on synthetic cucumbers, fine-tune on yours, measure both",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  imgrade fewshot --data path/to/cucumber-9-python --synthetic-n 20000 --out runs/fewshot\n"
                              "  imgrade fewshot --data photos/ --init runs/fewshot/pretrain --out runs/fewshot-b   # reuse a pretrained run\n\n"
                              "The fine-tuning stage defaults to --task corn --epochs 60 --freeze-backbone-epochs 5\n"
                              "--backbone-lr-scale 0.3 --color-jitter 0.1; any flag below overrides them.")
    p.add_argument("--out", required=True, help="folder for the synthetic set, the pretrain and finetune runs and the summary")
    p.add_argument("--synthetic-n", type=int, default=20000, help="synthetic cucumbers to pretrain on (default 20000)")
    p.add_argument("--pretrain-epochs", type=int, default=15, help="epochs of pretraining (default 15; about 20 minutes for 20000 photos on 2 CPU cores)")
    p.add_argument("--randomize", type=float, default=1.0, help="domain randomisation of the synthetic photos, 0..1 (default 1)")
    _add_run_flags(p)

    p = sub.add_parser("evaluate", help="metrics and pictures for a trained run")
    p.add_argument("run", help="run folder written by train (or its best.pt)")
    p.add_argument("--data", help="evaluate every image of this set instead of the run's test split")
    p.add_argument("--out", help="output folder (default RUN/eval-test or RUN/eval-DATANAME, with -tta added under --tta)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help=TTA_HELP)

    p = sub.add_parser("predict", help="score and grade images; CSV or JSON on stdout")
    p.add_argument("run", help="run folder written by train (or its best.pt), or a .onnx file from export")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--format", default="csv", choices=["csv", "json"])
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"], help="auto (default: onnx for a .onnx file, else torch)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help=TTA_HELP + "; an .onnx file must have been exported with --tta")

    p = sub.add_parser("export", help="write a trained run as one self-contained ONNX grader",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  imgrade export runs/p1 --out model.onnx\n  imgrade predict model.onnx photos/")
    p.add_argument("run", help="run folder written by train (or its best.pt)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="put test-time augmentation in the graph: " + TTA_HELP)

    p = sub.add_parser("serve", help="an HTTP grading service with a web page",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  imgrade serve runs/p1                 # http://127.0.0.1:8000/\n"
                              "  imgrade serve model.onnx --port 9000 --token SECRET")
    p.add_argument("model", help="run folder, .pt checkpoint or .onnx file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"])
    p.add_argument("--device", default="auto", help="torch runtime: auto, cpu, cuda, cuda:N")
    p.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on the API (default: $IMGRADE_TOKEN; none)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (default: one per core)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help=TTA_HELP + "; an .onnx file must have been exported with --tta")
    from imgrade.serve.limits import Limits

    Limits.add_flags(p.add_argument_group("limits (what one client may ask)"))

    data = sub.add_parser("data", help="inspect, download or generate image sets").add_subparsers(dest="data_verb", metavar="ACTION")
    p = data.add_parser("info", help="format, images per grade, image size, what is dropped")
    p.add_argument("path")
    p.add_argument("--grades", help="grade names in rank order, comma-separated")
    p.add_argument("--view", default="above", choices=["above", "below", "side", "all"])
    p.add_argument("--image-size", type=int, default=None)
    p = data.add_parser("download", help="download a public data set (cucumber9)")
    p.add_argument("dataset", choices=["cucumber9"])
    p.add_argument("--prototype", type=int, default=1, choices=[1, 2])
    p.add_argument("--dest", default="data")
    p.add_argument("--base-url", default=None, help="mirror to download from instead of the public repository")
    p = data.add_parser("synth", help="generate synthetic cucumbers")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--format", default="cucumber9", choices=["cucumber9", "folders"])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-noise", type=float, default=0.0)
    p.add_argument(
        "--randomize",
        type=float,
        default=0.0,
        help="domain randomisation strength, 0..1: lighting, background, framing, edges, colour, blur, noise, JPEG",
    )

    model = sub.add_parser("model", help="describe the network").add_subparsers(dest="model_verb", metavar="ACTION")
    p = model.add_parser("summary", help="layer table with output shapes and parameter counts")
    p.add_argument("--backbone", default="reference", help="reference (default) or timm:NAME")
    p.add_argument("--depth", type=int, default=29)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--task", default="regression", help=", ".join(task_names()))
    p.add_argument("--head", default="auto", help="auto, reference, linear")
    p.add_argument("--num-grades", type=int, default=9)

    p = sub.add_parser("demo", help="the whole pipeline on built-in synthetic cucumbers")
    p.add_argument("--out", default="demo-run")
    p.add_argument("--n", type=int, default=2500)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    return parser


# verb (and action) -> the function that runs it; each calls the same-named pipeline function
COMMANDS: dict[tuple[str, ...], Callable] = {
    ("train",): cmd_train,
    ("calibrate",): cmd_calibrate,
    ("compare",): cmd_compare,
    ("fewshot",): cmd_fewshot,
    ("evaluate",): cmd_evaluate,
    ("predict",): cmd_predict,
    ("export",): cmd_export,
    ("serve",): cmd_serve,
    ("data", "info"): cmd_data_info,
    ("data", "download"): cmd_data_download,
    ("data", "synth"): cmd_data_synth,
    ("model", "summary"): cmd_model_summary,
    ("demo",): cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    key = tuple(v for v in (args.verb, getattr(args, "data_verb", None), getattr(args, "model_verb", None)) if v)
    command = COMMANDS.get(key)
    if command is None:
        parser.parse_args([*argv, "--help"])  # prints the sub-command's usage and exits
        return 2
    if from_command_line and started_as_imgrade():
        reexec_with_tcmalloc()  # comes back only where tcmalloc is not wanted, not installed or already in
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _exit_now(_run(command, args, key))  # under torchrun: see _exit_now
    return _run(command, args, key)


def _exit_now(code: int) -> int:
    """Leave at once, skipping the interpreter's teardown: under torchrun, gloo's threads are torn
    down by C++ static destructors at exit, which now and then abort a process whose work is done
    ("terminate called without an active exception") and make torchrun report a failure."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(command: Callable, args, key: tuple[str, ...]) -> int:
    """Run the verb; user errors become one line and exit status 2."""
    try:
        return command(args)
    except ImgradeError as e:
        if args.debug:
            raise
        print(f"imgrade: error: {' '.join(str(e).split())}", file=sys.stderr)  # always one line
        return 2
    except BrokenPipeError:
        # the reader went away (`imgrade predict ... | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("imgrade: interrupted" + ("; continue with `imgrade train --resume --out RUN`" if key == ("train",) else ""), file=sys.stderr)
        return 130
