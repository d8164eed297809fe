"""The package installs: pyproject.toml agrees with requirements.txt, names every package of the
layout, and builds a wheel whose ``embcompare`` command is the CLI."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

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


def _source_copy(tmp_path) -> "Path":
    """What `pip install .` reads from a checkout, copied (no build folders, no caches)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in RANK:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return src


@pytest.mark.slow
def test_wheel_holds_every_package_and_the_command(tmp_path):
    src = _source_copy(tmp_path)
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


@pytest.mark.slow
def test_pip_install_in_a_fresh_venv_gives_a_working_command(tmp_path):
    """`pip install .` into a new virtual environment, offline: the dependencies come from this
    interpreter's site-packages (--system-site-packages), the build backend too (setuptools,
    --no-build-isolation); the command runs, and the package it imports is the installed copy."""
    pytest.importorskip("setuptools")
    src, venv = _source_copy(tmp_path), tmp_path / "venv"
    # --without-pip: Python 3.11's venv would seed its own setuptools 65 (no bdist_wheel
    # without `wheel`), shadowing the setuptools>=68 the build needs; pip and setuptools come
    # from the system site-packages instead
    r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                        str(venv)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", str(src)],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    shutil.rmtree(src)  # nothing may still come from the copy it was built from
    r = subprocess.run([str(venv / "bin" / "embcompare"), "--help"], capture_output=True,
                       text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("usage: embcompare"), r.stdout[:300]
    r = subprocess.run([str(py), "-c", "import cli, collection, embedders; "
                        "print(cli.__file__); print(embedders.__file__)"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    for line in r.stdout.split():
        path = Path(line).resolve()
        assert venv.resolve() in path.parents and "site-packages" in path.parts, path
        assert ROOT.resolve() not in path.parents, path
