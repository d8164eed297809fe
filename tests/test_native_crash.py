"""A file whose processing kills the process (a native crash) is retried alone in a child
process and then skipped with the signal named; the collection finishes (issue 25)."""
import csv
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, write_wav

from collection.crashes import InFlight

SCRIPT = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
import toy_embedders, main
if __name__ == "__main__":  # a spawned child imports this file again
    sys.exit(main.main(sys.argv[1:]))
"""


def _collection(root):
    for label in ("jazz", "rock"):
        for i in range(3):
            write_wav(root / label / f"{label}_{i}.wav", freq=220.0 * (i + 1))
    write_wav(root / "jazz" / "crash_me.wav", freq=330.0)  # its own content: no cache hit


def _run(tmp_path, *extra):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests")))
    return subprocess.run([sys.executable, str(script), "--dataset", str(tmp_path / "data"),
                           "--embedders", "toy-segfault-audio", "--emb-dir", str(tmp_path / "emb"),
                           "--out", str(tmp_path / "out"), "--no-analysis", "--quiet", *extra],
                          capture_output=True, text=True, timeout=300)


def _skipped(tmp_path) -> dict:
    with open(tmp_path / "out" / "manifest.csv", newline="", encoding="utf-8") as f:
        return {"/".join(r["path"].replace(os.sep, "/").split("/")[-2:]): r
                for r in csv.DictReader(f) if r.get("status") == "skipped"}


@pytest.mark.slow
def test_a_crashing_file_kills_one_run_then_is_skipped_and_the_rest_embedded(tmp_path):
    _collection(tmp_path / "data")
    first = _run(tmp_path)
    assert first.returncode == -signal.SIGSEGV  # the process died: nothing could catch it
    records = list((tmp_path / "emb" / "inflight").glob("toy-segfault-audio.*.json"))
    assert len(records) == 1 and "crash_me.wav" in records[0].read_text()
    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr
    skipped = _skipped(tmp_path)
    assert list(skipped) == ["jazz/crash_me.wav"], skipped
    reason = skipped["jazz/crash_me.wav"]["reason"]
    assert "crashed the process (SIGSEGV)" in reason and "alone" in reason
    assert not list((tmp_path / "emb" / "inflight").glob("*.json"))  # dealt with
    crashed = tmp_path / "emb" / "inflight" / "crashed" / "toy-segfault-audio.json"
    assert "crash_me.wav" in crashed.read_text()
    third = _run(tmp_path)  # remembered: embedded in a child only, so no run dies of it again
    assert third.returncode == 0, third.stderr
    assert list(_skipped(tmp_path)) == ["jazz/crash_me.wav"], third.stdout + third.stderr
    (tmp_path / "data" / "jazz" / "crash_me.wav").rename(tmp_path / "data" / "jazz" / "fine.wav")
    assert _run(tmp_path).returncode == 0 and _skipped(tmp_path) == {}


@pytest.mark.slow
def test_with_worker_processes_the_run_survives_the_crash(tmp_path):
    _collection(tmp_path / "data")
    run = _run(tmp_path, "--workers", "2")
    assert run.returncode == 0, run.stderr
    skipped = _skipped(tmp_path)
    assert list(skipped) == ["jazz/crash_me.wav"]
    assert "crashed the process (SIGSEGV)" in skipped["jazz/crash_me.wav"]["reason"]


def test_records_of_live_processes_are_not_suspects(tmp_path):
    mine = InFlight(tmp_path, "x")
    mine.begin(["a.wav"])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = InFlight(tmp_path, "x")
        live.path = live.folder / f"x.{live.host}.{child.pid}.json"
        live.path.write_text('["b.wav"]')
        dead = live.folder / f"x.{live.host}.{2 ** 22 + 12345}.json"  # beyond pid_max: dead
        dead.write_text('["c.wav"]')
        assert InFlight(tmp_path, "x").suspects() == {"c.wav"}
        InFlight(tmp_path, "x").forget_dead()
        assert not dead.exists() and live.path.exists() and mine.path.exists()
    finally:
        child.kill()
        child.wait()
    mine.end()
    assert not mine.path.exists()
