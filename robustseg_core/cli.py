"""Console scripts: one line per expected error, a traceback only for the unexpected.

A module's ``main(argv)`` returns results for Python callers and raises on errors; the console
script built from it with :func:`console_script` runs it and returns the exit status:

* 0 on success;
* a ``UserError`` (the project's own errors) prints ``<command>: error: <message>`` and returns its
  ``exit_status`` (2 for usage and configuration errors, 1 otherwise);
* an ``OSError`` the user can cause (a missing, unreadable, full or read-only path) prints
  ``<command>: error: <path>: <reason>`` and returns 1;
* Ctrl-C prints ``<command>: interrupted`` and returns 130;
* anything else propagates with its traceback: it is a bug.

``--debug`` on the command line (before any ``--ros-args``) or ``ROBUSTSEG_DEBUG=1`` in the environment
re-raises expected errors too, so their traceback shows.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys
from typing import Any, Callable, Sequence

from .errors import Interrupted, UserError

DEBUG_FLAG = "--debug"
DEBUG_ENVIRONMENT = "ROBUSTSEG_DEBUG"
#: Arguments from the first of these on belong to ROS (or the program's own pass-through) and are left alone.
PASS_THROUGH_MARKERS = ("--ros-args", "--")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def split_debug_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` (looked for before any ``--ros-args`` or ``--``) and whether it was there."""
    argv = list(argv)
    end = next((index for index, item in enumerate(argv) if item in PASS_THROUGH_MARKERS), len(argv))
    debug = DEBUG_FLAG in argv[:end]
    return [item for index, item in enumerate(argv) if index >= end or item != DEBUG_FLAG], debug


def split_ros_args(argv: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(the command's own arguments, the rclpy arguments from ``--ros-args`` on) of ``argv`` (default
    ``sys.argv[1:]``): the command's parser never sees the second part, whose ``-p name:=value`` or
    ``-r from:=to`` it would take for options of its own."""
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    return argv[:end], argv[end:]


def os_error_message(error: OSError) -> str:
    """``<path>: <reason>`` (both paths of a rename), or the error's text when it names no path."""
    reason = error.strerror or str(error)
    if error.filename is None:
        return reason
    paths = f"{error.filename}" + (f" -> {error.filename2}" if error.filename2 is not None else "")
    return f"{paths}: {reason}"


def error_line(prog: str, error: BaseException) -> str:
    """The one line a console script prints for an expected error (line breaks in a message become spaces)."""
    if isinstance(error, Interrupted):
        return f"{prog}: interrupted: {' '.join(str(error).split())}"
    text = os_error_message(error) if isinstance(error, OSError) else str(error)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        # torch re-raises a DataLoader worker's error with the worker's traceback as its message: its last line is
        # "module.ErrorType: the message"
        text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return f"{prog}: error: {' '.join(text.split())}"


def _terminate_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _end_sigterm_like_ctrl_c() -> None:
    """SIGTERM (``docker stop``, systemd) raises KeyboardInterrupt, unless a handler is installed already."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)


def run_command(prog: str, main: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` (default ``sys.argv[1:]``) as the console script ``prog``; returns the exit status.

    Run from the command line (``argv`` None), SIGTERM (``docker stop``, systemd) ends it like Ctrl-C, unless
    ``main`` installs its own handler, and once ``main`` is done Ctrl-C no longer cuts the interpreter's exit."""
    from_shell = argv is None
    argv, debug = split_debug_flag(sys.argv[1:] if argv is None else argv)
    debug = debug or os.environ.get(DEBUG_ENVIRONMENT, "") not in ("", "0")
    if from_shell:
        _end_sigterm_like_ctrl_c()
    try:
        return _run(prog, main, argv, debug)
    finally:
        if from_shell:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _run(prog: str, main: Callable[[list[str]], Any], argv: list[str], debug: bool) -> int:
    try:
        main(argv)
    except (UserError, OSError) as error:
        if debug:
            raise
        print(error_line(prog, error), file=sys.stderr, flush=True)
        return error.exit_status if isinstance(error, UserError) else 1
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return Interrupted.exit_status
    return 0


def start(prog: str, module: str) -> int:
    """Import ``module`` and run its console script ``cli``: the entry point of ``prog`` (setup.py). Ctrl-C or
    SIGTERM during the import (torch takes seconds) prints one line and returns 130, as they do later."""
    _end_sigterm_like_ctrl_c()
    try:
        command = importlib.import_module(module).cli
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return Interrupted.exit_status
    return command()


def entry_points(modules: dict[str, str]) -> Callable[[str], Callable[[], int]]:
    """A module ``__getattr__`` (PEP 562) for setup.py's entry points: attribute ``prog`` is a function that
    ``start``s ``modules[prog]``, so nothing heavy is imported before Ctrl-C can be caught."""

    def attribute(name: str) -> Callable[[], int]:
        if name not in modules:
            raise AttributeError(f"no console script {name!r}")
        return functools.partial(start, name, modules[name])

    return attribute


def console_script(main: Callable[[list[str]], Any], prog: str) -> Callable[..., int]:
    """The console script ``prog`` of ``main``: ``entry_point(argv=None) -> exit status`` (setuptools passes
    the status to ``sys.exit``)."""

    def entry_point(argv: Sequence[str] | None = None) -> int:
        return run_command(prog, main, argv)

    entry_point.__doc__ = f"Console script {prog} of {main.__module__}.main; returns the exit status."
    return entry_point
