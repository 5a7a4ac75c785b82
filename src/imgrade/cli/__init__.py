"""The command line: parse, call the verb's function in the pipeline, print, exit. No torch math.

``parser.py`` holds the grammar (run flags in ``run_flags.py``, their help read from config/sections.py),
``commands.py`` one function per verb; this module sets up logging, runs the verb and turns
user errors into one line on stderr and exit status 2. The exit statuses (``argparser.EXIT_STATUS``,
shown by ``imgrade --help``): 0 done, 1 done but some photos could not be graded (a verb's own
return value), 2 a usage, input, model or config error, 130 Ctrl-C, 141 a closed stdout, 143
SIGTERM (``export``, ``calibrate`` and ``evaluate`` only; other verbs keep the default, an instant stop).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Callable

from imgrade.cli.argparser import UsageError, leaf_parser
from imgrade.cli.commands import (
    cmd_calibrate,
    cmd_compare,
    cmd_data_download,
    cmd_data_info,
    cmd_data_synth,
    cmd_demo,
    cmd_evaluate,
    cmd_export,
    cmd_fewshot,
    cmd_model_summary,
    cmd_predict,
    cmd_serve,
    cmd_suggest,
    cmd_train,
)
from imgrade.cli.extras import missing_extra
from imgrade.cli.parser import EXAMPLES, build_parser
from imgrade.core.allocator import reexec_with_tcmalloc, started_as_imgrade
from imgrade.core.cpu import cpu_has_bf16
from imgrade.core.errors import ImgradeError
from imgrade.core.logs import setup_logging
from imgrade.core.threads import settle_wait_policy

__all__ = ["COMMANDS", "EXAMPLES", "build_parser", "main"]

# verb (and action) -> the function that runs it; each calls the same-named pipeline function
COMMANDS: dict[tuple[str, ...], Callable] = {
    ("train",): cmd_train,
    ("calibrate",): cmd_calibrate,
    ("compare",): cmd_compare,
    ("fewshot",): cmd_fewshot,
    ("evaluate",): cmd_evaluate,
    ("predict",): cmd_predict,
    ("suggest",): cmd_suggest,
    ("export",): cmd_export,
    ("serve",): cmd_serve,
    ("data", "info"): cmd_data_info,
    ("data", "download"): cmd_data_download,
    ("data", "synth"): cmd_data_synth,
    ("model", "summary"): cmd_model_summary,
    ("demo",): cmd_demo,
}
COMPUTING = {
    ("train",),
    ("calibrate",),
    ("compare",),
    ("fewshot",),
    ("evaluate",),
    ("predict",),
    ("suggest",),
    ("demo",),
}
"""Verbs that compute hard with torch: they announce themselves to other imgrade commands, and their
OpenMP wait policy is chosen from the load (``imgrade.core.threads.settle_wait_policy``)."""
UNWIND_ON_SIGTERM = {("export",), ("calibrate",), ("evaluate",), ("predict",), ("suggest",)}
"""Verbs that stop on SIGTERM as on Ctrl-C, unwinding, so the file they were writing is removed
(``imgrade.core.io.atomic_write``) rather than left as a temporary file. Training keeps the
default: under torchrun an unwinding worker could wait for ever on peers that are gone, and a
killed run is resumed (its temporary files go when it resumes)."""


class Terminated(BaseException):
    """SIGTERM arrived during a verb of ``UNWIND_ON_SIGTERM``; like KeyboardInterrupt, no ``except
    Exception`` stops it on its way out."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_help()
        return 0
    try:
        args = parser.parse(argv)
    except UsageError as e:
        print(f"{e}\n{e.hint()}", file=sys.stderr)
        return 2
    key = tuple(v for v in (args.verb, getattr(args, "data_verb", None), getattr(args, "model_verb", None)) if v)
    command = COMMANDS.get(key)
    if command is None:  # `imgrade data`: which action?
        leaf_parser(parser, args).print_help()
        return 0
    setup_logging(args.verbosity or 0)  # None: neither -q nor -v
    if from_command_line and started_as_imgrade() and not may_run_openvino(args, key):
        reexec_with_tcmalloc()  # comes back only where tcmalloc is not wanted, not installed or already in
    if key in COMPUTING:
        settle_wait_policy()  # before torch loads OpenMP, which reads it once
    return _run(command, args, key)


def may_run_openvino(args, key: tuple[str, ...]) -> bool:
    """Whether this command may grade with OpenVINO, which aborts beside tcmalloc: ``--runtime
    openvino``; or, on a CPU with bf16 units and OpenVINO installed, ``--runtime auto`` with an .onnx
    file, and ``export`` (its bf16 check). Nothing is imported to tell."""
    runtime = getattr(args, "runtime", None)
    if runtime == "openvino":
        return True
    if not cpu_has_bf16() or importlib.util.find_spec("openvino") is None:
        return False
    if key == ("export",):
        return not args.int8
    model = getattr(args, "model", None) or getattr(args, "run", None)
    return runtime == "auto" and str(model).lower().endswith(".onnx")


def _run(command: Callable, args, key: tuple[str, ...]) -> int:
    """Run the verb; user errors, and a missing optional extra, become one line and exit status 2."""
    try:
        with _sigterm_unwinds(key in UNWIND_ON_SIGTERM):
            return command(args)
    except ImgradeError as e:
        if args.debug:
            raise
        print(f"imgrade: error: {' '.join(str(e).split())}", file=sys.stderr)  # always one line
        return 2
    except ModuleNotFoundError as e:  # an optional extra is not installed: say which
        line = missing_extra(e, " ".join(key))
        if line is None or args.debug:
            raise
        print(line, file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`imgrade predict ... | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(
            "imgrade: interrupted"
            + ("; continue with `imgrade train --resume --out RUN`" if key == ("train",) else ""),
            file=sys.stderr,
        )
        return 130
    except Terminated:
        print("imgrade: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM


@contextlib.contextmanager
def _sigterm_unwinds(wanted: bool):
    """For the block, SIGTERM raises :class:`Terminated` in the main thread (only it receives signals)."""
    if not wanted or threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
