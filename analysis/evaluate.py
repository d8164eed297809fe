"""One embedder, one pair of embedders, one set against a reference: every registered metric
of that kind as an ordered dict of entries, plus the descriptives the report shows.

Notebook use::

    from analysis import evaluate_embedder, evaluate_pair
    m = evaluate_embedder(X, labels, groups)          # ordered dict of metric entries
    p = evaluate_pair(X_audio, X_midi, labels)       # rows aligned by pair id

One metric alone: ``analysis.metrics.get("knn_accuracy_k5").fn(EmbedderContext(X, labels))``.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
from numpy.typing import ArrayLike

from . import metrics as registry
from . import structure
from ._common import UndefinedMetricError
from .metrics import frechet as frechet_metrics
from .metrics.context import (DEFAULT_N_BOOTSTRAP, DEFAULT_N_PERMUTATIONS,
                              DEFAULT_RETRIEVAL_SPLITS, EmbedderContext, PairContext,
                              SetContext, guard)
from .metrics.neighbourhood import JACCARD_K

__all__ = ["evaluate_embedder", "evaluate_embedder_context", "evaluate_pair", "evaluate_set", "IMBALANCE_RATIO"]

#: Largest / smallest class size from which a note flags the imbalance.
IMBALANCE_RATIO = 1.5


def _evaluate(kind: str, ctx) -> OrderedDict:
    """Every registered metric of ``kind`` that applies to this run, in registry order."""
    return OrderedDict((m.name, guard(m, ctx)) for m in registry.metrics(kind) if m.applies(ctx))


def evaluate_embedder(X: ArrayLike, labels: ArrayLike, groups: ArrayLike | None = None, *,
                      ids: ArrayLike | None = None, seed: int = 0,
                      n_bootstrap: int = DEFAULT_N_BOOTSTRAP, n_splits: int = 5,
                      neighbours_per_class: int = 3, n_neighbours: int = 5,
                      hubness_reduction: str | None = None) -> OrderedDict:
    """Every single-space metric of one embedder (``hubness_reduction="mp"`` adds the
    recommendation metrics under mutual proximity, suffixed ``_mp``).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]
    groups : np.ndarray [shape=(n,)] or None
        Pair id per item ("" = own group); used for grouped probe folds and bootstrap.
    ids : np.ndarray [shape=(n,)] or None
        Item names for the nearest-neighbour and outlier listings.

    Returns
    -------
    OrderedDict: the registered embedder metric entries, then ``n_items``, ``n_classes``,
    ``dim``, ``classes``, ``class_counts``, ``n_paired_items``, ``chance``,
    ``centroid_cosine`` (centred), ``centroid_cosine_uncentered``, ``confusion``,
    ``class_variance``, ``nearest_neighbours``, ``frechet``, ``notes``.
    """
    ctx = EmbedderContext(X, labels, groups, seed=seed, n_bootstrap=n_bootstrap,
                          n_splits=n_splits, hubness_reduction=hubness_reduction)
    return evaluate_embedder_context(ctx, ids=ids, neighbours_per_class=neighbours_per_class,
                                     n_neighbours=n_neighbours)


def evaluate_embedder_context(ctx: EmbedderContext, *, ids: ArrayLike | None = None,
                              neighbours_per_class: int = 3,
                              n_neighbours: int = 5) -> OrderedDict:
    """:func:`evaluate_embedder` on a context the caller keeps: its shared results (the repeated
    probe's out-of-fold predictions) can then be reused, e.g. by the paired comparisons."""
    n_splits = ctx.n_splits
    notes = _embedder_notes(ctx)
    res = _evaluate("embedder", ctx)
    pa = res.get("probe_accuracy")
    if pa and pa["value"] is not None and pa["params"].get("n_splits", n_splits) < n_splits:
        pa["note"] = (f"n_splits reduced to {pa['params']['n_splits']} (smallest class has too "
                      "few pieces)")
    ids = (np.array([f"item{i}" for i in range(ctx.n)]) if ids is None
           else np.asarray(ids, dtype=str))
    undefined = [f"{name}: {e['note']}" for name, e in res.items()
                 if e["value"] is None and e.get("note") and not registry.get(name).when]
    res.update(_embedder_descriptives(ctx, ids, n_neighbours=n_neighbours,
                                      per_class=neighbours_per_class, notes=notes))
    notes.extend(undefined)
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


def _centroid_matrices(ctx: EmbedderContext, classes: list) -> OrderedDict:
    out = OrderedDict()
    for key, center in (("centroid_cosine", True), ("centroid_cosine_uncentered", False)):
        try:
            cls, M = structure.centroid_cosine_matrix(ctx.X, ctx.labels, center=center)
            out[key] = {"classes": cls, "matrix": M, "params": {
                "centroids": "mean of L2-normalised vectors", "centered": center,
                "centering": "collection mean of the unit vectors removed" if center else "none"}}
        except UndefinedMetricError as exc:
            out[key] = {"classes": classes, "matrix": None, "note": str(exc)}
    return out


def _frechet_descriptive(ctx: EmbedderContext, ids: np.ndarray, classes: list) -> dict:
    """The class x class Fréchet matrices, FD∞ per class vs rest and the top outliers."""
    try:
        s = frechet_metrics.class_structure(ctx)
    except (UndefinedMetricError, ValueError) as exc:
        return {"classes": classes, "matrix": None, "note": str(exc)}
    return {"classes": s["classes"], "matrix": s["matrix"], "normalized": s["normalized"],
            "total_variance": s["total_variance"], "vs_rest_inf": s["vs_rest_inf"],
            "outliers": frechet_metrics.outliers(ctx, ids),
            "params": {"shrinkage": frechet_metrics.SHRINKAGE,
                       "normalized": "matrix / total_variance (trace of the covariance of all "
                                     "items): scale-free",
                       "outlier_score": "squared Mahalanobis distance to the item's class "
                                        "Gaussian / dim (about 1 = typical)"}}


def _embedder_descriptives(ctx: EmbedderContext, ids: np.ndarray, *, n_neighbours: int,
                           per_class: int, notes: list) -> OrderedDict:
    """Counts, chance levels, centroid matrices, confusion, spread, neighbour listings and the
    Fréchet matrices."""
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
    res.update(_centroid_matrices(ctx, classes))
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
    res["frechet"] = _frechet_descriptive(ctx, ids, classes)
    return res


def evaluate_pair(X: ArrayLike, Y: ArrayLike, labels: ArrayLike | None = None, *, seed: int = 0,
                  n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                  n_permutations: int = DEFAULT_N_PERMUTATIONS, test_fraction: float = 0.3,
                  max_components: int = 64,
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
    OrderedDict: the registered pair metric entries, then ``n_shared``, ``n_classes``,
    ``retrieval_chance``, ``retrieval_n_test`` and ``notes``.
    """
    ctx = PairContext(X, Y, labels, seed=seed, n_bootstrap=n_bootstrap,
                      n_permutations=n_permutations, test_fraction=test_fraction,
                      max_components=max_components, retrieval_splits=retrieval_splits)
    notes = [] if ctx.n else ["no shared items: every between-space metric is undefined"]
    res = _evaluate("pair", ctx)
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
    jac = res[f"knn_jaccard_k{JACCARD_K}"]
    if jac["params"].get("k_reduced_from"):
        jac["note"] = f"only {ctx.n} shared items: k reduced to {jac['params']['k']}"


def evaluate_set(X: ArrayLike, reference: ArrayLike, *, seed: int = 0) -> OrderedDict:
    """Every ``set`` metric of a collection against a reference collection in the same space
    (e.g. ``frechet_to_reference``, ``frechet_inf_to_reference``).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    reference : np.ndarray [shape=(m, dim)]
    """
    ctx = SetContext(X, reference, seed=seed)
    res = _evaluate("set", ctx)
    res["n"], res["n_reference"] = int(ctx.n), int(ctx.reference.shape[0])
    return res
