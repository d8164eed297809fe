"""Issue 21 validity numbers: interval coverage of cluster agreement on noise, and how stable the
repeated-split probe is across base seeds compared with one split.

Not a speed benchmark: it prints statistics (coverage counts, standard deviations), measured in
one run. Usage: ``python bench/measure_validity.py [--repeats 20]``.

1. Noise, n = 140 (7 classes x 20, 32-d Gaussian vectors unrelated to the labels), ``--repeats``
   data sets: the old interval (percentile bootstrap of one k-means seed's (label, cluster)
   pairs) against the new one (:func:`analysis.separability.repeated_cluster_agreement`): does it
   contain the value, does it lie entirely above it, does it cover the true chance value 0
   (AMI, ARI).
2. A weakly separable 7-class set (n = 140): sd over split seeds of a single-split probe accuracy
   vs sd over base seeds of the mean over 10 repeated splits.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import separability  # noqa: E402
from analysis.bootstrap import bootstrap_ci  # noqa: E402
from bench.machine import describe_cpu  # noqa: E402

LABELS = np.repeat([f"c{i}" for i in range(7)], 20)


def clustering_on_noise(repeats: int) -> None:
    from sklearn.metrics import adjusted_mutual_info_score, v_measure_score
    old = {"v_measure": [0, 0, []], "adjusted_mutual_info": [0, 0, []]}  # above, covers 0, values
    new = {k: {"contains": 0, "covers0": 0, "values": [], "width": []}
           for k in ("adjusted_mutual_info", "v_measure", "adjusted_rand")}
    for r in range(repeats):
        X = np.random.default_rng(100 + r).normal(size=(len(LABELS), 32))
        cl = separability.kmeans_clusters(X, LABELS, seed=0)
        for name, fn in (("v_measure", v_measure_score),
                         ("adjusted_mutual_info", adjusted_mutual_info_score)):
            v = fn(LABELS, cl)
            ci = bootstrap_ci(fn, LABELS, cl, n_boot=200, seed=0, strata=LABELS)["ci95"]
            old[name][0] += ci[0] > v
            old[name][1] += ci[0] <= 0 <= ci[1]
            old[name][2].append(v)
        res = separability.repeated_cluster_agreement(X, LABELS, n_seeds=10, seed=0)
        for name, acc in new.items():
            e = res[name]
            acc["contains"] += e["ci95"][0] <= e["value"] <= e["ci95"][1]
            acc["covers0"] += e["ci95"][0] <= 0 <= e["ci95"][1]
            acc["values"].append(e["value"])
            acc["width"].append(e["ci95"][1] - e["ci95"][0])
    print(f"noise, n=140, 7 classes, {repeats} data sets")
    for name, (above, covers0, vals) in old.items():
        print(f"  old (one k-means seed, percentile bootstrap) {name}: mean {np.mean(vals):.3f}; "
              f"interval entirely above the value in {above}/{repeats}; covers 0 in "
              f"{covers0}/{repeats}")
    for name, acc in new.items():
        print(f"  new (10 seeds, Rubin) {name}: mean {np.mean(acc['values']):.4f} "
              f"(sd {np.std(acc['values'], ddof=1):.4f}); contains value {acc['contains']}/"
              f"{repeats}; covers 0 {acc['covers0']}/{repeats}; mean width "
              f"{np.mean(acc['width']):.3f}")


def probe_stability(n_single: int, n_base: int) -> None:
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(7, 16)) * 0.45
    X = centres[np.repeat(np.arange(7), 20)] + rng.normal(size=(140, 16))
    single = [separability.linear_probe(X, LABELS, seed=s)["accuracy"] for s in range(n_single)]
    rep = [separability.repeated_linear_probe(X, LABELS, n_repeats=10, seed=1000 * (b + 1))
           for b in range(n_base)]
    means = [r["accuracy"]["value"] for r in rep]
    print(f"probe, weakly separable 7 classes, n=140: single split over {n_single} seeds: mean "
          f"{np.mean(single):.3f}, sd {np.std(single, ddof=1):.4f}, range {min(single):.3f}-"
          f"{max(single):.3f}")
    sd_single, sd_mean = np.std(single, ddof=1), np.std(means, ddof=1)
    widths = [r["accuracy"]["ci95"][1] - r["accuracy"]["ci95"][0] for r in rep]
    target = np.mean(single)
    inside = sum(r["accuracy"]["ci95"][0] <= target <= r["accuracy"]["ci95"][1] for r in rep)
    print(f"  mean of 10 repeated splits over {n_base} base seeds: mean {np.mean(means):.3f}, "
          f"sd {sd_mean:.4f} (ratio to single {sd_mean / sd_single:.2f}); interval width "
          f"{np.mean(widths):.3f}; intervals containing the single-split mean {target:.3f}: "
          f"{inside}/{n_base}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--single", type=int, default=50)
    ap.add_argument("--base", type=int, default=12)
    args = ap.parse_args()
    print(describe_cpu())
    t0 = time.time()
    clustering_on_noise(args.repeats)
    probe_stability(args.single, args.base)
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
