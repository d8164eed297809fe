"""Neighbourhood overlap of two spaces: Jaccard of each item's k nearest neighbours and its
exact chance level (split from :mod:`analysis.crossspace`, which re-exports it).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._common import UndefinedMetricError, cosine_geometry, cosine_neighbors
from .aligned import validate

__all__ = ["knn_jaccard_per_item", "knn_jaccard", "knn_jaccard_chance"]

def knn_jaccard_per_item(X: ArrayLike, Y: ArrayLike, *, k: int = 10,
                         center: bool = True, rows: ArrayLike | None = None) -> np.ndarray:
    """Per-item Jaccard index [shape=(n,)] of the k-nearest-neighbour sets (cosine) in X and Y.

    ``center``: neighbours by cosine of centred unit vectors (default; see
    :func:`analysis._common.center_unit`) or of the raw vectors. ``rows``: only these items'
    values [shape=(len(rows),)], their neighbours still searched among all n (the search
    costs O(len(rows) n dim)).
    """
    X, Y, _ = validate(X, Y)
    n = X.shape[0]
    if n < k + 1:
        raise UndefinedMetricError(f"kNN Jaccard with k={k} needs at least {k + 1} items, got {n}")
    A = cosine_neighbors(cosine_geometry(X, center=center), k, rows=rows)
    B = cosine_neighbors(cosine_geometry(Y, center=center), k, rows=rows)
    out = np.empty(len(A))
    for i in range(len(A)):
        sa, sb = set(A[i].tolist()), set(B[i].tolist())
        out[i] = len(sa & sb) / len(sa | sb)
    return out


def knn_jaccard(X: ArrayLike, Y: ArrayLike, *, k: int = 10, center: bool = True) -> float:
    """Mean Jaccard index of the k-NN sets in the two spaces, in [0, 1] (1 = same neighbours).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dx)]
    Y : np.ndarray [shape=(n, dy)]
    """
    return float(np.mean(knn_jaccard_per_item(X, Y, k=k, center=center)))


def knn_jaccard_chance(n: int, k: int) -> float:
    """Expected Jaccard index of two independent uniformly random k-subsets of the n - 1 other
    items: the chance level of :func:`knn_jaccard`.

    The overlap I is hypergeometric (n - 1 items, k marked, k drawn) and J = I / (2k - I), so
    E[J] = sum_i P(I = i) i / (2k - i), exactly (about k / (2(n-1) - k); not the expected
    overlap *fraction* k / (n-1), which is almost twice as large). O(k).
    """
    from scipy.stats import hypergeom
    if not 1 <= k <= n - 1:
        raise UndefinedMetricError(f"{k} neighbours need at least {k + 1} items, got {n}")
    i = np.arange(0, k + 1)
    p = hypergeom(n - 1, k, k).pmf(i)
    return float(np.sum(p * i / (2 * k - i)))


