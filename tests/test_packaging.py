"""The package installs: pyproject.toml agrees with requirements.txt, names every package of the
layout, and builds a wheel whose ``embcompare`` command is the CLI."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement

from conftest import ROOT
from test_layout import RANK


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirements_txt() -> dict:
    out = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[req.name.lower().replace("_", "-")] = str(req.specifier)
    return out


def _pyproject_requirements() -> dict:
    project = _pyproject()["project"]
    lines = list(project["dependencies"])
    for extra, reqs in project["optional-dependencies"].items():
        lines += [r for r in reqs if not r.startswith("embcompare[")]
    out = {}
    for line in lines:
        req = Requirement(line)
        out[req.name.lower().replace("_", "-")] = str(req.specifier)
    return out


def test_pyproject_pins_equal_requirements_txt():
    assert _pyproject_requirements() == _requirements_txt()


def test_pyproject_names_every_package_of_the_layout():
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(p.rstrip("*") for p in include) == sorted(RANK)


def test_version_flag(capsys):
    from cli import main
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"embcompare {_pyproject()['project']['version']}"


@pytest.mark.slow
def test_wheel_holds_every_package_and_the_command(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in RANK:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel, = (tmp_path / "dist").glob("embcompare-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in RANK:
        assert f"{pkg}/__init__.py" in names, pkg
    assert "embedders/lib/openl3_net.py" in names  # subpackages too
    assert "search/page/index.html" in names  # the serve page's static files
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "embcompare = cli:main" in text
