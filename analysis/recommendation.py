"""How well an embedding space recommends: leave-one-out nearest neighbours as recommendations.

Every item queries all others (cosine, itself excluded); its k nearest are its recommendations.

- precision@k: share of recommendations with the query's label, with a Wilson interval and the
  chance level of recommending k other items at random;
- the k-occurrence N_k(x), how often x is among the others' k nearest; its skewness measures
  *hubness* (Radovanović, Nanopoulos & Ivanović, JMLR 11, 2010): a few hubs recommended to
  everyone and many items recommended to no one, the known failure of nearest-neighbour music
  similarity; coverage@k = share with N_k > 0, never-recommended share = share with N_k = 0;
- mutual proximity (Schnitzer, Flexer, Schedl & Widmer, JMLR 13, 2012) rescales each distance by
  both items' distance distributions, which reduces hubness.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from ._common import (UndefinedMetricError, as_labels, as_matrix, cosine_distance_matrix,
                      cosine_neighbors)
from .aligned import validate as validate_pair
from .retrieval import fit_pca_procrustes

__all__ = ["validate", "wilson_interval", "neighbour_lists", "precision_at_k",
           "precision_chance", "k_occurrence", "hubness_skewness", "never_recommended_share",
           "coverage", "mutual_proximity_gaussian", "mutual_proximity_empirical",
           "recommendation_quality", "fit_procrustes_alignment"]


def validate(X, labels=None, *, k: int = 1):
    """Check X [shape=(n, d)], finite, with n > k, and labels [shape=(n,)]."""
    X = as_matrix(X, name="X")
    if X.shape[0] <= k:
        raise UndefinedMetricError(f"{k} recommendations need at least {k + 1} items, "
                                   f"got {X.shape[0]}")
    if labels is not None:
        labels = as_labels(labels, X.shape[0])
    return X, labels


def wilson_interval(successes: int, trials: int, *, confidence: float = 0.95
                    ) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    Parameters
    ----------
    successes, trials : int
        0 <= successes <= trials, trials >= 1.

    Returns
    -------
    (lo, hi) : tuple of float in [0, 1]
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def mutual_proximity_gaussian(X) -> np.ndarray:
    """Mutual proximity with each item's cosine distances modelled as a normal distribution.

    MP(x, y) = P(D_x > d(x, y)) * P(D_y > d(x, y)), with D_x ~ N(mean_x, std_x) estimated from
    x's distances to all other items (Schnitzer et al. 2012, the independent Gaussian variant;
    O(n^2) instead of the empirical O(n^3)).

    Parameters
    ----------
    X : np.ndarray [shape=(n, d)]

    Returns
    -------
    np.ndarray [shape=(n, n)]: similarities in [0, 1], symmetric, diagonal 1.
    """
    X, _ = validate(X, k=2)
    D = cosine_distance_matrix(X)
    n = D.shape[0]
    off = ~np.eye(n, dtype=bool)
    mean = np.array([D[i, off[i]].mean() for i in range(n)])
    std = np.array([D[i, off[i]].std() for i in range(n)])
    std = np.maximum(std, 1e-12)
    Px = stats.norm.sf(D, loc=mean[:, None], scale=std[:, None])
    S = Px * Px.T
    np.fill_diagonal(S, 1.0)
    return S


def mutual_proximity_empirical(X) -> np.ndarray:
    """Mutual proximity from the empirical distance distributions (Schnitzer et al. 2012):
    MP(x, y) = |{j != x, y : d(x, j) > d(x, y) and d(y, j) > d(x, y)}| / (n - 2).

    Parameters
    ----------
    X : np.ndarray [shape=(n, d)], n >= 3; O(n^3) time, O(n^2) memory.

    Returns
    -------
    np.ndarray [shape=(n, n)]: similarities in [0, 1], symmetric, diagonal 1.
    """
    X, _ = validate(X, k=2)
    D = cosine_distance_matrix(X)
    n = D.shape[0]
    S = np.ones((n, n))
    for i in range(n):
        d = D[i]  # d(i, y) for every y
        # count j with d(i, j) > d(i, y) and d(y, j) > d(i, y); i and y never count themselves
        # (d(i, i) = 0 and d(y, y) = 0 are never greater)
        S[i] = np.sum((d[None, :] > d[:, None]) & (D > d[:, None]), axis=1) / (n - 2)
    np.fill_diagonal(S, 1.0)
    return S


def neighbour_lists(X, *, k: int = 10, hubness_reduction: str | None = None) -> np.ndarray:
    """Leave-one-out recommendations: the k nearest other items of every item.

    Parameters
    ----------
    X : np.ndarray [shape=(n, d)]
    k : int
    hubness_reduction : {None, "mp"}
        ``"mp"`` ranks by Gaussian mutual proximity instead of cosine similarity.

    Returns
    -------
    np.ndarray [shape=(n, k), dtype=int64]: indices, nearest first (ties broken by index).
    """
    X, _ = validate(X, k=k)
    if hubness_reduction is None:
        return cosine_neighbors(X, k)
    if hubness_reduction != "mp":
        raise ValueError(f"hubness_reduction must be None or 'mp', got {hubness_reduction!r}")
    S = mutual_proximity_gaussian(X)
    np.fill_diagonal(S, -np.inf)
    return np.argsort(-np.round(S, 12), axis=1, kind="stable")[:, :k]


def precision_chance(labels, *, k: int = 10) -> float:
    """Expected precision@k of k other items drawn at random: mean over queries of
    (n_class(query) - 1) / (n - 1) (k does not change the expectation)."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    if n < 2:
        raise UndefinedMetricError("chance precision needs at least 2 items")
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return float(np.mean((counts[inv] - 1) / (n - 1)))


def precision_at_k(neighbours, labels, *, confidence: float = 0.95) -> dict:
    """Share of recommendations that carry the query's label.

    Parameters
    ----------
    neighbours : np.ndarray [shape=(n, k), dtype=int]
    labels : np.ndarray [shape=(n,)]

    Returns
    -------
    dict: ``value``, ``ci95`` (Wilson over the n*k judgements, which treats them as independent:
    neighbour lists overlap, so the interval is optimistic), ``chance``, ``successes``,
    ``trials``.
    """
    nb = np.asarray(neighbours)
    labels = as_labels(labels, nb.shape[0])
    if nb.ndim != 2 or nb.shape[1] < 1:
        raise ValueError(f"neighbours must be (n, k) with k >= 1, got {nb.shape}")
    hits = labels[nb] == labels[:, None]
    s, t = int(hits.sum()), int(hits.size)
    return {"value": s / t, "ci95": list(wilson_interval(s, t, confidence=confidence)),
            "chance": precision_chance(labels, k=nb.shape[1]), "successes": s, "trials": t}


def k_occurrence(neighbours, n: int | None = None) -> np.ndarray:
    """N_k(x): how many neighbour lists contain each item.

    Parameters
    ----------
    neighbours : np.ndarray [shape=(n, k), dtype=int]
    n : int, optional
        Number of items (default: rows of ``neighbours``).

    Returns
    -------
    np.ndarray [shape=(n,), dtype=int64], summing to n*k.
    """
    nb = np.asarray(neighbours, dtype=np.int64)
    n = nb.shape[0] if n is None else int(n)
    return np.bincount(nb.ravel(), minlength=n)[:n]


def hubness_skewness(k_occ) -> float:
    """Skewness (standardised third moment) of the k-occurrence distribution
    (Radovanović et al. 2010): 0 for a symmetric one, large and positive when a few hubs
    dominate. Undefined when every item occurs equally often."""
    k_occ = np.asarray(k_occ, dtype=np.float64)
    if k_occ.size < 3 or np.std(k_occ) < 1e-12:
        raise UndefinedMetricError("hubness skewness undefined: constant k-occurrence")
    return float(stats.skew(k_occ, bias=True))


def never_recommended_share(k_occ) -> float:
    """Share of items in no one's neighbour list (N_k = 0)."""
    k_occ = np.asarray(k_occ)
    return float(np.mean(k_occ == 0))


def coverage(k_occ) -> float:
    """Share of items in at least one neighbour list (N_k > 0): 1 - never-recommended share."""
    return 1.0 - never_recommended_share(k_occ)


def recommendation_quality(X, labels, *, ks=(5, 10), hubness_k: int = 10,
                           hubness_reduction: str | None = None,
                           neighbors: np.ndarray | None = None) -> dict:
    """Every recommendation metric of one space, as ``metrics.json`` names them.

    Parameters
    ----------
    X : np.ndarray [shape=(n, d)]
    labels : np.ndarray [shape=(n,)]
    ks : precision cut-offs
    hubness_k : the k of coverage, hubness skewness and never-recommended share
    hubness_reduction : {None, "mp"}
    neighbors : np.ndarray [shape=(n, >= max k)] or None
        Precomputed cosine neighbour lists (``hubness_reduction=None`` only): shared with the
        k-NN metrics instead of searched again.

    Returns
    -------
    dict: ``recommend_precision_at_{k}`` (dict with value, ci95, chance, ...),
    ``recommend_coverage_at_{hubness_k}``, ``hubness_skewness_k{hubness_k}``,
    ``hubness_never_recommended_k{hubness_k}`` (floats or None when undefined).
    """
    kmax = max(max(ks), hubness_k)
    X, labels = validate(X, labels, k=1)
    kmax = min(kmax, X.shape[0] - 1)
    if neighbors is not None and hubness_reduction is None and neighbors.shape[1] >= kmax:
        nb = np.asarray(neighbors)[:, :kmax]
    else:
        nb = neighbour_lists(X, k=kmax, hubness_reduction=hubness_reduction)
    out: dict = {}
    for k in ks:
        out[f"recommend_precision_at_{k}"] = (precision_at_k(nb[:, :k], labels)
                                              if k <= kmax else None)
    kk = min(hubness_k, kmax)
    occ = k_occurrence(nb[:, :kk], X.shape[0])
    out[f"recommend_coverage_at_{hubness_k}"] = coverage(occ)
    try:
        out[f"hubness_skewness_k{hubness_k}"] = hubness_skewness(occ)
    except UndefinedMetricError:
        out[f"hubness_skewness_k{hubness_k}"] = None
    out[f"hubness_never_recommended_k{hubness_k}"] = never_recommended_share(occ)
    return out


def fit_procrustes_alignment(X, Y, *, max_components: int = 64) -> dict:
    """The map of :func:`analysis.retrieval.procrustes_retrieval`, fitted on *all* n pairs (to
    use, not to score): :func:`analysis.retrieval.fit_pca_procrustes` on every row.

    Each space is centred and reduced by its own PCA to d = min(n - 1, dx, dy, max_components)
    dimensions; R is the orthogonal map minimising ||A R - B||. A source vector x maps to
    ``(x - source_mean) @ source_basis @ rotation``, a target vector y to
    ``(y - target_mean) @ target_basis``; compare the two by cosine. How well such a map
    generalises is what procrustes_retrieval measures on held-out pairs.

    Parameters
    ----------
    X : np.ndarray [shape=(n, dx)]
    Y : np.ndarray [shape=(n, dy)]

    Returns
    -------
    dict of np.ndarray: ``source_mean`` (dx,), ``source_basis`` (dx, d), ``target_mean`` (dy,),
    ``target_basis`` (dy, d), ``rotation`` (d, d).
    """
    X, Y, _ = validate_pair(X, Y)
    if X.shape[0] < 2:
        raise UndefinedMetricError("alignment needs at least 2 pairs")
    return fit_pca_procrustes(X, Y, np.arange(X.shape[0]), max_components=max_components)
