"""Shared helpers of the analysis package: validation, cosine geometry, the undefined-metric error.

Every metric module raises :class:`UndefinedMetricError` (a ``ValueError``) when its inputs are
valid but the metric has no value for them (one class, too few items, ...); other
``ValueError``\\ s mean the inputs themselves are malformed.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


class UndefinedMetricError(ValueError):
    """The inputs are well-formed but the metric is undefined for them (e.g. a single class)."""


def as_matrix(X: ArrayLike, *, name: str = "X") -> np.ndarray:
    """Return ``X`` as a finite float64 matrix [shape=(n, dim)] or raise ValueError."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array of shape (n, dim), got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float64, copy=False)
    if X.size and not np.all(np.isfinite(X)):
        bad = int(np.sum(~np.all(np.isfinite(X), axis=1)))
        raise ValueError(f"{name} contains non-finite values in {bad} row(s)")
    return X


def as_labels(labels: ArrayLike, n: int, *, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a 1-d array of length ``n`` or raise ValueError."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {labels.shape}")
    if len(labels) != n:
        raise ValueError(f"{name} has {len(labels)} entries but X has {n} rows")
    return labels


def validate_xy(X: ArrayLike, labels: ArrayLike | None = None,
                groups: ArrayLike | None = None) -> tuple:
    """Validate a vectors/labels/groups triple; returns the converted arrays.

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)] or None
    groups : np.ndarray [shape=(n,)] or None
    """
    X = as_matrix(X)
    n = X.shape[0]
    if labels is not None:
        labels = as_labels(labels, n)
    if groups is not None:
        groups = as_labels(groups, n, name="groups")
    return X, labels, groups


def require_classes(labels: ArrayLike, *, min_classes: int = 2, min_items: int = 1,
                    what: str = "metric") -> int:
    """Raise UndefinedMetricError unless there are >= min_classes classes and >= min_items items."""
    n = len(labels)
    if n < min_items:
        raise UndefinedMetricError(f"{what} needs at least {min_items} items, got {n}")
    k = len(np.unique(labels))
    if k < min_classes:
        raise UndefinedMetricError(f"{what} needs at least {min_classes} classes, got {k}")
    return k


def l2_normalize(X: np.ndarray, *, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``X`` [shape=(n, dim)] scaled to unit L2 norm (zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, eps)


def center_unit(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` [shape=(n, dim)] L2-normalised, then the collection mean of those unit
    vectors subtracted.

    This is the "centred" geometry of the cosine measures. A large offset shared by every
    vector (hand-made descriptors, post-ReLU embeddings) otherwise puts every cosine near 1;
    normalising *before* removing the mean keeps the result invariant to a positive rescaling
    of any single vector, as the uncentred cosine measures are.
    """
    Xn = l2_normalize(X)
    if len(Xn):
        Xn = Xn - Xn.mean(axis=0, keepdims=True)
    return Xn


def cosine_geometry(X: np.ndarray, *, center: bool) -> np.ndarray:
    """``X`` prepared for a cosine measure: :func:`center_unit` if ``center`` else ``X``."""
    return center_unit(X) if center else np.asarray(X, dtype=np.float64)


def cosine_distance_matrix(X: np.ndarray) -> np.ndarray:
    """Pairwise cosine distances [shape=(n, n)] of rows of ``X`` [shape=(n, dim)], in [0, 2]."""
    Xn = l2_normalize(X)
    D = 1.0 - Xn @ Xn.T
    np.clip(D, 0.0, 2.0, out=D)
    np.fill_diagonal(D, 0.0)
    return D


#: float32 candidates kept beyond k: the float64 re-scoring needs the true k-th neighbour among
#: them, which a float32 error can only miss when this many items sit within the error of it
NEIGHBOUR_SLACK = 32
#: elements of one block of similarities (float32): 2^25 = 128 MB, whatever n is
NEIGHBOUR_BLOCK = 1 << 25


def cosine_neighbors(X: np.ndarray, k: int, *, rows: ArrayLike | None = None,
                     chunk: int | None = None) -> np.ndarray:
    """Indices [shape=(len(rows), k)] of the k nearest neighbours (cosine) of each row, self
    excluded (``rows``: the query rows, default all).

    Exact brute force in blocks of query rows (no n x n matrix: a block holds at most
    :data:`NEIGHBOUR_BLOCK` similarities): float32 similarities pick k + NEIGHBOUR_SLACK
    candidates per row, which are scored again in float64 and sorted by (similarity rounded to
    12 decimals, index) -- ties broken by index, exactly as a stable sort of the whole float64
    row would. A row whose k-th float64 similarity is not clear of the last candidate's by
    more than the float32 error bound, or sits in a tie with it, is sorted in full in float64;
    so the result equals the float64 brute force's.
    """
    Xn = l2_normalize(X)
    n, d = Xn.shape
    if not 1 <= k <= n - 1:
        raise UndefinedMetricError(f"{k} neighbours need at least {k + 1} items, got {n}")
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), k), dtype=np.int64)
    m = min(n - 1, k + NEIGHBOUR_SLACK)
    # a float32 dot product of unit vectors errs by at most ~d * 2^-24 (plus the rounding of
    # the unit vectors themselves): margins below 4x that are not trusted
    margin = 4.0 * (d + 2) * 2.0 ** -24
    X32 = Xn.astype(np.float32)
    if chunk is None:
        chunk = max(1, min(NEIGHBOUR_BLOCK // max(n, 1), NEIGHBOUR_BLOCK // max(m * d, 1) // 2))
    for start in range(0, len(rows), chunk):
        q = rows[start:start + chunk]
        out[start:start + len(q)] = _neighbour_block(Xn, X32, q, k, m, margin)
    return out


def _largest_columns(S: np.ndarray, count: int, *, sample_every: int = 8) -> np.ndarray:
    """Columns [shape=(r, count)] of the ``count`` largest values of each row of ``S``
    [shape=(r, n)], unordered (ties at the edge: any of them, as ``np.argpartition``).

    A partition of whole rows costs about as much as the product that made them, so for wide
    rows a threshold comes first: the count-th largest of every ``sample_every``-th column
    (at least ``count`` values of the row reach it), then only the values reaching it (about
    ``count x sample_every`` per row) are ranked."""
    r, n = S.shape
    if n < 64 * count or n < 4096:
        return np.argpartition(-S, count - 1, axis=1)[:, :count]
    sample = S[:, ::sample_every]
    threshold = -np.partition(-sample, count - 1, axis=1)[:, count - 1]
    flat = np.flatnonzero(S >= threshold[:, None])         # (a flat scan: ~15x np.nonzero's speed)
    rows, cols = np.divmod(flat, n)
    vals = S.ravel()[flat].astype(np.float64)
    # each row's values, largest first: one stable sort of row x span - value (rows apart)
    span = float(vals.max() - vals.min()) + 1.0
    order = np.argsort(rows * span - vals, kind="stable")
    first = np.searchsorted(rows[order], np.arange(r))
    return cols[order][first[:, None] + np.arange(count)]


def _neighbour_block(Xn, X32, q, k, m, margin) -> np.ndarray:
    """The k neighbours of the query rows ``q`` (see :func:`cosine_neighbors`)."""
    n = Xn.shape[0]
    if m >= n - 1:  # every other item is a candidate: the float64 row, sorted stably
        S = np.round(Xn[q] @ Xn.T, 12)
        S[np.arange(len(q)), q] = -np.inf
        return np.argsort(-S, axis=1, kind="stable")[:, :k]
    S32 = X32[q] @ X32.T
    S32[np.arange(len(q)), q] = -np.inf
    cand = _largest_columns(S32, m + 1)                    # the m+1 largest, unordered
    del S32
    sims = np.einsum("qd,qmd->qm", Xn[q], Xn[cand])       # the candidates again, in float64
    sims[cand == q[:, None]] = -np.inf
    neg = -np.round(sims, 12)
    order = np.lexsort((cand, neg), axis=1)                # by value, then by index
    cand = np.take_along_axis(cand, order, axis=1)
    neg = np.take_along_axis(neg, order, axis=1)
    res = cand[:, :k].copy()
    # an item outside the candidates has a float64 similarity below the last candidate's plus
    # the float32 error; where the k-th is not clear of that (or ties it: lower indices may be
    # outside), sort the row in full
    unsure = np.flatnonzero(neg[:, k - 1] >= neg[:, m] - margin)
    for r in unsure:
        row = np.round(Xn @ Xn[q[r]], 12)
        row[q[r]] = -np.inf
        res[r] = np.argsort(-row, kind="stable")[:k]
    return res


def finite_or_none(x: object) -> float | None:
    """``float(x)`` or ``None`` for None/NaN/inf."""
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None
