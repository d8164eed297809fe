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

import contextlib
import math
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
def knn_predictions(X: ArrayLike, labels: ArrayLike, *, k: int = 1,
                    neighbors: np.ndarray | None = None) -> np.ndarray:
    """Leave-one-out k-nearest-neighbour (cosine) predicted labels [shape=(n,)].

    Majority vote among the k nearest other items; a tied vote goes to the tied class whose
    member is nearest. ``neighbors`` [shape=(n, >= k)]: precomputed
    :func:`~analysis._common.cosine_neighbors` of X at some k' >= k (its first k columns are
    the k-NN), so several k share one search.
    """
    X, labels, _ = validate(X, labels)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = len(labels)
    if n < k + 1:
        raise UndefinedMetricError(f"leave-one-out {k}-NN needs at least {k + 1} items, got {n}")
    nb = cosine_neighbors(X, k) if neighbors is None else np.asarray(neighbors)[:, :k]
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


def _stratified_group_folds(class_codes: np.ndarray, group_codes: np.ndarray, *,
                            n_splits: int, random_state) -> np.ndarray:
    """Test-fold index [shape=(n,)] of each item: scikit-learn's shuffled StratifiedGroupKFold
    greedy (groups in a seeded random order, stable-sorted by the spread of their class counts,
    each put in the fold that keeps the per-class fold shares most even, ties to the smaller
    fold), reimplemented to give the same folds with one numpy pass per group.

    Parameters
    ----------
    class_codes : np.ndarray [shape=(n,)]
        Class index of each item, 0..n_classes-1 in sorted-label order (every code used).
    group_codes : np.ndarray [shape=(n,)]
        Group index of each item, 0..n_groups-1 in sorted-group order (every code used).
    n_splits : int
        Number of folds, 2 <= n_splits <= n_groups.
    random_state : int, np.random.RandomState or None
        Seeds the group shuffle (as ``StratifiedGroupKFold(shuffle=True, random_state=...)``).
    """
    # long by its docstring and the buffers the loop reuses (set up once, outside the loop)
    from sklearn.utils import check_random_state
    rng = check_random_state(random_state)
    n_classes = int(class_codes.max()) + 1
    n_groups = int(group_codes.max()) + 1
    class_sizes = np.bincount(class_codes, minlength=n_classes)
    group_class_counts = np.bincount(group_codes * n_classes + class_codes,
                                     minlength=n_groups * n_classes)
    group_class_counts = group_class_counts.reshape(n_groups, n_classes).astype(np.float64)
    # The same draw as scikit-learn: the rows are shuffled, and the greedy works on (and
    # assigns) shuffled rows; the stable sort keeps that order among equal spreads.
    perm = np.arange(n_groups)
    rng.shuffle(perm)
    group_class_counts = group_class_counts[perm]
    row_of_group = np.empty_like(perm)
    row_of_group[perm] = np.arange(n_groups)
    order = np.argsort(-np.std(group_class_counts, axis=1), kind="stable")

    group_sizes = group_class_counts.sum(axis=1).tolist()
    fold_counts = np.zeros((n_splits, n_classes))
    fold_shares = fold_counts / class_sizes          # [shape=(n_splits, n_classes)]
    fold_sizes = [0.0] * n_splits
    # candidates[i] = the fold shares if the group joined fold i; the std runs over the folds
    # axis (not the contiguous one), so it accumulates in the same order as scikit-learn's std
    # over axis 0 of one candidate, and gives the same bits.
    candidates = np.empty((n_splits, n_splits, n_classes))
    joined = candidates.reshape(n_splits * n_splits, n_classes)[::n_splits + 1]  # [i, i] view
    joined_counts = np.empty((n_splits, n_classes))
    fold_of_row = np.empty(n_groups, dtype=np.int64)
    for row in order.tolist():
        counts = group_class_counts[row]
        np.copyto(candidates, fold_shares)
        np.add(fold_counts, counts, out=joined_counts)
        np.divide(joined_counts, class_sizes, out=joined)
        # the mean over classes as np.mean computes it: a sum along the contiguous axis / count
        evals = (np.add.reduce(np.std(candidates, axis=1), axis=1) / n_classes).tolist()
        best, min_eval, min_size = -1, math.inf, math.inf
        # Sequential on purpose: np.isclose is not transitive, so the winner depends on order.
        for i, (ev, size) in enumerate(zip(evals, fold_sizes)):
            if ev < min_eval or (size < min_size and _isclose(ev, min_eval)):
                best, min_eval, min_size = i, ev, size
        fold_counts[best] += counts
        np.divide(fold_counts[best], class_sizes, out=fold_shares[best])
        fold_sizes[best] += group_sizes[row]
        fold_of_row[row] = best
    return fold_of_row[row_of_group[group_codes]]


def _isclose(a: float, b: float) -> bool:
    """``np.isclose(a, b)`` (rtol 1e-5, atol 1e-8) on two floats, without numpy's overhead."""
    return (abs(a - b) <= 1e-08 + 1e-05 * abs(b) and math.isfinite(b)) or a == b


def probe_folds(labels: ArrayLike, groups: ArrayLike | None = None, *, n_splits: int = 5,
                seed: int = 0) -> np.ndarray:
    """Test-fold index [shape=(n,)] of each item under StratifiedGroupKFold.

    The same folds as scikit-learn's ``StratifiedGroupKFold(n_splits, shuffle=True,
    random_state=seed)`` (tests/test_probe_folds.py checks), computed by
    :func:`_stratified_group_folds` at a fraction of the cost. Items with an empty group are
    their own group. Raises UndefinedMetricError if fewer than 2 folds are possible.
    """
    labels = np.asarray(labels)
    n = len(labels)
    g = groups_or_self(groups, n)
    ns = effective_n_splits(labels, g, n_splits=n_splits)
    if ns < 2:
        raise UndefinedMetricError(
            "linear probe impossible: the smallest class has fewer than 2 distinct groups "
            "(pieces), so no grouped split keeps every class on both sides")
    # codes in sorted order, as scikit-learn numbers classes and groups: the seeded shuffle
    # permutes the groups in that order, so another numbering would give other folds
    _, class_codes = np.unique(labels, return_inverse=True)
    _, group_codes = np.unique(g.astype(str), return_inverse=True)
    return _stratified_group_folds(class_codes.ravel(), group_codes.ravel(), n_splits=ns,
                                   random_state=seed)


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
    from sklearn.metrics import accuracy_score

    from .agreement import macro_f1
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
            "macro_f1": macro_f1(labels, pred),
            "n_splits": int(len(np.unique(fold))), "y_true": labels, "y_pred": pred,
            "fold": fold}


# ----------------------------------------------------------------------------- clustering
def kmeans_clusters(X: ArrayLike, labels: ArrayLike, *, seed: int = 0,
                    n_init: int = 10, check_distinct: bool = True) -> np.ndarray:
    """k-means cluster ids [shape=(n,)] with k = number of classes, on L2-normalised vectors.

    Clustering unit vectors makes the result cosine-consistent and scale-free.
    ``check_distinct=False`` skips the check that there are at least k distinct vectors (a
    caller clustering the same X with several seeds checks once).
    """
    from sklearn.cluster import KMeans
    X, labels, _ = validate(X, labels)
    k = require_classes(labels, min_classes=2, what="k-means")
    if len(labels) <= k:
        raise UndefinedMetricError(f"k-means with {k} clusters needs more than {k} items, "
                                   f"got {len(labels)}")
    Xn = l2_normalize(X)
    if check_distinct:
        n_distinct = len(np.unique(np.round(Xn, 10), axis=0))
        if n_distinct < k:
            raise UndefinedMetricError(f"only {n_distinct} distinct vectors for {k} clusters")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(Xn)
    return km.labels_


def cluster_agreement(labels: ArrayLike, clusters: ArrayLike) -> dict:
    """V-measure and adjusted Rand index between ``labels`` [shape=(n,)] and ``clusters``."""
    from .agreement import adjusted_rand, contingency, v_measure
    labels = np.asarray(labels)
    clusters = np.asarray(clusters)
    if len(labels) != len(clusters):
        raise ValueError(f"labels ({len(labels)}) and clusters ({len(clusters)}) differ in length")
    if len(labels) < 2:
        raise UndefinedMetricError("cluster agreement needs at least 2 items")
    table = contingency(labels, clusters)
    return {"v_measure": v_measure(table), "adjusted_rand": adjusted_rand(table)}


# ----------------------------------------------------------------------------- validity (issue 21)
# One seeded split or one k-means seed is a noisy draw that a report would present as the value
# (a 7-class collection's probe accuracy ranged 0.805 to 0.913 over 50 split seeds). The
# functions below average over seeds and give intervals that cover that spread as well as the
# sampling of items, from the between-seed and within-seed variances (Rubin's rules).

#: BLAS / OpenMP threads during the probe's fits: many small logistic regressions, where waking
#: a multi-threaded BLAS costs more than it computes. bench/bench_probe_threads.py, side by side
#: in one run (n=140, dim=218, 7 classes, 10 x 5 fits; AMD EPYC, 2 logical CPUs, busy): 3.83 s
#: with the default 2 OpenBLAS threads, 0.70 s with 1 (ratio 5.5).
PROBE_BLAS_THREADS: int | None = 1
def probe_predictions_on_folds(X: ArrayLike, labels: ArrayLike, fold: ArrayLike, *,
                               C: float = 1.0, max_iter: int = 2000,
                               seed: int = 0, blas_threads: int | None = PROBE_BLAS_THREADS
                               ) -> np.ndarray:
    """Out-of-fold predictions [shape=(n,)] of the linear probe (StandardScaler +
    LogisticRegression) for the given test-fold index ``fold`` [shape=(n,)] (as from
    :func:`probe_folds`); two embedders given the same ``fold`` are scored on the same split.
    ``blas_threads`` limits the BLAS / OpenMP pools during the fits (None: leave them)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, labels, fold = validate(X, labels, fold)
    pred = np.empty(len(labels), dtype=labels.dtype)
    with _thread_limit(blas_threads):
        for f in np.unique(fold):
            te = fold == f
            if len(np.unique(labels[~te])) < 2:
                raise UndefinedMetricError("a training fold holds a single class")
            model = make_pipeline(StandardScaler(),
                                  LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X[~te], labels[~te])
            pred[te] = model.predict(X[te])
    return pred


def _thread_limit(n_threads: int | None):
    """threadpoolctl's limit on the BLAS / OpenMP pools, or nothing for None."""
    if n_threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=n_threads)


def item_weights(labels: ArrayLike, *, balanced: bool) -> np.ndarray:
    """Weights [shape=(n,)] summing to 1 that make ``sum(w * correct)`` the accuracy
    (``1/n``) or, with ``balanced``, the balanced accuracy (``1 / (n_classes * class size)``)."""
    labels = np.asarray(labels)
    if not balanced:
        return np.full(len(labels), 1.0 / max(len(labels), 1))
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / (len(counts) * counts[inv])


def weighted_score_variance(correct: ArrayLike, labels: ArrayLike,
                            groups: ArrayLike | None = None, *, balanced: bool = False) -> float:
    """Sampling variance of ``sum(w * correct)`` (accuracy or balanced accuracy) over
    independent pieces: the cluster-robust (ratio-estimator) variance within each class,
    summed over classes with their weights. With one item per piece and ``balanced=False`` it is
    ``sum((c - mean)^2) / n^2``, the binomial ``p (1 - p) / n``.

    Parameters
    ----------
    correct : np.ndarray [shape=(n,)]
        Per-item correctness in [0, 1].
    labels, groups : np.ndarray [shape=(n,)]
    """
    correct = np.asarray(correct, dtype=np.float64)
    labels = np.asarray(labels)
    units = groups_or_self(groups, len(correct))
    w = item_weights(labels, balanced=balanced)
    total = 0.0
    strata = np.unique(labels) if balanced else [None]
    for c in strata:
        rows = np.ones(len(correct), bool) if c is None else labels == c
        wc, cc = w[rows], correct[rows]
        rate = float(np.sum(wc * cc) / np.sum(wc))
        _, unit_of = np.unique(units[rows].astype(str), return_inverse=True)
        resid = np.bincount(unit_of, weights=wc * (cc - rate))
        total += float(np.sum(resid ** 2))
    return total


def repeated_linear_probe(X: ArrayLike, labels: ArrayLike, groups: ArrayLike | None = None, *,
                          n_repeats: int = 10, n_splits: int = 5, seed: int = 0,
                          C: float = 1.0, max_iter: int = 2000,
                          blas_threads: int | None = PROBE_BLAS_THREADS) -> dict:
    """The linear probe over ``n_repeats`` seeded grouped stratified splits (repeat r uses
    seed ``seed + r``, as retrieval does), so the reported value is not one split's luck.

    Folds depend only on ``labels``, ``groups`` and the seed: two embedders scored with the
    same arguments on the same items are split identically (a paired comparison can use
    ``correct``). Cost: ``n_repeats * n_splits`` logistic-regression fits.

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]
    groups : np.ndarray [shape=(n,)] or None
        Piece (pair) id per item; a piece never spans train and test.

    Returns
    -------
    dict with, for ``accuracy`` and ``balanced_accuracy``: ``value`` (mean over repeats),
    ``ci95`` (Rubin's rules: within-split sampling variance over pieces + (1 + 1/m) x
    between-split variance; exact binomial on the effective number of pieces via
    :func:`analysis.intervals.rubin_interval`), ``per_split`` [shape=(m,)], ``split_min``,
    ``split_max``, ``between_split_sd``, ``within_split_sd``, ``total_sd``, ``n_effective``;
    plus ``macro_f1`` (mean), ``correct`` [shape=(m, n)] (per-repeat 0/1 correctness),
    ``y_pred`` [shape=(m, n)], ``folds`` [shape=(m, n)], ``seeds``, ``n_splits``, ``n_units``.
    """
    from .agreement import macro_f1
    from .intervals import rubin_interval
    X, labels, groups = validate(X, labels, groups)
    require_classes(labels, min_classes=2, min_items=4, what="linear probe")
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    seeds = [seed + r for r in range(n_repeats)]
    folds = np.stack([probe_folds(labels, groups, n_splits=n_splits, seed=s) for s in seeds])
    preds = np.stack([probe_predictions_on_folds(X, labels, f, C=C, max_iter=max_iter, seed=s,
                                                 blas_threads=blas_threads)
                      for f, s in zip(folds, seeds)])
    correct = (preds == labels[None, :]).astype(np.float64)
    n_units = len(set(groups_or_self(groups, len(labels)).tolist()))
    res = {"correct": correct, "y_pred": preds, "folds": folds, "seeds": seeds,
           "n_splits": int(len(np.unique(folds[0]))), "n_units": n_units,
           "macro_f1": float(np.mean([macro_f1(labels, p) for p in preds]))}
    for key, balanced in (("accuracy", False), ("balanced_accuracy", True)):
        w = item_weights(labels, balanced=balanced)
        per_split = correct @ w
        within = [weighted_score_variance(c, labels, groups, balanced=balanced) for c in correct]
        ci, info = rubin_interval(per_split, within, proportion_units=n_units)
        res[key] = {"value": float(per_split.mean()), "ci95": ci, "per_split": per_split,
                    "split_min": float(per_split.min()), "split_max": float(per_split.max()),
                    **info}
    return res


def clustering_scores(labels: ArrayLike, clusters: ArrayLike) -> dict:
    """``adjusted_mutual_info`` (arithmetic normalisation: v_measure corrected for chance,
    about 0 for clusters unrelated to the labels), ``v_measure`` and ``adjusted_rand`` of
    ``clusters`` [shape=(n,)] against ``labels`` [shape=(n,)]."""
    from .agreement import adjusted_mutual_info, contingency
    res = cluster_agreement(labels, clusters)
    res["adjusted_mutual_info"] = adjusted_mutual_info(contingency(labels, clusters))
    return {k: res[k] for k in ("adjusted_mutual_info", "v_measure", "adjusted_rand")}


CLUSTER_SCORE_BOUNDS = {"adjusted_mutual_info": (-1.0, 1.0), "v_measure": (0.0, 1.0),
                        "adjusted_rand": (-1.0, 1.0)}


def _seed_agreement(X, labels, units, *, seed: int, n_boot: int, n_init: int,
                    check_distinct: bool = True) -> tuple:
    """(scores, bootstrap variances) [shape=(3,)] each, in CLUSTER_SCORE_BOUNDS order, of one
    k-means seed; the bootstrap resamples whole pieces within classes, clusters held fixed."""
    from .bootstrap import bootstrap_values
    names = list(CLUSTER_SCORE_BOUNDS)
    cl = kmeans_clusters(X, labels, seed=seed, n_init=n_init, check_distinct=check_distinct)
    sc = clustering_scores(labels, cl)
    # the scores depend on the partition only: integer codes give the same values and spare
    # each resample sklearn's sorting of strings (about 4x faster per resample)
    codes = np.unique(np.asarray(labels), return_inverse=True)[1]
    boot = bootstrap_values(lambda idx: [clustering_scores(codes[idx], cl[idx])[k]
                                         for k in names],
                            len(labels), n_boot=n_boot, seed=seed, strata=labels, groups=units)
    within = boot.var(axis=0, ddof=1) if len(boot) > 1 else np.zeros(len(names))
    return [sc[k] for k in names], within


def repeated_cluster_agreement(X: ArrayLike, labels: ArrayLike, groups: ArrayLike | None = None,
                               *, n_seeds: int = 10, seed: int = 0, n_boot: int = 200,
                               n_init: int = 10, alpha: float = 0.05) -> dict:
    """Cluster agreement averaged over ``n_seeds`` k-means seeds (``seed + s``), with intervals
    centred on the value.

    For each seed: :func:`kmeans_clusters`, :func:`clustering_scores`, and the sampling variance
    of each score from ``max(20, n_boot // n_seeds)`` class-stratified bootstrap resamples of
    whole pieces of (label, cluster) pairs. The interval is value +- z sqrt(T), T = W + (1 +
    1/m) B (Rubin's rules, :func:`analysis.intervals.rubin_interval`: W the mean bootstrap
    variance, B the variance across seeds), clipped to the score's range. It uses the
    bootstrap's spread, not its percentiles, so the upward bias of a resampled v_measure
    (duplicated items inflate it) cannot push the interval off the value; it contains the value
    by construction; a zero-width one (every seed and resample agreed, e.g. perfectly separated
    classes) is widened by :func:`analysis.intervals.finalize_interval` over the pieces
    (``ci_degenerate_widened``). v_measure is not corrected for chance: read
    ``adjusted_mutual_info``.

    Returns
    -------
    dict: per score name (see :func:`clustering_scores`) ``value``, ``ci95``,
    ``per_seed`` [shape=(m,)], ``seed_min``, ``seed_max``, ``between_split_sd`` (here: between
    seeds), ``within_split_sd``, ``total_sd``; plus ``seeds``, ``n_boot_per_seed``, ``n_units``,
    ``ci_method``.
    """
    from scipy.stats import norm

    from .intervals import finalize_interval, rubin_interval
    X, labels, groups = validate(X, labels, groups)
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    names = list(CLUSTER_SCORE_BOUNDS)
    units = groups_or_self(groups, len(labels))
    n_units = len(set(units.tolist()))
    seeds = [seed + s for s in range(n_seeds)]
    per_boot = max(20, n_boot // n_seeds)
    # the first seed checks that there are enough distinct vectors; the others reuse that
    per = [_seed_agreement(X, labels, units, seed=s, n_boot=per_boot, n_init=n_init,
                           check_distinct=i == 0) for i, s in enumerate(seeds)]
    values, within = np.array([v for v, _ in per]), np.array([w for _, w in per])
    z = float(norm.ppf(1 - alpha / 2))
    res = {"seeds": seeds, "n_boot_per_seed": per_boot, "n_units": n_units,
           "ci_method": "rubin (between k-means seeds + within-seed bootstrap variance), normal"}
    for j, name in enumerate(names):
        _, info = rubin_interval(values[:, j], within[:, j])
        v = float(values[:, j].mean())
        lo_b, hi_b = CLUSTER_SCORE_BOUNDS[name]
        h = z * info["total_sd"]
        # finalize only widens a zero-width interval (every seed and resample agreed)
        ci, flags = finalize_interval(v, [max(lo_b, v - h), min(hi_b, v + h)],
                                      n_units=n_units, bounds=(lo_b, hi_b))
        res[name] = {"value": v, "ci95": ci, "per_seed": values[:, j],
                     "seed_min": float(values[:, j].min()),
                     "seed_max": float(values[:, j].max()), **info, **flags}
    return res


__all__ += ["probe_predictions_on_folds", "item_weights", "weighted_score_variance",
            "repeated_linear_probe", "clustering_scores", "repeated_cluster_agreement"]


# ----------------------------------------------------------------------------- scale (issue 27)
#: Above this many items the iterative fits -- the repeated linear probe (10 x 5 logistic
#: regressions) and the k-means agreement (10 seeds x 10 restarts) -- run on a seeded,
#: class-stratified subsample of whole pieces of about this size (recorded in each entry's
#: ``params.items_subsampled``). Their cost grows with n times the iterations; a subsample
#: keeps a 100,000-item analysis in minutes, and at this size the subsample's sampling error is
#: already small beside the split-to-split spread the intervals carry.
FIT_MAX_ITEMS = 5000


def subsample_rows(labels: ArrayLike, groups: ArrayLike | None = None, *, max_items: int,
                   seed: int = 0, min_per_class: int = 10) -> np.ndarray | None:
    """Sorted rows [shape=(about max_items,)] of a seeded subsample of whole pieces, stratified
    by class; None when there are at most ``max_items`` items (nothing to subsample).

    Each class keeps a share of ``max_items`` proportional to its size (at least
    ``min_per_class`` items, or all it has), filled with whole pieces (``groups``; an empty
    group = the item alone) drawn in one seeded random order, so a piece is never split and the
    subsample's classes are as balanced as the collection's. A piece belongs to the class of its
    first item. The result may exceed ``max_items`` by less than one piece per class.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    if n <= max_items:
        return None
    _, unit = np.unique(groups_or_self(groups, n).astype(str), return_inverse=True)
    n_units = int(unit.max()) + 1
    first = np.full(n_units, n)
    np.minimum.at(first, unit, np.arange(n))
    unit_class, unit_size = labels[first], np.bincount(unit, minlength=n_units)
    order = np.random.default_rng(seed).permutation(n_units)
    keep = np.zeros(n_units, dtype=bool)
    for c in np.unique(unit_class):
        mine = order[unit_class[order] == c]  # this class's pieces in the seeded order
        sizes = np.cumsum(unit_size[mine])
        quota = max(int(round(max_items * sizes[-1] / n)), min_per_class)
        keep[mine[:int(np.searchsorted(sizes, quota)) + 1]] = True
    return np.flatnonzero(keep[unit])


def subsample_params(rows: np.ndarray | None, n: int, *, seed: int, max_items: int) -> dict:
    """``{"items_subsampled": {...}}`` for an entry's params when ``rows`` is a subsample of
    n items ({} when it is None)."""
    if rows is None:
        return {}
    return {"items_subsampled": {"n_items": int(len(rows)), "of": int(n), "seed": int(seed),
                                 "max_items": int(max_items),
                                 "how": "seeded, class-stratified, whole pieces"}}


__all__ += ["FIT_MAX_ITEMS", "subsample_rows", "subsample_params"]
