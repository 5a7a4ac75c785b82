"""Time per epoch and images/s of the reference training loop and of inference, on the CPU.

Usage:
    python benchmarks/train_speed.py [--data PATH] [--epochs 3] [--threads 0]

PATH defaults to the real CUCUMBER-9 sample in ../shared (synthetic cucumbers where it is absent).
Prints one line per measurement; nothing is written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from imgrade.config import DataConfig, TrainConfig
from imgrade.core.allocator import reexec_with_tcmalloc
from imgrade.core.preprocess import nhwc_to_tensor, to_input
from imgrade.data.loader import load_dataset
from imgrade.data.synthetic import generate_cucumbers
from imgrade.models.factory import build_model
from imgrade.train.loop import FitData, train_one_epoch
from imgrade.train.optim import build_optimizer

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/cucumber9-p1-sample/cucumber-9-python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SAMPLE) if SAMPLE.exists() else None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    reexec_with_tcmalloc()  # as the imgrade command does; IMGRADE_NO_TCMALLOC=1 keeps glibc malloc
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.data:
        imageset = load_dataset(DataConfig(path=args.data))
    else:
        imageset = generate_cucumbers(500, seed=0).imageset
    x = nhwc_to_tensor(imageset.images)
    y = torch.from_numpy(imageset.targets)
    mean = x.float().mean(0) / 255
    n_train = int(0.6 * len(x))
    data = FitData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], mean)
    print(f"data: {imageset.source}, {n_train} training images, torch {torch.__version__}, {torch.get_num_threads()} threads")

    cfg = TrainConfig(epochs=args.epochs)
    model = build_model()
    optimizer = build_optimizer(model, cfg.lr, cfg.l2)
    generator = torch.Generator().manual_seed(0)
    train_one_epoch(model, optimizer, data, cfg, torch.device("cpu"), generator)  # warm-up
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        train_one_epoch(model, optimizer, data, cfg, torch.device("cpu"), generator)
        seconds = time.perf_counter() - t0
        print(f"train epoch {epoch + 1}: {seconds:.2f} s, {n_train / seconds:.0f} images/s (batch {cfg.batch_size})")

    model.eval()
    with torch.no_grad():
        for batch in (1, 256):
            xb = x[:batch]
            model(to_input(xb, mean))
            reps = max(1, 512 // batch)
            t0 = time.perf_counter()
            for _ in range(reps):
                model(to_input(xb, mean))
            seconds = (time.perf_counter() - t0) / reps
            print(f"inference batch {batch}: {seconds * 1000:.1f} ms per batch, {batch / seconds:.0f} images/s")


if __name__ == "__main__":
    main()
