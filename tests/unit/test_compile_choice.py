"""--compile auto|on|off: the config and flag, auto's decision from given timings, and a probe that leaves no trace."""

import random

import numpy as np
import pytest
import torch
import yaml

from imgrade.cli import build_parser
from imgrade.cli.argparser import UsageError
from imgrade.config import RunConfig, TrainConfig, dump_config
from imgrade.core.errors import ConfigError
from imgrade.models.factory import build_model
from imgrade.training import compile_probe
from imgrade.training.compile_probe import CompileChoice, compile_pays, planned_steps, probe, resolve_compile
from imgrade.training.loop import FitData

# ------------------------------------------------------------------------------- the config and the flag


@pytest.mark.parametrize(
    ("given", "expected"), [("auto", "auto"), ("on", "on"), ("off", "off"), (True, "on"), (False, "off")]
)
def test_compile_takes_auto_on_off_and_the_switch_of_older_configs(given, expected):
    assert TrainConfig(compile=given).compile == expected
    assert RunConfig.from_dict({"train": {"compile": given}}).train.compile == expected


def test_compile_defaults_to_auto_and_refuses_other_values():
    assert TrainConfig().compile == "auto"
    with pytest.raises(ConfigError, match=r"^train.compile 'yes' is not auto, on or off: set --compile$"):
        TrainConfig(compile="yes")
    with pytest.raises(ConfigError, match="set --compile"):
        RunConfig.from_dict({"train": {"compile": 1}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", "on"), ("false", "off"), ("on", "on"), ("off", "off"), ("'on'", "on"), ("auto", "auto")],
)
def test_a_yaml_config_with_a_switch_or_a_word_reads_as_the_choice(text, expected):
    # YAML reads an unquoted on/off as true/false: either way the choice is the one written
    raw = yaml.safe_load(f"train:\n  compile: {text}\n")
    assert RunConfig.from_dict(raw).train.compile == expected


def test_a_recorded_choice_survives_config_yaml():
    for choice in ("on", "off"):
        cfg = RunConfig.from_dict({"train": {"compile": choice}})
        assert RunConfig.from_dict(yaml.safe_load(dump_config(cfg))).train.compile == choice


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], None), (["--compile"], "on"), (["--compile", "on"], "on"), (["--compile", "off"], "off")],
)
def test_the_flag_alone_means_on_as_before(argv, expected):
    args = build_parser().parse_args(["train", "--data", "d", "--out", "r", *argv])
    assert getattr(args, "train.compile") == expected


def test_the_flag_refuses_other_values():
    with pytest.raises(UsageError, match="argument --compile: invalid choice: 'maybe' .choose from auto, on, off."):
        build_parser().parse_args(["train", "--compile", "maybe"])


# ------------------------------------------------------------------------------- auto's decision


@pytest.mark.parametrize(
    ("eager_ms", "compiled_ms", "warmup_s", "steps", "pays"),
    [
        (41, 39, 48, 600, False),  # 1.2 s saved, 48 s spent
        (50, 35, 30, 20_000, True),  # 1,000 s eager against 730 s compiled
        (100, 96, 0, 1_000, False),  # 4% faster, no warm-up: within the 5% margin
        (100, 94, 0, 1_000, True),  # 6% faster
        (100, 80, 14, 1_000, True),  # 100 s eager allows 95 s: 80 s of steps + 14 s warm-up
        (100, 80, 16, 1_000, False),  # + 16 s does not
        (100, 120, 0, 1_000, False),  # compiled is slower
    ],
)
def test_compiling_pays_only_when_the_run_is_five_percent_faster_warm_up_included(
    eager_ms, compiled_ms, warmup_s, steps, pays
):
    assert compile_pays(eager_ms / 1000, compiled_ms / 1000, warmup_s, steps) is pays


def test_the_run_counts_its_full_batches():
    assert planned_steps(TrainConfig(epochs=200, batch_size=32), 148) == 800  # 4 full batches, 20 images eager
    assert planned_steps(TrainConfig(epochs=3, batch_size=32), 64) == 6
    assert planned_steps(TrainConfig(epochs=3, batch_size=32), 20) == 0


class FakeSteps:
    """Stands in for the probe's copies: every eager step takes ``eager`` s, a compiled one
    ``compiled`` s, and the first two compiled steps ``warmup`` s more between them."""

    def __init__(self, monkeypatch, eager, compiled, warmup, fails=False):
        self.compiled_copies = 0
        outer = self

        class Step:
            def __init__(self, model, cfg):
                self.model, self.steps, self.is_compiled = object(), 0, False  # a copy of its own

            def __call__(self, x, target, device):
                self.steps += 1
                if not self.is_compiled:
                    return eager
                if fails:
                    raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
                return compiled + (warmup if self.steps == 1 else 0.0)

        def fake_compile(model):
            outer.compiled_copies += 1
            steps = [s for s in outer.made if s.model is model]
            steps[0].is_compiled = True

        self.made = []

        def make(model, cfg):
            step = Step(model, cfg)
            self.made.append(step)
            return step

        monkeypatch.setattr(compile_probe, "_Step", make)
        monkeypatch.setattr(compile_probe, "compile_model", fake_compile)


X, TARGET, CPU = torch.zeros(1), torch.zeros(1), torch.device("cpu")


def _probe(steps, **train):
    return probe(TrainConfig(**train), object(), X, TARGET, CPU, steps)


def test_a_run_too_short_to_repay_a_compile_compiles_nothing(monkeypatch):
    fake = FakeSteps(monkeypatch, eager=0.040, compiled=0.010, warmup=1.0)
    choice = _probe(1_000)  # 40 s of eager steps, under PROBE_MIN_EAGER_S
    assert choice == CompileChoice(
        "off", "compile auto -> off: eager 40 ms/step x 1000 steps = 40 s, too short to repay a compile"
    )
    assert fake.compiled_copies == 0


def test_auto_picks_on_where_the_compiled_run_is_faster_and_says_so(monkeypatch):
    FakeSteps(monkeypatch, eager=0.050, compiled=0.035, warmup=30.0)
    choice = _probe(20_000)
    assert choice == CompileChoice(
        "on", "compile auto -> on: eager 50 ms/step, compiled 35 ms/step + 30 s warm-up over 20000 steps"
    )


def test_auto_picks_off_where_the_warm_up_is_not_repaid(monkeypatch):
    FakeSteps(monkeypatch, eager=0.041, compiled=0.039, warmup=48.0)
    choice = _probe(2_000)
    assert choice.compile == "off"
    assert choice.why == "compile auto -> off: eager 41 ms/step, compiled 39 ms/step + 48 s warm-up over 2000 steps"


def test_a_frozen_backbone_counts_a_second_warm_up(monkeypatch):
    # 2,000 steps of 100 ms: 200 s eager, 160 s compiled; one 20 s warm-up pays (180 < 190), two do not
    FakeSteps(monkeypatch, eager=0.100, compiled=0.080, warmup=20.0)
    assert _probe(2_000, epochs=10).compile == "on"
    frozen = _probe(2_000, epochs=10, freeze_backbone_epochs=2)
    assert frozen.compile == "off" and "+ 40 s warm-up" in frozen.why


def test_auto_falls_back_to_eager_where_torch_compile_fails(monkeypatch):
    FakeSteps(monkeypatch, eager=0.1, compiled=0.05, warmup=1.0, fails=True)
    assert _probe(20_000) == CompileChoice(
        "off",
        "compile auto -> off: torch.compile failed here (RuntimeError: InvalidCxxCompiler: No working C++ compiler found)",
    )


def test_a_run_without_a_full_batch_compiles_nothing(monkeypatch):
    fake = FakeSteps(monkeypatch, eager=10.0, compiled=0.1, warmup=1.0)
    assert _probe(0).compile == "off" and fake.compiled_copies == 0


# ------------------------------------------------------------------------------- the probe's copies


def _tiny_data(n=20):
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    return FitData(x, torch.rand(n) * 8, x[:4], torch.rand(4) * 8, torch.full((3, 32, 32), 0.5))


def _greedy_compile(model):
    """A compile that draws from every random stream (the e2e tests trace the network for real)."""
    torch.rand(3), np.random.rand(3), random.random()


def test_the_probe_leaves_the_network_and_every_random_stream_as_it_found_them(monkeypatch):
    monkeypatch.setattr(compile_probe, "PROBE_MIN_EAGER_S", 0.0)  # compile whatever the timings
    monkeypatch.setattr(compile_probe, "PROBE_ROUNDS", 1)
    monkeypatch.setattr(compile_probe, "compile_model", _greedy_compile)
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    model, data = build_model(depth=11), _tiny_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    streams = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    choice = resolve_compile(TrainConfig(epochs=1, batch_size=4), model, data, CPU)
    assert choice.compile in ("on", "off") and "compiled" in choice.why  # the compiled copy was timed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), streams[0])
    assert np.array_equal(np.random.get_state()[1], streams[1]) and random.getstate() == streams[2]


def test_on_that_fails_to_compile_is_one_line_naming_the_fix(monkeypatch):
    def broken(model):
        def fail(*args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found in cxx: (None, 'g++')\n\nSet ...")

        model.forward = fail

    monkeypatch.setattr(compile_probe, "compile_model", broken)
    model = build_model(depth=11)
    with pytest.raises(ConfigError) as error:
        resolve_compile(TrainConfig(compile="on", epochs=1, batch_size=8), model, _tiny_data(), CPU)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("--compile on: torch.compile failed here (RuntimeError: InvalidCxxCompiler:")
    assert "--compile off" in message and "C++ compiler" in message


def test_off_and_a_resumed_auto_take_no_probe(monkeypatch):
    monkeypatch.setattr(compile_probe, "probe", lambda *args: pytest.fail("no probe"))
    model, data = build_model(depth=11), _tiny_data()
    assert resolve_compile(TrainConfig(compile="off"), model, data, CPU) == CompileChoice("off")
    assert resolve_compile(TrainConfig(compile="auto"), model, data, CPU, resuming=True) == CompileChoice("off")


def test_auto_trains_eagerly_where_the_probe_s_copies_do_not_fit_in_memory(monkeypatch):
    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(compile_probe, "probe", out_of_memory)
    choice = resolve_compile(TrainConfig(batch_size=4), build_model(depth=11), _tiny_data(), CPU)
    assert choice == CompileChoice("off", "compile auto -> off: no memory for the probe's copies of the network")
