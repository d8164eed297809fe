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
             runtime_env={{"env_vars": {{"PYTHONPATH": os.pathsep.join([{root!r}, {tests!r}]),
                                       "TOY_SLOW_S": "1.5"}}}})
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid

    def victim():
        if {kill!r} == "raylet":
            return raylet
        for pid in os.listdir("/proc"):  # the raylet's dashboard agent (it fate-shares with it)
            try:
                with open(f"/proc/{{pid}}/cmdline", "rb") as fh:
                    cmd = fh.read()
                with open(f"/proc/{{pid}}/stat") as fh:
                    parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if parent == raylet and b"DashboardAgent" in cmd:
                return int(pid)
        raise SystemExit("no dashboard agent found")

    def kill_raylet_after_the_first_entry():
        import glob
        while not glob.glob(os.path.join({cache!r}, "*", "*.npz")):
            time.sleep(0.05)
        os.kill(victim(), signal.SIGKILL)
        print({kill!r} + " killed", file=sys.stderr, flush=True)

    threading.Thread(target=kill_raylet_after_the_first_entry, daemon=True).start()
    status = cli.main(["--dataset", {data!r}, "--embedders", "toy-slow-audio", "--engine", "ray",
                       "--emb-dir", {emb!r}, "--out", {out!r}, "--no-analysis", "--quiet"])
    print("exit", status, file=sys.stderr, flush=True)
    os._exit(status)  # not ray.shutdown(): the cluster is gone
""")


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["raylet", "dashboard agent"])
def test_node_lost_mid_run_ends_in_bounded_time_keeping_finished_files(tmp_path, kill):
    pytest.importorskip("ray")
    data = tmp_path / "data"
    for genre in ("rock", "jazz"):
        for i in range(6):
            write_wav(data / genre / f"p{i}.wav", freq=200 + 30 * i + (genre == "jazz") * 7)
    emb = tmp_path / "emb"
    script = _DRIVER.format(root=str(ROOT), tests=TESTS, data=str(data), emb=str(emb),
                            out=str(tmp_path / "out"),
                            cache=str(emb / "cache" / "toy-slow-audio"), kill=kill)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)
    seconds = time.monotonic() - t0
    err = [line for line in proc.stderr.splitlines() if line.startswith("main.py:")]
    assert f"{kill} killed" in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert len(err) == 1 and "Ray cluster" in err[0] and "re-run" in err[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    entries = sorted((emb / "cache" / "toy-slow-audio").rglob("*.npz"))
    assert 1 <= len(entries) < 12
    for entry in entries:  # whole entries only: each one reads back
        with np.load(entry) as npz:
            assert npz["clip"].shape == (8,) and np.all(np.isfinite(npz["clip"]))
    assert seconds < 200


class _SilentCluster:
    """A stand-in ``ray`` whose tasks never finish and whose nodes are all dead: the case where
    the real driver waited forever (its raylet gone with the dashboard agent it fate-shares)."""

    class exceptions:
        class RayActorError(Exception):
            pass

        class WorkerCrashedError(Exception):
            pass

    def __init__(self):
        self.waits = 0
        self.killed = []

    def wait(self, refs, *, num_returns, timeout):
        self.waits += 1
        assert timeout is not None and timeout > 0  # never an unbounded wait
        return [], list(refs)

    def nodes(self):
        return [{"NodeID": "a" * 56, "Alive": False}]

    def get_runtime_context(self):
        return type("Ctx", (), {"get_node_id": lambda self: "a" * 56})()

    def kill(self, actor):
        self.killed.append(actor)

    def remote(self, **kwargs):
        """``ray.remote(...)(cls)``: actors whose ``embed.remote(...)`` gives a ref that never
        becomes ready."""
        class Actor:
            def __init__(self):
                self.embed = type("Method", (), {"remote": lambda _, *args: object()})()

        return lambda cls: type("ActorClass", (), {"remote": staticmethod(lambda *a: Actor())})


def test_a_cluster_with_no_live_node_ends_the_wait(monkeypatch, tmp_path):
    from collection import ray_engine
    from collection.scan import Item
    from embedders import get_embedder

    fake = _SilentCluster()
    monkeypatch.setattr(ray_engine, "require_ray", lambda: fake)
    monkeypatch.setattr(ray_engine, "connect", lambda address=None: False)
    monkeypatch.setattr(ray_engine, "LIVENESS_POLL_S", 0.01)
    items = [Item(id=f"rock/{i}.wav", path=str(tmp_path / f"{i}.wav"), label="rock",
                  modality="audio") for i in range(5)]
    from collection.store import EmbeddingStore

    results = ray_engine.ray_results(items, get_embedder("audio-stats"),
                                     EmbeddingStore(tmp_path / "emb"),
                                     keys={it.id: "k" for it in items}, options={}, workers=2)
    with pytest.raises(ray_engine.RayClusterLostError, match="lost every node.*5 files"):
        list(results)
    assert fake.waits == 1 and len(fake.killed) == 2


def test_a_cluster_that_does_not_answer_counts_as_lost():
    from collection import ray_engine

    class Hanging(_SilentCluster):
        def nodes(self):
            import time
            time.sleep(5)

    assert "no reply within 0.2 s" in ray_engine.cluster_lost(Hanging(), answer_s=0.2)
    assert ray_engine.cluster_lost(type("Up", (_SilentCluster,), {
        "nodes": lambda self: [{"NodeID": "a" * 56, "Alive": True}]})()) is None
