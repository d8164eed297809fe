"""The README stays a five-minute read and the docs site stays true: docs/cli.md equals what the
argparse parsers print, the site builds with every link and anchor resolved, and the README's
test command is the one CI runs (issue 24)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_reference",
                                                  ROOT / "docs" / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_equals_the_parsers():
    text = _generator().render()
    assert (ROOT / "docs" / "cli.md").read_text(encoding="utf-8") == text, (
        "docs/cli.md is stale: run python docs/gen_cli_reference.py")


def test_cli_reference_covers_every_command_and_flag():
    from cli import SUBCOMMANDS
    from cli.compare import build_parser

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name in SUBCOMMANDS:
        assert f"## `main.py {name}`" in text, name
    for action in build_parser()._actions:  # every flag of the comparison, as --help shows it
        for flag in action.option_strings:
            assert flag in text, flag
    assert "### `main.py prepare crop`" in text  # nested subcommands get their own section


def test_caught_parser_is_the_one_main_parses_with():
    """A subcommand without build_parser: the page shows the parser its main builds."""
    gen = _generator()
    parser = gen._parser_of("search.cli:recommend_main")
    assert parser.prog == "main.py recommend"
    assert {"--embedder", "-k", "--cross-modal"} <= set(parser._option_string_actions)


def test_readme_is_short_and_links_into_docs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", text)
    assert len(set(links)) >= 10
    for link in links:
        assert (ROOT / link).is_file(), link


def test_readme_test_command_is_what_ci_runs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Test\n", 1)[1]
    command = section.split("```", 2)[1].strip()
    assert command == "python -m pytest -q"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip().splitlines()
    assert ci[-1] == command
    assert any(line.startswith("NO_MKDOCS_2_WARNING=1 python -m mkdocs build --strict")
               for line in ci)


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="pip install -r requirements.txt installs mkdocs-material")
    pytest.importorskip("material", reason="pip install -r requirements.txt installs mkdocs-material")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                        str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    for page in ("index", "cli", "analysis", "benchmarks", "models"):
        html = tmp_path / "site" / ("index.html" if page == "index" else f"{page}/index.html")
        assert html.stat().st_size > 5000, page
