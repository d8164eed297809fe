"""The command line as a library: ``main.py`` calls :func:`main`, a notebook can too.

``python main.py [FLAGS]`` runs the comparison (the original flags, :mod:`cli.compare`).
Capabilities add subcommands (``python main.py NAME ...``) by adding an entry to
:data:`SUBCOMMANDS`: the name, and the ``module:function`` that takes the remaining arguments
and returns an exit status.
"""
from __future__ import annotations

import importlib
import signal
import sys

from common.exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, fail

from .compare import list_embedders, parse_args, run

#: Subcommand name -> "module:function(argv) -> exit status".
SUBCOMMANDS: dict[str, str] = {
    "prepare": "prepare.cli:main",
    "train": "cli.train:main",
    "index": "search.cli:index_main",
    "recommend": "search.cli:recommend_main",
    "serve": "search.cli:serve_main",
    "probe": "probe.cli:main",
}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run one command line; returns the exit status (0 ok, 1 failed, 2 usage, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if hasattr(signal, "SIGTERM"):
        try:  # SIGTERM ends the run like Ctrl-C: the message, the cache left valid
            signal.signal(signal.SIGTERM, _raise_interrupt)
        except ValueError:  # not the main thread (e.g. called from a notebook worker)
            pass
    if argv[:1] == ["--version"]:
        from common.version import version
        print(f"embcompare {version()}")
        return EXIT_OK
    try:
        if argv and argv[0] in SUBCOMMANDS:
            module, _, func = SUBCOMMANDS[argv[0]].partition(":")
            return getattr(importlib.import_module(module), func)(argv[1:])
        args = parse_args(argv)
        if args.list_embedders:
            print(list_embedders())
            return EXIT_OK
        return run(args)
    except UsageError as exc:
        return fail("main.py", f"{exc} (see --help)", EXIT_USAGE)
    except KeyboardInterrupt:
        print("\ninterrupted: finished files are saved in the embeddings cache; run the same "
              "command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


__all__ = ["SUBCOMMANDS", "UsageError", "main"]
