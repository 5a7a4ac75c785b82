"""The verbs that use a trained run: calibrate, evaluate, predict, export, serve."""

from __future__ import annotations

import argparse

from imgrade.cli.argparser import EXIT_STATUS, add_verb
from imgrade.cli.run_flags import field_help
from imgrade.config import OBJECTIVES
from imgrade.evaluation.gallery import DEFAULT_PER_GRADE
from imgrade.serve.limits import DEFAULT_QUOTA_MB, Limits

TTA_HELP = (
    "grade each image as the average of 6 views of it: itself, its mirror, shifts of 1/16 up, down, left, right "
    "(default: as the run says, calibrate.tta, off unless set)"
)
RUN = "run folder written by train (or its best.pt)"
DEVICE = field_help("train.device")


def add_run_verbs(sub) -> None:
    """The verbs that use a trained run: calibrate, evaluate, predict, export, serve."""
    p = add_verb(
        sub,
        "calibrate",
        "refit cut points and grade sets on a run's validation split",
        "Refit a trained run's cut points and conformal grade sets on its validation split, without training; "
        "rewrites RUN/best.pt and RUN/config.yaml.",
        """
imgrade calibrate runs/p1 --alpha 0.05          # grade sets that miss the true grade at most 5% of the time
imgrade calibrate runs/p1 --objective accuracy""",
    )
    p.add_argument("run", metavar="RUN", help="run folder written by train")
    p.add_argument("--objective", choices=OBJECTIVES, help=field_help("calibrate.objective") + " (default: the run's)")
    p.add_argument("--alpha", type=float, metavar="ALPHA", help=field_help("calibrate.alpha") + " (default: the run's)")
    p.add_argument(
        "--threshold-folds",
        dest="folds",
        type=int,
        metavar="K",
        help=field_help("calibrate.folds") + " (default: the run's)",
    )
    p.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE)

    p = add_verb(
        sub,
        "evaluate",
        "metrics and pictures for a trained run or an exported file",
        "Grade the run's test split (or every image of another set) and write predictions, metrics, plots and an "
        "HTML report; prints the metrics. Given an exported .onnx file (fp32 or int8), grade it on --data as predict "
        "would (ONNX Runtime, or OpenVINO in bf16 where it passed its check): the acceptance test of the file that "
        "goes to the line, with its SHA-256 and runtime in the model card written.",
        """
imgrade evaluate runs/p1                        # writes runs/p1/eval-test/
imgrade evaluate runs/p1 --data new-photos/ --out runs/p1/eval-new
imgrade evaluate p1.onnx --data held-back/      # writes p1-eval-held-back/ beside the file""",
    )
    p.add_argument("run", metavar="RUN", help=RUN + ", or a .onnx file from export")
    p.add_argument(
        "--data",
        metavar="PATH",
        help="evaluate every image of this set instead of the run's test split (needed for a .onnx file)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default RUN/eval-test or RUN/eval-DATANAME, with -tta added under --tta; "
        "MODEL-eval-DATANAME beside a .onnx file)",
    )
    p.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE)
    p.add_argument(
        "--runtime",
        default="auto",
        choices=["auto", "onnx", "openvino"],
        help="what grades a .onnx file: auto picks as predict does here (OpenVINO in bf16 where the file's "
        "bf16 check passed on a CPU with bf16 units, else ONNX Runtime)",
    )
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help=TTA_HELP)
    p.add_argument(
        "--gallery",
        type=int,
        default=DEFAULT_PER_GRADE,
        metavar="N",
        help="report.html shows the N worst-graded photos of each grade and of each confusion cell; 0 for none "
        "(default %(default)s)",
    )

    p = add_verb(
        sub,
        "predict",
        "grade photos; rows as CSV or JSON on stdout, or CSV, JSON lines or Parquet in a file",
        "Grade photos with a trained run or an exported .onnx file: one row per photo, written as each batch of "
        "photos is graded, to stdout (messages go to stderr) or to --out FILE.\n\n"
        "Columns: image, score, grade, grade_set, p_<grade> (one per grade), error. grade is there for a model with "
        "grades, grade_set (its grades joined by |) for a calibrated one, p_<grade> (each grade's probability, e.g. "
        "p_2L) for a head with probabilities. A photo that cannot be read or decoded gets the reason in error and "
        "no score, and the job goes on.",
        """
imgrade predict runs/p1 photos/ > grades.csv
imgrade predict model.onnx photos/ --out grades.parquet
imgrade predict model.onnx a.jpg b.jpg --format json
imgrade predict model.onnx archive/ paths.parquet --engine ray --out grades.parquet""",
    )
    p.epilog += "\n\n" + EXIT_STATUS
    p.add_argument(
        "run", metavar="RUN", help="run folder written by train (or its best.pt), or a .onnx file from export"
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_DIR",
        help="photos, or folders of photos (read recursively); --engine ray also reads .txt lists of paths and "
        ".parquet tables with a path column",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="write the rows to FILE instead of stdout, in the format its suffix names: .csv, .jsonl (one JSON "
        "object a line, the same columns) or .parquet (needs pyarrow); written to a temporary name and renamed "
        "into place at the end, so a failed job leaves no half file",
    )
    p.add_argument(
        "--format",
        default=None,
        choices=["csv", "json"],
        help="what goes to stdout without --out: csv, the rows (the default), or json, one JSON list of records: "
        "for a graded photo what POST /v1/grade answers (probabilities as one object), for one that could not be "
        "graded its image and error",
    )
    _add_runtime_flags(p)
    p.add_argument(
        "--decode-threads",
        type=int,
        default=None,
        metavar="N",
        help="threads that decode the next photos while the network grades the current ones; 0 decodes in the "
        "grading thread, one batch after the other (default: half the usable cores not busy with other work, at "
        "least one; docs/deploy.md#predict)",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=TTA_HELP + "; an .onnx file must have been exported with --tta",
    )
    ray = p.add_argument_group("batch grading on Ray (docs/deploy.md)")
    ray.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: this process; ray: a pool of ONNX graders on Ray Data (an .onnx file; pip install 'imgrade[ray]')",
    )
    ray.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="--engine ray: the Ray cluster to join (default: $RAY_ADDRESS, else Ray started in this process)",
    )
    ray.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="--engine ray: graders in the pool, and the CPUs of a Ray started here (default: every CPU)",
    )

    _add_suggest(sub)

    p = add_verb(
        sub,
        "export",
        "write a trained run as one self-contained ONNX grader",
        "Write a trained run as one ONNX file that decides the grade itself: its outputs grade and grade_set come from "
        "the network, the run's cut points and grade sets in the graph, the grade names travel in its metadata; "
        "checked against PyTorch before it is written.",
        """
imgrade export runs/p1 --out model.onnx
imgrade export runs/p1 --out model.int8.onnx --int8
imgrade predict model.onnx photos/""",
    )
    p.add_argument("run", metavar="RUN", help=RUN)
    p.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="file format")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="put test-time augmentation in the graph: " + TTA_HELP,
    )
    p.add_argument(
        "--any-size",
        action="store_true",
        help="the graph takes decoded RGB photos of any size (one size per call) and crops or pads and resizes them "
        "itself, pixel for pixel as imgrade does (default: photos already resized to the run's square)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="write an int8 copy (about 3x smaller, for edge devices), calibrated on the run's training photos; "
        "written only if on the validation split it loses no more than --int8-tolerance of exact accuracy or QWK",
    )
    p.add_argument(
        "--int8-tolerance",
        type=float,
        default=0.01,
        metavar="DROP",
        help="--int8: the largest drop of exact accuracy or QWK against fp32 accepted, 0 to 1 (default: 0.01)",
    )

    p = add_verb(
        sub,
        "serve",
        "an HTTP grading service with a web page",
        "Serve a grader over HTTP: POST photos to /v1/grade, or open the web page at /; GET /v1/model and /v1/stats "
        "describe it, and GET /healthz answers while it is up.",
        """
imgrade serve runs/p1                 # http://127.0.0.1:8000/
imgrade serve model.onnx --port 9000 --token SECRET
imgrade serve runs/p1 --collect pool/ # keep every photo graded, for train --unlabeled pool/
imgrade serve runs/p1 --label to_label.csv  # label photos in the page; labels go to labels.csv""",
    )
    p.add_argument("model", metavar="MODEL", help="run folder, .pt checkpoint or .onnx file")
    p.add_argument(
        "--host", default="127.0.0.1", metavar="ADDRESS", help="address to bind; 127.0.0.1 is this machine only"
    )
    p.add_argument("--port", type=int, default=8000, metavar="PORT", help="port to listen on")
    _add_runtime_flags(
        p, auto="onnx for a .onnx file; a run on a CPU is exported to ONNX Runtime in memory (torch: eager PyTorch)"
    )
    p.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help="require 'Authorization: Bearer TOKEN' on the API (default: $IMGRADE_TOKEN; none)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="inference threads (default: chosen at start, the usable cores less those other work keeps busy)",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=TTA_HELP + "; an .onnx file must have been exported with --tta",
    )
    pool = p.add_argument_group("collecting and labelling photos (docs/deploy.md)")
    pool.add_argument(
        "--collect",
        default=None,
        metavar="DIR",
        help="keep every photo graded in DIR, with its grade in DIR/index.csv: an unlabelled pool for "
        "train --unlabeled DIR and suggest",
    )
    pool.add_argument(
        "--collect-quota-mb",
        type=float,
        default=DEFAULT_QUOTA_MB,
        metavar="MB",
        help=f"most MB the kept photos and the index take; the oldest go first (default {DEFAULT_QUOTA_MB:g})",
    )
    pool.add_argument(
        "--label",
        default=None,
        metavar="CSV",
        help="label the photos this CSV lists (a path column) in the web page, one click each",
    )
    pool.add_argument(
        "--labels",
        default=None,
        metavar="CSV",
        help="--label: where the labels go, a path,target manifest for train --data "
        "(default: labels.csv beside the --label CSV; grades.txt is written beside it)",
    )
    Limits.add_flags(p.add_argument_group("limits (what one client may ask)"))


def _add_suggest(sub) -> None:
    p = add_verb(
        sub,
        "suggest",
        "which unlabelled photos to label next, as a manifest to fill in",
        "Rank unlabelled photos by what a label would teach the grader: the photos whose grade it is least sure of "
        "(the expected grade error under its probabilities, or closeness to a cut point), spread over how the photos "
        "look so that the picks are not copies of one look. Writes the first N as a CSV manifest with the columns "
        "path, target (empty: fill it in), suggested (the grader's grade), grade_set, uncertainty and rank; "
        "once target is filled in, train --data reads it. Paths are relative to the CSV's folder where the photos "
        "lie below it, else absolute. docs/training.md#which-photos-to-label-next",
        """
imgrade suggest runs/p1 new-photos/ --n 50                         # writes to-label.csv
imgrade suggest model.onnx collected.csv --n 30 --labelled labelled.csv --out round2.csv""",
        usage="%(prog)s RUN PHOTOS --n N [--out FILE] [--labelled DATA] [options]",
    )
    p.add_argument("run", metavar="RUN", help=RUN + ", or a .onnx file from export")
    p.add_argument(
        "photos",
        metavar="PHOTOS",
        help="the unlabelled photos: a folder (read recursively), a CSV with a path column, or a .txt list of paths",
    )
    p.add_argument("--n", type=int, required=True, metavar="N", help="how many photos to suggest")
    p.add_argument(
        "--out", default="to-label.csv", metavar="FILE", help="the CSV to write (default: to-label.csv here)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--labelled",
        default=None,
        metavar="DATA",
        help="a labelled set (anything train --data reads): its photos, pixel for pixel, are left out of the pool",
    )
    p.add_argument(
        "--diversity",
        type=float,
        default=0.5,
        metavar="W",
        help="0 ranks by uncertainty alone, 1 by spread over the photos' looks alone (default: 0.5, both)",
    )
    _add_runtime_flags(p)


def _add_runtime_flags(p: argparse.ArgumentParser, auto: str = "onnx for a .onnx file, else torch") -> None:
    """--runtime and --device: what grades the photos (predict, serve); ``auto`` says what auto does."""
    p.add_argument(
        "--runtime",
        default="auto",
        choices=["auto", "torch", "onnx", "openvino"],
        help=f"what runs the network; auto: {auto}. openvino: an .onnx file in OpenVINO, in bf16 on a CPU with "
        "bf16 units (auto picks it there when the file's bf16 check passed; docs/deploy.md)",
    )
    p.add_argument("--device", default="auto", metavar="DEVICE", help="torch runtime: " + DEVICE)
