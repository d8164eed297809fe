"""Write ``docs/cli.md``, the command-line reference, from the argparse parsers themselves, so the
page cannot drift from ``--help``: ``python docs/gen_cli_reference.py`` (``--check`` exits 1 when
the committed page differs; ``tests/test_docs.py`` checks the same).

The comparison's parser is :func:`cli.compare.build_parser`; each entry of
:data:`cli.SUBCOMMANDS` gives its module's ``build_parser()`` when it has one, else the parser its
``main`` function builds, caught at ``parse_args(["--help"])`` before anything runs.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "cli.md"
#: help is wrapped to this width whatever the terminal (argparse reads $COLUMNS)
WIDTH = "100"


class _Caught(BaseException):
    """Raised from a patched ``parse_args``: carries the parser out of a subcommand's main
    (a BaseException, so the subcommand's own ``except`` clauses let it through)."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__()
        self.parser = parser


def _parser_of(target: str) -> argparse.ArgumentParser:
    module_name, _, func = target.partition(":")
    module = importlib.import_module(module_name)
    if callable(getattr(module, "build_parser", None)):
        return module.build_parser()

    def catch(self, *args, **kwargs):
        raise _Caught(self)

    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        getattr(module, func)(["--help"])
    except _Caught as caught:
        return caught.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise RuntimeError(f"{target} built no argparse parser")


def _sections(parser: argparse.ArgumentParser, title: str, level: int = 2) -> list[str]:
    out = [f"{'#' * level} `{title}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:  # nested subcommands (prepare transcribe, ...)
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _sections(sub, f"{title} {name}", level + 1)
    return out


def render() -> str:
    """The whole page, as text."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from cli import SUBCOMMANDS
    from cli.compare import build_parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return _page(build_parser(), SUBCOMMANDS)
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


def _page(compare_parser: argparse.ArgumentParser, subcommands: dict[str, str]) -> str:
    lines = ["# Command-line reference", "",
             "Generated from the argparse parsers by `python docs/gen_cli_reference.py`; do not "
             "edit (`tests/test_docs.py` fails when it is stale). `embcompare` (after "
             "`pip install .`) is the same as `python main.py`.", ""]
    lines += _sections(compare_parser, "main.py")
    for name, target in subcommands.items():
        lines += _sections(_parser_of(target), f"main.py {name}")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is stale: run python docs/gen_cli_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
