"""Training and inference images/s on the CPU, each as a fraction of what the hardware allows.

Usage:
    python benchmarks/throughput.py [--images 1024] [--repeats 5] [--seconds 2] [--threads 0]
    IMGRADE_NO_TCMALLOC=1 python benchmarks/throughput.py     # the same with glibc malloc

The limit: the machine's fp32 peak (the faster of a large matmul and a channels_last 3x3
convolution, measured here, best of several) divided by the network's cost per image: one
forward for inference, three (forward, input gradients, weight gradients) for training.
Training runs the library's own ``train_one_epoch`` with the defaults a user gets (only the
batch size changes; one more line with the precision ``--amp auto`` did not choose) on synthetic
cucumbers, and the header says which precision auto chose on this CPU; inference goes
through ``Grader.outputs`` (what ``predict`` and ``serve`` call) for PyTorch, eager (``predict``) and
served (``serve``, ``Grader.for_serving``: on a CPU the run exported to ONNX in memory and run by ONNX Runtime), and, when onnxruntime is installed, for an ONNX
export of the same network and its int8 copy (quantized as ``export --int8`` does; the limit stays
the fp32 one, so its share says what int8 adds on this CPU). Like the ``imgrade`` command,
the benchmark first re-runs itself under tcmalloc when it is installed. Each number is the
median of ``--repeats`` measurements, the spread (lowest-highest) in brackets: a wide one means
something else was using the cores. Nothing is written.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from imgrade.config import TrainConfig
from imgrade.core.allocator import reexec_with_tcmalloc
from imgrade.core.checkpoint import save_checkpoint
from imgrade.core.perf import cpu_has_bf16, precision_name, resolve_amp
from imgrade.core.preprocess import nhwc_to_tensor
from imgrade.data.synthetic import generate_cucumbers
from imgrade.models.factory import build_model
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


def matmul_peak(repeats: int) -> float:
    """GFLOP/s of a 2048 x 2048 fp32 matmul."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / min(_seconds(lambda: torch.mm(a, b), repeats * 3)) / 1e9


@torch.no_grad()
def conv_peak(repeats: int) -> float:
    """GFLOP/s of a channels_last 3x3 convolution, 64 -> 64 channels on 32 x 32, batch 64."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(64, 64, 32, 32).to(memory_format=torch.channels_last)
    flops = 2 * 64 * 64 * 64 * 9 * 32 * 32
    return flops / min(_seconds(lambda: conv(x), repeats * 3)) / 1e9


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


def inference_rates(
    images: np.ndarray, seconds: float, repeats: int
) -> dict[tuple[str, int, int | None], tuple[float, float, float]]:
    """{(runtime, images per call, images per forward pass): (median, lowest, highest) images/s}.

    Calls of 256 images run as the runtime's own forward passes (None: ``CPU_BATCH`` here, what
    ``predict`` and ``serve`` do) and, for comparison, as one pass of 256.
    """
    torch.manual_seed(0)
    model = build_model()
    mean = nhwc_to_tensor(images).float().mean(0).div_(255.0)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = _fake_run(Path(tmp), model, mean)
        graders = {"torch": TorchEngine.from_run(run, device="cpu")}
        # what `imgrade serve` grades with: the run exported to ONNX in memory (eager torch should that fail)
        graders["served"] = TorchEngine.from_run(run, device="cpu").for_serving(threads=torch.get_num_threads())
        try:
            from imgrade.pipeline import export
            from imgrade.runtime.onnx_engine import OnnxEngine
            from imgrade.runtime.onnx_quantize import CALIBRATION_IMAGES, quantize

            export(run, out=Path(tmp) / "model.onnx")
            graders["onnx"] = OnnxEngine.from_file(Path(tmp) / "model.onnx", threads=torch.get_num_threads())
            # the same file quantized as `export --int8` does, calibrated on these images
            int8 = quantize((Path(tmp) / "model.onnx").read_bytes(), images[:CALIBRATION_IMAGES])
            graders["onnx int8"] = OnnxEngine.from_bytes(int8, threads=torch.get_num_threads())
        except ImportError as e:
            print(f"onnx: skipped ({e})")
        for batch, forward in [(1, 1), (256, None), (256, 256)]:
            for name, grader in graders.items():
                chunk = images[:batch]
                rates[name, batch, forward] = _rate(
                    batch, _seconds(lambda g=grader, c=chunk, f=forward: g.outputs(c, batch_size=f), repeats, seconds)
                )
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="training images per epoch (default 1024)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="measurements per number; the median is shown (default 5)"
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="least time per inference measurement (default 2)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice, one per core)")
    args = parser.parse_args()
    reexec_with_tcmalloc()  # as the imgrade command does; IMGRADE_NO_TCMALLOC=1 keeps glibc malloc
    if args.threads:
        torch.set_num_threads(args.threads)

    synthetic = generate_cucumbers(args.images, seed=0).imageset
    images, targets = synthetic.images, synthetic.targets
    allocator = os.environ.get("LD_PRELOAD") or "glibc malloc"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, allocator: {allocator}")

    peaks = {"matmul": matmul_peak(args.repeats), "conv3x3 channels_last": conv_peak(args.repeats)}
    peak = max(peaks.values())
    gflop = gflop_per_image(build_model())
    infer_limit, train_limit = peak / gflop, peak / (3 * gflop)
    print("peak: " + ", ".join(f"{name} {value:.0f} GFLOP/s" for name, value in peaks.items()))
    print(f"model: {gflop:.3f} GFLOP per image forward, {3 * gflop:.3f} per training image")
    print(f"limit: {infer_limit:.0f} images/s inference, {train_limit:.0f} training")

    def show(what: str, rate: tuple[float, float, float], limit: float, extra: str = "") -> None:
        median, low, high = rate
        print(
            f"{what:<40} {median:7.1f} images/s ({low:.0f}-{high:.0f})  {median / limit:6.1%} of the limit{extra}",
            flush=True,
        )

    chosen = resolve_amp("auto", torch.device("cpu"))
    print(
        f"precision: --amp auto trains in {precision_name('auto', torch.device('cpu'))} here "
        f"({'native bf16' if cpu_has_bf16() else 'no native bf16'} in this CPU's flags)"
    )
    for batch in (32, 128):
        show(f"train batch {batch} (--amp auto)", training_rate(images, targets, batch, args.repeats), train_limit)
    other = "bf16" if chosen == "off" else "off"
    show(f"train batch 32 --amp {other}", training_rate(images, targets, 32, args.repeats, amp=other), train_limit)
    for (name, batch, forward), rate in inference_rates(images, args.seconds, args.repeats).items():
        what = f"infer {name} batch {batch}" + (" (one pass)" if forward == batch and batch > 1 else "")
        show(what, rate, infer_limit, f", {1000 / rate[0]:.2f} ms per image" if batch == 1 else "")


if __name__ == "__main__":
    main()
