"""argparse, plainer: one-line usage errors with a did-you-mean, and defaults in the help."""

from __future__ import annotations

import argparse
import difflib

EXIT_STATUS = """\
exit status (every verb):
  0    done (predict: every photo graded)
  1    done, but some photos could not be graded: their rows say why in the error column (predict)
  2    stopped: a bad flag, or an input, model or config it cannot use (one line on stderr says which)
  130  interrupted (Ctrl-C)
  141  stdout closed by its reader (imgrade predict ... | head)
  143  terminated (SIGTERM; export, calibrate, evaluate and predict remove what they were writing)"""
"""Stated in ``imgrade --help`` and in the help of the verbs whose status can be 1."""


class UsageError(Exception):
    """A command line that does not parse; ``imgrade.cli.main`` prints it as one line, exit 2."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{prog}: error: {message}")
        self.prog = prog

    def hint(self) -> str:
        return f"see `{self.prog} --help`"


class HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions to the terminal but keeps indented lines (examples) as written; adds
    "(default: X)" to an option whose help does not say its default already."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.strip("\n").split("\n\n")
        return "\n\n".join(
            "\n".join(indent + line for line in p.splitlines())
            if any(line.startswith(" ") for line in p.splitlines())
            else super(HelpFormatter, self)._fill_text(p, width, indent)
            for p in paragraphs
        )

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or "default" in text
        ):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (a ``UsageError``) that suggests the closest
    verb, value or flag."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(self.prog, message)

    def _check_value(self, action: argparse.Action, value) -> None:
        if action.choices is not None and value not in action.choices:
            names = [str(c) for c in action.choices]
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r}{did_you_mean(str(value), names)} (choose from {', '.join(names)})"
            )

    def parse(self, argv: list[str]) -> argparse.Namespace:
        """``parse_args``, except that an unknown flag is named with the closest one of its verb."""
        args, extras = self.parse_known_args(argv)
        if extras:
            leaf = leaf_parser(self, args)
            flags = [s for action in leaf._actions for s in action.option_strings]
            hints = "".join(did_you_mean(e.split("=")[0], flags) for e in extras if e.startswith("-"))
            raise UsageError(leaf.prog, f"unrecognized arguments: {' '.join(extras)}{hints}")
        return args


def did_you_mean(word: str, options: list[str]) -> str:
    """``": did you mean 'x'?"`` for the option closest to ``word``, or "" when none is close.

    >>> did_you_mean("trian", ["train", "evaluate"])
    ": did you mean 'train'?"
    >>> did_you_mean("zzz", ["train"])
    ''
    """
    bare = {option.lstrip("-"): option for option in options}  # so "--" alone makes no flag look close
    close = difflib.get_close_matches(word.lstrip("-"), list(bare), n=1)
    return f": did you mean {bare[close[0]]!r}?" if close else ""


def leaf_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub-)parser of the verb ``args`` chose: ``imgrade data info`` for data info."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(args, action.dest, None)
            if name in action.choices:
                return leaf_parser(action.choices[name], args)
    return parser


def add_verb(sub, name: str, summary: str, description: str, examples: str, **kwargs) -> argparse.ArgumentParser:
    """A sub-command with a one-line summary (in `imgrade --help`), a description and examples."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines())
    p = sub.add_parser(name, help=summary, description=description, epilog=epilog, **kwargs)
    add_output_flags(p, top=False)
    return p


def add_output_flags(p: argparse.ArgumentParser, *, top: bool) -> None:
    """-q, -v and --debug, before the verb or after it (a verb's copy leaves the first one's value alone)."""
    unset = {} if top else {"default": argparse.SUPPRESS}
    g = p.add_argument_group("output") if not top else p
    g.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=-1,
        help="print warnings and errors only",
        **unset,
    )
    g.add_argument(
        "-v", "--verbose", dest="verbosity", action="store_const", const=1, help="print debugging detail too", **unset
    )
    g.add_argument("--debug", action="store_true", help="show the full traceback on errors", **unset)
