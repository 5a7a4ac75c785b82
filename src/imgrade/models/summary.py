"""A Keras-style model summary, counting parameters the way Keras does.

Keras counts BatchNorm's moving mean and variance as (non-trainable) parameters; PyTorch keeps
them as buffers. Both are counted here, so the reference's Keras totals can be checked directly.
"""

from __future__ import annotations

import torch
from torch import nn

RUNNING_STATS = ("running_mean", "running_var")  # not num_batches_tracked: Keras has no such thing


def _running_stats(module: nn.Module, recurse: bool = True) -> int:
    return sum(
        buffer.numel()
        for name, buffer in module.named_buffers(recurse=recurse)
        if name.rsplit(".", 1)[-1] in RUNNING_STATS
    )


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Keras-style counts: frozen parameters and BN running statistics are non-trainable.

    Returns:
        ``{"trainable": ..., "non_trainable": ..., "total": ...}``.

    >>> count_parameters(nn.BatchNorm2d(16))
    {'trainable': 32, 'non_trainable': 32, 'total': 64}
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    non_trainable = frozen + _running_stats(model)
    total = trainable + non_trainable
    return {"trainable": trainable, "non_trainable": non_trainable, "total": total}


def summarize(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> str:
    """A table with one row per leaf layer in forward order, then the Keras-style totals.

    Runs one zero batch of shape (1, *input_size) in eval mode without gradients; the model's
    train/eval modes and BN statistics are as before afterwards. Output shapes show the batch
    dimension as -1.

    >>> print(summarize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), (3, 8, 8)))
    Layer (type)    Output Shape     Param #
    ============================================
    0 (Conv2d)      (-1, 4, 6, 6)    112
    1 (ReLU)        (-1, 4, 6, 6)    0
    ============================================
    Total params: 112
    Trainable params: 112
    Non-trainable params: 0
    """
    names = {module: name for name, module in model.named_modules()}
    rows: list[tuple[str, str, str]] = []

    def record(module: nn.Module, inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            shape = "(" + ", ".join(["-1", *map(str, output.shape[1:])]) + ")"
        else:
            shape = type(output).__name__
        params = sum(p.numel() for p in module.parameters()) + _running_stats(module)
        rows.append((f"{names[module]} ({type(module).__name__})", shape, f"{params:,}"))

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(record) for m in leaves]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training

    header = ("Layer (type)", "Output Shape", "Param #")
    widths = [max(len(row[i]) for row in [header, *rows]) + 4 for i in range(3)]
    rule = "=" * sum(widths)

    def line(row: tuple[str, str, str]) -> str:
        return "".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()

    counts = count_parameters(model)
    return "\n".join(
        [
            line(header),
            rule,
            *map(line, rows),
            rule,
            f"Total params: {counts['total']:,}",
            f"Trainable params: {counts['trainable']:,}",
            f"Non-trainable params: {counts['non_trainable']:,}",
        ]
    )
