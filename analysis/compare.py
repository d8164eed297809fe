"""Orchestration: every metric of every embedder and embedder pair, tables, plots and report.

Notebook use::

    from analysis import evaluate_embedder, evaluate_pair
    m = evaluate_embedder(X, labels, groups)          # ordered dict of metric entries
    p = evaluate_pair(X_audio, X_midi, labels)       # rows aligned by pair id

Each metric entry is ``{"value": float|None, "ci95": [lo, hi]|None, "params": {...},
"note": "..."}`` (``note`` only when the value is undefined or caveated).

As mir_eval's ``evaluate()``: each metric is a module-level function of a context
(:class:`EmbedderContext`, :class:`PairContext`) that computes what several metrics share once
(k-NN predictions, probe predictions, k-means clusters, CKA resamples, RSA distance matrices,
retrieval ranks); :func:`embedder_metric_table` / :func:`pair_metric_table` list them in
order, and :func:`evaluate_embedder` / :func:`evaluate_pair` assemble the ordered dict. One
metric alone: ``knn_accuracy(EmbedderContext(X, labels), k=5)``.
"""
from __future__ import annotations

import json
import platform
import sys
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from . import crossspace, outputs, separability, structure
from ._common import UndefinedMetricError, center_unit, cosine_distance_matrix, finite_or_none
from .bootstrap import bootstrap_ci, bootstrap_mean_ci, bootstrap_values
from .intervals import (balanced_accuracy_interval, clopper_pearson, finalize_interval,
                        rubin_interval)
from . import recommendation
from .schema import EMBEDDER_METRICS, MP_SUFFIX, P_VALUES, PAIR_METRICS, RECOMMEND_METRICS
from common.progress import progress_bar

from .io import jsonable, write_json_atomic

__all__ = ["evaluate_embedder", "evaluate_pair", "run_analysis", "EmbedderContext",
           "PairContext", "Measured", "embedder_metric_table", "pair_metric_table",
           "software_versions", "DEFAULT_N_BOOTSTRAP", "DEFAULT_N_PERMUTATIONS",
           "DEFAULT_RETRIEVAL_SPLITS"]

DEFAULT_N_BOOTSTRAP = 200
DEFAULT_N_PERMUTATIONS = 999
# upper bounds on (matrix cells x repetitions) for the RSA bootstrap and Mantel test
RSA_CELL_BUDGET_BOOT = 30_000_000
RSA_CELL_BUDGET_PERM = 200_000_000
#: RSA (point estimate, CI and Mantel test) uses a seeded random subset of this many shared items
#: when there are more: its cost is quadratic (5000 items took ~260 s on 2 cores, 2000 ~30 s),
#: and 2500 items already give ~3.1 million distance pairs.
RSA_MAX_ITEMS = 2500
#: Retrieval is scored over this many seeded, label-stratified train/test splits.
DEFAULT_RETRIEVAL_SPLITS = 20
#: Largest / smallest class size from which a note flags the imbalance.
IMBALANCE_RATIO = 1.5


# ----------------------------------------------------------------------------- helpers
def software_versions() -> dict:
    """Versions of python and the numerical libraries (torch etc. only if installed).

    Read from package metadata, so nothing heavy is imported."""
    from importlib import metadata
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for mod, dist in (("numpy", "numpy"), ("scipy", "scipy"), ("sklearn", "scikit-learn"),
                      ("matplotlib", "matplotlib"), ("openTSNE", "openTSNE"),
                      ("umap", "umap-learn"), ("torch", "torch"), ("librosa", "librosa"),
                      ("pretty_midi", "pretty_midi"), ("soundfile", "soundfile")):
        m = sys.modules.get(mod)
        v = getattr(m, "__version__", None) if m is not None else None
        if v is None:
            try:
                v = metadata.version(dist)
            except Exception:
                continue
        out[mod] = str(v)
    return out


# ----------------------------------------------------------------------------- entries
@dataclass
class Measured:
    """What a metric function returns: the value, its interval and how they were obtained.

    ``n_units`` (independent units behind the interval) and ``bounds`` (the metric's range)
    let :func:`analysis.intervals.finalize_interval` widen a zero-width interval honestly.
    """
    value: float | None
    ci: list | None = None
    params: dict = field(default_factory=dict)
    n_units: float | None = None
    bounds: tuple = (-np.inf, np.inf)


def _entry(value=None, *, ci=None, params=None, note=None, with_ci=True) -> OrderedDict:
    e = OrderedDict()
    e["value"] = finite_or_none(value)
    if with_ci:
        e["ci95"] = None if ci is None else [finite_or_none(ci[0]), finite_or_none(ci[1])]
    e["params"] = dict(params or {})
    if note:
        e["note"] = str(note)
    elif e["value"] is None:
        e["note"] = "undefined"
    return e


def _guard(fn, ctx, params: dict, *, with_ci: bool = True) -> OrderedDict:
    """Run the metric ``fn(ctx) -> Measured`` into an entry; every interval is finalised (it
    contains its value and has non-zero width); undefined cases become notes, never crashes."""
    try:
        m = fn(ctx)
        p = dict(params)
        p.update(m.params)
        ci = m.ci
        if with_ci:
            ci, flags = finalize_interval(finite_or_none(m.value), ci, n_units=m.n_units,
                                          bounds=m.bounds)
            p.update(flags)
        return _entry(m.value, ci=ci, params=p, with_ci=with_ci)
    except UndefinedMetricError as exc:
        return _entry(None, params=params, note=str(exc), with_ci=with_ci)
    except Exception as exc:  # a bug or numerical failure: record it, keep going
        return _entry(None, params=params, with_ci=with_ci,
                      note=f"error: {type(exc).__name__}: {exc}")


def _boot_params(boot: dict | None) -> dict:
    if not boot:
        return {}
    return {"ci_method": boot.get("method"), "n_boot": boot.get("n_boot"),
            "n_boot_valid": boot.get("n_valid"), "ci_seed": boot.get("seed")}


class _Cache:
    """Per-context memo of shared intermediate results; a failure is remembered and re-raised
    for every metric that needs it (so an impossible probe is attempted once)."""

    def __init__(self):
        self._memo: dict = {}

    def _once(self, key, compute):
        if key not in self._memo:
            try:
                self._memo[key] = (True, compute())
            except Exception as exc:
                self._memo[key] = (False, exc)
        ok, v = self._memo[key]
        if not ok:
            raise v
        return v


def _units_note(n_units: int, n_items: int, what: str = "items") -> str:
    if n_units == n_items:
        return f"{n_units} {what}, each an independent unit"
    return f"{n_units} independent pieces (pair ids) among {n_items} {what}"


# ----------------------------------------------------------------------------- per embedder
class EmbedderContext(_Cache):
    """One embedder's validated arrays and the results its metrics share, each computed once:
    k-NN predictions, the probe's out-of-fold predictions, the k-means clusters.

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]
    groups : np.ndarray [shape=(n,)] or None
        Pair id per item ("" = own group): probe folds and resampling keep a piece whole, and
        intervals count pieces, not items, as the independent units.
    """

    def __init__(self, X, labels, groups=None, *, seed: int = 0,
                 n_bootstrap: int = DEFAULT_N_BOOTSTRAP, n_splits: int = 5):
        super().__init__()
        X, labels, groups = separability.validate(X, labels, groups)
        self.X, self.labels = X, labels.astype(str)
        self.n = X.shape[0]
        self.groups = np.full(self.n, "", dtype=str) if groups is None else groups.astype(str)
        self.units = separability.groups_or_self(self.groups, self.n)  # resampling units
        self.n_units = len(set(self.units.tolist()))
        self.seed, self.n_bootstrap, self.n_splits = seed, n_bootstrap, n_splits

    def boot(self, metric, *arrays) -> dict:
        """Class-stratified bootstrap over whole pieces (the house resampling)."""
        return bootstrap_ci(metric, *arrays, n_boot=self.n_bootstrap, seed=self.seed,
                            strata=self.labels, groups=self.units)

    def knn_predictions(self, k: int) -> np.ndarray:
        def compute():
            separability.require_classes(self.labels, min_classes=2, what="kNN accuracy")
            return separability.knn_predictions(self.X, self.labels, k=k)
        return self._once(("knn", k), compute)

    def probe(self) -> dict:
        return self._once("probe", lambda: separability.linear_probe(
            self.X, self.labels, self.groups, n_splits=self.n_splits, seed=self.seed))

    def clusters(self) -> np.ndarray:
        return self._once("kmeans", lambda: separability.kmeans_clusters(
            self.X, self.labels, seed=self.seed))

    def chance(self) -> dict:
        return self._once("chance", lambda: separability.chance_levels(self.labels))

    def units_per_class(self) -> np.ndarray:
        """Independent units (pieces) of each class [shape=(n_classes,)], classes sorted."""
        return np.array([len(set(self.units[self.labels == c].tolist()))
                         for c in np.unique(self.labels)], dtype=np.float64)


def _proportion(ctx: EmbedderContext, correct: np.ndarray, extra: dict) -> Measured:
    """Accuracy of per-item 0/1 ``correct`` with a Clopper-Pearson interval over pieces."""
    acc = float(np.mean(correct))
    ch = ctx.chance()
    return Measured(acc, clopper_pearson(acc * ctx.n_units, ctx.n_units), {
        **extra, "chance_majority": ch["majority_rate"], "chance_uniform": ch["uniform"],
        "ci_method": "clopper-pearson",
        "ci_note": "exact binomial interval over " + _units_note(ctx.n_units, ctx.n)})


def _balanced(ctx: EmbedderContext, y_pred: np.ndarray, extra: dict) -> Measured:
    """Balanced accuracy of ``y_pred`` with its posterior interval over pieces per class."""
    _, correct, size = separability.per_class_correct(ctx.labels, y_pred)
    recall = correct / size
    value = float(np.mean(recall))
    units = ctx.units_per_class()
    ci = balanced_accuracy_interval(recall * units, units, seed=ctx.seed)
    ch = ctx.chance()
    return Measured(value, ci, {
        **extra, "chance_uniform": ch["uniform"], "chance_majority": ch["majority_rate"],
        "class_imbalance": ch["imbalance"], "ci_method": "per-class beta (clopper-pearson "
                                                         "families), monte carlo",
        "ci_note": "2.5% / 97.5% quantiles of the mean of independent per-class Beta draws "
                   "(the Clopper-Pearson families; one class = Clopper-Pearson), over "
                   + _units_note(ctx.n_units, ctx.n)})


def silhouette_cosine(ctx: EmbedderContext) -> Measured:
    """Mean cosine silhouette; bootstrap of the per-item values."""
    s = separability.silhouette_samples_cosine(ctx.X, ctx.labels)
    b = bootstrap_mean_ci(s, n_boot=ctx.n_bootstrap, seed=ctx.seed, strata=ctx.labels,
                          groups=ctx.units)
    return Measured(float(np.mean(s)), b["ci95"], {
        **_boot_params(b), "ci_note": "bootstrap of per-item silhouette values"},
        n_units=ctx.n_units, bounds=(-1.0, 1.0))


def knn_accuracy(ctx: EmbedderContext, *, k: int) -> Measured:
    """Leave-one-out k-NN accuracy (cosine, uncentred) with an exact binomial interval."""
    pred = ctx.knn_predictions(k)
    return _proportion(ctx, (pred == ctx.labels).astype(np.float64), {})


def knn_balanced_accuracy(ctx: EmbedderContext, *, k: int) -> Measured:
    """Balanced accuracy of the same leave-one-out k-NN predictions."""
    return _balanced(ctx, ctx.knn_predictions(k), {})


def _probe_extra(r: dict) -> dict:
    return {"n_splits": r["n_splits"]}


def probe_accuracy(ctx: EmbedderContext) -> Measured:
    """Accuracy of the pooled out-of-fold probe predictions, exact interval over pieces."""
    r = ctx.probe()
    return _proportion(ctx, (r["y_pred"] == r["y_true"]).astype(np.float64), _probe_extra(r))


def probe_balanced_accuracy(ctx: EmbedderContext) -> Measured:
    """Balanced accuracy of the pooled out-of-fold probe predictions."""
    r = ctx.probe()
    return _balanced(ctx, r["y_pred"], _probe_extra(r))


def probe_macro_f1(ctx: EmbedderContext) -> Measured:
    """Macro F1 of the pooled out-of-fold probe predictions; grouped bootstrap."""
    from sklearn.metrics import f1_score
    r = ctx.probe()
    b = ctx.boot(lambda t, p: f1_score(t, p, average="macro", zero_division=0),
                 r["y_true"], r["y_pred"])
    return Measured(r["macro_f1"], b["ci95"], {
        **_probe_extra(r), **_boot_params(b),
        "ci_note": "bootstrap of pooled out-of-fold predictions"},
        n_units=ctx.n_units, bounds=(0.0, 1.0))


def v_measure(ctx: EmbedderContext) -> Measured:
    """V-measure of k-means clusters vs labels; bootstrap of (label, cluster) pairs."""
    from sklearn.metrics import v_measure_score
    cl = ctx.clusters()
    b = ctx.boot(lambda t, c: v_measure_score(t, c), ctx.labels, cl)
    return Measured(separability.cluster_agreement(ctx.labels, cl)["v_measure"], b["ci95"], {
        **_boot_params(b), "ci_note": "bootstrap of (label, cluster) pairs of one fit"},
        n_units=ctx.n_units, bounds=(0.0, 1.0))


def adjusted_rand(ctx: EmbedderContext) -> Measured:
    """Adjusted Rand index of the same clusters; bootstrap of (label, cluster) pairs."""
    from sklearn.metrics import adjusted_rand_score
    cl = ctx.clusters()
    b = ctx.boot(lambda t, c: adjusted_rand_score(t, c), ctx.labels, cl)
    return Measured(separability.cluster_agreement(ctx.labels, cl)["adjusted_rand"], b["ci95"],
                    {**_boot_params(b), "ci_note": "bootstrap of (label, cluster) pairs of one "
                                                   "fit"},
                    n_units=ctx.n_units, bounds=(-1.0, 1.0))


def within_total_variance_ratio(ctx: EmbedderContext, *, normalize: bool = True) -> Measured:
    """trace(S_within) / trace(S_total); bootstrap of the per-item contributions."""
    v = structure.within_total_variance_ratio(ctx.X, ctx.labels, normalize=normalize)
    w, t = structure.within_total_contributions(ctx.X, ctx.labels, normalize=normalize)
    b = ctx.boot(lambda w, t: float(w.sum() / t.sum()) if t.sum() > 0 else None, w, t)
    return Measured(v, b["ci95"], {
        **_boot_params(b), "ci_note": "bootstrap of per-item squared distances (class and "
                                      "grand means fixed), ratio of sums"},
        n_units=ctx.n_units, bounds=(0.0, 1.0))


_KNN_PARAMS = {"metric": "cosine", "centered": False,
               "scheme": "leave-one-out, majority vote, ties to nearest"}
_PROBE_PARAMS = {"model": "StandardScaler + LogisticRegression(C=1.0, max_iter=2000)",
                 "cv": "StratifiedGroupKFold (shuffle, grouped by pair id; unpaired items are "
                       "their own group)"}
_KMEANS_PARAMS = {"algorithm": "KMeans(n_clusters=n_classes, n_init=10) on L2-normalised "
                               "vectors"}


def recommend_metric(ctx: EmbedderContext, *, key: str,
                     hubness_reduction: str | None = None) -> Measured:
    """One recommendation-quality metric (all of them share one neighbour computation)."""
    q = ctx._once(("recommend", hubness_reduction), lambda: recommendation.recommendation_quality(
        ctx.X, ctx.labels, hubness_reduction=hubness_reduction))
    v = q[key]
    if v is None:
        raise UndefinedMetricError(f"{key}: undefined (too few items or constant occurrence)")
    if isinstance(v, dict):  # a precision: Wilson interval and chance level
        return Measured(v["value"], v["ci95"], {
            "chance": v["chance"], "successes": v["successes"], "trials": v["trials"],
            "ci_method": "wilson", "ci_note": "Wilson interval over the n*k judgements "
                                              "(optimistic: neighbour lists overlap)"},
            n_units=v["trials"], bounds=(0.0, 1.0))
    return Measured(float(v), None, {})


def embedder_metric_table(*, knn_ks: Sequence[int] = (1, 5), n_splits: int = 5,
                          seed: int = 0, hubness_reduction: str | None = None) -> list:
    """(name, function of the context, fixed params) of every per-embedder metric, in order."""
    probe = {**_PROBE_PARAMS, "n_splits_requested": n_splits, "seed": seed}
    kmeans = {**_KMEANS_PARAMS, "seed": seed}
    rows = [("silhouette_cosine", silhouette_cosine, {"metric": "cosine", "centered": False})]
    for k in knn_ks:
        rows.append((f"knn_accuracy_k{k}", partial(knn_accuracy, k=k), {"k": k, **_KNN_PARAMS}))
    for k in knn_ks:
        rows.append((f"knn_balanced_accuracy_k{k}", partial(knn_balanced_accuracy, k=k),
                     {"k": k, **_KNN_PARAMS}))
    rows += [("probe_accuracy", probe_accuracy, probe),
             ("probe_balanced_accuracy", probe_balanced_accuracy, probe),
             ("probe_macro_f1", probe_macro_f1, probe),
             ("v_measure", v_measure, kmeans), ("adjusted_rand", adjusted_rand, kmeans),
             ("within_total_variance_ratio", within_total_variance_ratio,
              {"definition": "trace(S_within) / trace(S_total), L2-normalised vectors"}),
             ("within_total_variance_ratio_raw",
              partial(within_total_variance_ratio, normalize=False),
              {"definition": "trace(S_within) / trace(S_total), raw vectors (not invariant to "
                             "per-item scale)"})]
    reductions = [None] + (["mp"] if hubness_reduction == "mp" else [])
    for red in reductions:
        for m in RECOMMEND_METRICS:
            rows.append((m + (MP_SUFFIX if red else ""),
                         partial(recommend_metric, key=m, hubness_reduction=red),
                         {"scheme": "leave-one-out top-k (cosine)" if red is None else
                          "leave-one-out top-k by Gaussian mutual proximity"}))
    return rows


def evaluate_embedder(X: ArrayLike, labels: ArrayLike, groups: ArrayLike | None = None, *,
                      ids: ArrayLike | None = None, seed: int = 0,
                      n_bootstrap: int = DEFAULT_N_BOOTSTRAP, n_splits: int = 5,
                      knn_ks: Sequence[int] = (1, 5), neighbours_per_class: int = 3,
                      n_neighbours: int = 5, hubness_reduction: str | None = None
                      ) -> OrderedDict:
    """Every single-space metric of one embedder (``hubness_reduction="mp"`` adds the
    recommendation metrics under mutual proximity, suffixed ``_mp``).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]
    groups : np.ndarray [shape=(n,)] or None
        Pair id per item ("" = own group); used for grouped probe folds and bootstrap.
    ids : np.ndarray [shape=(n,)] or None
        Item names for the nearest-neighbour listing.

    Returns
    -------
    OrderedDict: the metric entries of :data:`analysis.schema.EMBEDDER_METRICS`, then
    ``n_items``, ``n_classes``, ``dim``, ``classes``, ``class_counts``, ``n_paired_items``,
    ``chance``, ``centroid_cosine`` (centred), ``centroid_cosine_uncentred``, ``confusion``,
    ``class_variance``, ``nearest_neighbours``, ``notes``.
    """
    ctx = EmbedderContext(X, labels, groups, seed=seed, n_bootstrap=n_bootstrap,
                          n_splits=n_splits)
    notes = _embedder_notes(ctx)
    res = OrderedDict()
    for name, fn, params in embedder_metric_table(knn_ks=knn_ks, n_splits=n_splits, seed=seed,
                                                  hubness_reduction=hubness_reduction):
        res[name] = _guard(fn, ctx, params)
    pa = res.get("probe_accuracy")
    if pa and pa["value"] is not None and pa["params"].get("n_splits", n_splits) < n_splits:
        pa["note"] = (f"n_splits reduced to {pa['params']['n_splits']} (smallest class has too "
                      "few pieces)")
    ids = (np.array([f"item{i}" for i in range(ctx.n)]) if ids is None
           else np.asarray(ids, dtype=str))
    res.update(_embedder_descriptives(ctx, ids, n_neighbours=n_neighbours,
                                      per_class=neighbours_per_class, notes=notes))
    for name in (*EMBEDDER_METRICS, *RECOMMEND_METRICS):
        e = res.get(name)
        if e is not None and e["value"] is None and e.get("note"):
            notes.append(f"{name}: {e['note']}")
    res["notes"] = notes
    return res


def _embedder_notes(ctx: EmbedderContext) -> list:
    """Notes on degenerate or imbalanced class structure, before any metric runs."""
    notes = []
    classes, counts = np.unique(ctx.labels, return_counts=True)
    if ctx.n == 0:
        notes.append("no items: every metric is undefined")
    elif len(classes) < 2:
        notes.append(f"only one class ({classes[0]!r}): separability metrics are undefined")
    else:
        if counts.max() == 1:
            notes.append("one item per class: neighbourhood, probe and clustering metrics are "
                         "undefined or meaningless")
        ch = ctx.chance()
        if ch["imbalance"] >= IMBALANCE_RATIO:
            notes.append(f"classes are imbalanced (largest / smallest = {ch['imbalance']:.3g}, "
                         f"majority-class rate {ch['majority_rate']:.3f}): plain accuracies "
                         "reward the large classes; read the balanced accuracies (chance "
                         f"1/{len(classes)} = {ch['uniform']:.3f})")
    return notes


def _embedder_descriptives(ctx: EmbedderContext, ids: np.ndarray, *, n_neighbours: int,
                           per_class: int, notes: list) -> OrderedDict:
    """Counts, chance levels, centroid matrices, confusion, spread and neighbour listings."""
    X, labels = ctx.X, ctx.labels
    classes = sorted(np.unique(labels).tolist())
    res = OrderedDict(n_items=int(ctx.n), n_classes=len(classes), dim=int(X.shape[1]),
                      classes=classes,
                      class_counts={c: int(np.sum(labels == c)) for c in classes},
                      n_paired_items=int(np.sum(ctx.groups != "")))
    try:
        res["chance"] = ctx.chance()
    except UndefinedMetricError:
        res["chance"] = None
    for key, center in (("centroid_cosine", True), ("centroid_cosine_uncentred", False)):
        try:
            cls, M = structure.centroid_cosine_matrix(X, labels, center=center)
            res[key] = {"classes": cls, "matrix": M, "params": {
                "centroids": "mean of L2-normalised vectors", "centered": center,
                "centring": "collection mean of the unit vectors removed" if center else "none"}}
        except UndefinedMetricError as exc:
            res[key] = {"classes": classes, "matrix": None, "note": str(exc)}
    try:
        cls, C, _ = structure.nearest_centroid_confusion(X, labels)
        res["confusion"] = {"classes": cls, "matrix": C,
                            "accuracy": float(np.trace(C) / max(1, C.sum())),
                            "params": {"classifier": "nearest centroid (cosine, uncentred)",
                                       "leave_one_out": True}}
    except UndefinedMetricError as exc:
        res["confusion"] = {"classes": classes, "matrix": None, "note": str(exc)}
    res["class_variance"] = structure.class_variance_table(X, labels) if ctx.n else []
    try:
        res["nearest_neighbours"] = structure.nearest_neighbours(
            X, labels, ids, k=n_neighbours, per_class=per_class, seed=ctx.seed)
    except UndefinedMetricError as exc:
        res["nearest_neighbours"] = []
        notes.append(f"nearest neighbours: {exc}")
    return res


# ----------------------------------------------------------------------------- per pair
class PairContext(_Cache):
    """Two spaces on the same items and what their metrics share, each computed once: the CKA
    resamples (both estimators from one set of Gram products), the RSA subset and its centred
    distance matrices, the repeated retrieval.

    Parameters
    ----------
    X : np.ndarray [shape=(n, dx)]
    Y : np.ndarray [shape=(n, dy)]
    labels : np.ndarray [shape=(n,)] or None
    """

    def __init__(self, X, Y, labels=None, *, seed: int = 0,
                 n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                 n_permutations: int = DEFAULT_N_PERMUTATIONS, knn_k: int = 10,
                 test_fraction: float = 0.3, max_components: int = 64,
                 retrieval_splits: int = DEFAULT_RETRIEVAL_SPLITS):
        super().__init__()
        X, Y, labels = crossspace.validate(X, Y, labels)
        self.X, self.Y = X, Y
        self.n = X.shape[0]
        self.labels = (np.full(self.n, "all", dtype=str) if labels is None
                       else labels.astype(str))
        self.seed, self.n_bootstrap, self.n_permutations = seed, n_bootstrap, n_permutations
        self.knn_k, self.test_fraction = knn_k, test_fraction
        self.max_components, self.retrieval_splits = max_components, retrieval_splits

    def cka_resamples(self) -> np.ndarray:
        """(cka_linear, cka_debiased) of each bootstrap resample [shape=(n_valid, 2)]."""
        def compute():
            f = crossspace.linear_cka_resampler(self.X, self.Y)
            return bootstrap_values(f.both, self.n, n_boot=self.n_bootstrap, seed=self.seed,
                                    strata=self.labels)
        return self._once("cka_boot", compute)

    def rsa_plan(self) -> dict:
        """The RSA subset (all items up to RSA_MAX_ITEMS), its capped repetitions and the
        centred cosine-distance matrices: RSA costs O(n^2) per resample / permutation."""
        def compute():
            n = self.n
            if n > RSA_MAX_ITEMS:
                sub = np.sort(np.random.default_rng(self.seed).choice(n, RSA_MAX_ITEMS,
                                                                      replace=False))
            else:
                sub = np.arange(n)
            n_r = len(sub)
            cells = max(1, n_r * (n_r - 1) // 2)
            return {"sub": sub, "n_r": n_r,
                    "n_boot": int(min(self.n_bootstrap, max(20, RSA_CELL_BUDGET_BOOT // cells))),
                    "n_perm": int(min(self.n_permutations,
                                      max(99, RSA_CELL_BUDGET_PERM // cells)))}
        return self._once("rsa_plan", compute)

    def rsa(self) -> dict:
        def compute():
            plan = self.rsa_plan()
            sub = plan["sub"]
            DA = cosine_distance_matrix(center_unit(self.X[sub]))
            DB = cosine_distance_matrix(center_unit(self.Y[sub]))
            r = crossspace.rsa(self.X[sub], self.Y[sub], n_permutations=plan["n_perm"],
                               seed=self.seed, distances=(DA, DB))
            b = bootstrap_ci(lambda idx: crossspace.rsa_from_distances(
                                DA[np.ix_(idx, idx)], DB[np.ix_(idx, idx)], exclude=idx),
                             np.arange(plan["n_r"]), n_boot=plan["n_boot"], seed=self.seed,
                             strata=self.labels[sub])
            return {**r, "boot": b}
        return self._once("rsa", compute)

    def rsa_subset_params(self) -> dict:
        plan = self.rsa_plan()
        if plan["n_r"] < self.n:
            return {"items_subsampled": {"n_items": plan["n_r"], "of": self.n,
                                         "seed": self.seed}}
        return {}

    def retrieval(self) -> dict:
        return self._once("retrieval", lambda: crossspace.repeated_procrustes_retrieval(
            self.X, self.Y, self.labels, n_splits=self.retrieval_splits,
            test_fraction=self.test_fraction, seed=self.seed,
            max_components=self.max_components))

    def permutation_test(self) -> dict:
        return self._once("cka_perm", lambda: crossspace.cka_permutation_test(
            self.X, self.Y, n_permutations=self.n_permutations, seed=self.seed))


def cka_debiased(ctx: PairContext) -> Measured:
    """Debiased linear CKA; percentile bootstrap of the weighted debiased estimator (copies of
    an item never pair with each other, so resamples are not inflated)."""
    v = crossspace.cka_debiased(ctx.X, ctx.Y)
    vals = ctx.cka_resamples()[:, 1]
    ci = list(np.percentile(vals, [2.5, 97.5])) if len(vals) >= 2 else None
    return Measured(v, ci, {
        "n_boot": ctx.n_bootstrap, "n_boot_valid": int(len(vals)), "ci_seed": ctx.seed,
        "ci_method": "percentile, class-stratified, debiased estimator",
        "ci_note": "bootstrap of the unbiased-HSIC CKA with each resample's duplicated items "
                   "never paired with their own copies (no duplicate-row inflation)"},
        n_units=ctx.n, bounds=(-1.0, 1.0))


def cka_linear(ctx: PairContext) -> Measured:
    """Biased linear CKA; percentile bootstrap re-centred on the estimate."""
    v = crossspace.linear_cka(ctx.X, ctx.Y)
    vals = ctx.cka_resamples()[:, 0]
    ci, extra = None, {}
    if len(vals) >= 2:
        shift = float(np.mean(vals) - v)  # duplicated rows push every resample upwards
        lo, hi = np.percentile(vals, [2.5, 97.5]) - shift
        ci = [max(0.0, lo), min(1.0, hi)]
        extra["bootstrap_bias"] = shift
    return Measured(v, ci, {
        **extra, "n_boot": ctx.n_bootstrap, "n_boot_valid": int(len(vals)), "ci_seed": ctx.seed,
        "ci_method": "percentile, class-stratified, shifted by the bootstrap bias",
        "ci_note": "resamples inflate the biased CKA (duplicated rows); the percentile "
                   "interval is moved down by their mean excess over the estimate. The value "
                   "itself is biased upwards at small n / high dimension: see cka_debiased"},
        n_units=ctx.n, bounds=(0.0, 1.0))


def cka_permutation_p(ctx: PairContext) -> Measured:
    """p-value of cka_debiased against shuffled pairings (no interval)."""
    r = ctx.permutation_test()
    extra = {"n_permutations": r["n_permutations"], "null_q95": r["null_q95"],
             "null_mean": r["null_mean"], "observed": r["cka"], "path": r["path"]}
    if r["n_permutations"] < ctx.n_permutations:
        extra["n_permutations_capped_from"] = ctx.n_permutations
    return Measured(r["p"], None, extra)


def rsa_spearman(ctx: PairContext) -> Measured:
    """Spearman RSA of centred cosine distances; bootstrap leaving duplicated pairs out."""
    r, plan = ctx.rsa(), ctx.rsa_plan()
    b = r["boot"]
    extra = {**_boot_params(b), "ci_note": "pairs of duplicated items left out",
             **ctx.rsa_subset_params()}
    if plan["n_boot"] < ctx.n_bootstrap:
        extra["n_boot_capped_from"] = ctx.n_bootstrap
    return Measured(r["rho"], b["ci95"], extra, n_units=plan["n_r"], bounds=(-1.0, 1.0))


def rsa_mantel_p(ctx: PairContext) -> Measured:
    """One-sided Mantel p-value of the RSA correlation (no interval)."""
    r, plan = ctx.rsa(), ctx.rsa_plan()
    extra = {"n_permutations": r["n_permutations"], **ctx.rsa_subset_params()}
    if plan["n_perm"] < ctx.n_permutations:
        extra["n_permutations_capped_from"] = ctx.n_permutations
    return Measured(r["p"], None, extra)


def knn_jaccard(ctx: PairContext) -> Measured:
    """Mean Jaccard overlap of the k-NN sets (centred cosine); its exact chance level."""
    n, k, extra = ctx.n, ctx.knn_k, {}
    if n < k + 1:
        k = min(ctx.knn_k, n - 2)
        if k < 1:
            raise UndefinedMetricError(f"kNN Jaccard needs at least 3 shared items, got {n}")
        extra["k_reduced_from"] = ctx.knn_k
    per = crossspace.knn_jaccard_per_item(ctx.X, ctx.Y, k=k, center=True)
    b = bootstrap_mean_ci(per, n_boot=ctx.n_bootstrap, seed=ctx.seed, strata=ctx.labels)
    extra.update({"k": k, "chance": crossspace.knn_jaccard_chance(n, k),
                  "chance_overlap_fraction": k / (n - 1), **_boot_params(b),
                  "ci_note": "bootstrap of per-item Jaccard values"})
    return Measured(float(np.mean(per)), b["ci95"], extra, n_units=n, bounds=(0.0, 1.0))


def centroid_matrix_correlation(ctx: PairContext) -> Measured:
    """Correlation of the two centred centroid cosine matrices; item bootstrap (resamples as
    weights, :func:`analysis.crossspace.centroid_matrix_correlation_resampler`)."""
    v = crossspace.centroid_matrix_correlation(ctx.X, ctx.Y, ctx.labels, center=True)
    f = crossspace.centroid_matrix_correlation_resampler(ctx.X, ctx.Y, ctx.labels, center=True)
    b = bootstrap_ci(f, np.arange(ctx.n), n_boot=ctx.n_bootstrap, seed=ctx.seed,
                     strata=ctx.labels)
    return Measured(v, b["ci95"], _boot_params(b), n_units=ctx.n, bounds=(-1.0, 1.0))


def retrieval(ctx: PairContext, *, key: str) -> Measured:
    """Mean over repeated stratified splits of recall@k or MRR; interval from split and
    sampling variation together (Rubin's rules)."""
    r = ctx.retrieval()
    per_split = np.array([s[key] for s in r["splits"]])
    within = np.array([s["within_var"][key] for s in r["splits"]])
    proportion = key != "mrr"
    ci, info = rubin_interval(per_split, within,
                              proportion_units=r["n_test"] if proportion else None)
    return Measured(r[key], ci, {
        "n_train": r["n_train"], "n_test": r["n_test"], "dims": r["dims"],
        "chance": r["chance"][key], "x_to_y": r["x_to_y"][key], "y_to_x": r["y_to_x"][key],
        "n_splits": r["n_splits"], "split_min": float(per_split.min()),
        "split_max": float(per_split.max()), **info,
        "ci_method": ("rubin + clopper-pearson" if proportion else "rubin, normal"),
        "ci_note": "mean over repeated splits; variance = within-split sampling variance over "
                   "held-out pairs + (1 + 1/splits) x between-split variance" +
                   ("; exact binomial on the effective number of pairs" if proportion else "")},
        n_units=r["n_test"], bounds=(0.0, 1.0))


def pair_metric_table(*, knn_k: int = 10, seed: int = 0, test_fraction: float = 0.3,
                      max_components: int = 64,
                      retrieval_splits: int = DEFAULT_RETRIEVAL_SPLITS) -> list:
    """(name, function of the context, fixed params) of every pair metric, in order (the
    p-values of :data:`analysis.schema.P_VALUES` get no interval)."""
    ret = {"method": "PCA (fit on train) + orthogonal Procrustes (train pairs only), cosine "
                     "retrieval among held-out pairs, both directions averaged",
           "splits": "stratified by label, seeds seed..seed+n_splits-1",
           "test_fraction": test_fraction, "max_components": max_components,
           "n_splits_requested": retrieval_splits, "seed": seed}
    cka = {"kernel": "linear", "centered": True}
    rows = [("cka_debiased", cka_debiased, {**cka, "estimator": "unbiased HSIC (Song et al. "
                                                                "2012)"}),
            ("cka_linear", cka_linear, {**cka, "estimator": "biased HSIC"}),
            ("cka_permutation_p", cka_permutation_p,
             {"test": "permutation of the pairing, one-sided, statistic cka_debiased",
              "seed": seed}),
            ("rsa_spearman", rsa_spearman, {"distance": "cosine", "centered": True,
                                            "correlation": "spearman",
                                            "entries": "upper triangle"}),
            ("rsa_mantel_p", rsa_mantel_p, {"test": "Mantel, one-sided, items of one matrix "
                                                    "permuted", "seed": seed}),
            (f"knn_jaccard_k{knn_k}", knn_jaccard, {"k": knn_k, "metric": "cosine",
                                                    "centered": True}),
            ("centroid_matrix_correlation", centroid_matrix_correlation,
             {"correlation": "pearson", "entries": "off-diagonal upper triangle",
              "centered": True})]
    for k in (1, 5, 10):
        rows.append((f"retrieval_recall_at_{k}", partial(retrieval, key=f"recall_at_{k}"), ret))
    rows.append(("retrieval_mrr", partial(retrieval, key="mrr"), ret))
    return rows


def evaluate_pair(X: ArrayLike, Y: ArrayLike, labels: ArrayLike | None = None, *, seed: int = 0,
                  n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                  n_permutations: int = DEFAULT_N_PERMUTATIONS, knn_k: int = 10,
                  test_fraction: float = 0.3, max_components: int = 64,
                  retrieval_splits: int = DEFAULT_RETRIEVAL_SPLITS) -> OrderedDict:
    """Every between-space metric for two spaces on the same items (row i = same piece).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dx)]
    Y : np.ndarray [shape=(n, dy)]
    labels : np.ndarray [shape=(n,)] or None
        Classes of the shared items (centroid correlation, class-stratified bootstrap and
        retrieval splits).

    Returns
    -------
    OrderedDict: the entries of :data:`analysis.schema.PAIR_METRICS`, then ``n_shared``,
    ``n_classes``, ``retrieval_chance``, ``retrieval_n_test`` and ``notes``.
    """
    ctx = PairContext(X, Y, labels, seed=seed, n_bootstrap=n_bootstrap,
                      n_permutations=n_permutations, knn_k=knn_k, test_fraction=test_fraction,
                      max_components=max_components, retrieval_splits=retrieval_splits)
    notes = [] if ctx.n else ["no shared items: every between-space metric is undefined"]
    res = OrderedDict()
    for name, fn, params in pair_metric_table(
            knn_k=knn_k, seed=seed, test_fraction=test_fraction, max_components=max_components,
            retrieval_splits=retrieval_splits):
        res[name] = _guard(fn, ctx, params, with_ci=name not in P_VALUES)
    _pair_caveats(res, ctx)
    res["n_shared"] = int(ctx.n)
    res["n_classes"] = len(np.unique(ctx.labels)) if ctx.n else 0
    try:
        r = ctx.retrieval()
        res["retrieval_chance"], res["retrieval_n_test"] = r["chance"], r["n_test"]
    except Exception:
        res["retrieval_chance"] = None
    for name, e in res.items():
        if isinstance(e, dict) and "value" in e and e["value"] is None and e.get("note"):
            notes.append(f"{name}: {e['note']}")
    res["notes"] = notes
    return res


def _pair_caveats(res: OrderedDict, ctx: PairContext) -> None:
    """Notes on entries computed on a subset or with fewer neighbours than asked."""
    rs = res["rsa_spearman"]
    n_r = rs["params"].get("items_subsampled", {}).get("n_items")
    if n_r and rs["value"] is not None:
        rs["note"] = (f"computed on a random subset of {n_r} of the {ctx.n} shared items (its "
                      "cost grows with the square of n)")
    jac = res[f"knn_jaccard_k{ctx.knn_k}"]
    if jac["params"].get("k_reduced_from"):
        jac["note"] = f"only {ctx.n} shared items: k reduced to {jac['params']['k']}"


# ----------------------------------------------------------------------------- orchestration
def _pair_alignment(a, b) -> tuple[np.ndarray, np.ndarray, str]:
    """(ia, ib, how) aligning two EmbeddingSets: by pair id across modalities, by id within."""
    if a.modality != b.modality:
        ia, ib = crossspace.match_items(a.pair_ids, b.pair_ids)
        return ia, ib, "pair id"
    ia, ib = crossspace.match_items(a.ids, b.ids)
    return ia, ib, "item id"


def _unique_sets(sets, notes: list) -> list:
    """The sets in order, a repeated name kept once (noted)."""
    seen, uniq = set(), []
    for s in sets:
        if s.name in seen:
            notes.append(f"duplicate embedder name {s.name!r}: later set ignored")
            continue
        seen.add(s.name)
        uniq.append(s)
    return uniq


def _analyse_embedder(s, *, seed: int, n_bootstrap: int,
                      hubness_reduction: str | None = None) -> OrderedDict:
    """:func:`evaluate_embedder` of one EmbeddingSet; a failure becomes undefined entries."""
    try:
        r = evaluate_embedder(s.vectors, s.labels, s.pair_ids, ids=s.ids, seed=seed,
                              n_bootstrap=n_bootstrap, hubness_reduction=hubness_reduction)
    except Exception as exc:
        r = OrderedDict((m, _entry(None, note=f"error: {exc}")) for m in EMBEDDER_METRICS)
        r.update(n_items=len(s), n_classes=len(s.classes), dim=s.dim,
                 notes=[f"analysis failed: {type(exc).__name__}: {exc}"])
    r["modality"] = s.modality
    r["options"] = dict(s.options or {})
    return r


def _analyse_pair(a, b, *, seed: int, n_bootstrap: int, n_permutations: int) -> OrderedDict:
    """:func:`evaluate_pair` on the items two EmbeddingSets share."""
    ia, ib, how = _pair_alignment(a, b)
    try:
        lab_a, lab_b = a.labels[ia], b.labels[ib]
        mismatch = int(np.sum(lab_a != lab_b))
        r = evaluate_pair(a.vectors[ia], b.vectors[ib], lab_a, seed=seed,
                          n_bootstrap=n_bootstrap, n_permutations=n_permutations)
        if mismatch:
            r["notes"].append(f"{mismatch} matched items carry different labels in the two "
                              f"sets; labels of {a.name} used")
    except Exception as exc:
        r = OrderedDict((m, _entry(None, note=f"error: {exc}")) for m in PAIR_METRICS)
        r["notes"] = [f"analysis failed: {type(exc).__name__}: {exc}"]
    r["matched_by"] = how
    r["a"], r["b"] = a.name, b.name
    r["modalities"] = [a.modality, b.modality]
    if len(ia) == 0:
        r["notes"].insert(0, f"no shared items (matched by {how})")
    return r


def _analyse_all(sets, metrics: OrderedDict, bar, *, seed: int, n_bootstrap: int,
                 n_permutations: int, hubness_reduction: str | None = None) -> None:
    """Fill ``metrics["embedders"]`` and ``metrics["pairs"]``; collect their notes."""
    notes = metrics["notes"]
    for s in sets:
        bar.set_postfix_str(s.name)
        bar.update()
        r = _analyse_embedder(s, seed=seed, n_bootstrap=n_bootstrap,
                              hubness_reduction=hubness_reduction)
        metrics["embedders"][s.name] = r
        notes.extend(f"{s.name}: {n}" for n in r.get("notes", []))
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            key = f"{sets[i].name}__vs__{sets[j].name}"
            bar.set_postfix_str(key)
            bar.update()
            r = _analyse_pair(sets[i], sets[j], seed=seed, n_bootstrap=n_bootstrap,
                              n_permutations=n_permutations)
            metrics["pairs"][key] = r
            notes.extend(f"{key}: {n}" for n in r.get("notes", []))
    if len(sets) == 1:
        notes.append("only one embedder: no between-embedder comparison")


def _run_parameters(*, seed, n_bootstrap, n_permutations, methods, title,
                    run_config) -> OrderedDict:
    return OrderedDict(seed=seed, n_bootstrap=n_bootstrap, n_permutations=n_permutations,
                       ci_level=0.95, methods=list(methods), title=title, knn_ks=[1, 5],
                       probe_n_splits=5, jaccard_k=10, retrieval_test_fraction=0.3,
                       retrieval_max_components=64, retrieval_splits=DEFAULT_RETRIEVAL_SPLITS,
                       cosine_centering="centroid_cosine, rsa_spearman, knn_jaccard_k10 and "
                                        "centroid_matrix_correlation on centred unit vectors",
                       projections={}, run_config=run_config)


def run_analysis(sets: Sequence, out: str | Path, *, plot_dir: str | Path, cos_dir: str | Path,
                 var_dir: str | Path, title: str = "", methods: Sequence[str] = ("pca", "tsne"),
                 seed: int = 0, dataset_summary: dict | None = None, run_config: dict | None = None,
                 n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                 n_permutations: int = DEFAULT_N_PERMUTATIONS, progress: bool = False,
                 hubness_reduction: str | None = None) -> dict:
    """Analyse every embedding set and every pair; write metrics, tables, plots and the report.

    Parameters
    ----------
    sets : list of EmbeddingSet
    out : Path
        Receives metrics.json, metrics_*.csv, confusion/neighbour CSVs, report.html, report.md.
    plot_dir, cos_dir, var_dir : Path
        Maps and bar chart; centroid cosine CSV + heatmaps; within-class variance CSVs.
    methods : tuple of str
        Subset of ("pca", "tsne", "umap").
    progress : bool
        Show a progress bar (one step per embedder, per pair and per map).
    hubness_reduction : {None, "mp"}
        ``"mp"`` adds the recommendation metrics under mutual proximity (``*_mp``).

    Returns
    -------
    dict: the content of metrics.json.
    """
    t_start = time.perf_counter()
    dirs = [Path(d) for d in (out, plot_dir, cos_dir, var_dir)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    out = dirs[0]
    dataset_summary = dict(dataset_summary or {})
    methods = tuple(methods or ())
    n_bootstrap = int(DEFAULT_N_BOOTSTRAP if n_bootstrap is None else n_bootstrap)
    notes: list[str] = []
    params = _run_parameters(seed=seed, n_bootstrap=n_bootstrap, n_permutations=n_permutations,
                             methods=methods, title=title, run_config=dict(run_config or {}))
    metrics = OrderedDict(embedders=OrderedDict(), pairs=OrderedDict(), notes=notes,
                          parameters=params, dataset=dataset_summary,
                          software=software_versions(), files={})
    sets = list(sets or [])
    if not sets:
        notes.append("no embedding sets were given: nothing to analyse")
    sets = _unique_sets(sets, notes)
    n_steps = len(sets) + len(sets) * (len(sets) - 1) // 2 + len(methods) * len(sets)
    bar = progress_bar(n_steps, desc="analysis", unit="step", enabled=progress, leave=False)
    params["hubness_reduction"] = hubness_reduction
    _analyse_all(sets, metrics, bar, seed=seed, n_bootstrap=n_bootstrap,
                 n_permutations=n_permutations, hubness_reduction=hubness_reduction)
    params["seconds_metrics"] = round(time.perf_counter() - t_start, 3)
    write_json_atomic(metrics, out / "metrics.json")  # early copy; rewritten at the end
    all_classes = sorted({c for s in sets for c in s.labels.tolist()}
                         | set(dataset_summary.get("classes", []) or []))
    images = outputs.write_tables_and_figures(
        metrics, sets, *dirs, title=title, methods=methods, seed=seed,
        all_classes=all_classes, bar=bar)
    bar.close()
    params["seconds_total"] = round(time.perf_counter() - t_start, 3)
    write_json_atomic(metrics, out / "metrics.json")
    _write_report(metrics, images, out, title=title)
    write_json_atomic(metrics, out / "metrics.json")
    return json.loads(json.dumps(jsonable(metrics)))


def _write_report(metrics: OrderedDict, images: dict, out: Path, *, title: str) -> None:
    from . import report
    try:
        report.write_report(metrics, images, out, title=title)
        metrics["files"]["report_html"] = str(out / "report.html")
        metrics["files"]["report_md"] = str(out / "report.md")
    except Exception as exc:
        metrics["notes"].append(f"report failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
