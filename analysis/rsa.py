"""Representational similarity analysis: Spearman correlation of two pairwise distance
matrices and its Mantel test (split from :mod:`analysis.crossspace`, which re-exports it).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._common import UndefinedMetricError, cosine_distance_matrix, cosine_geometry
from .aligned import validate

__all__ = ["rsa_from_distances", "rsa", "RsaResampler"]

def _rank(v):
    """Average ranks of v (ties share their mean rank, as in Spearman's rho)."""
    from scipy.stats import rankdata
    return rankdata(v)


def rsa_from_distances(DA: ArrayLike, DB: ArrayLike, *, exclude: ArrayLike | None = None) -> float:
    """Spearman correlation of the upper triangles of two distance matrices [shape=(n, n)].

    ``exclude`` [shape=(n,)]: source index per row; pairs of rows sharing a source are left out
    (bootstrap duplicates). Raises UndefinedMetricError when a triangle is constant.
    """
    from scipy.stats import spearmanr
    a, b, _ = _upper_triangles(np.asarray(DA), np.asarray(DB), exclude)
    return float(spearmanr(a, b).statistic)


class RsaResampler:
    """:func:`rsa_from_distances` of bootstrap resamples of the items of two distance matrices
    [shape=(n, n)], each triangle sorted once.

    A resample ``idx`` [shape=(m,)] (source rows, with repeats) holds each pair of distinct
    sources {a, b} c_a c_b times (c_a: how often a was drawn; pairs of one source's copies are
    left out, as ``exclude=idx`` does). Its Spearman correlation is therefore the Pearson
    correlation, weighted by c_a c_b, of mid-ranks weighted the same way over the original pairs
    (tied values -- a pair's own copies, equal distances -- share their mean rank): the same
    number up to round-off, in O(n^2) per resample instead of sorting O(n^2) values twice.
    """

    def __init__(self, DA: ArrayLike, DB: ArrayLike):
        DA, DB = np.asarray(DA, dtype=np.float64), np.asarray(DB, dtype=np.float64)
        self.n = DA.shape[0]
        i, j = np.triu_indices(self.n, k=1)
        # everything is kept in each triangle's sorted order (sequential passes per resample);
        # b's ranks reach a's order through one gather
        a, b = DA[i, j], DB[i, j]
        order_a, order_b = np.argsort(a, kind="stable"), np.argsort(b, kind="stable")
        self.sorted_a, self.sorted_b = a[order_a], b[order_b]
        self.pairs_a, self.pairs_b = (i[order_a], j[order_a]), (i[order_b], j[order_b])
        position_in_b = np.empty(len(a), dtype=np.int64)
        position_in_b[order_b] = np.arange(len(a))
        self.b_to_a = position_in_b[order_a]
        self.starts_a, self.starts_b = self._tie_starts(self.sorted_a), self._tie_starts(
            self.sorted_b)

    @staticmethod
    def _tie_starts(s: np.ndarray) -> np.ndarray | None:
        """First position of each run of equal values in the sorted s; None: no ties."""
        change = np.flatnonzero(s[1:] != s[:-1]) + 1
        return None if len(change) == len(s) - 1 else np.concatenate([[0], change])

    @staticmethod
    def _ranks(w: np.ndarray, starts: np.ndarray | None) -> np.ndarray:
        """Mid-ranks, in sorted order, of the values replicated w [shape=(pairs,)] times: the
        weight before a tie group + (the group's own weight + 1) / 2."""
        if starts is None:
            return np.cumsum(w) - (w - 1.0) / 2.0
        total = np.add.reduceat(w, starts)
        mid = np.cumsum(total) - (total - 1.0) / 2.0
        return np.repeat(mid, np.diff(np.append(starts, len(w))))

    @staticmethod
    def _spread(sorted_values: np.ndarray, w: np.ndarray) -> float:
        """Largest minus smallest of the sorted values with weight > 0."""
        drawn = w > 0
        first, last = int(drawn.argmax()), len(w) - 1 - int(drawn[::-1].argmax())
        return float(sorted_values[last] - sorted_values[first])

    def __call__(self, idx: ArrayLike) -> float:
        c = np.bincount(np.asarray(idx), minlength=self.n).astype(np.float64)
        w = c[self.pairs_a[0]] * c[self.pairs_a[1]]          # weights in a's order
        w_b = c[self.pairs_b[0]] * c[self.pairs_b[1]]
        total = w.sum()
        if total < 3 or self._spread(self.sorted_a, w) < 1e-12 or self._spread(
                self.sorted_b, w_b) < 1e-12:
            raise UndefinedMetricError("RSA undefined: a distance matrix is constant")
        ra = self._ranks(w, self.starts_a)
        rb = self._ranks(w_b, self.starts_b)[self.b_to_a]
        da, db = ra - (w @ ra) / total, rb - (w @ rb) / total
        wa = w * da
        return float(wa @ db / np.sqrt((wa @ da) * ((w * db) @ db)))


def _upper_triangles(DA: np.ndarray, DB: np.ndarray, exclude) -> tuple:
    """The two matrices' upper triangles without pairs sharing a source, and the kept-pair mask
    over ``np.triu_indices(n, 1)``; raises UndefinedMetricError when either is constant."""
    iu = np.triu_indices(DA.shape[0], k=1)
    keep = np.ones(len(iu[0]), dtype=bool)
    if exclude is not None:
        exclude = np.asarray(exclude)
        keep = exclude[iu[0]] != exclude[iu[1]]
    a, b = DA[iu][keep], DB[iu][keep]
    if len(a) < 3 or np.ptp(a) < 1e-12 or np.ptp(b) < 1e-12:
        raise UndefinedMetricError("RSA undefined: a distance matrix is constant")
    return a, b, keep


def rsa(X: ArrayLike, Y: ArrayLike, *, n_permutations: int = 999, seed: int = 0,
        exclude: ArrayLike | None = None, distances: tuple[np.ndarray, np.ndarray] | None = None,
        center: bool = True) -> dict:
    """Representational similarity: Spearman correlation of the two pairwise cosine-distance
    matrices' upper triangles, with a one-sided Mantel permutation p-value.

    With ``center`` (the default) the cosines are taken on centred unit vectors
    (:func:`analysis._common.center_unit`), so a large offset shared by all vectors does not
    squeeze every distance towards 0.

    Parameters
    ----------
    X : np.ndarray [shape=(n, dx)]
    Y : np.ndarray [shape=(n, dy)]
    n_permutations : int
        Item permutations of Y's matrix (0 = no p-value).
    exclude : np.ndarray [shape=(n,)] or None
        Optional source index per row; pairs of rows with the same source (bootstrap duplicates)
        are left out.
    distances : (np.ndarray, np.ndarray) or None
        The two cosine-distance matrices [shape=(n, n)] if the caller already has them
        (``center`` is then ignored).

    Returns
    -------
    dict with ``rho`` and ``p`` (None without permutations); p = (1 + #{rho_perm >= rho}) /
    (1 + n_permutations).
    """
    # long (61 lines, half docstring): the point estimate and the Mantel loop share the ranked
    # matrices, so splitting them would pass five arrays around
    X, Y, _ = validate(X, Y)
    n = X.shape[0]
    if n < 4:
        raise UndefinedMetricError(f"RSA needs at least 4 items, got {n}")
    iu = np.triu_indices(n, k=1)
    DA, DB = distances if distances is not None else (
        cosine_distance_matrix(cosine_geometry(X, center=center)),
        cosine_distance_matrix(cosine_geometry(Y, center=center)))
    a, b, mask = _upper_triangles(DA, DB, exclude)
    ra = _rank(a)
    ra = (ra - ra.mean()) / np.linalg.norm(ra - ra.mean())
    rb = _rank(b)
    # Y's ranks as a symmetric matrix, so an item permutation is one fancy index (the
    # diagonal is never read; excluded pairs are NaN but permutations skip that case).
    RB = np.zeros((n, n))
    RB[iu] = np.where(mask, 0.0, np.nan)
    RB[iu[0][mask], iu[1][mask]] = rb
    RB = RB + RB.T
    def corr(rbv):
        rbv = rbv - rbv.mean()
        nrm = np.linalg.norm(rbv)
        return float(ra @ rbv / nrm) if nrm > 0 else 0.0
    rho = corr(rb)
    p = None
    if n_permutations and exclude is None:
        rng = np.random.default_rng(seed)
        ge = 0
        flat_rb = RB.ravel()
        for _ in range(int(n_permutations)):
            perm = rng.permutation(n)
            # RB[perm[i], perm[j]] as one flat gather (the 2-d fancy index costs ~2x more)
            if corr(flat_rb.take(perm[iu[0]] * n + perm[iu[1]])) >= rho - 1e-12:
                ge += 1
        p = (1 + ge) / (1 + int(n_permutations))
    return {"rho": rho, "p": p, "n_permutations": int(n_permutations) if p is not None else 0}


