"""The README and docs/ stay true to the code: every `imgrade ...` command they show parses with the
real parser, every relative link and picture resolves, and the README stays a short guide."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from imgrade.cli import build_parser
from imgrade.cli.argparser import UsageError
from imgrade.core.registry import register_head, task_names, unregister_head

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
README_MAX_LINES = 300
MIN_COMMANDS = 60
"""Fewer commands found than this means the extractor broke, not that the docs shrank."""

SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
OPERATORS = {"|", "||", "&&", ";", "&"}
REDIRECTIONS = {">", ">>", "<", ">&", "&>", "2>", "2>>"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    file: str  # relative to the repository
    line: int  # 1-based, where the command starts
    text: str  # as shown (continuations joined)
    argv: tuple[str, ...]  # what imgrade's parser gets
    inline: bool  # in inline code, where prose may leave out required arguments


def imgrade_argv(command: str) -> list[list[str]]:
    """The argument lists of every imgrade invocation in one shell command line.

    Handles comments after ``#``, pipes and ``&&``/``;``, redirections (``> grades.csv``),
    leading ``VAR=value`` assignments, ``imgrade``/``.venv/bin/imgrade``, and ``python -m imgrade`` or
    ``torchrun ... -m imgrade``. Commands of other programs give nothing.

    >>> imgrade_argv("IMGRADE_TOKEN=T imgrade serve m.onnx --port 9000  # a comment")
    [['serve', 'm.onnx', '--port', '9000']]
    >>> imgrade_argv("imgrade predict RUN photos/ > grades.csv | head -3")
    [['predict', 'RUN', 'photos/']]
    >>> imgrade_argv("torchrun --standalone --nproc-per-node 8 -m imgrade train --out runs/big")
    [['train', '--out', 'runs/big']]
    >>> imgrade_argv("pip install --no-deps imgrade && python -m imgrade demo")
    [['demo']]
    """
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True  # keep words such as runs/p1 or sord+ensemble=3 whole
    tokens = list(lexer)
    segments: list[list[str]] = [[]]
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif token in OPERATORS:
            segments.append([])
        elif token in REDIRECTIONS or (token and set(token) <= set("<>&") and token not in OPERATORS):
            skip_next = True  # the redirection's target
        else:
            segments[-1].append(token)
    found = []
    for words in segments:
        while words and ASSIGNMENT.match(words[0]):
            words = words[1:]
        if not words:
            continue
        if words[0] == "imgrade" or words[0].endswith("/imgrade"):
            found.append(words[1:])
            continue
        for i in range(len(words) - 1):
            if words[i] == "-m" and words[i + 1] == "imgrade":
                found.append(words[i + 2 :])
                break
    return found


def _markdown_lines(lines: list[str]):
    """(line number, text, in_code) of each line of a Markdown file: prose lines as they are,
    lines of shell code blocks joined at a trailing backslash (numbered by their first line);
    other code blocks (python, yaml, ...) are left out."""
    in_fence, fence, language = False, "", ""
    pending, start = "", 0
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if match and (not in_fence or match.group(1).startswith(fence)):
            if in_fence:
                in_fence = False
            else:
                in_fence, fence, language = True, match.group(1), match.group(2).lower()
            continue
        if in_fence:
            if language not in SHELL_LANGUAGES:
                continue
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield start, pending + line, True
            pending = ""
        else:
            yield number, line, False


def extract_commands(path: Path, root: Path = ROOT) -> list[Command]:
    """Every imgrade command shown in the Markdown file ``path``, in code blocks and inline code."""
    lines = path.read_text(encoding="utf-8").splitlines()
    name = path.relative_to(root).as_posix()
    commands = []
    for number, text, in_code in _markdown_lines(lines):
        pieces = [text] if in_code else [m.group(2).strip() for m in INLINE_CODE.finditer(text)]
        for piece in pieces:
            if "imgrade" not in piece:
                continue
            try:
                argvs = imgrade_argv(piece)
            except ValueError as e:  # an unclosed quote
                raise ValueError(f"{name}:{number}: cannot split `{piece}` into words: {e}") from None
            commands += [Command(name, number, " ".join(piece.split()), tuple(argv), not in_code) for argv in argvs]
    return commands


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading.

    >>> github_slug("Test-time augmentation: `--tta`")
    'test-time-augmentation---tta'
    """
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file (code blocks left out), duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading and not in_fence:
            slug = github_slug(heading.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            if count:
                seen[f"{slug}-{count}"] = 1
    return set(seen)


def extract_links(path: Path) -> list[tuple[str, int, str]]:
    """(file, line, target) of every relative link and picture outside code."""
    name = path.relative_to(ROOT).as_posix()
    links = []
    for number, text, in_code in _markdown_lines(path.read_text(encoding="utf-8").splitlines()):
        if in_code:
            continue
        prose = INLINE_CODE.sub("", text)
        for match in LINK.finditer(prose):
            target = match.group(1)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                links.append((name, number, target))
    return links


COMMANDS = [command for path in DOC_FILES for command in extract_commands(path)]
LINKS = [link for path in DOC_FILES for link in extract_links(path)]


def _ids(items, where):
    ids, seen = [], {}
    for item in items:
        key = where(item)
        seen[key] = seen.get(key, 0) + 1
        ids.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return ids


def checking_parser(lenient: bool = False) -> argparse.ArgumentParser:
    """imgrade's parser, taking flags only by their full names (docs should not show `--epoch`
    for `--epochs`). ``lenient``: no argument required, for inline code in prose, which names a
    flag without the rest of the command (`imgrade train --ensemble 3`); flags, verbs and
    choices stay checked."""
    parser = build_parser()
    stack = [parser]
    while stack:
        current = stack.pop()
        current.allow_abbrev = False
        for action in current._actions:
            if lenient:
                action.required = False
            if isinstance(action, argparse._SubParsersAction):
                stack += list(action.choices.values())
    return parser


def _verbs_only(argv: tuple[str, ...]) -> bool:
    """Whether ``argv`` names only a verb (and action), as prose does: `imgrade train`."""
    parser = build_parser()
    for word in argv:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or word not in subparsers[0].choices:
            return False
        parser = subparsers[0].choices[word]
    return True


@contextlib.contextmanager
def heads_registered_in(path: Path):
    """The heads a page registers in its code (`register_head("name", "module:Class", ...)`), registered
    while its commands are checked: docs/extending.md trains the head it adds."""
    text = path.read_text(encoding="utf-8")
    added = [
        m.group(1)
        for m in re.finditer(r'register_head\(\s*"(\w+)",\s*"[\w.]+:\w+"', text)
        if m.group(1) not in task_names()
    ]
    for name in added:
        register_head(name, "imgrade.models.heads:ClassificationHead", "a head added in the docs")
    try:
        yield added
    finally:
        for name in added:
            unregister_head(name)


@pytest.mark.parametrize("command", COMMANDS, ids=_ids(COMMANDS, lambda c: f"{c.file}:{c.line}"))
def test_documented_command_parses(command):
    if _verbs_only(command.argv):
        return  # a verb named in prose; the verb exists
    errors, out = io.StringIO(), io.StringIO()
    try:
        with (
            contextlib.redirect_stderr(errors),
            contextlib.redirect_stdout(out),
            heads_registered_in(ROOT / command.file),
        ):
            checking_parser(lenient=command.inline).parse_args(list(command.argv))
    except UsageError as e:
        pytest.fail(f"{command.file}:{command.line}: `{command.text}` does not parse: {e}")
    except SystemExit as e:
        if e.code not in (0, None):  # 0: --help
            message = errors.getvalue().strip().splitlines()
            pytest.fail(
                f"{command.file}:{command.line}: `{command.text}` does not parse: {message[-1] if message else e.code}"
            )


def test_enough_commands_are_found():
    assert len(COMMANDS) >= MIN_COMMANDS, (
        f"only {len(COMMANDS)} imgrade commands found in {len(DOC_FILES)} files: is the extractor broken?"
    )
    found_in = {c.file for c in COMMANDS}
    assert {"README.md", "docs/training.md", "docs/deploy.md", "docs/distributed.md"} <= found_in
    assert any(c.argv[:1] == ("fewshot",) for c in COMMANDS if c.file == "README.md")
    torchrun = [c for c in COMMANDS if c.text.startswith("torchrun") and "\\" not in c.text]
    assert any("--batch-size" in c.argv and "512" in c.argv for c in torchrun), (
        "a continued torchrun command was not joined"
    )


@pytest.mark.parametrize("lenient", [False, True])
def test_a_wrong_flag_verb_or_choice_is_caught(lenient):
    bad = [
        ("train", "--data", "D", "--out", "R", "--epoch", "3"),  # an abbreviation
        ("train", "--out", "R", "--epochz", "3"),
        ("grade", "photos/"),
        ("predict", "RUN", "x.png", "--format", "xml"),
    ]
    for argv in bad:
        with pytest.raises(UsageError), contextlib.redirect_stderr(io.StringIO()):
            checking_parser(lenient).parse_args(list(argv))
        assert not _verbs_only(argv)
    with pytest.raises(UsageError), contextlib.redirect_stderr(io.StringIO()):
        checking_parser().parse_args(["train", "--ensemble", "3"])  # --out is required
    assert checking_parser(lenient=True).parse_args(["train", "--ensemble", "3"]).out is None
    assert _verbs_only(("data", "info")) and _verbs_only(("train",))


def test_a_page_registering_a_head_has_it_while_its_commands_are_checked():
    with heads_registered_in(ROOT / "docs" / "extending.md") as added:
        assert added == ["tempered"] and "tempered" in task_names()
    assert "tempered" not in task_names()


def test_the_extractor_reads_code_blocks_and_inline_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Run `imgrade evaluate RUN --data OTHER` or `imgrade.runtime.load_grader(path)`.\n"
        "```bash\n"
        "imgrade train --data D \\\n"
        "    --out R   # a comment\n"
        "python -m imgrade predict R photos/ | head -3\n"
        "```\n"
        "```python\n"
        "imgrade train --not-shell\n"
        "```\n"
    )
    got = [(c.line, c.argv) for c in extract_commands(page, root=tmp_path)]
    assert got == [
        (1, ("evaluate", "RUN", "--data", "OTHER")),
        (3, ("train", "--data", "D", "--out", "R")),
        (5, ("predict", "R", "photos/")),
    ]


@pytest.mark.parametrize("link", LINKS, ids=_ids(LINKS, lambda link: f"{link[0]}:{link[1]}"))
def test_relative_link_resolves(link):
    name, number, target = link
    path_part, _, anchor = target.partition("#")
    source = ROOT / name
    resolved = (source.parent / path_part).resolve() if path_part else source
    assert resolved.exists(), f"{name}:{number}: link {target} points to {resolved}, which does not exist"
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors(resolved), f"{name}:{number}: link {target}: {resolved.name} has no heading #{anchor}"


def test_links_are_found():
    assert any(target == "docs/img/demo_scatter.png" for name, _, target in LINKS if name == "README.md")
    linked = {target for name, _, target in LINKS if name == "README.md"}
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, f"README.md does not link {sorted(pages - linked)}"


def test_readme_is_a_short_guide():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move details into docs/"


def test_result_pages_name_no_path_of_the_machine_that_measured():
    pages = sorted((Path(__file__).parents[2] / "docs" / "results").glob("*.md"))
    assert pages
    for page in pages:
        text = page.read_text()
        assert not re.search(r"(?<![\w.])/(work|tmp|root|home|Users)/", text), page.name
