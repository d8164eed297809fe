"""probe_folds against the scikit-learn StratifiedGroupKFold it replaced, side by side in one run:
seconds per call (best of ``--repeats``) and the ratio, and whether the folds are identical.

Collections: ``--sizes`` items in ``--classes`` classes, every item its own group (the
repeated probe's case: 10 calls per embedder per run). Run with ``OPENBLAS_NUM_THREADS=1
OMP_NUM_THREADS=1`` on a quiet machine.

Usage: ``python bench/bench_probe_folds.py [--sizes 1000 10000] [--classes 20] [--repeats 3]``
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from machine import describe_cpu  # noqa: E402
from analysis import separability  # noqa: E402
# the scikit-learn route probe_folds took before: the tests' reference, measured here
from test_probe_folds import sklearn_folds  # noqa: E402


def best_seconds(fn, repeats):
    fn()  # warm: imports, first-call allocations
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--n-splits", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    print(describe_cpu())
    for n in args.sizes:
        rng = np.random.default_rng(0)
        labels = np.array([f"genre{v}" for v in rng.permutation(np.arange(n) % args.classes)])
        old = best_seconds(lambda: sklearn_folds(labels, None, n_splits=args.n_splits, seed=0),
                           args.repeats)
        new = best_seconds(lambda: separability.probe_folds(labels, None,
                                                            n_splits=args.n_splits, seed=0),
                           args.repeats)
        same = all(np.array_equal(sklearn_folds(labels, None, n_splits=args.n_splits, seed=s),
                                  separability.probe_folds(labels, None, n_splits=args.n_splits,
                                                           seed=s)) for s in range(3))
        print(f"{n:6d} items x {args.classes} classes, singletons: sklearn {old:.3f} s, "
              f"probe_folds {new:.3f} s, ratio {old / new:.1f}x, identical folds: {same}")


if __name__ == "__main__":
    main()
