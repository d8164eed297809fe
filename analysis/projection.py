"""2-D maps of an embedding space: PCA and t-SNE (openTSNE), UMAP if installed.

Each function returns ``(Y, params)``: Y [shape=(n, 2)] and the parameters actually used, for the
record. Undefined cases raise :class:`UndefinedMetricError`.

PCA maps every item at any size. t-SNE and UMAP fit at most :data:`MAP_MAX_ITEMS` items: above
that, a seeded, class-stratified subsample of whole pieces
(:func:`analysis.separability.subsample_rows`), the other rows of Y are NaN (not drawn) and
``params["items_subsampled"]`` says so.
"""
from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from ._common import UndefinedMetricError, as_matrix, l2_normalize
from .separability import subsample_params, subsample_rows

__all__ = ["pca_2d", "tsne_perplexity", "tsne_2d", "umap_2d", "project", "map_rows",
           "MAP_MAX_ITEMS"]

#: The most items a t-SNE or UMAP map is fitted on (openTSNE's FFT path took minutes per
#: embedder at 100,000 items on 2 cores, and a scatter of 100,000 points reads no better than of
#: 10,000); the report's interactive maps show the same rows.
MAP_MAX_ITEMS = 10_000


def map_rows(n: int, labels: ArrayLike | None = None, groups: ArrayLike | None = None, *,
             seed: int = 0, max_items: int | None = None) -> np.ndarray | None:
    """The rows a non-linear map (and the interactive page) shows: None = all n items, else a
    seeded, class-stratified subsample of whole pieces of about ``max_items``
    (default :data:`MAP_MAX_ITEMS`). Paired sets with the same pair ids and labels get the
    same pieces."""
    cap = MAP_MAX_ITEMS if max_items is None else int(max_items)
    lab = np.zeros(n, dtype=int) if labels is None else np.asarray(labels)
    return subsample_rows(lab, groups, max_items=cap, seed=seed)


def _on_rows(fit, X, labels, groups, *, seed: int, max_items: int | None):
    """Run ``fit(X_rows, labels_rows) -> (Y, params)`` on :func:`map_rows`; Y back on all rows
    (NaN where not fitted)."""
    n = X.shape[0]
    rows = map_rows(n, labels, groups, seed=seed, max_items=max_items)
    if rows is None:
        return fit(X, labels)
    Y_sub, params = fit(X[rows], None if labels is None else np.asarray(labels)[rows])
    Y = np.full((n, 2), np.nan)
    Y[rows] = Y_sub
    cap = MAP_MAX_ITEMS if max_items is None else int(max_items)
    return Y, {**params, **subsample_params(rows, n, seed=seed, max_items=cap)}


def pca_2d(X: ArrayLike, *, seed: int = 0, exact_max_cells: int = 200_000) -> tuple[np.ndarray,
           dict]:
    """PCA to 2 dimensions [shape=(n, 2)] of the raw (centred) vectors X [shape=(n, dim)].

    Exact SVD when n*dim <= exact_max_cells, randomized SVD (seeded) otherwise. With a single
    informative dimension the second coordinate is 0.
    """
    from sklearn.decomposition import PCA
    X = as_matrix(X)
    n, d = X.shape
    if n < 2:
        raise UndefinedMetricError(f"PCA map needs at least 2 items, got {n}")
    solver = "full" if n * d <= exact_max_cells else "randomized"
    k = min(2, n, d)
    pca = PCA(n_components=k, svd_solver=solver, random_state=seed)
    Y = pca.fit_transform(X)
    if k < 2:
        Y = np.hstack([Y, np.zeros((n, 2 - k))])
    ev = [float(v) for v in pca.explained_variance_ratio_] if np.isfinite(
        pca.explained_variance_ratio_).all() else []
    return Y, {"method": "pca", "svd_solver": solver, "n_components": 2, "centered": True,
               "explained_variance_ratio": ev, "seed": seed}


def tsne_perplexity(n: int, labels: ArrayLike | None = None, *, base: float = 30.0) -> float:
    """Perplexity adapted to the data: min(base, (n-1)/3), reduced towards the median class size
    for small classes (never below 2)."""
    p = min(base, (n - 1) / 3.0)
    if labels is not None and len(labels):
        _, counts = np.unique(labels, return_counts=True)
        med = float(np.median(counts))
        if med < p:
            p = max(med, min(p, 5.0))
    return float(max(2.0, p)) if n > 7 else float(max(1.0, (n - 1) / 3.0))


def tsne_2d(X: ArrayLike, labels: ArrayLike | None = None, *, seed: int = 0,
            perplexity: float | None = None, n_jobs: int = 1, groups: ArrayLike | None = None,
            max_items: int | None = None) -> tuple[np.ndarray, dict]:
    """t-SNE to 2 dimensions (openTSNE, cosine metric, PCA initialisation, FFT gradients for
    large n), seeded. Falls back to scikit-learn if openTSNE is missing. Above ``max_items``
    (default :data:`MAP_MAX_ITEMS`) items it maps a subsample (:func:`map_rows`; the other rows
    of Y [shape=(n, 2)] are NaN)."""
    X = as_matrix(X)
    return _on_rows(lambda A, lab: _tsne(A, lab, seed=seed, perplexity=perplexity,
                                         n_jobs=n_jobs), X, labels, groups, seed=seed,
                    max_items=max_items)


def _tsne(X, labels, *, seed: int, perplexity: float | None, n_jobs: int):
    n = X.shape[0]
    if n < 5:
        raise UndefinedMetricError(f"t-SNE map needs at least 5 items, got {n}")
    Xn = l2_normalize(X)
    p = tsne_perplexity(n, labels) if perplexity is None else float(perplexity)
    params = {"method": "tsne", "perplexity": p, "metric": "cosine", "seed": seed,
              "initialization": "pca"}
    try:
        import openTSNE
        grad = "fft" if n > 2000 else "bh"
        nbrs = "exact" if n <= 1000 else "auto"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            emb = openTSNE.TSNE(n_components=2, perplexity=p, metric="cosine", random_state=seed,
                                initialization="pca", negative_gradient_method=grad,
                                neighbors=nbrs, n_jobs=n_jobs, verbose=False).fit(Xn)
        Y = np.asarray(emb)
        params.update({"implementation": f"openTSNE {openTSNE.__version__}",
                       "negative_gradient_method": grad, "neighbors": nbrs})
    except ImportError:
        from sklearn.manifold import TSNE
        Y = TSNE(n_components=2, perplexity=min(p, n - 1.0), metric="cosine", init="pca",
                 random_state=seed).fit_transform(Xn)
        params["implementation"] = "sklearn.manifold.TSNE"
    if not np.all(np.isfinite(Y)):
        raise UndefinedMetricError("t-SNE produced non-finite coordinates")
    return Y, params


def umap_2d(X: ArrayLike, *, seed: int = 0, n_neighbors: int = 15,
            labels: ArrayLike | None = None, groups: ArrayLike | None = None,
            max_items: int | None = None) -> tuple[np.ndarray, dict]:
    """UMAP to 2 dimensions (cosine), only if ``umap`` is importable (ImportError otherwise);
    a subsample above ``max_items`` items, as :func:`tsne_2d`."""
    import umap  # noqa: F401  (optional)
    X = as_matrix(X)
    return _on_rows(lambda A, _: _umap(A, seed=seed, n_neighbors=n_neighbors), X, labels,
                    groups, seed=seed, max_items=max_items)


def _umap(X, *, seed: int, n_neighbors: int):
    import umap
    n = X.shape[0]
    if n < 5:
        raise UndefinedMetricError(f"UMAP map needs at least 5 items, got {n}")
    nn = int(min(n_neighbors, n - 1))
    Y = umap.UMAP(n_components=2, n_neighbors=nn, metric="cosine",
                  random_state=seed).fit_transform(X)
    return Y, {"method": "umap", "n_neighbors": nn, "metric": "cosine", "seed": seed}


def project(X: ArrayLike, method: str, labels: ArrayLike | None = None, *,
            seed: int = 0, groups: ArrayLike | None = None) -> tuple[np.ndarray, dict]:
    """Dispatch to :func:`pca_2d`, :func:`tsne_2d` or :func:`umap_2d` (``groups``: pair ids,
    kept whole when a map is fitted on a subsample)."""
    if method == "pca":
        return pca_2d(X, seed=seed)
    if method == "tsne":
        return tsne_2d(X, labels, seed=seed, groups=groups)
    if method == "umap":
        return umap_2d(X, seed=seed, labels=labels, groups=groups)
    raise ValueError(f"unknown projection method {method!r} (pca, tsne, umap)")
