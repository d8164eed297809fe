"""The package layout holds: imports run only downward, no package reaches into another's private
names, and finding or constructing an embedder imports no torch.

Ranks: ``common`` 0, ``embedders`` 1, ``collection`` and ``prepare`` 2, ``analysis`` 3,
``search`` 4, ``cli`` 5. A module may import its own package and packages of lower rank, never
higher, at the top or inside a function alike. (Tests, ``bench/`` and ``main.py`` sit outside
the packages and may import anything.)
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

RANK = {"common": 0, "embedders": 1, "collection": 2, "prepare": 2, "training": 2, "analysis": 3,
        "search": 4, "cli": 5, "probe": 4}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(dotted: str, root: Path = ROOT) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def package_modules() -> list[Path]:
    return sorted(p for pkg in RANK for p in (ROOT / pkg).rglob("*.py"))


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[int, str, str | None]]:
    """Every import in a module (top level or nested) as ``(line, module, name)``: ``name`` is
    the imported name of a ``from`` import, else None. Relative imports are made absolute."""
    own = _module_name(path, root)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            found += [(node.lineno, module, alias.name) for alias in node.names]
    return found


def private_attribute_uses(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """``alias._name`` where ``alias`` is a module of another package bound by an import."""
    own_pkg = _module_name(path, root).split(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    aliases[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for a in node.names:
                if _is_module(f"{node.module}.{a.name}", root):
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    uses = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and _is_private(node.attr)):
            target = aliases[node.value.id]
            if target.split(".")[0] in RANK and target.split(".")[0] != own_pkg:
                uses.append((node.lineno, f"{target}.{node.attr}"))
    return uses


def test_every_package_is_scanned():
    names = {_module_name(p) for p in package_modules()}
    for module in ("common.progress", "embedders.base", "embedders.lib.openl3_net",
                   "embedders.lib.clamp2_net", "collection.pipeline", "analysis.compare",
                   "cli.compare", "cli"):
        assert module in names


def upward_imports(path: Path, root: Path = ROOT) -> list[str]:
    """The imports of a higher-ranked package in one module."""
    own = _module_name(path, root).split(".")[0]
    return [f"line {line}: {module}" for line, module, _ in imports_of(path, root)
            if module.split(".")[0] in RANK and RANK[module.split(".")[0]] > RANK[own]]


def private_imports(path: Path, root: Path = ROOT) -> list[str]:
    """The private modules or names of another package that one module imports or uses."""
    own = _module_name(path, root).split(".")[0]
    bad = []
    for line, module, name in imports_of(path, root):
        if module.split(".")[0] not in RANK or module.split(".")[0] == own:
            continue
        if any(_is_private(part) for part in module.split(".")) or (name and _is_private(name)):
            bad.append(f"line {line}: {module}" + (f" import {name}" if name else ""))
    return bad + [f"line {line}: {use}" for line, use in private_attribute_uses(path, root)]


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_only_downward(path):
    own = _module_name(path).split(".")[0]
    assert not upward_imports(path), \
        f"{own} (rank {RANK[own]}) imports a higher layer: {upward_imports(path)}"


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_names_of_another_package(path):
    assert not private_imports(path), \
        f"{path.relative_to(ROOT)} uses private names of another package: {private_imports(path)}"


def test_the_checks_catch_violations(tmp_path):
    """The scanner itself, on a made-up tree: upward, relative, nested and private imports."""
    for pkg in ("common", "embedders", "embedders/lib", "collection", "cli"):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "common" / "fsutil.py").write_text("def _umask(): pass\n")
    probe = tmp_path / "embedders" / "lib" / "probe.py"
    probe.write_text("from ..base import Embedder\nimport analysis.compare\n"
                     "from collection.store import _private\nfrom common import fsutil\n"
                     "from ._mine import x\n"
                     "def g():\n    from cli import compare\n    return fsutil._umask()\n")
    found = imports_of(probe, tmp_path)
    assert (1, "embedders.base", "Embedder") in found
    assert (5, "embedders.lib._mine", "x") in found
    assert upward_imports(probe, tmp_path) == ["line 2: analysis.compare", "line 3: collection.store",
                                               "line 7: cli"]
    assert private_imports(probe, tmp_path) == ["line 3: collection.store import _private",
                                                "line 8: common.fsutil._umask"]


def test_discovery_and_construction_import_no_torch():
    """Finding every embedder and constructing the model ones must stay cheap: no module of
    ``embedders.lib`` that pulls torch (the networks) is imported before ``load()``."""
    code = (
        "import sys\n"
        "import embedders\n"
        "names = embedders.available_embedders()\n"
        "assert {'openl3', 'clamp2'} <= set(names), names\n"
        "heavy = ('torch', 'h5py', 'embedders.lib.openl3_net', 'embedders.lib.clamp2_net',"
        " 'embedders.lib.winograd')\n"
        "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n"
        "for name in names:\n"
        "    embedders.get_embedder(name)\n"
        "embedders.get_embedder('openl3', input_repr='mel128', embedding_size=512)\n"
        "embedders.get_embedder('clamp2', batch_size=2)\n"
        "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# -- no import cycles inside a package ------------------------------------------------------------

#: Edges known to close a cycle today, each to be removed by the change that ends it.
CYCLE_EXEMPT: set[tuple[str, str]] = set()


def module_graph(root: Path = ROOT, paths: list[Path] | None = None) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (any import :func:`imports_of`
    finds, top level or nested; ``from pkg import mod`` counts as importing ``pkg.mod``)."""
    paths = package_modules() if paths is None else paths
    graph: dict[str, set[str]] = {}
    for path in paths:
        own = _module_name(path, root)
        targets = set()
        for _, module, name in imports_of(path, root):
            if module.split(".")[0] != own.split(".")[0]:
                continue
            target = f"{module}.{name}" if name and _is_module(f"{module}.{name}", root) else module
            if target != own and (own, target) not in CYCLE_EXEMPT:
                targets.add(target)
        graph[own] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt in graph and state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if state.get(start) is None:
            found = visit(start)
            if found:
                return found
    return None


@pytest.mark.parametrize("package", sorted(RANK))
def test_no_import_cycles_inside_a_package(package):
    graph = {m: t for m, t in module_graph().items() if m.split(".")[0] == package}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle in {package}: {' -> '.join(cycle)}"


def test_the_cycle_check_finds_cycles(tmp_path):
    pkg = tmp_path / "collection"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from collection import c\n")
    (pkg / "c.py").write_text("import collection.a\n")
    graph = module_graph(tmp_path, sorted(pkg.glob("*.py")))
    assert graph["collection.b"] == {"collection.c"}
    assert find_cycle(graph) == ["collection.a", "collection.b", "collection.c", "collection.a"]
    (pkg / "c.py").write_text("import numpy\n")
    assert find_cycle(module_graph(tmp_path, sorted(pkg.glob("*.py")))) is None
