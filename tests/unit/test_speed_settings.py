"""The speed settings change how fast, never what: layout, optimizer, autocast, the allocator re-exec."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from imgrade.config import TrainConfig
from imgrade.core import allocator
from imgrade.models.factory import build_model
from imgrade.training.loop import EpochBatchNormAverage, FitData, train_one_epoch
from imgrade.training.optim import build_optimizer


def _contiguous_copy(model):
    torch.manual_seed(0)
    twin = build_model(depth=11)
    twin.load_state_dict(model.state_dict())
    return twin.to(memory_format=torch.contiguous_format)


def test_the_backbone_is_channels_last_and_agrees_with_the_contiguous_layout():
    torch.manual_seed(0)
    model = build_model(depth=11)
    twin = _contiguous_copy(model)
    conv = model.backbone.stem.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert twin.backbone.stem.conv.weight.is_contiguous()
    x = torch.randn(4, 3, 32, 32)
    for train in (True, False):
        model.train(train), twin.train(train)
        torch.testing.assert_close(model(x), twin(x), atol=1e-5, rtol=1e-5)
    model.train(), twin.train()
    model(x).sum().backward()
    twin(x).sum().backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4)


def test_the_optimizer_step_is_adam_with_keras_l2_on_conv_kernels():
    torch.manual_seed(0)
    model = build_model(depth=11)
    lr, l2 = 1e-3, 1e-4
    optimizer = build_optimizer(model, lr, l2)
    kernels = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Conv2d)}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = {}
    for step in (1, 2):
        model.zero_grad()
        model(torch.randn(4, 3, 32, 32)).sum().backward()
        grads[step] = {name: p.grad.clone() for name, p in model.named_parameters()}
        optimizer.step()
    for name, p in model.named_parameters():
        w, m, v = before[name], 0.0, 0.0
        for step in (1, 2):
            # the reference formula: Keras l2(l2) adds 2 * l2 * w to the gradient, then Adam
            g = grads[step][name] + (2 * l2 * w if id(p) in kernels else 0.0)
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            w = w - lr * (m / (1 - 0.9**step)) / ((v / (1 - 0.999**step)).sqrt() + 1e-8)
        torch.testing.assert_close(p.detach(), w, atol=1e-6, rtol=1e-5, msg=name)


def test_a_bf16_epoch_runs_on_the_cpu_and_its_convs_compute_in_bf16():
    torch.manual_seed(0)
    model = build_model(depth=11)
    x = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    y = torch.rand(20) * 8
    data = FitData(x, y, x[:4], y[:4], torch.full((3, 32, 32), 0.5))
    seen = []
    model.backbone.stem.conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    cfg = TrainConfig(epochs=1, batch_size=8, amp="bf16")
    before = model.backbone.stem.conv.weight.detach().clone()
    loss = train_one_epoch(
        model, build_optimizer(model, cfg.lr, cfg.l2), data, cfg, torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    assert seen == [torch.bfloat16] * 3
    assert model.backbone.stem.conv.weight.dtype == torch.float32  # autocast keeps fp32 weights
    assert torch.isfinite(torch.tensor(loss)) and not torch.equal(model.backbone.stem.conv.weight, before)


# ------------------------------------------------------------------------------- the allocator


def test_the_reexec_adds_tcmalloc_and_the_marker_once(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator.os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: "/lib/libtcmalloc_minimal.so.4")
    monkeypatch.setattr(sys, "argv", ["/venv/bin/imgrade", "train", "--out", "r"])
    monkeypatch.setattr(
        sys, "orig_argv", ["/venv/bin/python", "-X", "utf8", "/venv/bin/imgrade", "train", "--out", "r"]
    )
    for name in (allocator.DISABLE, allocator.MARKER, "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    allocator.reexec_with_tcmalloc()
    [(path, argv, env)] = calls
    assert path == sys.executable and argv == [sys.executable, "-X", "utf8", "/venv/bin/imgrade", "train", "--out", "r"]
    assert env["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4" and env[allocator.MARKER] == "1"

    monkeypatch.setenv(allocator.MARKER, "1")  # the re-executed process
    allocator.reexec_with_tcmalloc()
    monkeypatch.delenv(allocator.MARKER)
    monkeypatch.setenv(allocator.DISABLE, "1")
    allocator.reexec_with_tcmalloc()
    monkeypatch.delenv(allocator.DISABLE)
    monkeypatch.setenv("LD_PRELOAD", "/other/libtcmalloc.so")
    allocator.reexec_with_tcmalloc()
    assert len(calls) == 1


def test_only_the_imgrade_command_counts_as_started_from_the_command_line(monkeypatch):
    for argv0, expected in [
        ("/venv/bin/imgrade", True),
        (str(Path("src/imgrade/__main__.py").resolve()), True),
        ("/usr/lib/python3/site-packages/ipykernel_launcher.py", False),
        ("myscript.py", False),
    ]:
        monkeypatch.setattr(sys, "argv", [argv0])
        assert allocator.started_as_imgrade() is expected, argv0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and ld.so's messages are Linux's")
@pytest.mark.parametrize("launcher", ["module", "script"])
def test_the_command_reexecs_once_and_keeps_output_and_exit_code(tmp_path, launcher):
    # a file that is no library: ld.so says so once per process it is preloaded into, and goes on
    fake = tmp_path / "libtcmalloc_fake.so"
    fake.write_text("not a library")
    env = {k: v for k, v in os.environ.items() if k not in (allocator.DISABLE, allocator.MARKER, "LD_PRELOAD")}
    env[allocator.LIBRARY] = str(fake)
    script = Path(sys.executable).parent / "imgrade"
    if launcher == "script" and not script.is_file():
        pytest.skip("no imgrade console script next to this python")
    command = [sys.executable, "-m", "imgrade"] if launcher == "module" else [str(script)]

    done = subprocess.run(
        [*command, "model", "summary", "--depth", "11"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Trainable params" in done.stdout
    assert done.stderr.count(str(fake)) == 1  # re-executed exactly once

    failed = subprocess.run(
        [*command, "evaluate", str(tmp_path / "no-run")], env=env, capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 2 and "does not exist" in failed.stderr
    assert failed.stderr.count(str(fake)) == 1

    env[allocator.DISABLE] = "1"
    kept = subprocess.run(
        [*command, "evaluate", str(tmp_path / "no-run")], env=env, capture_output=True, text=True, timeout=120
    )
    assert kept.returncode == 2 and str(fake) not in kept.stderr


def test_epoch_batchnorm_statistics_are_the_plain_average_of_the_batches():
    norm = torch.nn.BatchNorm2d(3)
    averages = EpochBatchNormAverage(torch.nn.Sequential(norm))
    batches = [torch.randn(4, 3, 5, 5) * (k + 1) + k for k in range(3)]
    for x in batches:
        norm(x)
        averages.add()
    averages.finish()
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in batches])
    variances = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in batches])  # what BatchNorm keeps
    torch.testing.assert_close(norm.running_mean, means.mean(0))
    torch.testing.assert_close(norm.running_var, variances.mean(0))
    assert isinstance(norm.momentum, float)  # never None: that reads a counter back from the GPU every step
