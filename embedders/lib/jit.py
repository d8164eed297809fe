"""librosa, with numba's on-disk JIT cache in the project's cache folder.

Some librosa functions (e.g. ``localmax``, reached by ``chroma_stft`` through ``estimate_tuning``)
are compiled by numba with ``cache=True``; by default the compiled code is written beside the
installed package. A damaged cache there once made every later run die with a segmentation
fault, and deleting it is not something a user should have to find. So the cache lives under
``<cache>/numba`` (:func:`embedders.lib.weights.cache_dir`), where the project's other cached
files are, unless the user set ``NUMBA_CACHE_DIR`` themselves. numba reads the variable when it is
first imported: call :func:`import_librosa` instead of ``import librosa``.
"""
from __future__ import annotations

import os

from .weights import cache_dir


def import_librosa():
    """The ``librosa`` module, numba's cache folder set first (see the module docstring)."""
    if "NUMBA_CACHE_DIR" not in os.environ:
        folder = cache_dir("numba")
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(folder)
    import librosa
    return librosa
