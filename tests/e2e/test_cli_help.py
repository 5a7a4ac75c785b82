"""What a person reads from the command line: help, examples, and one-line usage errors."""

import argparse
import re
from dataclasses import fields

import pytest

from imgrade.cli import build_parser, main
from imgrade.cli.run_flags import field_help, run_flags
from imgrade.config import SECTIONS, TrainConfig
from imgrade.core.registry import register_head, unregister_head


def _verbs(parser, path=()):
    """(path, parser) for every verb that runs something: ("train",), ("data", "info"), ..."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _verbs(child, (*path, name))


def _help(argv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option's help, so the text can be matched
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_every_verb_has_a_description_an_example_and_help_on_every_option():
    verbs = dict(_verbs(build_parser()))
    assert {
        ("predict",),
        ("demo",),
        ("data", "info"),
        ("data", "download"),
        ("data", "synth"),
        ("model", "summary"),
        ("calibrate",),
        ("evaluate",),
        ("train",),
        ("compare",),
        ("fewshot",),
        ("export",),
        ("serve",),
    } <= set(verbs)
    for path, parser in verbs.items():
        assert parser.description, path
        assert "examples:\n  imgrade " + " ".join(path) in parser.epilog, path
        for action in parser._actions:
            assert action.help and action.help.strip(), (path, action.dest)
            if action.option_strings and action.nargs != 0 and not action.choices:
                # a word a person reads, never a config key like DATA.PATH
                assert action.metavar and re.fullmatch(r"[A-Z_]+", action.metavar), (
                    path,
                    action.option_strings,
                    action.metavar,
                )


def test_every_config_field_is_documented():
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            assert field_help(f"{section}.{f.name}"), f"{section}.{f.name}"


def test_run_flag_help_and_default_come_from_the_config_dataclasses(capsys, monkeypatch):
    parser = dict(_verbs(build_parser()))[("train",)]
    actions = {a.dest: a for a in parser._actions}
    for flag in run_flags():
        assert field_help(flag.key).lower() in actions[flag.key].help.replace("%%", "%").lower(), flag.flag
    assert actions["train.epochs"].help.endswith(f"(default: {TrainConfig().epochs})")
    assert actions["train.epochs"].default is None  # so a flag not given leaves --config's value alone
    text = " ".join(_help(["train"], capsys, monkeypatch).split())
    assert (
        "--epochs N Training epochs (200 is the reference); the learning-rate steps scale with them (default: 200)"
        in text
    )
    for shown in (
        "--data PATH",
        "--grades NAMES",
        "--lr LR",
        "--head {auto,reference,linear}",
        "--loss {mse,huber}",
        "--objective {qwk,accuracy,mae}",
        "--class-weight {none,balanced}",
        "--view {above,below,side,all}",
        "--amp {auto,bf16,off}",
        "(0.1 = +-10%)",
    ):
        assert shown in text, shown
    assert not re.search(r"--[a-z-]+ [A-Z]+\.[A-Z_]+", text)  # no DATA.PATH-style metavars


def test_fewshot_shows_its_own_fine_tuning_defaults(capsys, monkeypatch):
    text = " ".join(_help(["fewshot"], capsys, monkeypatch).split())
    assert "the learning-rate steps scale with them (default: 60)" in text
    assert "--task corn --epochs 60" in text


def test_a_task_registered_later_is_a_choice():
    register_head("toy", "imgrade.models.heads:ClassificationHead", "a toy head")
    try:
        args = build_parser().parse(["train", "--task", "toy", "--out", "r"])
    finally:
        unregister_head("toy")
    assert vars(args)["model.task"] == "toy"


@pytest.mark.parametrize(
    "argv, first_line",
    [
        (["train", "--epochs", "x", "--out", "r"], "imgrade train: error: argument --epochs: invalid int value: 'x'"),
        (["trian", "--out", "r"], "imgrade: error: argument VERB: invalid choice: 'trian': did you mean 'train'?"),
        (
            ["train", "--epcohs", "3", "--out", "r"],
            "imgrade train: error: unrecognized arguments: --epcohs 3: did you mean '--epochs'?",
        ),
        (
            ["train", "--out", "r", "--head", "refrence"],
            "imgrade train: error: argument --head: invalid choice: 'refrence': did you mean 'reference'?",
        ),
        (["data", "inf", "x"], "imgrade data: error: argument ACTION: invalid choice: 'inf': did you mean 'info'?"),
        (["evaluate"], "imgrade evaluate: error: the following arguments are required: RUN"),
    ],
)
def test_a_bad_command_line_is_one_error_line_and_a_hint(argv, first_line, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(first_line), lines
    assert re.fullmatch(r"see `imgrade( [a-z]+)* --help`", lines[1])
    assert captured.out == ""


def test_debug_and_quiet_also_follow_the_verb(capsys):
    args = build_parser().parse(["train", "--out", "r", "--debug", "-q"])
    assert args.debug is True and args.verbosity == -1
    args = build_parser().parse(["--debug", "train", "--out", "r"])
    assert args.debug is True and args.verbosity is None


def test_a_group_without_its_action_prints_its_help(capsys):
    assert main(["data"]) == 0
    assert "info" in capsys.readouterr().out
