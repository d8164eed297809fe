"""The figures of an analysis run, old code against this checkout's, side by side in one process.

The old :mod:`analysis.plots` is read from git (``--ref``, default ``main``) and imported as a
separate module; both write the same figures from the same data: a ``--classes`` x ``--classes``
(default 20) centroid-cosine heatmap (one NaN cell) and confusion matrix, a 2-d map, the
side-by-side maps of two embedders and the metric bar chart. Per figure it prints the best CPU
seconds of ``--repeat`` (default 3) calls of each version, alternating, their ratio, both PNGs'
largest pixel difference (``matplotlib.image.imread``, 0..1 per channel) and the sizes of both
files. Run with ``OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1`` on a quiet machine.

Usage::

    python bench/bench_plots.py [--ref main] [--classes 20] [--repeat 3] [--keep DIR]
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe_cpu  # noqa: E402
from analysis import plots as new_plots  # noqa: E402


def load_old(ref: str, folder: Path):
    """``analysis/plots.py`` at git ``ref``, imported as the module ``old_plots``."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:analysis/plots.py"],
                         check=True, capture_output=True, text=True).stdout
    path = folder / "old_plots.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_plots", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def figures(k: int) -> dict:
    """name -> function(plots module, base path) writing one figure from fixed data."""
    rng = np.random.default_rng(0)
    classes = [f"class_{i:02d}" for i in range(k)]
    cos = rng.uniform(-1, 1, (k, k))
    cos[1, 2] = np.nan
    conf = rng.integers(0, 30, (k, k)) + np.diag(rng.integers(20, 80, k))
    labels = np.repeat(classes, 50)
    Y = rng.normal(size=(len(labels), 2)) + np.repeat(rng.normal(scale=4, size=(k, 2)), 50, 0)
    table = {name: {m: (float(v), [float(v) - 0.05, float(v) + 0.05])
                    for m, v in zip(["knn", "probe", "silhouette", "cka", "mrr"],
                                    rng.uniform(0.1, 0.9, 5))} for name in ("audio", "midi")}
    return {
        "heatmap": lambda P, b: P.plot_heatmap(cos, classes, b, title="centroid cosine"),
        "confusion": lambda P, b: P.plot_confusion(conf, classes, b, title="k-NN confusion"),
        "map": lambda P, b: P.plot_map(Y, labels, b, title="PCA", classes=classes),
        "maps_side_by_side": lambda P, b: P.plot_maps_side_by_side(
            [("audio", Y, labels), ("midi", Y[::-1], labels)], b, title="PCA", classes=classes),
        "metric_bars": lambda P, b: P.plot_metric_bars(
            table, ["knn", "probe", "silhouette", "cka", "mrr"], b, title="separability"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="main", help="git revision of the old analysis/plots.py")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()
    from matplotlib.image import imread

    tmp = Path(tempfile.mkdtemp(prefix="bench_plots_"))
    out = args.keep or tmp
    old_plots = load_old(args.ref, tmp)
    versions = {"old": old_plots, "new": new_plots}
    print(f"CPU: {describe_cpu()}")
    print(f"old: {args.ref}:analysis/plots.py, new: this checkout; {args.classes} classes, "
          f"best of {args.repeat} CPU s per figure (PNG + SVG)")
    print(f"{'figure':<18} {'old s':>6} {'new s':>6} {'new/old':>7} {'max |dpx|':>9} "
          f"{'PNG kB old/new':>15} {'SVG kB old/new':>15}")
    for name, draw in figures(args.classes).items():
        for label, P in versions.items():  # warm-up: fonts, caches
            draw(P, tmp / "warm" / f"{label}_{name}")
        best = {label: np.inf for label in versions}
        for _ in range(args.repeat):
            for label, P in versions.items():
                t0 = time.process_time()
                draw(P, out / f"{label}_{name}")
                best[label] = min(best[label], time.process_time() - t0)
        png = {v: imread(out / f"{v}_{name}.png") for v in versions}
        diff = (float(np.abs(png["old"] - png["new"]).max())
                if png["old"].shape == png["new"].shape else float("nan"))
        kb = {(v, ext): (out / f"{v}_{name}.{ext}").stat().st_size / 1024
              for v in versions for ext in ("png", "svg")}
        print(f"{name:<18} {best['old']:6.2f} {best['new']:6.2f} "
              f"{best['new'] / best['old']:7.2f} {diff:9.4f} "
              f"{kb['old', 'png']:7.0f}/{kb['new', 'png']:<7.0f} "
              f"{kb['old', 'svg']:7.0f}/{kb['new', 'svg']:<7.0f}")


if __name__ == "__main__":
    main()
