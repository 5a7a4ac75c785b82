"""Does the exported file, read by plain ONNX Runtime, give imgrade's grade and grade set?

Usage:
    python benchmarks/onnx_parity.py [--epochs 30] [--out bench-parity]

For three recipes trained on the real CUCUMBER-9 sample (../shared/data/cucumber9-p1-sample): the
reference regression as calibration leaves it, the same run with its fitted cut points kept
(tuned cut points decide its grades), CORN, and the accurate preset (SORD, an ensemble of 3). Each run is exported; examples/grade_with_onnxruntime.py, a
consumer that imports only ONNX Runtime, NumPy and Pillow, grades the 248 photos (written as
PNGs) in a fresh interpreter, and its grades and sets are compared with ``imgrade.Grader`` on the
run (PyTorch). Then ``imgrade evaluate`` grades the same photos from the run and from the file,
and the metrics are compared. Prints one row per recipe and writes docs/results/onnx_parity.md
with --write-results.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

import imgrade
from imgrade.calibration.thresholds import fit_thresholds
from imgrade.cli import main as imgrade_main
from imgrade.data.cucumber9 import read_cucumber9
from imgrade.runtime.onnx_engine import OnnxEngine
from imgrade.runtime.run import RunFolder
from imgrade.runtime.torch_engine import TorchEngine

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "cucumber9-p1-sample" / "cucumber-9-python"
CONSUMER = ROOT / "examples" / "grade_with_onnxruntime.py"
RECIPES = {
    "reference regression": [],
    "reference regression, tuned cut points": None,  # the run above, its cut points fitted and kept
    "CORN": ["--task", "corn"],
    "accurate preset (SORD x3)": ["--preset", "accurate"],
}
COMPARED = ("n", "accuracy", "within1", "qwk", "grade_mae", "mae")


def consumer_rows(model: Path, photos: list[Path]) -> list[dict]:
    done = subprocess.run(
        [sys.executable, str(CONSUMER), str(model), *map(str, photos)], capture_output=True, text=True, check=True
    )
    return list(csv.DictReader(done.stdout.splitlines()))


def with_tuned_cut_points(run: Path, copy: Path) -> Path:
    """A copy of ``run`` whose calibration keeps the cut points fitted on its validation split,
    whether or not cross-validation found them better than rounding (calibrate's own test)."""
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy)
    folder = RunFolder.open(copy)
    imageset, split = folder.data()
    validation = imageset.subset(split["val"])
    scores = TorchEngine.from_run(copy, device="cpu").outputs(validation.images).scores
    cuts = fit_thresholds(validation.targets, scores, len(folder.checkpoint.grade_names), "qwk")
    calibration = folder.checkpoint.calibration()
    thresholds = {**(calibration.thresholds or {}), "kind": "tuned", "thresholds": [float(c) for c in cuts]}
    folder.checkpoint.with_calibration(dataclasses.replace(calibration, thresholds=thresholds)).save(
        folder.checkpoint_path
    )
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench-parity")
    parser.add_argument("--retrain", action="store_true", help="train again runs already in --out")
    parser.add_argument("--write-results", action="store_true", help="write docs/results/onnx_parity.md")
    args = parser.parse_args()
    if not SAMPLE.is_dir():
        sys.exit(f"{SAMPLE} is absent: this benchmark needs the real CUCUMBER-9 sample in ../shared")
    out = Path(args.out)
    photos_dir = out / "photos"
    photos_dir.mkdir(parents=True, exist_ok=True)
    photos = []
    for i, pixels in enumerate(read_cucumber9(SAMPLE).images):
        photos.append(photos_dir / f"cucumber{i:03d}.png")
        Image.fromarray(pixels).save(photos[-1])

    rows = []
    for name, flags in RECIPES.items():
        run = out / name.split(" ")[0].lower()
        started = time.perf_counter()
        train = ["train", "--data", str(SAMPLE), "--epochs", str(args.epochs), "--seed", str(args.seed)]
        if flags is None:
            run = with_tuned_cut_points(run, out / "reference-tuned")
        elif args.retrain or not (run / "best.pt").is_file():
            assert imgrade_main([*train, *flags, "--out", str(run), "--overwrite"]) == 0
        model = run.with_suffix(".onnx")
        assert imgrade_main(["export", str(run), "--out", str(model)]) == 0
        consumer = consumer_rows(model, photos)
        expected = imgrade.Grader.load(run).grade(photos)
        same_grade = sum(row["grade"] == g.name for row, g in zip(consumer, expected))
        same_set = sum(row["grade_set"].split("|") == g.grade_set for row, g in zip(consumer, expected))
        assert imgrade_main(["evaluate", str(run), "--data", str(SAMPLE), "--out", str(out / f"{run.name}-eval")]) == 0
        assert (
            imgrade_main(["evaluate", str(model), "--data", str(SAMPLE), "--out", str(out / f"{run.name}-eval-onnx")])
            == 0
        )
        from_run = json.loads((out / f"{run.name}-eval" / "metrics.json").read_text())
        from_file = json.loads((out / f"{run.name}-eval-onnx" / "metrics.json").read_text())
        differ = [k for k in COMPARED if abs(from_run[k] - from_file[k]) > (1e-4 if k == "mae" else 0)]
        rows.append(
            {
                "recipe": name,
                "rule": OnnxEngine.from_file(model).rule,
                "same grade": f"{same_grade}/{len(photos)}",
                "same grade set": f"{same_set}/{len(photos)}",
                "evaluate RUN vs FILE": "same" if not differ else "differ: " + ", ".join(differ),
                "exact": f"{from_file['accuracy']:.3f}",
                "QWK": f"{from_file['qwk']:.3f}",
            }
        )
        print(
            " | ".join(f"{k}: {v}" for k, v in rows[-1].items()), f"({time.perf_counter() - started:.0f} s)", flush=True
        )

    header = list(rows[0])
    table = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r[h] for h in header) + " |" for r in rows),
    ]
    print("\n".join(table))
    if args.write_results:
        text = (
            "# Exported file vs imgrade on the real sample\n\n"
            f"`python benchmarks/onnx_parity.py --epochs {args.epochs} --seed {args.seed} --write-results`: each recipe "
            "trained on the 248 real sample photos, exported, and graded by examples/grade_with_onnxruntime.py "
            "(ONNX Runtime, NumPy and Pillow only) against `imgrade.Grader` on the run. exact and QWK are the "
            "file's on the same photos (training photos included: a parity check, not an accuracy figure).\n\n"
            + "\n".join(table)
            + "\n"
        )
        (ROOT / "docs" / "results" / "onnx_parity.md").write_text(text)


if __name__ == "__main__":
    main()
