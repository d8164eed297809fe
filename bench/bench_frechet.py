"""Issue 27: the class x class Fréchet distances, dense (sklearn's Ledoit-Wolf covariance and a
d x d eigendecomposition per class pair, the code before) against the low-rank path
(:func:`analysis.frechet.frechet_between`), side by side in one run, same data.

Per case it prints the CPU seconds of the class fits and per class pair of each path, the
ratio, and the largest relative difference of the distances (they must agree to ~1e-8).
The dense path is timed on the first ``--pairs`` pairs only (it is the slow one).

Usage: ``python bench/bench_frechet.py [--cases 700x256 300x2048] [--classes 20] [--pairs 6]``
"""
import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import frechet as F  # noqa: E402
from bench.machine import describe_cpu  # noqa: E402


def _cpu(fn):
    t = time.process_time()
    out = fn()
    return out, time.process_time() - t


def run_case(n: int, d: int, classes: int, pairs: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, n)
    X = rng.normal(size=(classes, d))[labels] + 1.5 * rng.normal(size=(n, d))
    groups = [X[labels == c] for c in range(classes)]
    dense, t_dense_fit = _cpu(lambda: [F.gaussian(g) for g in groups])
    roots, t_roots = _cpu(lambda: [F._psd_sqrt(C) for _, C in dense])  # noqa: SLF001
    low, t_low_fit = _cpu(lambda: [F.fit_gaussian(g) for g in groups])
    todo = list(itertools.combinations(range(classes), 2))[:pairs]
    vals_d, t_d = _cpu(lambda: [F.frechet_from_gaussians(*dense[a], *dense[b], sqrt_C_x=roots[a])
                                for a, b in todo])
    vals_l, t_l = _cpu(lambda: [F.frechet_between(low[a], low[b]) for a, b in todo])
    rel = max(abs(x - y) / abs(x) for x, y in zip(vals_d, vals_l))
    n_pairs = classes * (classes - 1) // 2
    old = t_dense_fit + t_roots + t_d / len(todo) * n_pairs
    new = t_low_fit + t_l / len(todo) * n_pairs
    print(f"{n} items x {d}-d, {classes} classes: fits dense {t_dense_fit + t_roots:.2f} s, "
          f"low-rank {t_low_fit:.2f} s; per pair dense {t_d / len(todo) * 1e3:.1f} ms, "
          f"low-rank {t_l / len(todo) * 1e3:.2f} ms; whole matrix ({n_pairs} pairs) "
          f"{old:.1f} s -> {new:.2f} s = {old / new:.0f}x less CPU; max rel. diff {rel:.1e}",
          flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=["700x256", "300x2048"])
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=6)
    a = ap.parse_args(argv)
    print(f"CPU: {describe_cpu()}; CPU seconds of this process (the machine may be shared)")
    for case in a.cases:
        n, d = (int(x) for x in case.split("x"))
        run_case(n, d, a.classes, a.pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
