"""Training and inference images/s on the CPU, each as a share of what the hardware allows in its precision.

Usage:
    python benchmarks/throughput.py [--images 1024] [--repeats 5] [--seconds 2] [--threads 0]
    IMGRADE_NO_TCMALLOC=1 python benchmarks/throughput.py     # the same with glibc malloc

The header names the CPU and its flags (``peaks.describe_cpu``: those that decide fp32, bf16 and
int8 speed, present and absent) and the machine's peaks in fp32 and in bf16, measured side by side
at the start (``peaks.measure_peaks``: for each precision the faster of a large matmul and a
channels_last 3x3 convolution, best of several calls), with their ratio. On a CPU without native
bf16 torch emulates it: the bf16 peak is then low, measured on smaller problems, and marked
emulated. A precision's limit is its peak divided by the network's cost per image: one forward
for inference, three (forward, input gradients, weight gradients) for training.

Each row says the precision it computed in and its share of that precision's limit. Training
runs the library's own ``train_one_epoch`` with the defaults a user gets (only the batch size
changes; one more line with the precision ``--amp auto`` did not choose) on synthetic cucumbers,
and the header says which precision auto chose on this CPU; bf16 autocast rows are shares of the
bf16 limit. Inference goes through ``Grader.outputs`` (what ``predict`` and ``serve`` call) for
PyTorch, eager (``predict``) and served (``serve``, ``Grader.for_serving``: on a CPU the run
exported to ONNX in memory and run by ONNX Runtime), and, when onnxruntime is installed, for an
ONNX export of the same network and its int8 copy (quantized as ``export --int8`` does; no int8
peak is measured, so its share is of the fp32 limit and says what int8 adds on this CPU). When
openvino is installed, the same two files also run in OpenVINO (``load_grader(...,
runtime="openvino")``) in the precision it reports (the fp32 file in bf16 on a CPU with native
bf16, else in fp32), as a share of that precision's limit; a line says why where it is skipped.
Like the ``imgrade`` command, the benchmark first re-runs itself under tcmalloc when it is
installed; OpenVINO, which aborts beside tcmalloc, runs in a child process with glibc malloc, as
the command runs it. Each number is the median of ``--repeats`` measurements, the spread
(lowest-highest) in brackets: a wide one means something else was using the cores. Nothing is
written.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from peaks import header_lines, measure_peaks  # benchmarks/peaks.py, beside this one
from torch.utils.flop_counter import FlopCounterMode

from imgrade.config import TrainConfig
from imgrade.core.allocator import DISABLE, reexec_with_tcmalloc
from imgrade.core.checkpoint import save_checkpoint
from imgrade.core.cpu import cpu_has_bf16
from imgrade.core.errors import ImgradeError
from imgrade.core.perf import precision_name, resolve_amp
from imgrade.core.preprocess import nhwc_to_tensor
from imgrade.data.synthetic import generate_cucumbers
from imgrade.models.factory import build_model
from imgrade.runtime import Engine, load_grader
from imgrade.runtime.torch_engine import TorchEngine
from imgrade.training.loop import FitData, train_one_epoch
from imgrade.training.optim import build_optimizer


def _seconds(step, repeats: int, min_seconds: float = 0.0) -> list[float]:
    """Wall times of ``step()`` over at least ``repeats`` calls (after one warm-up call)."""
    step()
    times = []
    while len(times) < repeats or sum(times) < min_seconds:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def _rate(work: float, times: list[float]) -> tuple[float, float, float]:
    """(median, lowest, highest) of ``work`` per second over the measured ``times``."""
    rates = [work / t for t in times]
    return statistics.median(rates), min(rates), max(rates)


def gflop_per_image(model: torch.nn.Module) -> float:
    """Forward GFLOP (2 per multiply-add) for one 32 x 32 image."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    return counter.get_total_flops() / 1e9


def training_rate(
    images: np.ndarray, targets: np.ndarray, batch_size: int, repeats: int, amp: str = "auto"
) -> tuple[float, float, float]:
    """Images/s of one epoch of ``train_one_epoch`` with the default TrainConfig."""
    x, y = nhwc_to_tensor(images), torch.from_numpy(targets.astype(np.float32))
    mean = x.float().mean(0).div_(255.0)
    data = FitData(x, y, x[:0], y[:0], mean)
    cfg = TrainConfig(batch_size=batch_size, amp=amp)
    torch.manual_seed(0)
    model = build_model()
    optimizer = build_optimizer(model, cfg.lr, cfg.l2)
    generator = torch.Generator().manual_seed(0)
    return _rate(
        len(x), _seconds(lambda: train_one_epoch(model, optimizer, data, cfg, torch.device("cpu"), generator), repeats)
    )


def _fake_run(folder: Path, model: torch.nn.Module, mean: torch.Tensor) -> Path:
    """A run folder holding just what ``TorchEngine.from_run`` and ``imgrade.pipeline.export`` read."""
    config = {"model": {"depth": 29, "task": "regression", "head": "auto", "loss": "mse"}}
    save_checkpoint(
        folder / "best.pt",
        {
            "config": config,
            "grade_names": None,
            "image_size": 32,
            "mean_image": mean,
            "model_state": model.state_dict(),
            "data_source": "benchmark",
        },
    )
    return folder


BATCHES = [(1, 1), (256, None), (256, 256)]
"""Each inference row's images per call and per forward pass (None: the runtime's own, ``CPU_BATCH``)."""

Rates = dict[tuple[str, str, int, int | None], tuple[float, float, float]]
"""{(runtime, precision, images per call, images per forward pass): (median, lowest, highest) images/s}"""


def inference_rates(images: np.ndarray, seconds: float, repeats: int) -> Rates:
    """Images/s of each runtime at each of ``BATCHES``, in that order.

    Calls of 256 images run as the runtime's own forward passes (what ``predict`` and ``serve``
    do) and, for comparison, as one pass of 256, each in the precision the grader reports
    (``Engine.precision``: "fp32", "int8", or "bf16" where OpenVINO computes in bf16).
    """
    torch.manual_seed(0)
    model = build_model()
    mean = nhwc_to_tensor(images).float().mean(0).div_(255.0)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        run = _fake_run(Path(tmp), model, mean)
        onnx_path = Path(tmp) / "model.onnx"
        graders = {"torch": TorchEngine.from_run(run, device="cpu")}
        # what `imgrade serve` grades with: the run exported to ONNX in memory (eager torch should that fail)
        graders["served"] = TorchEngine.from_run(run, device="cpu").for_serving(threads=threads)
        try:
            from imgrade.pipeline import export
            from imgrade.runtime.onnx_engine import OnnxEngine
            from imgrade.runtime.onnx_quantize import CALIBRATION_IMAGES, quantize

            export(run, out=onnx_path)
            graders["onnx"] = OnnxEngine.from_file(onnx_path, threads=threads)
            # the same file quantized as `export --int8` does, calibrated on these images
            int8 = quantize(onnx_path.read_bytes(), images[:CALIBRATION_IMAGES])
            graders["onnx int8"] = OnnxEngine.from_bytes(int8, threads=threads)
            (Path(tmp) / "model_int8.onnx").write_bytes(int8)  # for OpenVINO, which reads files
        except ImportError as e:
            print(f"onnx: skipped ({e})")
        rates = grading_rates(graders, images, seconds, repeats)
        if onnx_path.exists():
            rates |= openvino_rates(Path(tmp), images, seconds, repeats, threads)
    return dict(sorted(rates.items(), key=lambda row: BATCHES.index(row[0][2:])))  # stable: runtimes in order


def grading_rates(graders: dict[str, Engine], images: np.ndarray, seconds: float, repeats: int) -> Rates:
    """Images/s of each {name: grader} at each of ``BATCHES``, in the precision the grader reports."""
    rates = {}
    for batch, forward in BATCHES:
        for name, grader in graders.items():
            chunk = images[:batch]
            rates[name, grader.precision, batch, forward] = _rate(
                batch, _seconds(lambda g=grader, c=chunk, f=forward: g.outputs(c, batch_size=f), repeats, seconds)
            )
    return rates


def openvino_rates(folder: Path, images: np.ndarray, seconds: float, repeats: int, threads: int) -> Rates:
    """The .onnx files in ``folder`` graded by OpenVINO; {} and a line saying why where it cannot.

    OpenVINO aborts in a process with tcmalloc preloaded, so the ``imgrade`` command runs it with
    glibc malloc: these rows are measured the same way, in a child process without tcmalloc.
    """
    if importlib.util.find_spec("openvino") is None:
        print("openvino: skipped (not installed: pip install openvino)")
        return {}
    np.save(folder / "images.npy", images[: max(batch for batch, _ in BATCHES)])
    env = {**os.environ, DISABLE: "1"}
    preload = ":".join(p for p in env.pop("LD_PRELOAD", "").split(":") if p and "tcmalloc" not in p)
    env |= {"LD_PRELOAD": preload} if preload else {}
    child = [sys.executable, __file__, "--openvino-child", str(folder), f"--repeats={repeats}", f"--seconds={seconds}"]
    done = subprocess.run([*child, f"--threads={threads}"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"openvino: skipped (its process failed: {(done.stderr.strip().splitlines() or ['?'])[-1]})")
        return {}
    rates = {}
    for line in done.stdout.splitlines():
        row = json.loads(line) if line.startswith("{") else {}
        if "skipped" in row:
            print(f"openvino: skipped ({row['skipped']})")
        elif row:
            rates[row["name"], row["precision"], row["batch"], row["forward"]] = tuple(row["rate"])
    return rates


def _openvino_child(folder: Path, seconds: float, repeats: int) -> None:
    """In the child process of :func:`openvino_rates`: one JSON line per row, or per file skipped."""
    images = np.load(folder / "images.npy")
    graders = {}
    for name, file in [("openvino", "model.onnx"), ("openvino int8", "model_int8.onnx")]:
        if not (folder / file).exists():
            continue
        try:
            grader = load_grader(folder / file, runtime="openvino", threads=torch.get_num_threads())
        except ImgradeError as e:  # OpenVINO missing or unable to compile the file
            print(json.dumps({"skipped": f"{name}: {e}"}))
            continue
        graders[name] = grader
    for (name, precision, batch, forward), rate in grading_rates(graders, images, seconds, repeats).items():
        print(json.dumps({"name": name, "precision": precision, "batch": batch, "forward": forward, "rate": rate}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="training images per epoch (default 1024)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="measurements per number; the median is shown (default 5)"
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="least time per inference measurement (default 2)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--openvino-child", type=Path, help=argparse.SUPPRESS)  # see openvino_rates
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.openvino_child:
        _openvino_child(args.openvino_child, args.seconds, args.repeats)
        return
    reexec_with_tcmalloc()  # as the imgrade command does; IMGRADE_NO_TCMALLOC=1 keeps glibc malloc

    synthetic = generate_cucumbers(args.images, seed=0).imageset
    images, targets = synthetic.images, synthetic.targets
    allocator = os.environ.get("LD_PRELOAD") or "glibc malloc"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, allocator: {allocator}")

    peaks = measure_peaks(args.repeats)
    print("\n".join(header_lines(peaks)))
    gflop = gflop_per_image(build_model())
    # int8 has no peak of its own here: its rows are shares of the fp32 limit, saying what int8 adds
    limits = {precision: peaks[precision].best / gflop for precision in ("fp32", "bf16")}
    print(f"model: {gflop:.3f} GFLOP per image forward, {3 * gflop:.3f} per training image")
    print(
        "limit: "
        + "; ".join(f"{p} {limit:.0f} images/s inference, {limit / 3:.0f} training" for p, limit in limits.items())
        + " (int8 rows: share of the fp32 limit)"
    )

    def show(what: str, precision: str, rate: tuple[float, float, float], training: bool = False) -> None:
        median, low, high = rate
        of = "bf16" if precision.startswith("bf16") else "fp32"
        limit = limits[of] / (3 if training else 1)
        extra = f", {1000 / median:.2f} ms per image" if what.endswith(" batch 1") else ""
        print(
            f"{what:<40} {precision:<13} {median:7.1f} images/s ({low:.0f}-{high:.0f})  "
            f"{median / limit:6.1%} of the {of} limit{extra}",
            flush=True,
        )

    chosen = resolve_amp("auto", torch.device("cpu"))
    print(
        f"precision: --amp auto trains in {precision_name('auto', torch.device('cpu'))} here "
        f"({'native bf16' if cpu_has_bf16() else 'no native bf16'} in this CPU's flags)"
    )
    auto = precision_name("auto", torch.device("cpu"))
    for batch in (32, 128):
        rate = training_rate(images, targets, batch, args.repeats)
        show(f"train batch {batch} (--amp auto)", auto, rate, training=True)
    other = "bf16" if chosen == "off" else "off"
    rate = training_rate(images, targets, 32, args.repeats, amp=other)
    show(f"train batch 32 --amp {other}", precision_name(other, torch.device("cpu")), rate, training=True)
    for (name, precision, batch, forward), rate in inference_rates(images, args.seconds, args.repeats).items():
        show(f"infer {name} batch {batch}" + (" (one pass)" if forward == batch and batch > 1 else ""), precision, rate)


if __name__ == "__main__":
    main()
