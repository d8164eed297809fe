"""Compare musicnn port outputs with the reference fixtures (``cases.json`` + ``expected.npz``).

The rules are the fixtures' own (``cases.json`` -> ``tolerance_rule``): max/mean absolute
difference in float64 over the whole array, exact shapes; channel-subset arrays
(``features.X[..., ::N]``) compared on the subset; ``stats`` vectors ``[sum, sum|x|, sum x^2,
min, max, count]`` checked as |d sum|, |d sum|x|| <= count * mean_abs, |d min|, |d max| <=
max_abs, count exact. The port returns true per-patch values, so ``features.{cnn1,cnn2,cnn3,
penultimate}`` are compared with ``per_patch.*`` where a case has them (the reference repeats
patch 0 there).
"""
from __future__ import annotations

import re

import numpy as np

TRUE_PER_PATCH = ("cnn1", "cnn2", "cnn3", "penultimate")


def family(model: str) -> str:
    return "vgg" if model.endswith("_vgg") else "musicnn"


def compare_case(case: dict, doc: dict, expected, features: dict, taggram: np.ndarray,
                 level: str, input_batch: np.ndarray | None = None) -> list[dict]:
    """One row per checked array: name, max_abs, mean_abs, bounds, ok.

    ``features``: the port's ``features()`` dict (reference names and shapes); ``level``:
    ``"network"`` or ``"end_to_end"``; ``input_batch``: the port's own log-mel patches
    (end_to_end only).
    """
    tols = doc["tolerances"][family(case["model"])][level]
    rows = []

    def add(name, tol_name, got, ref, kind="array"):
        tol = tols[tol_name]
        got = np.asarray(got, np.float64)
        if kind == "stats":
            full = got
            count = full.size
            s = np.array([full.sum(), np.abs(full).sum(), (full ** 2).sum(), full.min(),
                          full.max(), count])
            ok_shape = s[5] == ref[5]
            dsum = max(abs(s[0] - ref[0]), abs(s[1] - ref[1])) / max(count, 1)
            dext = max(abs(s[3] - ref[3]), abs(s[4] - ref[4]))
            rows.append({"name": name, "max_abs": dext, "mean_abs": dsum,
                         "tol_max": tol["max_abs"], "tol_mean": tol["mean_abs"],
                         "ok": bool(ok_shape and dext <= tol["max_abs"] and dsum <= tol["mean_abs"])})
            return
        ref = np.asarray(ref, np.float64)
        if got.shape != ref.shape:
            rows.append({"name": name, "max_abs": np.inf, "mean_abs": np.inf,
                         "tol_max": tol["max_abs"], "tol_mean": tol["mean_abs"], "ok": False,
                         "shape": (got.shape, ref.shape)})
            return
        d = np.abs(got - ref)
        mx, mean = (float(d.max()), float(d.mean())) if d.size else (0.0, 0.0)
        rows.append({"name": name, "max_abs": mx, "mean_abs": mean, "tol_max": tol["max_abs"],
                     "tol_mean": tol["mean_abs"],
                     "ok": bool(mx <= tol["max_abs"] and mean <= tol["mean_abs"])})

    arrays = case["arrays"]
    has_true = {n for n in TRUE_PER_PATCH if any(k.startswith(f"per_patch.{n}") for k in arrays)}
    for label, spec in arrays.items():
        ref = expected[spec["key"]]
        m = re.fullmatch(r"(?:(features|per_patch)\.)?(\w+)(?:\[\.\.\., ::(\d+)\]| (stats))?",
                         label)
        assert m, label
        group, n, every, stats = m.groups()
        if n == "input_batch":
            if level != "end_to_end" or input_batch is None:
                continue
            got = input_batch
        elif n == "taggram":
            got = taggram
        elif group == "per_patch":
            got = features[n]
            per_patch = (ref.shape[0],) + tuple(spec.get("full_shape", ref.shape))[1:]
            got = got.reshape(per_patch)
        else:
            if n in has_true:
                continue  # the reference repeats patch 0 here; per_patch.* holds the truth
            got = features[n]
        if stats:
            add(label, n, got, ref, kind="stats")
        elif every:
            add(label, n, got[..., ::int(every)], ref)
        else:
            add(label, n, got, ref)
    return rows
