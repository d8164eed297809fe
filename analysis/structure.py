"""Class structure of one embedding space: centroids, spreads, confusions, neighbours.

``X`` [shape=(n, dim)] are the vectors, ``labels`` [shape=(n,)] the classes. Cosine quantities
are computed on L2-normalised vectors (scale-free); the raw variances are kept for continuity
with earlier reports and are *not* comparable across embedders (their units differ). The
centroid cosine matrix is centred by default (the collection mean of the unit vectors removed):
uncentred, a shared offset puts every centroid at cosine ~1 with every other.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from ._common import (UndefinedMetricError, cosine_neighbors, l2_normalize, require_classes,
                      validate_xy)

__all__ = ["validate", "class_centroids", "centroid_cosine_matrix",
           "within_total_variance_ratio", "within_total_contributions", "class_variance_table",
           "nearest_centroid_confusion", "nearest_neighbours"]


def validate(X: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check ``X`` [shape=(n, dim)] and ``labels`` [shape=(n,)]; raise ValueError otherwise."""
    X, labels, _ = validate_xy(X, labels)
    return X, labels


def _classes(labels, classes):
    if classes is None:
        return sorted(np.unique(labels).tolist())
    classes = list(classes)
    missing = set(np.unique(labels).tolist()) - set(classes)
    if missing:
        raise ValueError(f"labels not in classes: {sorted(missing)}")
    return classes


def class_centroids(X: ArrayLike, labels: ArrayLike, *, classes: Sequence | None = None,
                    normalize: bool = True) -> tuple[list, np.ndarray]:
    """Class means [shape=(n_classes, dim)].

    Parameters
    ----------
    normalize : bool
        Average L2-normalised vectors (mean direction) instead of raw vectors.

    Returns
    -------
    (classes, C) : list of labels, np.ndarray [shape=(n_classes, dim)]; a class with no item
    gets a NaN row.
    """
    X, labels = validate(X, labels)
    classes = _classes(labels, classes)
    V = l2_normalize(X) if normalize else X
    C = np.full((len(classes), X.shape[1]), np.nan)
    for i, c in enumerate(classes):
        m = labels == c
        if m.any():
            C[i] = V[m].mean(axis=0)
    return classes, C


def centroid_cosine_matrix(X: ArrayLike, labels: ArrayLike, *, classes: Sequence | None = None,
                           center: bool = True) -> tuple[list, np.ndarray]:
    """Cosine similarity between class centroids [shape=(n_classes, n_classes)], in [-1, 1].

    Centroids are means of L2-normalised vectors. With ``center=True`` (the default) the grand
    mean of the normalised vectors is subtracted first: a large offset shared by every vector
    (hand-made descriptors, post-ReLU embeddings) otherwise puts every centroid at cosine
    0.9-1.0 with every other, whatever the classes. ``center=False`` gives the uncentred matrix
    of the original study. Entries involving an empty class are NaN.

    Returns
    -------
    (classes, M)
    """
    X, labels = validate(X, labels)
    if len(labels) == 0:
        raise UndefinedMetricError("no items")
    classes, C = class_centroids(X, labels, classes=classes, normalize=True)
    if center:
        C = C - l2_normalize(X).mean(axis=0, keepdims=True)
    norms = np.linalg.norm(C, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        Cn = C / norms[:, None]
    Cn[~np.isfinite(norms) | (norms < 1e-12)] = np.nan
    M = np.clip(Cn @ Cn.T, -1.0, 1.0)
    return classes, M


def within_total_variance_ratio(X: ArrayLike, labels: ArrayLike, *,
                                normalize: bool = True) -> float:
    """trace(within-class scatter) / trace(total scatter), in [0, 1] (0 = classes are points).

    With ``normalize`` (the default) the vectors are L2-normalised first, so the ratio is
    scale-free in the strong sense, like the cosine measures: invariant to rescaling any single
    vector as well as to rotation (random per-item factors in [0.5, 2] moved the raw ratio from
    0.18 to 0.76). ``normalize=False`` is the raw ratio, invariant to global scaling, translation
    and rotation only.

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]
    """
    X, labels = validate(X, labels)
    if normalize:
        X = l2_normalize(X)
    require_classes(labels, min_classes=1, min_items=2, what="within/total variance ratio")
    total = float(np.sum((X - X.mean(axis=0)) ** 2))
    if total <= 1e-300:
        raise UndefinedMetricError("total scatter is zero (all vectors identical)")
    within = 0.0
    for c in np.unique(labels):
        Xc = X[labels == c]
        within += float(np.sum((Xc - Xc.mean(axis=0)) ** 2))
    return within / total


def within_total_contributions(X: ArrayLike, labels: ArrayLike, *,
                               normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-item squared distances to the class mean and to the grand mean, each [shape=(n,)].

    ``w.sum() / t.sum()`` is :func:`within_total_variance_ratio` (same ``normalize``);
    bootstrapping the ratio of sums over items (means held fixed) avoids the downward bias that
    duplicated items cause when the ratio is recomputed on a resample.
    """
    X, labels = validate(X, labels)
    if normalize:
        X = l2_normalize(X)
    mu = X.mean(axis=0) if len(X) else np.zeros(X.shape[1])
    t = np.sum((X - mu) ** 2, axis=1)
    w = np.empty(len(X))
    for c in np.unique(labels):
        m = labels == c
        w[m] = np.sum((X[m] - X[m].mean(axis=0)) ** 2, axis=1)
    return w, t


def class_variance_table(X: ArrayLike, labels: ArrayLike, *,
                         classes: Sequence | None = None) -> list[dict]:
    """Per-class spread.

    Returns
    -------
    list of dict (one per class) with ``class``, ``n``, ``raw_variance`` (per-dimension population
    variance, mean over dims; raw units), ``normalized_variance`` (raw_variance / the same for all
    items), ``mean_cosine_distance`` (mean 1 - cos between each L2-normalised vector and its class
    mean direction; scale-free). Values are None where undefined (empty class; n=1 gives 0).
    """
    X, labels = validate(X, labels)
    classes = _classes(labels, classes)
    total_var = float(X.var(axis=0).mean()) if len(X) >= 1 and X.shape[1] else float("nan")
    Xn = l2_normalize(X)
    rows = []
    for c in classes:
        m = labels == c
        n = int(m.sum())
        row = {"class": c, "n": n, "raw_variance": None, "normalized_variance": None,
               "mean_cosine_distance": None}
        if n:
            rv = float(X[m].var(axis=0).mean()) if X.shape[1] else float("nan")
            row["raw_variance"] = rv
            row["normalized_variance"] = rv / total_var if total_var > 0 else None
            mu = Xn[m].mean(axis=0)
            nm = np.linalg.norm(mu)
            if nm > 1e-12:
                row["mean_cosine_distance"] = float(np.mean(1.0 - Xn[m] @ (mu / nm)))
        rows.append(row)
    return rows


def nearest_centroid_confusion(X: ArrayLike, labels: ArrayLike, *, classes: Sequence | None = None,
                               leave_one_out: bool = True) -> tuple[list, np.ndarray, np.ndarray]:
    """Confusion matrix [shape=(n_classes, n_classes)] of nearest-centroid (cosine) classification.

    Rows are true classes, columns predicted ones (counts). With ``leave_one_out`` each item is
    left out of its own class centroid; an item alone in its class cannot be predicted as that
    class.

    Returns
    -------
    (classes, M, pred) with pred [shape=(n,)] the predicted labels.
    """
    X, labels = validate(X, labels)
    require_classes(labels, min_classes=2, what="nearest-centroid confusion")
    classes = _classes(labels, classes)
    Xn = l2_normalize(X)
    idx = {c: i for i, c in enumerate(classes)}
    y = np.array([idx[c] for c in labels])
    S = np.zeros((len(classes), X.shape[1]))
    counts = np.zeros(len(classes))
    for i in range(len(classes)):
        S[i] = Xn[y == i].sum(axis=0)
        counts[i] = np.sum(y == i)
    pred = np.empty(len(y), dtype=np.int64)
    for j in range(len(y)):
        C = S.copy()
        valid = counts > 0
        if leave_one_out:
            C[y[j]] -= Xn[j]
            if counts[y[j]] <= 1:
                valid = valid.copy()
                valid[y[j]] = False
        norms = np.linalg.norm(C, axis=1)
        sims = np.where(norms > 1e-12, (C @ Xn[j]) / np.maximum(norms, 1e-12), -np.inf)
        sims[~valid] = -np.inf
        sims = np.round(sims, 12)
        pred[j] = int(np.argmax(sims))
    M = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(M, (y, pred), 1)
    return classes, M, np.array(classes, dtype=object)[pred]


def nearest_neighbours(X: ArrayLike, labels: ArrayLike, ids: ArrayLike, *, k: int = 5,
                       per_class: int = 3, seed: int = 0) -> list:
    """For up to ``per_class`` items per class (seeded choice), their k nearest neighbours (cosine).

    Returns
    -------
    list of dict: ``id``, ``label``, ``neighbours`` = list of {``id``, ``label``,
    ``cosine_distance``}, ``same_label`` = fraction of neighbours sharing the label.
    """
    X, labels = validate(X, labels)
    ids = np.asarray(ids)
    n = len(labels)
    if n < 2:
        raise UndefinedMetricError("nearest neighbours need at least 2 items")
    k = min(k, n - 1)
    Xn = l2_normalize(X)
    rng = np.random.default_rng(seed)
    chosen_by_class = []
    for c in sorted(np.unique(labels).tolist()):
        members = np.flatnonzero(labels == c)
        chosen_by_class.append(
            (c, np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False))))
    queries = np.concatenate([ch for _, ch in chosen_by_class])
    nb = dict(zip(queries.tolist(), cosine_neighbors(X, k, rows=queries)))  # only these rows
    out = []
    for c, chosen in chosen_by_class:
        for i in chosen:
            neigh = [{"id": str(ids[j]), "label": str(labels[j]),
                      "cosine_distance": float(1.0 - Xn[i] @ Xn[j])} for j in nb[int(i)]]
            out.append({"id": str(ids[i]), "label": str(c), "neighbours": neigh,
                        "same_label": float(np.mean([d["label"] == str(c) for d in neigh]))})
    return out
