"""numba's JIT cache lives in the project's cache folder, not beside the installed librosa
(issue 25: a damaged cache there made every later run crash)."""
import os
import subprocess
import sys

from conftest import ROOT


def test_librosa_is_imported_with_numba_caching_in_the_user_cache(tmp_path):
    code = (f"import os, sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from embedders.lib.jit import import_librosa\n"
            "import_librosa(); import numba\n"
            "print(os.environ['NUMBA_CACHE_DIR']); print(numba.config.CACHE_DIR)")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["EMBCOMPARE_CACHE_DIR"] = str(tmp_path / "cache")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(tmp_path / "cache" / "numba")] * 2
    # a folder the user chose is kept
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.split() == [str(tmp_path / "mine")] * 2
