"""Agreement of two spaces on class structure: correlation of their class-centroid cosine
matrices, and its resampler (split from :mod:`analysis.crossspace`, which re-exports it).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

from ._common import UndefinedMetricError, l2_normalize
from .structure import centroid_cosine_matrix
from .aligned import validate

__all__ = ["centroid_matrix_correlation", "centroid_matrix_correlation_resampler",
           "centroid_matrix_correlation_resamples"]

def centroid_matrix_correlation(X: ArrayLike, Y: ArrayLike, labels: ArrayLike, *,
                                center: bool = True) -> float:
    """Pearson correlation of the off-diagonal (upper) entries of the two centroid cosine
    matrices (centred by default, as :func:`analysis.structure.centroid_cosine_matrix`), in
    [-1, 1]. Needs >= 3 classes (3 class pairs).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dx)]
    Y : np.ndarray [shape=(n, dy)]
    labels : np.ndarray [shape=(n,)]
    """
    X, Y, labels = validate(X, Y, labels)
    classes = sorted(np.unique(labels).tolist())
    if len(classes) < 3:
        raise UndefinedMetricError(f"centroid matrix correlation needs >= 3 classes, "
                                   f"got {len(classes)}")
    _, MA = centroid_cosine_matrix(X, labels, classes=classes, center=center)
    _, MB = centroid_cosine_matrix(Y, labels, classes=classes, center=center)
    iu = np.triu_indices(len(classes), k=1)
    a, b = MA[iu], MB[iu]
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.std(a) < 1e-12 or np.std(b) < 1e-12:
        raise UndefinedMetricError("centroid matrix correlation undefined: constant entries")
    return float(np.corrcoef(a, b)[0, 1])


def centroid_matrix_correlation_resampler(X: ArrayLike, Y: ArrayLike, labels: ArrayLike, *,
                                          center: bool = True) -> Callable[[np.ndarray], float]:
    """A function ``f(idx) -> float``: :func:`centroid_matrix_correlation` of the rows
    ``X[idx], Y[idx], labels[idx]`` (``idx`` may repeat rows, as a bootstrap resample does).

    A resample is the items weighted by their counts w: class centroids are w-weighted class
    sums of the unit vectors (normalised once) over the class's weight, the centring mean is
    the w-weighted mean. One resample costs O(n (dx + dy)) for a one-hot k x n weight matrix
    times the unit vectors, instead of gathering and normalising two n x d matrices (~15x
    faster at 10,000 items in 512 and 768 dims).
    """
    X, Y, labels = validate(X, Y, labels)
    n = X.shape[0]
    classes, inv = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    if len(classes) < 3:
        raise UndefinedMetricError(f"centroid matrix correlation needs >= 3 classes, "
                                   f"got {len(classes)}")
    units = (l2_normalize(X), l2_normalize(Y))
    onehot = np.zeros((len(classes), n))
    onehot[inv, np.arange(n)] = 1.0
    iu = np.triu_indices(len(classes), k=1)

    def matrix(V, w, cw, counts):
        with np.errstate(invalid="ignore", divide="ignore"):
            # V' (cw') rather than cw V: BLAS runs the tall-skinny form ~10x faster
            C = (V.T @ cw.T).T / counts[:, None]  # an absent class gives a NaN row
            if center:
                C = C - (V.T @ w) / w.sum()
            norms = np.linalg.norm(C, axis=1)
            Cn = C / norms[:, None]
        Cn[~np.isfinite(norms) | (norms < 1e-12)] = np.nan
        return np.clip(Cn @ Cn.T, -1.0, 1.0)[iu]

    def f(idx):
        w = np.bincount(np.asarray(idx), minlength=n).astype(np.float64)
        cw = onehot * w
        counts = cw.sum(axis=1)
        a, b = (matrix(V, w, cw, counts) for V in units)
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        if len(a) < 3 or np.std(a) < 1e-12 or np.std(b) < 1e-12:
            raise UndefinedMetricError("centroid matrix correlation undefined: constant entries")
        return float(np.corrcoef(a, b)[0, 1])
    return f




def centroid_matrix_correlation_resamples(X: ArrayLike, Y: ArrayLike, labels: ArrayLike,
                                          weight_chunks, *, center: bool = True) -> list:
    """:func:`centroid_matrix_correlation` of many resamples at once, given as item weights
    (counts): ``weight_chunks`` yields arrays [shape=(b, n)] (e.g.
    :func:`analysis.bootstrap.resample_counts`). Returns one value per resample, None where it
    is undefined (a class absent from both spaces' ... constant entries).

    Each class's weighted sums for b resamples are one product W_c V_c [shape=(b, d)]: O(n d)
    per resample in a matrix product, where the per-resample one-hot form multiplied k times
    as many zeros (~20x the work at 20 classes).
    """
    X, Y, labels = validate(X, Y, labels)
    classes, inv = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    k = len(classes)
    if k < 3:
        raise UndefinedMetricError(f"centroid matrix correlation needs >= 3 classes, got {k}")
    rows = [np.flatnonzero(inv == c) for c in range(k)]
    units = [l2_normalize(V) for V in (X, Y)]
    parts = [[np.ascontiguousarray(V[r]) for r in rows] for V in units]
    iu = np.triu_indices(k, k=1)
    out = []
    for W in weight_chunks:
        Wc = [np.ascontiguousarray(W[:, r]) for r in rows]
        counts = np.stack([w.sum(axis=1) for w in Wc], axis=1)           # (b, k)
        entries = []
        for part in parts:
            S = np.stack([w @ v for w, v in zip(Wc, part)], axis=1)       # (b, k, d) sums
            with np.errstate(invalid="ignore", divide="ignore"):
                C = S / counts[:, :, None]                                # absent class: NaN
                if center:
                    C = C - (S.sum(axis=1) / counts.sum(axis=1)[:, None])[:, None, :]
                norms = np.linalg.norm(C, axis=2)
                Cn = C / norms[:, :, None]
            Cn[~np.isfinite(norms) | (norms < 1e-12)] = np.nan
            G = np.clip(np.einsum("bkd,bld->bkl", Cn, Cn), -1.0, 1.0)
            entries.append(G[:, iu[0], iu[1]])
        for a, b in zip(*entries):
            ok = np.isfinite(a) & np.isfinite(b)
            a, b = a[ok], b[ok]
            if len(a) < 3 or np.std(a) < 1e-12 or np.std(b) < 1e-12:
                out.append(None)
            else:
                out.append(float(np.corrcoef(a, b)[0, 1]))
    return out
