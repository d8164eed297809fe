"""Exit statuses and the one-line error of every command (``main.py`` and its subcommands).

Every command reports a problem the same way: one line on stderr, ``PROG: error: REASON``, and
an exit status saying what kind of problem it was (:data:`EXIT_USAGE`: nothing was computed;
:data:`EXIT_FAILED`: the work itself failed; :data:`EXIT_INTERRUPTED`: finished work is kept).
"""
from __future__ import annotations

import argparse
import sys

#: The run finished (files skipped for bad content do not fail it).
EXIT_OK = 0
#: The work itself failed (a full disk, a server that does not answer).
EXIT_FAILED = 1
#: A wrong flag, value, file or folder: nothing was computed.
EXIT_USAGE = 2
#: Ctrl-C or SIGTERM (128 + SIGINT): finished work is kept; the same command resumes.
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A wrong flag, value, file or folder: reported in one line, exit status 2.

    Parameters
    ----------
    message : str
    prog : str, optional
        The command the message belongs to (set by :class:`OneLineParser`, whose subcommands
        each have their own); :func:`print_error` prefers it to the caller's.
    """

    def __init__(self, message: str, *, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises :class:`UsageError` instead of printing its usage
    block and exiting, so the command reports the problem in its one line."""

    def error(self, message):
        raise UsageError(message, prog=self.prog)


def first_line(message: object) -> str:
    """The first non-empty line of ``message`` (an exception's text may run over several)."""
    lines = [line for line in str(message).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


def print_error(prog: str, message: object, *, kind: str = "error") -> None:
    """Print ``PROG: KIND: MESSAGE`` (its first line) on stderr; a :class:`UsageError` that
    names its own command is printed under that name."""
    prog = getattr(message, "prog", None) or prog
    print(f"{prog}: {kind}: {first_line(message)}", file=sys.stderr)


def fail(prog: str, message: object, status: int, *, kind: str = "error") -> int:
    """:func:`print_error`, then return ``status`` (``return fail(...)`` in a command)."""
    print_error(prog, message, kind=kind)
    return status


__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "OneLineParser",
           "UsageError", "fail", "first_line", "positive_int", "print_error"]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (else argparse's one-line usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def program_name(subcommand: str = "") -> str:
    """What usage lines call the tool: ``embcompare`` when run as the installed console command,
    else ``main.py`` (a checkout, and the generated CLI reference); ``subcommand`` appended."""
    from pathlib import Path
    base = "embcompare" if Path(sys.argv[0]).name == "embcompare" else "main.py"
    return f"{base} {subcommand}" if subcommand else base
