"""The command line's grammar: every verb with its description, options and examples."""

from __future__ import annotations

import argparse

from imgrade.cli.argparser import EXIT_STATUS, Parser, add_output_flags, add_verb
from imgrade.cli.run_flags import add_run_flags, field_help, flag_of
from imgrade.cli.run_verbs import add_run_verbs
from imgrade.config import FINETUNE_DEFAULTS, HEADS, PRESETS, RESIZE_MODES, VIEWS
from imgrade.core.registry import describe_backbones, task_names
from imgrade.core.version import __version__

EXAMPLES = f"""\
examples:
  imgrade demo                                             # the whole pipeline on synthetic cucumbers (~5 min on 2 cores)
  imgrade data info path/to/cucumber-9-python              # format, images per grade, image size
  imgrade train --data path/to/cucumber-9-python --epochs 30 --out runs/p1
  imgrade evaluate runs/p1                                 # metrics and pictures for the run's test split
  imgrade compare --data DATA --folds 5 --epochs 60 --out cmp   # regression vs classification vs ordinal
  imgrade fewshot --data path/to/cucumber-9-python --out runs/few   # pretrain on synthetic, fine-tune on real
  imgrade predict runs/p1 photos/ > grades.csv
  imgrade suggest runs/p1 unlabelled/ --n 50               # which photos to label next: to-label.csv
  imgrade export runs/p1 --out p1.onnx                     # one file: network, grades, cut points, grade sets
  imgrade serve p1.onnx                                    # HTTP API and web page on http://127.0.0.1:8000/

`imgrade VERB --help` shows a verb's options; -q shows warnings and errors only, -v more detail.

{EXIT_STATUS}
"""


def _add_train(sub) -> None:
    p = add_verb(
        sub,
        "train",
        "train a grader on an image set",
        "Train a grader on an image set; writes a run folder: checkpoints, history, config, split and calibration.",
        """
imgrade train --data path/to/cucumber-9-python --epochs 30 --out runs/p1
imgrade train --data photos/ --preset accurate --out runs/acc      # soft ordinal labels, an ensemble of 3
imgrade train --data photos/ --config run.yaml --lr 0.01 --out runs/p2
imgrade train --resume --out runs/p1                               # continue an interrupted run""",
        usage="%(prog)s --data PATH --out DIR [options]",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="run folder to write (checkpoints, history, config)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out with its saved config (flags must agree with it)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument(
        "--config", metavar="YAML", help="YAML file with data/model/train/calibrate sections; flags override it"
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="a named recipe under --config and the flags: reference (the defaults) or accurate "
        "(soft ordinal labels and an ensemble of 3: the best on real photos, 3x the training and grading time)",
    )
    add_run_flags(p)


def _add_compare(sub) -> None:
    p = add_verb(
        sub,
        "compare",
        "every formulation on the same split and budget, side by side",
        "Train several formulations (tasks, or tasks with changes) on the same split and budget, over seeds or folds; "
        "writes the runs, tables, box plots and a report, and prints which to use.",
        """
imgrade compare --data DATA --tasks regression,classification,coral,corn --seeds 3 --epochs 30 --out cmp
imgrade compare --data DATA --folds 5 --recipes regression,corn+class-weight=balanced,corn+head=reference --out cmp""",
        usage="%(prog)s --data PATH --out DIR [--tasks T,T | --recipes R,R] [options]",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the runs, tables, plots and report")
    p.add_argument(
        "--tasks",
        metavar="TASKS",
        help=f"comma-separated tasks, any of {', '.join(task_names())} "
        "(default: regression,classification,coral,corn); each is a recipe without changes",
    )
    p.add_argument(
        "--recipes",
        metavar="RECIPES",
        help="comma-separated recipes TASK[+key=value][+flag]..., e.g. regression,corn+class-weight=balanced,coral+epochs=60+tta; "
        "a key is a config field (model, train or calibrate), tta scores with test-time augmentation",
    )
    p.add_argument("--seeds", type=int, default=3, metavar="N", help="training seeds per recipe")
    p.add_argument(
        "--metric",
        choices=("qwk", "accuracy", "mae", "both"),
        default="qwk",
        help="what the recommendation optimises: qwk, accuracy, mae (grade MAE), or both qwk and accuracy",
    )
    p.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="K",
        help="cross-validation folds instead of one split (e.g. 5 for small sets; 0: one split)",
    )
    p.add_argument(
        "--config", metavar="YAML", help="YAML file with data/model/train/calibrate sections; flags override it"
    )
    add_run_flags(p, skip=("model.task", "train.seed", "train.init"))


def _add_fewshot(sub) -> None:
    finetune = " ".join(f"{flag_of(k)} {v}" for k, v in FINETUNE_DEFAULTS.items())
    p = add_verb(
        sub,
        "fewshot",
        "few real photos: pretrain on synthetic cucumbers, fine-tune on yours, measure both",
        "Pretrain on synthetic cucumbers, fine-tune on your few real photos, and measure both stages on your test split.\n"
        f"The fine-tuning stage defaults to {finetune}; the flags below override them.",
        """
imgrade fewshot --data path/to/cucumber-9-python --synthetic-n 20000 --out runs/fewshot
imgrade fewshot --data photos/ --init runs/fewshot/pretrain --out runs/fewshot-b   # reuse a pretrained run""",
        usage="%(prog)s --data PATH --out DIR [options]",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="folder for the synthetic set, the pretrain and finetune runs and the summary",
    )
    p.add_argument("--synthetic-n", type=int, default=20000, metavar="N", help="synthetic cucumbers to pretrain on")
    p.add_argument(
        "--pretrain-epochs",
        type=int,
        default=15,
        metavar="N",
        help="epochs of pretraining (about 20 minutes for 20000 photos on 2 CPU cores)",
    )
    p.add_argument(
        "--randomize",
        type=float,
        default=1.0,
        metavar="STRENGTH",
        help="domain randomisation of the synthetic photos, 0..1",
    )
    p.add_argument(
        "--config",
        metavar="YAML",
        help="YAML file with data/model/train/calibrate sections for the fine-tuning stage; flags override it",
    )
    add_run_flags(p, defaults=FINETUNE_DEFAULTS)


def _add_data(sub) -> None:
    data = sub.add_parser(
        "data",
        help="inspect, download or generate image sets",
        description="Inspect, download or generate image sets.",
        epilog="examples:\n  imgrade data info path/to/cucumber-9-python\n  imgrade data synth --out synth --n 2000",
    )
    actions = data.add_subparsers(dest="data_verb", metavar="ACTION")

    p = add_verb(
        actions,
        "info",
        "format, images per grade, photo sizes, image size, what is dropped",
        "Describe an image set as train would read it: format, images per grade, the photos' sizes and how they are "
        "resized (a warning when they shrink more than 4x), its own split, what is dropped.",
        """
imgrade data info path/to/cucumber-9-python
imgrade data info photos/ --grades 2L,L,M,S
imgrade data info photos/ --image-size 64 --resize pad""",
    )
    p.add_argument("path", metavar="PATH", help=field_help("data.path"))
    p.add_argument("--grades", metavar="NAMES", help=field_help("data.grades"))
    p.add_argument("--view", default="above", choices=VIEWS, help=field_help("data.view"))
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PIXELS",
        help="folder and CSV sets: resize to this (default 32)",
    )
    p.add_argument("--resize", default="squash", choices=RESIZE_MODES, help=field_help("data.resize"))

    p = add_verb(
        actions,
        "download",
        "download a public data set (cucumber9)",
        "Download a public data set archive; train reads the .tar.gz as it is.",
        """
imgrade data download cucumber9 --prototype 1 --dest data
imgrade train --data data/cucumber-9-python.tar.gz --out runs/p1""",
    )
    p.add_argument("dataset", choices=["cucumber9"], help="the data set: cucumber9 (CUCUMBER-9, 9 grades of cucumbers)")
    p.add_argument(
        "--prototype",
        type=int,
        default=1,
        choices=[1, 2],
        help="CUCUMBER-9 prototype: 1 (one view) or 2 (views from above, below and the side)",
    )
    p.add_argument("--dest", default="data", metavar="DIR", help="folder to save the archive in")
    p.add_argument(
        "--base-url", default=None, metavar="URL", help="mirror to download from instead of the public repository"
    )

    p = add_verb(
        actions,
        "synth",
        "generate synthetic cucumbers",
        "Generate synthetic cucumber photos graded by a rule table, as CUCUMBER-9 batch files or as class folders "
        "(with attributes.csv: each photo's grade and measurements).",
        """
imgrade data synth --out synth --n 2000
imgrade data synth --out synth-folders --format folders --randomize 1 --image-size 64""",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    p.add_argument("--n", type=int, default=2000, metavar="N", help="number of photos")
    p.add_argument(
        "--format",
        default="cucumber9",
        choices=["cucumber9", "folders"],
        help="CUCUMBER-9 batch files, or one folder per grade",
    )
    p.add_argument("--image-size", type=int, default=32, metavar="PIXELS", help="width and height of each photo")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed: same seed, same photos")
    p.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="fraction of labels moved to an adjacent grade",
    )
    p.add_argument(
        "--randomize",
        type=float,
        default=0.0,
        metavar="STRENGTH",
        help="domain randomisation strength, 0..1: lighting, background, framing, edges, colour, blur, noise, JPEG",
    )


def _add_model(sub) -> None:
    model = sub.add_parser(
        "model",
        help="describe the network",
        description="Describe the network.",
        epilog="example:\n  imgrade model summary --depth 11 --task coral",
    )
    actions = model.add_subparsers(dest="model_verb", metavar="ACTION")
    p = add_verb(
        actions,
        "summary",
        "layer table with output shapes and parameter counts",
        "Print the network's layer table with output shapes and parameter counts (no data needed).",
        """
imgrade model summary                            # the reference: ResNet v2 depth 29, regression
imgrade model summary --depth 11 --task coral --num-grades 5""",
    )
    p.add_argument(
        "--backbone",
        default="reference",
        metavar="NAME",
        help=f"{field_help('model.backbone')}: {describe_backbones()}",
    )
    p.add_argument("--depth", type=int, default=29, metavar="N", help=field_help("model.depth"))
    p.add_argument("--image-size", type=int, default=32, metavar="PIXELS", help="input size in pixels")
    p.add_argument("--task", default="regression", choices=task_names(), help=field_help("model.task"))
    p.add_argument("--head", default="auto", choices=HEADS, help=field_help("model.head"))
    p.add_argument("--num-grades", type=int, default=9, metavar="K", help="number of grades")


def _add_demo(sub) -> None:
    p = add_verb(
        sub,
        "demo",
        "the whole pipeline on built-in synthetic cucumbers",
        "The whole pipeline on built-in synthetic cucumbers: generate a set, train, evaluate, and name the pictures to "
        "look at (about 5 minutes on 2 CPU cores with the defaults).",
        """
imgrade demo
imgrade demo --n 600 --epochs 5 --out demo-small   # a minute""",
    )
    p.add_argument("--out", default="demo-run", metavar="DIR", help="folder for the data, the run and its evaluation")
    p.add_argument("--n", type=int, default=2500, metavar="N", help="synthetic photos to generate")
    p.add_argument("--epochs", type=int, default=30, metavar="N", help="training epochs")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed for the photos and the training")
    p.add_argument("--overwrite", action="store_true", help="replace what is in --out")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every verb; tasks registered before the call are offered by --task."""
    parser = Parser(
        prog="imgrade", description="Grade items from photos: train, evaluate and use image graders.", epilog=EXAMPLES
    )
    parser.add_argument("--version", action="version", version=f"imgrade {__version__}", help="print the version")
    add_output_flags(parser, top=True)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    _add_train(sub)
    add_run_verbs(sub)
    _add_compare(sub)
    _add_fewshot(sub)
    _add_data(sub)
    _add_model(sub)
    _add_demo(sub)
    return parser
