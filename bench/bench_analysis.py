"""Issue 27: the whole analysis at collection scale -- seconds and peak memory per stage and per
metric, and how they grow with the number of items.

Runs :func:`analysis.run.run_analysis` exactly as the command line does (two embedders, an audio
one and a symbolic one paired item by item, and their pair; every default metric; PCA and t-SNE
maps; tables, plots and report written) on synthetic clustered embeddings: ``--classes`` classes
(default 20) with Gaussian centres, the second space a random rotation of the first plus noise
(so the pair metrics have something to find). Sizes by ``--sizes`` (default 1000 10000;
``--large`` adds 100000), dimension by ``--dim`` (default 512; ``--dim 6144`` is OpenL3's).

Per size it prints the seconds and the peak resident memory of each stage (embedder A, embedder
B, the pair, tables, maps, report) and of each registered metric (the registry's every entry,
timed around its call; work several metrics share, e.g. one k-NN search, is charged to the first
metric that asks for it), and, between consecutive sizes, the growth exponent
log(t2 / t1) / log(n2 / n1) of each stage and of the total. The machine's load and CPU
(:func:`bench.machine.describe_cpu`) are printed with the figures: on a shared machine they say
how much the seconds mean.

Each figure has wall seconds and CPU seconds (the process's, all threads): on a shared,
loaded machine the CPU seconds are the comparable ones. Before / after figures: run the
same script with ``--repo`` on the older checkout at the same time, side by side.

Peak memory is sampled from /proc/self/status (VmRSS, every 20 ms) in a background thread:
the peak inside a stage, not the process's all-time peak -- of the main process only: with
``--workers N`` the worker processes' memory is not in it (measure memory with one worker).
CPU seconds include the workers' once their pool has shut down.

Usage::

    python bench/bench_analysis.py [--sizes 1000 10000] [--large] [--dim 512]
                                   [--methods pca tsne] [--json out.json] [--repo PATH]

``--repo`` measures another checkout of this project (e.g. the merge base, for before / after
figures) with this same script and data.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its finished child processes (the
    analysis workers: counted once the pool has shut down)."""
    import resource
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + c.ru_utime + c.ru_stime


class PeakSampler:
    """Samples VmRSS in a thread; :meth:`window` gives the peak since it was opened."""

    def __init__(self, every: float = 0.02):
        self.every, self.current_peak = every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            self.current_peak = max(self.current_peak, _rss_mb())
            time.sleep(self.every)

    @contextmanager
    def window(self, record: dict):
        outer = self.current_peak
        self.current_peak = _rss_mb()
        t0, c0 = time.perf_counter(), _cpu_seconds()
        try:
            yield
        finally:
            record["seconds"] = record.get("seconds", 0.0) + time.perf_counter() - t0
            # CPU seconds of the whole process (all threads): on a machine shared with other
            # jobs the wall clock mostly measures the others, the CPU time is this run's work
            record["cpu_seconds"] = record.get("cpu_seconds", 0.0) + _cpu_seconds() - c0
            peak = max(self.current_peak, _rss_mb())
            record["peak_rss_mb"] = max(record.get("peak_rss_mb", 0.0), peak)
            self.current_peak = max(outer, peak)

    def stop(self):
        self._stop.set()


def synthetic_sets(n: int, dim: int, *, classes: int = 20, seed: int = 0):
    """Two EmbeddingSets (audio, symbolic) on n paired items in ``classes`` Gaussian clusters;
    the symbolic space is a random rotation of the audio one plus independent noise."""
    from collection.embedding_set import EmbeddingSet
    rng = np.random.default_rng(seed)
    labels = np.array([f"genre{c:02d}" for c in rng.integers(0, classes, n)])
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    codes = np.searchsorted(np.unique(labels), labels)
    A = centres[codes] + 1.5 * rng.normal(size=(n, dim)).astype(np.float32)
    Q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    B = A @ Q.astype(np.float32) + 1.0 * rng.normal(size=(n, dim)).astype(np.float32)
    stems = np.array([f"{labels[i]}/piece{i:06d}" for i in range(n)])
    a = EmbeddingSet("synth_audio", "audio", np.char.add(stems, ".wav"), labels, stems, A)
    b = EmbeddingSet("synth_midi", "symbolic", np.char.add(stems, ".mid"), labels, stems, B)
    return [a, b]


def _instrument(sampler: PeakSampler, per_metric: dict, stages: dict) -> None:
    """Wrap every registered metric's fn and the run's stages with timers (in place)."""
    import dataclasses
    from analysis import outputs, run
    from analysis.metrics import registry as reg
    for name, m in list(reg._REGISTRY.items()):  # noqa: SLF001 -- a benchmark's instrument
        def timed(ctx, _fn=m.fn, _name=name, _kind=m.kind):
            rec = per_metric.setdefault(f"{_kind}:{_name}", {})
            with sampler.window(rec):
                return _fn(ctx)
        reg._REGISTRY[name] = dataclasses.replace(m, fn=timed)

    def wrap(module, attr, stage_of):
        original = getattr(module, attr)

        def timed(*args, **kwargs):
            rec = stages.setdefault(stage_of(*args), {})
            with sampler.window(rec):
                return original(*args, **kwargs)
        setattr(module, attr, timed)
    wrap(run, "_analyse_embedder", lambda s, **kw: f"embedder {s.name}")
    wrap(run, "_analyse_pair", lambda a, b, **kw: "pair")
    wrap(outputs, "write_metric_tables", lambda *a, **kw: "tables")
    wrap(outputs, "write_embedder_tables", lambda *a, **kw: "tables")
    wrap(outputs, "draw_maps", lambda *a, **kw: "maps")
    wrap(outputs, "draw_matrices", lambda *a, **kw: "matrix plots")
    wrap(run, "_write_report", lambda *a, **kw: "report")


def measure(n: int, dim: int, *, classes: int, methods: tuple, sampler: PeakSampler,
            workers: int = 1) -> dict:
    from analysis.run import run_analysis
    per_metric, stages = OrderedDict(), OrderedDict()
    sets = synthetic_sets(n, dim, classes=classes)
    vectors_mb = sum(s.vectors.nbytes for s in sets) / 2**20
    base_rss = _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        with _swap_instruments(sampler, per_metric, stages):
            total = {}
            with sampler.window(total):
                # workers: only passed when asked (older checkouts measured with --repo
                # have no such argument); the per-metric rows then stay empty (the metrics
                # run in the worker processes)
                run_analysis(sets, d / "out", plot_dir=d / "plots", cos_dir=d / "cos",
                             var_dir=d / "var", methods=methods, seed=0,
                             **({"workers": workers} if workers > 1 else {}))
    return {"n": n, "dim": dim, "seconds": total["seconds"], "cpu_seconds": total["cpu_seconds"],
            "peak_rss_mb": total["peak_rss_mb"],
            "rss_before_mb": base_rss, "vectors_mb": vectors_mb, "stages": stages,
            "metrics": per_metric}


@contextmanager
def _swap_instruments(sampler, per_metric, stages):
    """Instrument for one size, restore the registry and stages after (sizes stay separate)."""
    from analysis import outputs, run
    from analysis.metrics import registry as reg
    saved_reg = dict(reg._REGISTRY)  # noqa: SLF001
    saved = {(m, a): getattr(m, a) for m, a in (
        (run, "_analyse_embedder"), (run, "_analyse_pair"), (run, "_write_report"),
        (outputs, "write_metric_tables"), (outputs, "write_embedder_tables"),
        (outputs, "draw_maps"), (outputs, "draw_matrices"))}
    _instrument(sampler, per_metric, stages)
    try:
        yield
    finally:
        reg._REGISTRY.clear()
        reg._REGISTRY.update(saved_reg)
        for (m, a), f in saved.items():
            setattr(m, a, f)


def growth(r1: dict, r2: dict, t1: float, t2: float) -> str:
    if t1 <= 0 or t2 <= 0:
        return "—"
    return f"{math.log(t2 / t1) / math.log(r2['n'] / r1['n']):.2f}"


def print_results(results: list, header: str) -> None:
    print(header)
    for r in results:
        print(f"\n## n = {r['n']:,}, dim = {r['dim']}: {r['seconds']:.1f} s total "
              f"({r['cpu_seconds']:.1f} CPU s), peak RSS "
              f"{r['peak_rss_mb']:.0f} MB (vectors {r['vectors_mb']:.0f} MB, process before "
              f"{r['rss_before_mb']:.0f} MB)")
        print(f"{'stage':<28}{'seconds':>10}{'CPU s':>10}{'peak MB':>10}")
        for k, v in r["stages"].items():
            print(f"{k:<28}{v['seconds']:>10.2f}{v['cpu_seconds']:>10.2f}"
                  f"{v['peak_rss_mb']:>10.0f}")
        print(f"{'metric':<44}{'seconds':>10}{'CPU s':>10}{'peak MB':>10}")
        for k, v in sorted(r["metrics"].items(), key=lambda kv: -kv[1]["cpu_seconds"]):
            print(f"{k:<44}{v['seconds']:>10.2f}{v['cpu_seconds']:>10.2f}"
                  f"{v['peak_rss_mb']:>10.0f}")
    for r1, r2 in zip(results, results[1:]):
        print(f"\n## growth exponent {r1['n']:,} -> {r2['n']:,} (t ~ n^e)")
        print("(from CPU seconds)")
        print(f"total: {growth(r1, r2, r1['cpu_seconds'], r2['cpu_seconds'])}")
        for k in r2["stages"]:
            if k in r1["stages"]:
                print(f"  {k:<26}"
                      f"{growth(r1, r2, r1['stages'][k]['cpu_seconds'], r2['stages'][k]['cpu_seconds'])}")
        slow = sorted(r2["metrics"].items(), key=lambda kv: -kv[1]["cpu_seconds"])[:10]
        for k, v in slow:
            if k in r1["metrics"]:
                print(f"  {k:<42}"
                      f"{growth(r1, r2, r1['metrics'][k]['cpu_seconds'], v['cpu_seconds'])}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--large", action="store_true", help="add 100,000 items")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--methods", nargs="*", default=["pca", "tsne"])
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--repo", help="measure this checkout instead of the one beside this script")
    ap.add_argument("--workers", type=int, default=1,
                    help="run_analysis(workers=N): embedders and pairs in N processes")
    a = ap.parse_args(argv)
    repo = Path(a.repo).resolve() if a.repo else HERE.parent
    sys.path[:0] = [str(repo), str(HERE)]
    from machine import describe_cpu
    sizes = sorted(set(a.sizes + ([100_000] if a.large else [])))
    header = (f"# bench_analysis: run_analysis, 2 embedders + pair, {a.classes} classes, "
              f"dim {a.dim}, maps {' '.join(a.methods) or 'none'}, workers {a.workers}\n"
              f"code: {repo}\nCPU: {describe_cpu()}\n"
              f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
              # on 2 shared cores a second BLAS / OpenMP thread waiting for a busy core spins
              # and inflates the CPU seconds: say which pools the figures ran with
              "threads: " + ", ".join(f"{v}={os.environ.get(v, 'default')}" for v in
                                      ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")))
    print(header, flush=True)
    sampler = PeakSampler()
    results = []
    for n in sizes:
        r = measure(n, a.dim, classes=a.classes, methods=tuple(a.methods), sampler=sampler,
                    workers=a.workers)
        r["load_after"] = os.getloadavg()
        results.append(r)
        print(f"n={n:,}: {r['seconds']:.1f} s ({r['cpu_seconds']:.1f} CPU s), peak "
              f"{r['peak_rss_mb']:.0f} MB, load "
              f"{r['load_after'][0]:.2f}", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps({"header": header, "results": results}, indent=1))
    sampler.stop()
    print_results(results, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
