"""Issue 27: the analysis in worker processes (run_analysis(workers=2), `--workers`) writes the
same numbers as in one process."""
import json

import numpy as np
import pytest

from analysis.run import run_analysis
from collection.embedding_set import EmbeddingSet


def _sets(n=90, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.array([f"g{i % 3}" for i in range(n)])
    centres = rng.normal(size=(3, 16))
    A = centres[np.arange(n) % 3] + rng.normal(size=(n, 16))
    B = A @ rng.normal(size=(16, 12)) + rng.normal(size=(n, 12))
    stems = np.array([f"{labels[i]}/p{i:03d}" for i in range(n)])
    return [EmbeddingSet("a", "audio", np.char.add(stems, ".wav"), labels, stems, A),
            EmbeddingSet("b", "symbolic", np.char.add(stems, ".mid"), labels, stems, B)]


def _numbers(m: dict) -> dict:
    m = json.loads(json.dumps(m))
    for k in ("seconds_metrics", "seconds_total"):
        m["parameters"].pop(k, None)
    m.pop("files", None)
    m.pop("software", None)
    return m


@pytest.mark.slow
def test_two_workers_give_the_same_metrics(tmp_path, monkeypatch):
    from analysis import run
    # a caller's wrapper of the main process's functions (e.g. a benchmark's timer, a closure
    # that cannot be pickled) must not stop the workers: they call their own copies
    original = run._analyse_pair
    monkeypatch.setattr(run, "_analyse_pair", lambda *a, **k: original(*a, **k))
    runs = []
    for workers in (1, 2):
        d = tmp_path / f"w{workers}"
        m = run_analysis(_sets(), d / "out", plot_dir=d / "plots", cos_dir=d / "cos",
                         var_dir=d / "var", methods=("tsne",), seed=3, n_bootstrap=40,
                         n_permutations=49, workers=workers)
        runs.append(_numbers(m))
    one, two = runs
    assert one["embedders"].keys() == two["embedders"].keys() == {"a", "b"}
    assert len(one["pairs"]) == 1 and len(one["comparisons"]) > 0
    assert not any("workers failed" in n for n in two["notes"])
    assert one == two
    assert one["parameters"]["projections"]["a"]["tsne"]["method"] == "tsne"
    # the maps projected in the workers are the ones projected here
    from analysis import outputs, run
    s = _sets()[1]
    Y1, p1 = outputs.project_set(s, "tsne", seed=3)
    Y2, p2 = run._map_job(s, "tsne", 3)
    assert p1 == p2 and np.array_equal(Y1, Y2)
    for workers in (1, 2):
        png = tmp_path / f"w{workers}" / "plots" / "all_embedders_tsne.png"
        assert png.stat().st_size > 10_000
    # the class x class figures drawn in the workers are the ones drawn here
    heat = sorted((tmp_path / "w1" / "cos").glob("*.png"))
    assert len(heat) >= 4
    for f in heat:
        assert f.read_bytes() == (tmp_path / "w2" / "cos" / f.name).read_bytes(), f.name


def test_cli_workers_are_capped_at_this_machines_cpus(monkeypatch):
    import os

    from cli.compare import analysis_workers
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert analysis_workers(1) == 1
    assert analysis_workers(2) == 2
    assert analysis_workers(8) == 2   # more processes than cores only adds switching
    assert analysis_workers(0) == 2   # --engine ray's "one per CPU": this machine's


class _KillsItsWorker(EmbeddingSet):
    """An EmbeddingSet whose copy in a worker process ends that process when it arrives
    (unpickling calls os._exit): a worker dying mid-run, e.g. of a native crash."""

    def __reduce__(self):
        import os
        return os._exit, (3,)


@pytest.mark.slow
def test_a_dead_worker_leaves_its_analyses_to_the_main_process(tmp_path):
    a, b = _sets()
    crash = _KillsItsWorker(b.name, b.modality, b.ids, b.labels, b.pair_ids, b.vectors)
    runs = {}
    for workers, sets in ((1, [a, b]), (2, [a, crash])):
        d = tmp_path / f"w{workers}"
        runs[workers] = run_analysis(sets, d / "out", plot_dir=d / "plots", cos_dir=d / "cos",
                                     var_dir=d / "var", methods=(), seed=3, n_bootstrap=40,
                                     n_permutations=49, workers=workers)
    notes = runs[2]["notes"]
    assert any("analysis workers failed" in n and "main process" in n for n in notes)
    one, two = _numbers(runs[1]), _numbers(runs[2])
    two["notes"] = [n for n in two["notes"] if "analysis workers failed" not in n]
    assert one == two
    assert len(list((tmp_path / "w2" / "cos").glob("*.png"))) == \
        len(list((tmp_path / "w1" / "cos").glob("*.png"))) >= 4


def test_workers_end_when_the_run_is_killed(tmp_path):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path
    script = tmp_path / "killed_run.py"
    script.write_text(
        "import os, sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from analysis import run\n"
        "if __name__ == '__main__':\n"
        "    pool = run._worker_pool(2)\n"
        "    pids = list(pool.map(run._worker_pid, range(8)))\n"
        "    print(' '.join(map(str, sorted(set(pids)))), flush=True)\n"
        "    os._exit(9)  # killed: no shutdown, no cleanup\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    pids = [int(p) for p in out.stdout.split()]
    assert pids, out.stderr
    deadline = time.time() + 20
    alive = pids
    while alive and time.time() < deadline:
        time.sleep(0.5)
        alive = [p for p in pids if os.path.exists(f"/proc/{p}")
                 and "zombie" not in open(f"/proc/{p}/status").read().lower()]
    assert not alive, f"workers {alive} outlived the run"
