"""int8 against fp32 on real photos: file size, exact accuracy, QWK and the same grade, over seeds.

Usage:
    python benchmarks/int8.py [--data DATA] [--epochs 40] [--seeds 3]
        [--preset reference] [--keep first,head --keep none ...] [--out bench-int8] [--docs docs]

For each seed it trains a run on ``--data`` (``imgrade train``, its default split), exports it in
fp32 (``imgrade export``) and quantizes that file as ``export --int8`` does (the same training
photos calibrate it), once for each ``--keep`` choice of the layers left in fp32 (``first``: the
first convolution, ``head``: the head's dense layers, ``none``: quantize every layer; by default
the export's own choice, first,head, then first, head and none). Each int8 graph is then graded
beside fp32 on the run's validation split (the guard's photos: would ``export --int8`` with the
default tolerance write it?) and on its test split (held out from training, calibration and the
guard): exact accuracy, QWK, and the share of photos both give the same grade. The summary gives,
per choice, the mean of each number over the seeds and its spread (lowest-highest). ``--docs``
writes DOCS/results/int8.md, which docs/deploy.md quotes. Speed is benchmarks/throughput.py's.
The data path defaults to the real sample beside the repository (../shared/data/...).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from imgrade.cli import main as imgrade
from imgrade.core.io import write_text
from imgrade.pipeline import export
from imgrade.pipeline.exporter import int8_photos
from imgrade.runtime.onnx_engine import OnnxEngine
from imgrade.runtime.onnx_quantize import DEFAULT_TOLERANCE, KEEP_FP32, compare, quantize
from imgrade.runtime.run import RunFolder

SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/cucumber9-p1-sample/cucumber-9-python"
COLUMNS = ("ratio", "guard", "fp32_accuracy", "int8_accuracy", "fp32_qwk", "int8_qwk", "agreement")
"""What each row shows beside its seed and choice: the test split's numbers, and the guard's verdict."""
CHOICES = (",".join(KEEP_FP32), "first", "head", "none")
"""The layer choices compared by default: the export's own, each half of it, and none."""


def measure(run: Path, fp32_file: Path, keep: tuple[str, ...]) -> dict:
    """One run's fp32 file against its int8 copy leaving ``keep`` in fp32."""
    folder = RunFolder.open(run)
    calibration, validation = int8_photos(folder)
    imageset, split = folder.data()
    test = imageset.subset(split["test"])
    fp32 = fp32_file.read_bytes()
    int8 = quantize(fp32, calibration, keep_fp32=keep)
    graders = OnnxEngine.from_bytes(fp32), OnnxEngine.from_bytes(int8)
    guard = compare(*graders, *validation, DEFAULT_TOLERANCE)
    held_out = compare(*graders, test.images, test.targets, DEFAULT_TOLERANCE)
    return {
        "fp32_mb": len(fp32) / 1e6,
        "int8_mb": len(int8) / 1e6,
        "ratio": len(fp32) / len(int8),
        "guard": "writes" if guard.passed else "refuses",
        "val": guard.summary(),
        "n": held_out.n,
        **{k: getattr(held_out, k) for k in COLUMNS[2:]},
    }


def table(rows: list[dict]) -> list[str]:
    """Markdown lines: one row per seed and choice."""
    lines = [
        "| keep in fp32 | seed | fp32 MB | int8 MB | smaller | guard (val, 0.01) | accuracy fp32 | int8 | QWK fp32 | int8 | same grade |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['keep']} | {r['seed']} | {r['fp32_mb']:.2f} | {r['int8_mb']:.2f} | {r['ratio']:.1f}x | {r['guard']} "
            f"| {r['fp32_accuracy']:.3f} | {r['int8_accuracy']:.3f} | {r['fp32_qwk']:.3f} | {r['int8_qwk']:.3f} "
            f"| {r['agreement']:.1%} |"
        )
    return lines


def summary(rows: list[dict]) -> list[str]:
    """Markdown lines: per choice, the mean (lowest-highest) over the seeds of int8 minus fp32."""

    def spread(values: list[float], fmt: str) -> str:
        return f"{statistics.mean(values):{fmt}} ({min(values):{fmt}} to {max(values):{fmt}})"

    lines = [
        "| keep in fp32 | seeds | smaller | accuracy int8 - fp32 | QWK int8 - fp32 | same grade | guard writes |",
        "|---|---|---|---|---|---|---|",
    ]
    for keep in dict.fromkeys(r["keep"] for r in rows):
        mine = [r for r in rows if r["keep"] == keep]
        lines.append(
            f"| {keep} | {len(mine)} | {spread([r['ratio'] for r in mine], '.1f')}x "
            f"| {spread([r['int8_accuracy'] - r['fp32_accuracy'] for r in mine], '+.3f')} "
            f"| {spread([r['int8_qwk'] - r['fp32_qwk'] for r in mine], '+.3f')} "
            f"| {spread([r['agreement'] for r in mine], '.1%')} "
            f"| {sum(r['guard'] == 'writes' for r in mine)} of {len(mine)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SAMPLE), help="the image set (default: the real CUCUMBER-9 sample)")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs per run (default 40)")
    parser.add_argument("--seeds", type=int, default=3, help="runs, seeds 0..N-1 (default 3)")
    parser.add_argument("--preset", default="reference", help="imgrade train --preset (default reference)")
    parser.add_argument(
        "--keep",
        action="append",
        default=None,
        metavar="LAYERS",
        help="layers left in fp32, comma-separated first,head or none; repeat to compare (default: "
        + ", ".join(CHOICES)
        + "; the first is what export does)",
    )
    parser.add_argument("--out", default="bench-int8", help="folder for the runs and files (default bench-int8)")
    parser.add_argument("--docs", default=None, help="write DOCS/results/int8.md")
    args = parser.parse_args()
    choices = [() if k == "none" else tuple(k.split(",")) for k in args.keep or CHOICES]

    rows = []
    for seed in range(args.seeds):
        run = Path(args.out) / f"seed{seed}"
        if not (run / "best.pt").exists():
            flags = ["--data", args.data, "--epochs", str(args.epochs), "--seed", str(seed), "--preset", args.preset]
            assert imgrade(["train", *flags, "--out", str(run), "--quiet"]) == 0, f"training {run} failed"
        fp32_file = run.with_suffix(".onnx")
        export(run, out=fp32_file)
        for keep in choices:
            row = {"seed": seed, "keep": ",".join(keep) or "none", **measure(run, fp32_file, keep)}
            rows.append(row)
            print(f"seed {seed}, keep {row['keep']}: validation: {row['val']}; guard {row['guard']}", flush=True)
            print("\n".join(table([row])[2:]), flush=True)

    header = (
        f"int8 against fp32 on the test split of {Path(args.data).name} ({rows[0]['n']} photos per run), "
        f"{args.seeds} seeds, {args.epochs} epochs, preset {args.preset} (benchmarks/int8.py)"
    )
    text = "\n".join([header, "", *table(rows), "", *summary(rows)]) + "\n"
    print("\n" + text)
    if args.docs:
        write_text(Path(args.docs) / "results" / "int8.md", text)


if __name__ == "__main__":
    main()
