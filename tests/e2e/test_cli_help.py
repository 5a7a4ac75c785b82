"""What a person reads from the command line: help, examples, and one-line usage errors."""

import argparse
import re
from dataclasses import fields

import pytest
from PIL import Image

from imgrade.cli import build_parser, main
from imgrade.cli.argparser import EXIT_STATUS
from imgrade.cli.run_flags import field_help, run_flags
from imgrade.config import SECTIONS, TrainConfig
from imgrade.core.registry import register_head, unregister_head
from imgrade.core.version import __version__
from imgrade.runtime.torch_engine import TorchEngine


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


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"imgrade {__version__}\n"


def test_the_exit_status_is_stated_at_the_top_and_for_predict(capsys, monkeypatch):
    top = _help([], capsys, monkeypatch)
    predict = _help(["predict"], capsys, monkeypatch)
    for text in (top, predict):
        assert EXIT_STATUS in text
        codes = re.findall(r"^  (\d+) ", text[text.index("exit status") :], flags=re.M)
        assert codes == ["0", "1", "2", "130", "141", "143"]


def test_every_route_serve_help_names_exists(capsys, monkeypatch, idle_grader):
    pytest.importorskip("fastapi", reason="the service is the optional extra imgrade[serve]")
    from fastapi.testclient import TestClient

    from imgrade.serve.app import create_app

    text = _help(["serve"], capsys, monkeypatch)
    # paths on their own (not inside a URL such as http://127.0.0.1:8000/ or a file such as docs/deploy.md)
    named = set(re.findall(r"(?<![\w:/.])(/[\w/]*)", text))
    assert {"/v1/grade", "/v1/model", "/v1/stats", "/healthz", "/"} <= named
    with TestClient(create_app(idle_grader)) as client:
        # the real app answers each: a GET of POST /v1/grade is 405, a route that is not there 404
        missing = sorted(path for path in named if client.get(path).status_code == 404)
        assert client.get("/grade").status_code == 404  # so the check can fail
    assert missing == [], f"serve --help names routes the service lacks: {missing}"


def test_predict_help_names_exactly_the_columns_predict_writes(coral_run, tmp_path, capsys, monkeypatch):
    text = " ".join(_help(["predict"], capsys, monkeypatch).split())
    named = re.search(r"Columns: (.*?)\. ", text).group(1).split(", ")
    grades = TorchEngine.from_run(coral_run, device="cpu").grade_names
    expanded = [
        column for name in named for column in ([f"p_{g}" for g in grades] if name.startswith("p_<grade>") else [name])
    ]
    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 32), (90, 140, 60)).save(photo)
    assert main(["predict", str(coral_run), str(photo)]) == 0  # a CORAL run: every column there is
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert expanded == header
