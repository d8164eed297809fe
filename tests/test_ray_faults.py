"""Issue 25: the Ray engine when its node's raylet dies mid-run (a machine lost).

Runs in a child process with its own local Ray instance (the raylet it kills would otherwise
take the module's shared instance down): the run must end within a bounded time with one line
saying what happened, exit 1, and every file embedded before the loss kept whole in the store.
"""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import ROOT, write_wav

TESTS = os.path.dirname(os.path.abspath(__file__))

_DRIVER = textwrap.dedent("""
    import logging, os, signal, sys, threading, time
    sys.path[:0] = [{root!r}, {tests!r}]
    import ray
    import cli, ray_toys
    from collection import ray_engine
    ray_engine.LIVENESS_POLL_S = 1.0
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, _node_ip_address="127.0.0.1",
             runtime_env={{"env_vars": {{"PYTHONPATH": os.pathsep.join([{root!r}, {tests!r}])}}}})
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid

    def kill_raylet_after_the_first_entry():
        while not any(os.scandir({cache!r})) if os.path.isdir({cache!r}) else True:
            time.sleep(0.1)
        time.sleep(0.3)
        os.kill(raylet, signal.SIGKILL)
        print("raylet killed", file=sys.stderr, flush=True)

    threading.Thread(target=kill_raylet_after_the_first_entry, daemon=True).start()
    status = cli.main(["--dataset", {data!r}, "--embedders", "toy-slow-audio", "--engine", "ray",
                       "--emb-dir", {emb!r}, "--out", {out!r}, "--no-analysis", "--quiet"])
    print("exit", status, file=sys.stderr, flush=True)
    os._exit(status)  # not ray.shutdown(): the cluster is gone
""")


@pytest.mark.slow
def test_raylet_killed_mid_run_ends_in_bounded_time_keeping_finished_files(tmp_path):
    pytest.importorskip("ray")
    data = tmp_path / "data"
    for genre in ("rock", "jazz"):
        for i in range(10):
            write_wav(data / genre / f"p{i}.wav", freq=200 + 30 * i + (genre == "jazz") * 7)
    emb = tmp_path / "emb"
    script = _DRIVER.format(root=str(ROOT), tests=TESTS, data=str(data), emb=str(emb),
                            out=str(tmp_path / "out"),
                            cache=str(emb / "cache" / "toy-slow-audio"))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)
    seconds = time.monotonic() - t0
    err = [line for line in proc.stderr.splitlines() if line.startswith("main.py:")]
    assert "raylet killed" in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert len(err) == 1 and "Ray cluster" in err[0] and "re-run" in err[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    entries = sorted((emb / "cache" / "toy-slow-audio").rglob("*.npz"))
    assert 1 <= len(entries) < 20
    for entry in entries:  # whole entries only: each one reads back
        with np.load(entry) as npz:
            assert npz["clip"].shape == (8,) and np.all(np.isfinite(npz["clip"]))
    assert seconds < 200
