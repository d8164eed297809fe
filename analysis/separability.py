"""How well the classes separate in one embedding space.

All functions take plain arrays: ``X`` [shape=(n, dim)] vectors, ``labels`` [shape=(n,)] class
labels and, where relevant, ``groups`` [shape=(n,)] (items sharing a group, e.g. the audio and
MIDI rendering of one piece, never sit on both sides of a train/test split). Cosine geometry is
used throughout, so every score here is invariant to positive scaling of individual vectors
(except the linear probe, which standardises features).

Undefined cases (one class, too few items) raise :class:`UndefinedMetricError`; malformed inputs
raise ``ValueError``.
"""
from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
from numpy.typing import ArrayLike

from ._common import (UndefinedMetricError, cosine_neighbors, l2_normalize,
                      require_classes, validate_xy)

__all__ = ["validate", "silhouette_cosine", "silhouette_samples_cosine", "knn_predictions",
           "knn_accuracy", "knn_correct", "balanced_accuracy", "per_class_correct",
           "chance_levels", "effective_n_splits", "probe_folds", "linear_probe",
           "kmeans_clusters", "cluster_agreement", "groups_or_self"]


def validate(X: ArrayLike, labels: ArrayLike, groups: ArrayLike | None = None) -> tuple:
    """Check ``X`` [shape=(n, dim)], ``labels`` [shape=(n,)], ``groups`` [shape=(n,)] agree.

    Raises
    ------
    ValueError
        If ``X`` is not a finite 2-d numeric array or labels/groups have the wrong length.
    """
    return validate_xy(X, labels, groups)


def groups_or_self(groups: ArrayLike, n: int) -> np.ndarray:
    """Group ids [shape=(n,)]: items with an empty/None group become their own group."""
    if groups is None:
        return np.array([f"__item{i}" for i in range(n)], dtype=object)
    g = np.asarray(groups, dtype=object).copy()
    for i, v in enumerate(g):
        if v is None or str(v) == "":
            g[i] = f"__item{i}"
        else:
            g[i] = "g:" + str(v)
    return g


# ----------------------------------------------------------------------------- silhouette
def silhouette_samples_cosine(X: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Per-item silhouette values [shape=(n,)] with cosine distance.

    Items in singleton classes get 0 (the sklearn convention).
    """
    X, labels, _ = validate(X, labels)
    require_classes(labels, min_classes=2, what="silhouette")
    k = len(np.unique(labels))
    if k > len(labels) - 1:
        raise UndefinedMetricError(f"silhouette needs 2 <= n_classes <= n-1 (n={len(labels)}, "
                                   f"n_classes={k})")
    # Mean cosine distance from item i to class c is 1 - x_i . (sum of class c) / |c| (unit
    # rows), so class sums replace the n x n distance matrix: O(n k dim) time, O(n k) memory.
    Xn = l2_normalize(X)
    classes, inv = np.unique(labels, return_inverse=True)
    counts = np.bincount(inv).astype(np.float64)
    sums = np.zeros((len(classes), Xn.shape[1]))
    np.add.at(sums, inv, Xn)
    G = Xn @ sums.T  # (n, k) summed cosine similarity to each class
    rows = np.arange(len(labels))
    own_n = counts[inv]
    self_sim = np.einsum("ij,ij->i", Xn, Xn)  # 1, or 0 for a zero vector
    with np.errstate(invalid="ignore", divide="ignore"):
        a = ((own_n - 1) - (G[rows, inv] - self_sim)) / (own_n - 1)
        mean_other = 1.0 - G / counts[None, :]
    mean_other[rows, inv] = np.inf
    b = mean_other.min(axis=1)
    a = np.maximum(a, 0.0)  # as the clipped distance matrix: no negative round-off
    den = np.maximum(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(den > 0, (b - a) / den, 0.0)
    s[own_n == 1] = 0.0  # singleton classes: 0, the sklearn convention
    return s


def silhouette_cosine(X: ArrayLike, labels: ArrayLike) -> float:
    """Mean silhouette coefficient with cosine distance, in [-1, 1] (1 = tight, separated classes).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]
    """
    return float(np.mean(silhouette_samples_cosine(X, labels)))


# ----------------------------------------------------------------------------- kNN
def knn_predictions(X: ArrayLike, labels: ArrayLike, *, k: int = 1) -> np.ndarray:
    """Leave-one-out k-nearest-neighbour (cosine) predicted labels [shape=(n,)].

    Majority vote among the k nearest other items; a tied vote goes to the tied class whose
    member is nearest.
    """
    X, labels, _ = validate(X, labels)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = len(labels)
    if n < k + 1:
        raise UndefinedMetricError(f"leave-one-out {k}-NN needs at least {k + 1} items, got {n}")
    nb = cosine_neighbors(X, k)
    pred = np.empty(n, dtype=labels.dtype)
    for i in range(n):
        votes = labels[nb[i]]
        counts = Counter(votes.tolist())
        best = max(counts.values())
        tied = {c for c, v in counts.items() if v == best}
        for lab in votes:  # nearest first
            if lab in tied:
                pred[i] = lab
                break
    return pred


def knn_correct(X: ArrayLike, labels: ArrayLike, *, k: int = 1) -> np.ndarray:
    """Per-item 0/1 correctness [shape=(n,)] of leave-one-out k-NN (cosine)."""
    X, labels, _ = validate(X, labels)
    require_classes(labels, min_classes=2, what="kNN accuracy")
    return (knn_predictions(X, labels, k=k) == labels).astype(np.float64)


def knn_accuracy(X: ArrayLike, labels: ArrayLike, *, k: int = 1) -> float:
    """Leave-one-out k-NN accuracy (cosine distance), in [0, 1].

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]
    k : int
        Number of neighbours.
    """
    return float(np.mean(knn_correct(X, labels, k=k)))


# ----------------------------------------------------------------------------- chance, balance
def per_class_correct(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[list, np.ndarray, np.ndarray]:
    """(classes, correct [shape=(n_classes,)], size [shape=(n_classes,)]) of a prediction."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-d of one length, got {y_true.shape} and "
                         f"{y_pred.shape}")
    classes, inv = np.unique(y_true, return_inverse=True)
    size = np.bincount(inv, minlength=len(classes))
    correct = np.bincount(inv, weights=(y_true == y_pred).astype(np.float64),
                          minlength=len(classes))
    return classes.tolist(), correct, size


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean over classes of the recall (fraction of the class predicted correctly), in [0, 1].

    Unlike accuracy it does not reward predicting the majority class: its chance level is
    1 / n_classes whatever the class sizes (noise with 180 vs 20 items per class gets a k=5
    accuracy of 0.90 but a balanced accuracy of about 0.5).

    Parameters
    ----------
    y_true, y_pred : np.ndarray [shape=(n,)]
    """
    _, correct, size = per_class_correct(y_true, y_pred)
    if not len(size):
        raise UndefinedMetricError("balanced accuracy needs at least one item")
    return float(np.mean(correct / size))


def chance_levels(labels: ArrayLike) -> dict:
    """Chance levels of a classifier on ``labels`` [shape=(n,)]: ``majority_rate`` (accuracy of
    always predicting the largest class: what accuracy must beat), ``uniform`` (1 / n_classes:
    the chance level of balanced accuracy) and ``imbalance`` (largest / smallest class size)."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    if not len(counts):
        raise UndefinedMetricError("chance levels need at least one item")
    return {"majority_rate": float(counts.max() / counts.sum()), "uniform": 1.0 / len(counts),
            "imbalance": float(counts.max() / counts.min())}


# ----------------------------------------------------------------------------- linear probe
def effective_n_splits(labels: ArrayLike, groups: ArrayLike | None = None, *,
                       n_splits: int = 5) -> int:
    """The number of grouped stratified folds the data allows (<= n_splits; < 2 = impossible).

    Each class must contribute at least one group to every fold, so the number of folds is
    bounded by the smallest number of distinct groups in any class.
    """
    labels = np.asarray(labels)
    g = groups_or_self(groups, len(labels))
    per_class = [len(set(g[labels == c].tolist())) for c in np.unique(labels)]
    if not per_class:
        return 0
    return int(min(n_splits, min(per_class), len(set(g.tolist()))))


def probe_folds(labels: ArrayLike, groups: ArrayLike | None = None, *, n_splits: int = 5,
                seed: int = 0) -> np.ndarray:
    """Test-fold index [shape=(n,)] of each item under StratifiedGroupKFold.

    Items with an empty group are their own group. Raises UndefinedMetricError if fewer than 2
    folds are possible.
    """
    from sklearn.model_selection import StratifiedGroupKFold
    labels = np.asarray(labels)
    n = len(labels)
    g = groups_or_self(groups, n)
    ns = effective_n_splits(labels, g, n_splits=n_splits)
    if ns < 2:
        raise UndefinedMetricError(
            "linear probe impossible: the smallest class has fewer than 2 distinct groups "
            "(pieces), so no grouped split keeps every class on both sides")
    cv = StratifiedGroupKFold(n_splits=ns, shuffle=True, random_state=seed)
    fold = np.full(n, -1, dtype=np.int64)
    _, g_codes = np.unique(g.astype(str), return_inverse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f, (_, te) in enumerate(cv.split(np.zeros((n, 1)), labels, g_codes)):
            fold[te] = f
    return fold


def linear_probe(X: ArrayLike, labels: ArrayLike, groups: ArrayLike | None = None, *,
                 n_splits: int = 5, seed: int = 0, C: float = 1.0, max_iter: int = 2000) -> dict:
    """Cross-validated linear probe (StandardScaler + LogisticRegression), grouped by pair id.

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]
    groups : np.ndarray [shape=(n,)] or None
        Group (pair) id per item; ``""`` = own group. A group never spans train and test.
    n_splits : int
        Requested folds; reduced to what the smallest class allows.

    Returns
    -------
    dict with ``accuracy``, ``macro_f1`` (pooled out-of-fold predictions), ``n_splits``,
    ``y_true``, ``y_pred``, ``fold`` [shape=(n,)].
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, labels, groups = validate(X, labels, groups)
    require_classes(labels, min_classes=2, min_items=4, what="linear probe")
    fold = probe_folds(labels, groups, n_splits=n_splits, seed=seed)
    pred = np.empty(len(labels), dtype=labels.dtype)
    for f in np.unique(fold):
        te = fold == f
        tr = ~te
        if len(np.unique(labels[tr])) < 2:
            raise UndefinedMetricError("a training fold holds a single class")
        model = make_pipeline(StandardScaler(),
                              LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X[tr], labels[tr])
        pred[te] = model.predict(X[te])
    return {"accuracy": float(accuracy_score(labels, pred)),
            "macro_f1": float(f1_score(labels, pred, average="macro", zero_division=0)),
            "n_splits": int(len(np.unique(fold))), "y_true": labels, "y_pred": pred,
            "fold": fold}


# ----------------------------------------------------------------------------- clustering
def kmeans_clusters(X: ArrayLike, labels: ArrayLike, *, seed: int = 0,
                    n_init: int = 10) -> np.ndarray:
    """k-means cluster ids [shape=(n,)] with k = number of classes, on L2-normalised vectors.

    Clustering unit vectors makes the result cosine-consistent and scale-free.
    """
    from sklearn.cluster import KMeans
    X, labels, _ = validate(X, labels)
    k = require_classes(labels, min_classes=2, what="k-means")
    if len(labels) <= k:
        raise UndefinedMetricError(f"k-means with {k} clusters needs more than {k} items, "
                                   f"got {len(labels)}")
    Xn = l2_normalize(X)
    n_distinct = len(np.unique(np.round(Xn, 10), axis=0))
    if n_distinct < k:
        raise UndefinedMetricError(f"only {n_distinct} distinct vectors for {k} clusters")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(Xn)
    return km.labels_


def cluster_agreement(labels: ArrayLike, clusters: ArrayLike) -> dict:
    """V-measure and adjusted Rand index between ``labels`` [shape=(n,)] and ``clusters``."""
    from sklearn.metrics import adjusted_rand_score, v_measure_score
    labels = np.asarray(labels)
    clusters = np.asarray(clusters)
    if len(labels) != len(clusters):
        raise ValueError(f"labels ({len(labels)}) and clusters ({len(clusters)}) differ in length")
    if len(labels) < 2:
        raise UndefinedMetricError("cluster agreement needs at least 2 items")
    return {"v_measure": float(v_measure_score(labels, clusters)),
            "adjusted_rand": float(adjusted_rand_score(labels, clusters))}
