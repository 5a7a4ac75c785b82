"""The bf16 runtime against fp32 on real photos: export's check for each recipe, and the speed of each runtime.

Usage:
    python benchmarks/bf16_runtime.py [--data DATA] [--epochs 30] [--seed 0] [--work bench-bf16] [--docs docs]

For the reference network and the accurate preset (SORD, an ensemble of 3), trained on ``--data``
(the real CUCUMBER-9 sample beside the repository by default; a run already in ``--work`` is
reused), it exports the run to ONNX and makes the check ``imgrade export`` makes on a CPU with bf16
units (``imgrade.runtime.bf16_check``) on the run's validation split, and the same comparison on
its test split (photos the check never saw). It makes the check on any CPU: where the CPU has no
bf16 units OpenVINO computes in fp32, which the table says, and the check is refused for that. Then
each runtime grades 1,024 of the photos in passes of 32 and 256 (the fastest of ``--repeats``
timed passes after a warm-up): ONNX Runtime fp32, and OpenVINO in the precision it chose here; and
the table says which one ``--runtime auto`` picks for the exported file on this CPU. The header
gives the CPU, its bf16-relevant flags and the load average: run it alone. ``--docs DOCS`` writes
DOCS/results/bf16_runtime.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from imgrade.cli import main as imgrade
from imgrade.core.cpu import cpu_flags, cpu_has_bf16, cpu_model
from imgrade.core.io import write_text
from imgrade.pipeline import export
from imgrade.runtime import onnx_runtime_for
from imgrade.runtime.bf16_check import check_bf16
from imgrade.runtime.onnx_engine import OnnxEngine
from imgrade.runtime.openvino_engine import OpenVinoEngine, openvino_available
from imgrade.runtime.run import RunFolder

SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/cucumber9-p1-sample/cucumber-9-python"
RECIPES = {"reference": [], "accurate": ["--preset", "accurate"]}
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
TIMED = 1024


def trained(work: Path, name: str, data: Path, epochs: int, seed: int) -> Path:
    run = work / name
    if not (run / "best.pt").is_file():
        flags = ["--data", str(data), "--epochs", str(epochs), "--seed", str(seed), "--out", str(run), "-q"]
        assert imgrade(["train", *RECIPES[name], *flags, "--overwrite"]) == 0, f"training {name} failed"
    return run


def rate(grader, images: np.ndarray, batch: int, repeats: int) -> float:
    """Images/s: the fastest of ``repeats`` passes over ``images`` in passes of ``batch``, after a warm-up."""
    grader.outputs(images[:batch], batch_size=batch)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        grader.outputs(images, batch_size=batch)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SAMPLE)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("bench-bf16"))
    parser.add_argument("--docs", type=Path, default=None)
    args = parser.parse_args()
    if not openvino_available():
        raise SystemExit("OpenVINO is not installed or cannot run here: pip install 'imgrade[openvino]' (no tcmalloc)")
    args.work.mkdir(parents=True, exist_ok=True)
    flags = cpu_flags()
    header = [
        f"CPU: {cpu_model()}, {os.cpu_count()} cores; flags: "
        + ", ".join(f for f in FLAGS if f in flags)
        + "; absent: "
        + (", ".join(f for f in FLAGS if f not in flags) or "none"),
        f"native bf16: {'yes' if cpu_has_bf16() else 'no'}; load average at the start: {os.getloadavg()[0]:.1f}",
    ]
    print("\n".join(header), flush=True)
    checks, speeds = [], []
    for name in RECIPES:
        run = trained(args.work, name, args.data, args.epochs, args.seed)
        out = args.work / f"{name}.onnx"
        export(run, out=out)
        payload = out.read_bytes()
        fp32 = OnnxEngine.from_bytes(payload, name=out.name)
        openvino = OpenVinoEngine.from_onnx(fp32, payload)
        imageset, split = RunFolder.open(run).data()
        for part in ("val", "test"):
            photos = imageset.subset(split[part])
            check = check_bf16(fp32, openvino, np.asarray(photos.images), photos.targets)
            checks.append((name, part, check))
            print(f"{name} {part}: {check.summary(f'{part} photos')}", flush=True)
        images = np.resize(np.asarray(imageset.images), (TIMED, *imageset.images.shape[1:]))
        auto, why = onnx_runtime_for({"bf16_check": checks[-2][2].to_dict()}, native_bf16=cpu_has_bf16(), openvino=True)
        for batch in (32, 256):
            row = (name, batch, rate(fp32, images, batch, args.repeats), rate(openvino, images, batch, args.repeats))
            speeds.append((*row, openvino.precision, auto))
            print(f"{name} batch {batch}: ONNX Runtime fp32 {row[2]:.0f}, OpenVINO {openvino.precision} {row[3]:.0f} images/s", flush=True)  # fmt: skip
        print(f"{name}: --runtime auto -> {auto} ({why})", flush=True)
    table = [
        "| recipe | split | photos | OpenVINO computed in | same grade | exact fp32 -> OpenVINO | QWK fp32 -> OpenVINO | check |",
        "|---|---|---:|---|---:|---|---|---|",
    ]
    for name, part, check in checks:
        verdict = "passed" if check.passed else "refused: " + "; ".join(check.problems)
        table.append(
            f"| {name} | {part} | {check.n} | {check.precision} | {check.agreement:.1%} | "
            f"{check.fp32_accuracy:.3f} -> {check.bf16_accuracy:.3f} | {check.fp32_qwk:.3f} -> {check.bf16_qwk:.3f} | "
            f"{verdict if part == 'val' else '(not a check: held-out photos)'} |"
        )
    table += [
        "",
        "| recipe | batch | ONNX Runtime fp32 images/s | OpenVINO images/s | OpenVINO computed in | ratio | `--runtime auto` picks |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for name, batch, ort, ov, precision, auto in speeds:
        table.append(f"| {name} | {batch} | {ort:.0f} | {ov:.0f} | {precision} | {ov / ort:.2f}x | {auto} |")
    print("\n" + "\n".join(table))
    if args.docs is not None:
        command = f"python benchmarks/bf16_runtime.py --epochs {args.epochs} --seed {args.seed}"
        text = (
            "<!-- written by benchmarks/bf16_runtime.py; do not edit by hand -->\n"
            "# The bf16 runtime against fp32 on the real sample\n\n"
            f"`{command}`: {args.epochs} epochs, seed {args.seed}, the run's own split of the 248 real photos.\n\n"
            + "\n\n".join(header)
            + "\n\n"
            + "\n".join(table)
            + "\n"
        )
        path = args.docs / "results" / "bf16_runtime.md"
        write_text(path, text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
