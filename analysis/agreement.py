"""Agreement between two labellings of the same items, from their contingency table.

Cluster agreement (labels vs k-means clusters): the same definitions as scikit-learn's
``v_measure_score``, ``adjusted_rand_score`` and ``adjusted_mutual_info_score`` (arithmetic
normalisation); and the probe's macro F1 (labels vs predictions) as ``f1_score(average="macro",
zero_division=0)``. Computed with numpy from one contingency table. Why not call scikit-learn:
the intervals recompute these scores on every bootstrap resample (10 seeds x 20 resamples per
embedder and score), and scikit-learn's input validation costs ~9 ms a call where the arithmetic
costs ~0.1 ms; that made them most of a small run's analysis time. ``tests/test_agreement.py``
checks every function against scikit-learn on random and degenerate labellings.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln

_EPS = float(np.finfo(np.float64).eps)


def contingency(labels: ArrayLike, clusters: ArrayLike) -> np.ndarray:
    """Counts of items per (label, cluster) [shape=(n_labels, n_clusters), dtype=int64], rows and
    columns in sorted order of the distinct values."""
    _, li = np.unique(np.asarray(labels), return_inverse=True)
    _, ci = np.unique(np.asarray(clusters), return_inverse=True)
    n_l, n_c = int(li.max(initial=-1)) + 1, int(ci.max(initial=-1)) + 1
    flat = np.bincount(li.ravel() * n_c + ci.ravel(), minlength=n_l * n_c)
    return flat.reshape(n_l, n_c).astype(np.int64)


def entropy_of_counts(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of a labelling given its class counts [shape=(k,)]."""
    p = np.asarray(counts, dtype=np.float64)
    p = p[p > 0]
    if p.size <= 1:
        return 0.0
    total = p.sum()
    return float(-np.sum((p / total) * (np.log(p) - math.log(total))))


def mutual_information(table: np.ndarray) -> float:
    """Mutual information (nats) of a contingency table [shape=(r, c)]; 0 when either side has
    a single value."""
    a, b = table.sum(axis=1), table.sum(axis=0)
    if a.size == 1 or b.size == 1:
        return 0.0
    n = float(table.sum())
    rows, cols = np.nonzero(table)
    nz = table[rows, cols].astype(np.float64)
    outer = a[rows].astype(np.int64) * b[cols].astype(np.int64)
    terms = (nz / n) * (np.log(nz) - math.log(n) - np.log(outer) + 2 * math.log(n))
    terms = np.where(np.abs(terms) < _EPS, 0.0, terms)
    return float(max(terms.sum(), 0.0))


@functools.lru_cache(maxsize=4)
def _log_factorials(n: int) -> np.ndarray:
    """log k! for k = 0..n [shape=(n + 1,)] (read-only)."""
    lf = gammaln(np.arange(n + 1, dtype=np.float64) + 1)
    lf.flags.writeable = False
    return lf


def expected_mutual_information(table: np.ndarray) -> float:
    """Expected mutual information of two random labellings with the table's margins (the
    hypergeometric model of Vinh, Epps & Bailey 2010), vectorised over every (row, column,
    n_ij) term."""
    a, b = table.sum(axis=1).astype(np.int64), table.sum(axis=0).astype(np.int64)
    if a.size == 1 or b.size == 1:
        return 0.0
    n = int(a.sum())
    ai, bj = np.repeat(a, b.size), np.tile(b, a.size)
    start = np.maximum(1, ai + bj - n)
    length = np.maximum(np.minimum(ai, bj) - start + 1, 0)
    pair = np.repeat(np.arange(ai.size), length)
    nij = (np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
           + start[pair]).astype(np.float64)
    A_i, B_i, nij_i = ai[pair], bj[pair], nij.astype(np.int64)
    A, B = A_i.astype(np.float64), B_i.astype(np.float64)
    # log k! looked up, not evaluated per term: the same gammaln values (a bootstrap scores
    # hundreds of tables of one n), in the same order of additions
    lf = _log_factorials(n)
    log_p = (lf[A_i] + lf[B_i] + lf[n - A_i] + lf[n - B_i]
             - lf[n] - lf[nij_i] - lf[A_i - nij_i] - lf[B_i - nij_i]
             - lf[n - A_i - B_i + nij_i])
    return float(np.sum(nij / n * (math.log(n) + np.log(nij) - np.log(A) - np.log(B))
                        * np.exp(log_p)))


def v_measure(table: np.ndarray, *, beta: float = 1.0) -> float:
    """V-measure: the weighted harmonic mean of homogeneity and completeness (rows are labels,
    columns clusters)."""
    h_l, h_c = entropy_of_counts(table.sum(axis=1)), entropy_of_counts(table.sum(axis=0))
    mi = mutual_information(table)
    hom = mi / h_l if h_l else 1.0
    com = mi / h_c if h_c else 1.0
    if hom + com == 0:
        return 0.0
    return min(float((1 + beta) * hom * com / (beta * hom + com)), 1.0)  # round-off: 1 + 2e-16


def adjusted_rand(table: np.ndarray) -> float:
    """Adjusted Rand index from the pair-confusion counts (exact integer arithmetic)."""
    n = int(table.sum())
    sum_sq = int(np.sum(table.astype(np.int64) ** 2))
    rows, cols = table.sum(axis=1).astype(np.int64), table.sum(axis=0).astype(np.int64)
    tp = sum_sq - n
    fp = int(np.sum(table @ cols)) - sum_sq  # pairs together in a label, apart in clusters
    fn = int(np.sum(table.T @ rows)) - sum_sq
    tn = n * n - fp - fn - sum_sq
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def adjusted_mutual_info(table: np.ndarray) -> float:
    """Adjusted mutual information, arithmetic normalisation: about 0 for a clustering unrelated
    to the labels, 1 for identical partitions."""
    if table.shape[0] == table.shape[1] and table.shape[0] in (0, 1):
        return 1.0
    mi, emi = mutual_information(table), expected_mutual_information(table)
    norm = 0.5 * (entropy_of_counts(table.sum(axis=1)) + entropy_of_counts(table.sum(axis=0)))
    den = norm - emi
    den = min(den, -_EPS) if den < 0 else max(den, _EPS)
    return min(float((mi - emi) / den), 1.0)  # MI <= mean entropy; round-off could pass 1


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Unweighted mean over every value in ``y_true`` or ``y_pred`` [shape=(n,)] of its F1
    score, 2 TP / (2 TP + FP + FN); a value with no true and no predicted item scores 0."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    values, inv = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    t, p = inv[:len(y_true)], inv[len(y_true):]
    k = len(values)
    tp = np.bincount(t[t == p], minlength=k).astype(np.float64)
    denom = np.bincount(t, minlength=k) + np.bincount(p, minlength=k)  # 2 TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1.mean()) if k else 0.0
