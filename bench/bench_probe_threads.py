"""Repeated linear probe with the BLAS / OpenMP pools at their default size vs limited to one
thread (threadpoolctl), measured side by side in one run (alternating, best of R).

The probe is many small logistic-regression fits (10 splits x 5 folds per embedder, twice that
per paired comparison that refits); on such small problems a multi-threaded BLAS spends more time
waking threads than computing. ``analysis.separability.probe_predictions_on_folds`` limits the
pools to one thread around its fits when this ratio says it helps.

    python bench/bench_probe_threads.py [--n 140] [--dim 218] [--classes 7] [--rounds 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe_cpu  # noqa: E402


def _data(n: int, dim: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    X = rng.normal(size=(classes, dim))[labels] * 0.5 + rng.normal(size=(n, dim))
    return X, labels.astype(str)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=140)
    ap.add_argument("--dim", type=int, default=218)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    from threadpoolctl import threadpool_info

    from analysis import separability
    X, labels = _data(a.n, a.dim, a.classes)
    pools = ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info())
    print(f"CPU: {describe_cpu()}; pools: {pools or 'none loaded'}")
    print(f"repeated_linear_probe: n={a.n}, dim={a.dim}, classes={a.classes}, 10 x 5 fits")
    best = {"default threads": np.inf, "1 thread": np.inf}
    for _ in range(a.rounds):
        for name, limit in (("default threads", None), ("1 thread", 1)):
            t = time.perf_counter()
            separability.repeated_linear_probe(X, labels, n_repeats=10, n_splits=5, seed=0,
                                               blas_threads=limit)
            best[name] = min(best[name], time.perf_counter() - t)
    for name, s in best.items():
        print(f"  {name:16s} {s:7.3f} s (best of {a.rounds})")
    print(f"ratio default / 1 thread: {best['default threads'] / best['1 thread']:.2f}")


if __name__ == "__main__":
    main()
