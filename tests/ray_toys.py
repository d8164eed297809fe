"""A toy embedder whose worker dies on a marked file, for the Ray engine's fault tests.

A file whose name starts with ``crash`` ends the process (``os._exit``, as a kill or an
out-of-memory would) the first time any worker meets it; the marker that records this lives in
the folder named by ``CRASH_DIR_ENV``, so a restarted worker, a new process, sees it.
"""
import os
from pathlib import Path

from embedders import register
from toy_embedders import ToyAudio

CRASH_DIR_ENV = "TOY_CRASH_DIR"


@register
class CrashOnceAudio(ToyAudio):
    name = "toy-crash-audio"
    description = "toy-audio whose worker dies the first time it meets a crash* file (tests only)"

    def _embed_file(self, path):
        if Path(path).name.startswith("crash"):
            marker = Path(os.environ[CRASH_DIR_ENV]) / (Path(path).name + ".crashed")
            if not marker.exists():
                marker.touch()
                os._exit(1)
        return super()._embed_file(path)


@register
class SlowAudio(ToyAudio):
    name = "toy-slow-audio"
    description = ("toy-audio taking $TOY_SLOW_S seconds (default 0.5) a file, so a test can act "
                   "mid-run (tests only)")

    def _embed_file(self, path):
        import time
        time.sleep(float(os.environ.get("TOY_SLOW_S", "0.5")))
        return super()._embed_file(path)
