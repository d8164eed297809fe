"""Fréchet distance between two sets of vectors seen as Gaussians (as FAD / FMD compute it),
computed stably, with its n -> infinity extrapolation and per-item outlier scores.

    FD(X, Y) = |mu_x - mu_y|^2 + tr(C_x) + tr(C_y) - 2 tr((C_x^1/2 C_y C_x^1/2)^1/2)

The last trace is a sum of square roots of the eigenvalues of the *symmetric* positive
semi-definite matrix C_x^1/2 C_y C_x^1/2 (``eigh``, eigenvalues clipped at 0), not ``sqrtm`` of
the non-symmetric C_x C_y: no complex numbers, and round-off cannot make the result negative
(what is left below 0 is clipped to 0). Covariances are shrunk (Ledoit-Wolf or OAS, from
``sklearn.covariance``) by default: the collection's classes usually have fewer items than
dimensions, where the sample covariance is singular and its FD biased.

The FD is scale-dependent (multiplying every vector by s multiplies it by s^2): compare
embedders with :func:`frechet_class_matrix`'s ``normalized`` matrix, the FD divided by the trace
of the total covariance of all items (invariant to scale and rotation).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._common import UndefinedMetricError, as_labels, as_matrix

__all__ = ["SHRINKAGE", "validate", "gaussian", "frechet_distance", "frechet_from_gaussians",
           "frechet_distance_inf", "frechet_class_matrix", "frechet_item_scores"]

SHRINKAGE = ("ledoit-wolf", "oas", None)


def validate(X: ArrayLike, Y: ArrayLike, *, shrinkage="ledoit-wolf") -> tuple:
    """Check two finite 2-d arrays of the same dimension with at least 2 rows each.

    Raises ValueError naming what is wrong (UndefinedMetricError for too few rows).
    """
    if shrinkage not in SHRINKAGE:
        raise ValueError(f"shrinkage must be one of {SHRINKAGE}, got {shrinkage!r}")
    X, Y = as_matrix(X, name="X"), as_matrix(Y, name="Y")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X has dimension {X.shape[1]} and Y {Y.shape[1]}: they must be in "
                         "the same space")
    for name, A in (("X", X), ("Y", Y)):
        if A.shape[0] < 2:
            raise UndefinedMetricError(f"Fréchet distance needs at least 2 items in {name}, "
                                       f"got {A.shape[0]}")
    return X, Y


def gaussian(X: np.ndarray, *, shrinkage="ledoit-wolf") -> tuple[np.ndarray, np.ndarray]:
    """(mean [shape=(d,)], covariance [shape=(d, d)]) of the rows of X.

    ``"ledoit-wolf"`` / ``"oas"``: the shrunk maximum-likelihood covariance (same trace as the
    sample one); None: the sample covariance (ddof=1, as FID / FAD use)."""
    X = np.asarray(X, dtype=np.float64)
    mu = X.mean(axis=0)
    if shrinkage is None:
        return mu, np.atleast_2d(np.cov(X, rowvar=False))
    from sklearn.covariance import OAS, LedoitWolf
    # store_precision=False: the precision (a pseudo-inverse, one more eigendecomposition per
    # fit) is never used here
    est = (LedoitWolf(store_precision=False) if shrinkage == "ledoit-wolf"
           else OAS(store_precision=False))
    return mu, est.fit(X).covariance_


def _psd_sqrt(C: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues -> 0)."""
    w, V = np.linalg.eigh((C + C.T) / 2)
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def frechet_from_gaussians(mu_x, C_x, mu_y, C_y, *, sqrt_C_x: np.ndarray | None = None) -> float:
    """FD of two Gaussians; ``sqrt_C_x`` (from a previous call) saves one eigendecomposition.

    Returns a finite float >= 0 (clipped at 0: the exact value is >= 0, round-off can push a
    near-zero one below)."""
    S = _psd_sqrt(C_x) if sqrt_C_x is None else sqrt_C_x
    M = S @ C_y @ S
    eig = np.linalg.eigvalsh((M + M.T) / 2)
    cross = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = np.asarray(mu_x) - np.asarray(mu_y)
    fd = float(diff @ diff + np.trace(C_x) + np.trace(C_y) - 2.0 * cross)
    return max(fd, 0.0)


def frechet_distance(X: ArrayLike, Y: ArrayLike, *, shrinkage="ledoit-wolf") -> float:
    """Fréchet distance between the Gaussians fitted to two sets of vectors.

    Parameters
    ----------
    X : np.ndarray [shape=(n, d)]
    Y : np.ndarray [shape=(m, d)]
        Two sets in the same space (not aligned item by item; n and m may differ).
    shrinkage : {"ledoit-wolf", "oas", None}
        Covariance estimator (:func:`gaussian`).

    Returns
    -------
    float >= 0, finite, symmetric in X and Y up to round-off; squared units of the vectors.
    The trace term comes from the eigenvalues of the symmetric C_x^1/2 C_y C_x^1/2, clipped at
    0, and the result is clipped at 0: never complex, never negative.
    """
    X, Y = validate(X, Y, shrinkage=shrinkage)
    mx, Cx = gaussian(X, shrinkage=shrinkage)
    my, Cy = gaussian(Y, shrinkage=shrinkage)
    return frechet_from_gaussians(mx, Cx, my, Cy)


def frechet_distance_inf(X: ArrayLike, Y: ArrayLike, *, shrinkage="ledoit-wolf",
                         sizes: ArrayLike | None = None, n_sizes: int = 5, n_draws: int = 3,
                         seed: int = 0) -> dict:
    """FD at infinite sample size: FD of random subsets of X of several sizes against all of Y,
    a least-squares line in 1/size, its intercept (the idea of Chong & Forsyth's FID∞ that
    fadtk applies to FAD; Y is the reference, fitted once).

    The FD of n samples is biased upwards by about a constant / n; the intercept removes that
    bias, so sets of different sizes become comparable. It is an extrapolation, not a distance:
    for two samples of one distribution it scatters around 0 and may be slightly negative.

    Parameters
    ----------
    X : np.ndarray [shape=(n, d)]
    Y : np.ndarray [shape=(m, d)]
    sizes : subset sizes (default: ``n_sizes`` sizes evenly spaced from max(2, n/3) to n)
    n_draws : subsets per size (the full size is drawn once: it is X itself)

    Returns
    -------
    dict: ``value`` (the intercept), ``slope``, ``sizes``, ``fd`` (mean FD per size),
    ``fd_full`` (FD of all of X).
    """
    X, Y = validate(X, Y, shrinkage=shrinkage)
    n = X.shape[0]
    if sizes is None:
        sizes = np.unique(np.linspace(max(2, n // 3), n, n_sizes).round().astype(int))
    sizes = np.asarray(sorted(set(int(s) for s in sizes)), dtype=int)
    if len(sizes) < 2 or sizes[0] < 2 or sizes[-1] > n:
        raise UndefinedMetricError(f"FD∞ needs at least two subset sizes in 2..{n}, got "
                                   f"{sizes.tolist()}")
    my, Cy = gaussian(Y, shrinkage=shrinkage)
    Sy = _psd_sqrt(Cy)
    rng = np.random.default_rng(seed)
    fds = []
    for s in sizes:
        draws = 1 if s == n else n_draws
        vals = []
        for _ in range(draws):
            idx = rng.choice(n, s, replace=False) if s < n else np.arange(n)
            mx, Cx = gaussian(X[idx], shrinkage=shrinkage)
            vals.append(frechet_from_gaussians(my, Cy, mx, Cx, sqrt_C_x=Sy))
        fds.append(float(np.mean(vals)))
    slope, intercept = np.polyfit(1.0 / sizes, np.asarray(fds), 1)
    return {"value": float(intercept), "slope": float(slope), "sizes": sizes.tolist(),
            "fd": fds, "fd_full": fds[-1] if sizes[-1] == n else None}


def total_variance(X: ArrayLike) -> float:
    """Trace of the covariance of all rows (ddof=0): the scale of the normalised FD."""
    X = as_matrix(X)
    return float(np.sum(X.var(axis=0)))


def frechet_class_matrix(X: ArrayLike, labels: ArrayLike, *,
                         shrinkage="ledoit-wolf") -> dict:
    """Class x class Fréchet distances of one space.

    Parameters
    ----------
    X : np.ndarray [shape=(n, d)]
    labels : np.ndarray [shape=(n,)]

    Returns
    -------
    dict: ``classes`` (sorted), ``matrix`` [shape=(c, c)] (raw FD, symmetrised: the mean of
    FD(a, b) and FD(b, a), which differ by round-off only; diagonal 0; NaN for a class with
    fewer than 2 items), ``normalized`` (matrix / ``total_variance``), ``total_variance``.
    """
    X = as_matrix(X)
    labels = as_labels(labels, X.shape[0]).astype(str)
    classes = sorted(np.unique(labels).tolist())
    if len(classes) < 2:
        raise UndefinedMetricError("class Fréchet distances need at least 2 classes")
    gauss, roots = {}, {}
    for c in classes:
        rows = X[labels == c]
        if len(rows) >= 2:
            gauss[c] = gaussian(rows, shrinkage=shrinkage)
            roots[c] = _psd_sqrt(gauss[c][1])
    D = np.full((len(classes), len(classes)), np.nan)
    for i, a in enumerate(classes):
        if a in gauss:
            D[i, i] = 0.0
        for j in range(i + 1, len(classes)):
            b = classes[j]
            if a in gauss and b in gauss:
                D[i, j] = D[j, i] = frechet_from_gaussians(*gauss[a], *gauss[b],
                                                           sqrt_C_x=roots[a])
    tv = total_variance(X)
    return {"classes": classes, "matrix": D, "normalized": D / tv if tv > 0 else D * np.nan,
            "total_variance": tv}


def frechet_item_scores(X: ArrayLike, labels: ArrayLike, *,
                        shrinkage="ledoit-wolf") -> np.ndarray:
    """Per-item outlier score: the squared Mahalanobis distance of each item to its class's
    Gaussian (the one the Fréchet distances use), divided by the dimension.

    It is the item's share of its class's Gaussian log-likelihood: the class's mean score is
    about 1 (exactly 1 without shrinkage), an item that does not belong scores far above (and,
    as it widens its class's covariance, pulls its classmates' scores below 1). NaN for an item
    whose class has fewer than 2 items.

    Parameters
    ----------
    X : np.ndarray [shape=(n, d)]
    labels : np.ndarray [shape=(n,)]

    Returns
    -------
    np.ndarray [shape=(n,)]
    """
    X = as_matrix(X)
    labels = as_labels(labels, X.shape[0]).astype(str)
    out = np.full(X.shape[0], np.nan)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        mu, C = gaussian(X[idx], shrinkage=shrinkage)
        Z = X[idx] - mu
        sol = np.linalg.lstsq(C, Z.T, rcond=None)[0]  # solve; pseudo-inverse when singular
        out[idx] = np.einsum("ij,ji->i", Z, sol) / X.shape[1]
    return out
