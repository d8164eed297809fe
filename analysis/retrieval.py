"""Cross-space retrieval of held-out partners: seeded (stratified) splits, the one PCA +
orthogonal Procrustes fit, recall@k / MRR over repeated splits (split from
:mod:`analysis.crossspace`, which re-exports it).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from ._common import UndefinedMetricError, l2_normalize
from .aligned import validate

__all__ = ["split_pairs", "stratified_split", "retrieval_chance", "retrieval_scores",
           "fit_pca_procrustes", "procrustes_retrieval", "repeated_procrustes_retrieval"]

def split_pairs(n: int, *, test_fraction: float = 0.3, seed: int = 0, min_test: int = 2,
                min_train: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of n aligned items into (train, test) index arrays."""
    if n < min_test + min_train:
        raise UndefinedMetricError(f"retrieval needs at least {min_test + min_train} shared "
                                   f"items, got {n}")
    n_test = max(min_test, int(round(test_fraction * n)))
    n_test = min(n_test, n - min_train)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def stratified_split(labels: ArrayLike, *, test_fraction: float = 0.3, seed: int = 0,
                     min_test: int = 2, min_train: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of aligned items into (train, test) index arrays, stratified by label.

    The test set has the size :func:`split_pairs` would give; each class contributes its share
    of it (largest remainders), drawn at random within the class.

    Parameters
    ----------
    labels : np.ndarray [shape=(n,)]
    """
    labels = np.asarray(labels).astype(str)
    n = len(labels)
    if n < min_test + min_train:
        raise UndefinedMetricError(f"retrieval needs at least {min_test + min_train} shared "
                                   f"items, got {n}")
    n_test = min(max(min_test, int(round(test_fraction * n))), n - min_train)
    rng = np.random.default_rng(seed)
    classes, inv = np.unique(labels, return_inverse=True)
    sizes = np.bincount(inv)
    share = sizes * n_test / n
    take = np.floor(share).astype(np.int64)
    # the remaining test slots go to the largest remainders (ties broken at random)
    rest = n_test - int(take.sum())
    order = np.lexsort((rng.random(len(classes)), -(share - take)))
    take[order[:rest]] += 1
    test = [rng.permutation(np.flatnonzero(inv == c))[:take[c]] for c in range(len(classes))]
    test = np.sort(np.concatenate(test)).astype(np.int64)
    train = np.setdiff1d(np.arange(n), test)
    return train, test


def retrieval_chance(n_test: int, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Chance levels of random ranking among n_test candidates: recall@k = min(k, n)/n and the
    expected MRR = H_n / n."""
    out = {f"recall_at_{k}": min(k, n_test) / n_test for k in ks}
    out["mrr"] = sum(1.0 / r for r in range(1, n_test + 1)) / n_test
    return out


#: above this dimension the splits' top axes come from a warm-started subspace iteration (a
#: dim^3 eigendecomposition per split and space is minutes at 6,144-d); at or below it, exact
PCA_EXACT_MAX_DIM = 1024
PCA_OVERSAMPLE, PCA_POWER_ITERATIONS = 16, 6
#: similarities held at once when ranking (float64): 2^24 = 128 MB, so 30,000 held-out pairs
#: are ranked in blocks instead of one 7 GB matrix
RANK_BLOCK = 1 << 24


#: held-out pairs queried per split and direction: above it a seeded sample of queries, each
#: still ranked among all held-out items (the ranking costs O(queries x n_test x d): 20 splits
#: of 30,000 x 30,000 at 100,000 items were minutes)
RETRIEVAL_MAX_QUERIES = 3000


def retrieval_scores(Q: ArrayLike, G: ArrayLike, *, rows: ArrayLike | None = None) -> np.ndarray:
    """1-based rank [shape=(n,)] of the true partner G[i] among all rows of G for query Q[i]
    (cosine similarity, rounded to 12 decimals; ties count against the query). ``rows``: only
    these queries [shape=(len(rows),)]. Blocks of query rows: memory O(RANK_BLOCK), time
    O(len(rows) n d)."""
    Qn, Gn = l2_normalize(Q), l2_normalize(G)
    rows = np.arange(Qn.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    ranks = np.empty(len(rows), dtype=np.int64)
    block = max(1, RANK_BLOCK // max(Gn.shape[0], 1))  # rows of similarities held at once
    for start in range(0, len(rows), block):
        q = rows[start:start + block]
        # round(x, 12) compares as rint(x 1e12) (the division by 1e12 is monotone and keeps
        # distinct integers distinct), in place; rank = 1 + #above + #tied others = #(>= true)
        S = Qn[q] @ Gn.T
        S *= 1e12
        np.rint(S, out=S)
        true = S[np.arange(len(q)), q]
        ranks[start:start + len(q)] = np.count_nonzero(S >= true[:, None], axis=1)
    return ranks


def query_rows(n_test: int, *, seed: int, max_queries: int | None = None) -> np.ndarray | None:
    """The held-out pairs a split queries: None (all) up to ``max_queries`` (default
    :data:`RETRIEVAL_MAX_QUERIES`), else a seeded sorted sample of that many."""
    cap = RETRIEVAL_MAX_QUERIES if max_queries is None else int(max_queries)
    if n_test <= cap:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_test, cap, replace=False))


class _SplitPca:
    """Top-d PCA of the train rows of ``X`` [shape=(n, dim)] for many train/test splits.

    With more train rows than dimensions the axes are the top eigenvectors of the dim x dim
    train scatter (only the d wanted ones are computed); the scatter of all rows is formed once
    (on globally centred rows, so the subtraction below loses no precision) and each split
    subtracts its test rows: O(n_test dim^2) per split instead of O(n_train dim^2). Otherwise
    an SVD of the train rows. Signs and the order within ties may differ from an SVD of the
    data, which the Procrustes rotation absorbs.
    """

    def __init__(self, X):
        self._warm = None  # the previous split's axes (the subspace iteration's start)
        self.X = X - X.mean(axis=0)
        self.offset = X.mean(axis=0)
        self.scatter = self.X.T @ self.X if X.shape[0] > X.shape[1] else None
        self.total = self.X.sum(axis=0)

    def fit(self, tr, te, d: int) -> tuple[np.ndarray, np.ndarray]:
        """(mean [shape=(dim,)], axes [shape=(dim, d)]) of the rows ``tr``."""
        from scipy.linalg import eigh
        dim = self.X.shape[1]
        if self.scatter is None or len(tr) <= dim:
            Z = self.X[tr]
            mu = Z.mean(axis=0)
            _, _, Vt = np.linalg.svd(Z - mu, full_matrices=False)
            return mu + self.offset, Vt[:d].T
        Xte = self.X[te]
        mu = (self.total - Xte.sum(axis=0)) / len(tr)
        S = self.scatter - Xte.T @ Xte - len(tr) * np.outer(mu, mu)
        if dim > PCA_EXACT_MAX_DIM:
            return mu + self.offset, self._top_subspace(S, d)
        _, vecs = eigh(S, subset_by_index=[dim - d, dim - 1])
        return mu + self.offset, vecs[:, ::-1]

    def _top_subspace(self, S: np.ndarray, d: int) -> np.ndarray:
        """Top-d eigenvectors of the symmetric S [shape=(dim, dim)] by block subspace iteration
        (d + PCA_OVERSAMPLE columns, PCA_POWER_ITERATIONS products with S, Rayleigh-Ritz),
        started from the previous split's axes: O(dim^2 (d + oversample) x iterations) instead
        of a dim^3 eigendecomposition. Splits differ by their 30% test rows, so the previous
        axes are already close and a few iterations settle them."""
        dim, q = S.shape[0], min(S.shape[0], d + PCA_OVERSAMPLE)
        V = self._warm
        if V is None or V.shape[1] != q:
            V = np.random.default_rng(0).normal(size=(dim, q))
        for _ in range(PCA_POWER_ITERATIONS):
            V, _ = np.linalg.qr(S @ V)
        w, E = np.linalg.eigh(V.T @ S @ V)
        V = V @ E[:, ::-1]
        self._warm = V
        return V[:, :d]


def fit_pca_procrustes(X: np.ndarray, Y: np.ndarray, train: np.ndarray,
                       test: np.ndarray | None = None, *, max_components: int = 64,
                       pcas: tuple | None = None) -> dict:
    """The map of cross-space retrieval, fitted on the rows ``train``: each space centred and
    reduced by its own PCA of the train rows to d = min(n_train - 1, dx, dy, max_components)
    dimensions, then the orthogonal R minimising ||A R - B|| over the train pairs.

    The one implementation of the fit: :func:`procrustes_retrieval` scores it on held-out
    pairs, :func:`analysis.recommendation.fit_procrustes_alignment` fits it on all pairs.

    Parameters
    ----------
    X : np.ndarray [shape=(n, dx)]
    Y : np.ndarray [shape=(n, dy)]
    train, test : index arrays (``test`` = the other rows; None = none)
    pcas : the two ``_SplitPca`` of X and Y when many splits share them

    Returns
    -------
    dict of np.ndarray: ``source_mean`` (dx,), ``source_basis`` (dx, d), ``target_mean`` (dy,),
    ``target_basis`` (dy, d), ``rotation`` (d, d).
    """
    train = np.asarray(train, dtype=np.int64)
    test = np.zeros(0, dtype=np.int64) if test is None else np.asarray(test, dtype=np.int64)
    pcas = pcas if pcas is not None else (_SplitPca(X), _SplitPca(Y))
    d = int(min(len(train) - 1, X.shape[1], Y.shape[1], max_components))
    if d < 1:
        raise UndefinedMetricError("retrieval: no dimensions left after PCA")
    mx, Px = pcas[0].fit(train, test, d)
    my, Py = pcas[1].fit(train, test, d)
    d = min(d, Px.shape[1], Py.shape[1])
    Px, Py = Px[:, :d], Py[:, :d]
    U, _, Vt = np.linalg.svd(((X[train] - mx) @ Px).T @ ((Y[train] - my) @ Py))
    return {"source_mean": mx, "source_basis": Px, "target_mean": my, "target_basis": Py,
            "rotation": U @ Vt}


def procrustes_retrieval(X: ArrayLike, Y: ArrayLike, *, test_fraction: float = 0.3, seed: int = 0,
                         max_components: int = 64, ks: Sequence[int] = (1, 5, 10),
                         split: tuple[np.ndarray, np.ndarray] | None = None,
                         _pcas: tuple | None = None) -> dict:
    """Cross-space retrieval of held-out partners via PCA + orthogonal Procrustes.

    Items are split (seeded; or ``split`` = (train, test) indices) into train and test. Each
    space is centred and reduced by a PCA
    fitted on the train items only, to d = min(n_train - 1, dx, dy, max_components) dimensions;
    the orthogonal map R minimising ||A R - B|| is learned on the train pairs only. Each held-out
    item of one space then queries the held-out items of the other by cosine; recall@k and MRR
    are averaged over both directions (X->Y and Y->X, also reported separately).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dx)]
    Y : np.ndarray [shape=(n, dy)]

    Returns
    -------
    dict: ``recall_at_{k}``, ``mrr``, ``chance`` (dict), ``n_train``, ``n_test``,
    ``n_queries`` (held-out pairs queried: all up to RETRIEVAL_MAX_QUERIES, else a seeded
    sample ranked among all n_test), ``dims``, ``x_to_y`` / ``y_to_x`` (per-direction dicts),
    ``ranks`` [shape=(2, n_queries)].
    """
    X, Y, _ = validate(X, Y)
    n = X.shape[0]
    tr, te = split if split is not None else split_pairs(n, test_fraction=test_fraction,
                                                         seed=seed)
    fit = fit_pca_procrustes(X, Y, tr, te, max_components=max_components, pcas=_pcas)
    mx, Px, my, Py, R = (fit[k] for k in ("source_mean", "source_basis", "target_mean",
                                          "target_basis", "rotation"))
    d = Px.shape[1]
    A_te, B_te = (X[te] - mx) @ Px, (Y[te] - my) @ Py
    q = query_rows(len(te), seed=seed)
    r_xy = retrieval_scores(A_te @ R, B_te, rows=q)
    r_yx = retrieval_scores(B_te @ R.T, A_te, rows=q)

    def summ(r):
        out = {f"recall_at_{k}": float(np.mean(r <= k)) for k in ks}
        out["mrr"] = float(np.mean(1.0 / r))
        return out
    sx, sy = summ(r_xy), summ(r_yx)
    res = {key: (sx[key] + sy[key]) / 2 for key in sx}
    res.update({"chance": retrieval_chance(len(te), ks), "n_train": int(len(tr)),
                "n_test": int(len(te)), "n_queries": int(len(r_xy)), "dims": d,
                "x_to_y": sx, "y_to_x": sy, "ranks": np.stack([r_xy, r_yx])})
    return res


def repeated_procrustes_retrieval(X: ArrayLike, Y: ArrayLike, labels: ArrayLike | None = None, *,
                                  n_splits: int = 20, test_fraction: float = 0.3, seed: int = 0,
                                  max_components: int = 64, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """:func:`procrustes_retrieval` over ``n_splits`` seeded train/test splits stratified by
    label (split s uses seed ``seed + s``).

    One random split is a noisy estimate (over 30 splits of 40 pairs, recall@1 ranged 0.29 to
    0.67): the value is the mean over splits. Cost: the two scatter matrices once,
    O(n (dx^2 + dy^2)), then per split O(n_test (dx^2 + dy^2) + d (dx^2 + dy^2) + n_test^2 d)
    (test rows' scatter, top-d eigenvectors, ranking).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dx)]
    Y : np.ndarray [shape=(n, dy)]
    labels : np.ndarray [shape=(n,)] or None
        Strata of the splits (None: one stratum).

    Returns
    -------
    dict: ``splits`` (one dict per split: the values, ``n_test`` and ``within_var``, the
    sampling variance of each value over its held-out pairs, both directions averaged per
    pair), the means over splits of ``recall_at_{k}`` / ``mrr`` and of ``x_to_y`` /
    ``y_to_x``, ``chance``, ``n_train``, ``n_test``, ``dims`` (of the first split).
    """
    X, Y, labels = validate(X, Y, labels)
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}")
    labels = np.zeros(X.shape[0], dtype=str) if labels is None else labels
    splits, pcas = [], None
    for s in range(n_splits):
        tr, te = stratified_split(labels, test_fraction=test_fraction, seed=seed + s)
        if pcas is None:  # the full scatter matrices, built once (after the size check)
            pcas = (_SplitPca(X), _SplitPca(Y))
        r = procrustes_retrieval(X, Y, max_components=max_components, ks=ks, split=(tr, te),
                                 _pcas=pcas)
        per_pair = {f"recall_at_{k}": (r["ranks"] <= k).mean(axis=0) for k in ks}
        per_pair["mrr"] = (1.0 / r["ranks"]).mean(axis=0)
        r["within_var"] = {key: float(np.var(v, ddof=1) / len(v)) if len(v) > 1 else 0.0
                           for key, v in per_pair.items()}
        splits.append(r)
    keys = [f"recall_at_{k}" for k in ks] + ["mrr"]
    first = splits[0]
    res = {key: float(np.mean([r[key] for r in splits])) for key in keys}
    for direction in ("x_to_y", "y_to_x"):
        res[direction] = {key: float(np.mean([r[direction][key] for r in splits]))
                          for key in keys}
    res.update({"splits": splits, "chance": first["chance"], "n_train": first["n_train"],
                "n_test": first["n_test"], "n_queries": first["n_queries"],
                "dims": first["dims"], "n_splits": n_splits})
    return res
