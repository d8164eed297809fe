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

__all__ = ["SHRINKAGE", "validate", "gaussian", "fit_gaussian", "ClassGaussian",
           "shrinkage_coefficient", "frechet_between", "frechet_distance",
           "frechet_from_gaussians",
           "frechet_distance_inf", "frechet_class_matrix", "frechet_item_scores",
           "DenseGaussian", "gaussian_from_scatter", "fit_gaussian_dense", "RestGaussians",
           "frechet_inf_class_vs_rest", "shrinkage_from_moments"]

SHRINKAGE = ("ledoit-wolf", "oas", None)
#: BLAS threads in the per-class loops (many d x d eigvalsh of a few hundred dimensions):
#: side by side on 2 shared cores (Intel Xeon, load ~4; 1,000 items x 512-d, 20 classes, FD∞
#: of each class vs the rest + the class matrix) 43 CPU s / 76 s wall with OpenBLAS's default
#: 2 threads, 4.8 CPU s / 11 s with 1: a second thread waiting for a busy core spins.
#: None leaves the pools as they are.
FRECHET_BLAS_THREADS: int | None = 1


def _blas_limit():
    """threadpoolctl's limit to FRECHET_BLAS_THREADS, or nothing for None."""
    if FRECHET_BLAS_THREADS is None:
        from contextlib import nullcontext
        return nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=FRECHET_BLAS_THREADS, user_api="blas")


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


class ClassGaussian:
    """A Gaussian fitted to n rows in d dimensions, kept in the form its covariance has:

        C = basis @ diag(eig) @ basis.T + floor * (I - basis @ basis.T)

    ``basis`` [shape=(d, r)] is orthonormal (the right singular vectors of the centred rows,
    r <= min(n - 1, d)); a shrinkage covariance (1 - a) S + a tr(S)/d I acts as ``floor`` =
    a tr(S)/d on everything orthogonal to the rows' span. Nothing d x d is stored, so a class
    of 100 items in 6,144 dimensions costs 100 x 6,144 numbers, not 6,144^2.
    """

    def __init__(self, mean: np.ndarray, basis: np.ndarray, eig: np.ndarray, floor: float):
        self.mean, self.basis, self.eig, self.floor = mean, basis, eig, float(floor)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    def trace(self) -> float:
        return float(np.sum(self.eig) + (self.dim - self.rank) * self.floor)

    def dense(self) -> np.ndarray:
        """The d x d covariance (only for the dense path and tests)."""
        C = (self.basis * (self.eig - self.floor)) @ self.basis.T
        C[np.diag_indices_from(C)] += self.floor
        return C


class DenseGaussian:
    """A Gaussian kept as its d x d covariance ``cov`` and ``mean`` [shape=(d,)]: for a set
    with more rows than dimensions, whose thin basis would be d x d anyway; fitted from the
    d x d scatter (:func:`gaussian_from_scatter`), no SVD of the rows."""

    def __init__(self, mean: np.ndarray, cov: np.ndarray):
        self.mean, self.cov = mean, cov
        self._factor = None

    def factor(self) -> np.ndarray | None:
        """Lower Cholesky factor L of ``cov`` (L L^T = cov), computed once; None when ``cov``
        is not positive definite (no shrinkage, fewer informative rows than dimensions)."""
        if self._factor is None:
            try:
                self._factor = np.linalg.cholesky(self.cov)
            except np.linalg.LinAlgError:
                self._factor = False
        return self._factor if self._factor is not False else None

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def trace(self) -> float:
        return float(np.trace(self.cov))


def gaussian_from_scatter(mean: np.ndarray, scatter: np.ndarray, row_sq_norms: np.ndarray, *,
                          n: int, shrinkage="ledoit-wolf") -> DenseGaussian:
    """The covariance :func:`fit_gaussian` gives (to round-off) from the centred rows' scatter
    Z^T Z [shape=(d, d)] and squared norms [shape=(n,)]: O(d^2 + n)."""
    d = scatter.shape[0]
    tr = float(np.trace(scatter))
    if shrinkage is None:
        a, m = 0.0, n - 1
    else:
        a, m = shrinkage_from_moments(tr, float(np.sum(scatter * scatter)), row_sq_norms,
                                      n=n, d=d, shrinkage=shrinkage), n
    C = ((1.0 - a) / m) * scatter
    C[np.diag_indices_from(C)] += a * tr / (n * d)
    return DenseGaussian(mean, C)


def fit_gaussian_dense(X: ArrayLike, *, shrinkage="ledoit-wolf") -> DenseGaussian:
    """:class:`DenseGaussian` of the rows of X [shape=(n, d)]: O(n d^2) (one product)."""
    X = np.asarray(X, dtype=np.float64)
    mu = X.mean(axis=0)
    Z = X - mu
    return gaussian_from_scatter(mu, Z.T @ Z, np.einsum("ij,ij->i", Z, Z), n=X.shape[0],
                                 shrinkage=shrinkage)


class RestGaussians:
    """Gaussians of "all rows of X [shape=(n, d)] but a few", one per choice of the few (a
    class against the rest): the scatter of all rows is formed once, on globally centred rows,
    and each call subtracts the rows left out: O(k d^2 + n d) for k rows left out, instead of
    an SVD of the n - k others."""

    def __init__(self, X: np.ndarray):
        X = np.asarray(X, dtype=np.float64)
        self.offset = X.mean(axis=0)
        self.Z = X - self.offset
        self.scatter = self.Z.T @ self.Z
        self.total = self.Z.sum(axis=0)
        self.sq = np.einsum("ij,ij->i", self.Z, self.Z)

    def without(self, left_out: np.ndarray, *, shrinkage="ledoit-wolf") -> DenseGaussian:
        """The Gaussian of the rows where the mask ``left_out`` [shape=(n,)] is False."""
        Zo = self.Z[left_out]
        n_rest = self.Z.shape[0] - Zo.shape[0]
        mu = (self.total - Zo.sum(axis=0)) / n_rest
        S = self.scatter - Zo.T @ Zo - n_rest * np.outer(mu, mu)
        keep = ~left_out
        norms = self.sq[keep] - 2.0 * (self.Z[keep] @ mu) + float(mu @ mu)
        return gaussian_from_scatter(self.offset + mu, S, norms, n=n_rest, shrinkage=shrinkage)


def _frechet_dense_lowrank(ga: DenseGaussian, gb: ClassGaussian) -> float:
    """FD of a dense and a low-rank Gaussian, exact. The eigenvalues of C_a^1/2 C_b C_a^1/2
    are those of M = C_b^1/2 C_a C_b^1/2, and C_b^1/2 = sqrt(f) I + P E P^T (P the basis,
    E = sqrt(eig) - sqrt(f), f the floor), so

        M = f C_a + P U^T + U P^T,   U = sqrt(f) C_a P E + P (E P^T C_a P E) / 2

    costs O(d^2 r) and one d x d ``eigvalsh`` (not two d x d products and a square root).
    Without a floor (no shrinkage) M = P (E P^T C_a P E) P^T: the r x r block alone, whose
    eigenvalues are M's nonzero ones (no square roots of round-off eigenvalues)."""
    P = gb.basis
    root = np.sqrt(np.clip(gb.eig, 0.0, None))
    CP = ga.cov @ P                                     # (d, r)
    if gb.floor > 0:
        e = root - np.sqrt(gb.floor)
        inner = (P.T @ CP) * np.outer(e, e)
        U = np.sqrt(gb.floor) * (CP * e) + 0.5 * (P @ inner)
        M = gb.floor * ga.cov + np.hstack([P, U]) @ np.hstack([U, P]).T
    else:
        M = (P.T @ CP) * np.outer(root, root)
    eig = np.linalg.eigvalsh((M + M.T) / 2)
    cross = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = ga.mean - gb.mean
    return max(float(diff @ diff) + ga.trace() + gb.trace() - 2.0 * cross, 0.0)


def shrinkage_coefficient(sq_singular: np.ndarray, row_sq_norms: np.ndarray, *, n: int, d: int,
                          shrinkage: str) -> float:
    """Ledoit-Wolf or OAS coefficient a from the centred rows' squared singular values and
    squared row norms -- the same formulas as ``sklearn.covariance.ledoit_wolf_shrinkage`` and
    ``OAS`` (which use ||Z^T Z||_F^2 = sum sigma^4 and tr(Z^T Z) = sum sigma^2), without the
    d x d matrix.
    """
    return shrinkage_from_moments(float(np.sum(sq_singular)), float(np.sum(sq_singular ** 2)),
                                  row_sq_norms, n=n, d=d, shrinkage=shrinkage)


def shrinkage_from_moments(scatter_trace: float, scatter_frob2: float, row_sq_norms: np.ndarray,
                           *, n: int, d: int, shrinkage: str) -> float:
    """:func:`shrinkage_coefficient` from tr(Z^T Z) and ||Z^T Z||_F^2 of the centred rows Z
    [shape=(n, d)] (a d x d scatter needs no SVD) and their squared norms [shape=(n,)]."""
    if d == 1:
        return 0.0
    trace = scatter_trace / n                       # tr of the ML covariance
    mu = trace / d
    frob2 = scatter_frob2 / n ** 2                  # ||S||_F^2
    if shrinkage == "ledoit-wolf":
        beta_ = float(np.sum(row_sq_norms ** 2))
        beta = (beta_ / n - frob2) / (d * n)
        delta = (frob2 - d * mu ** 2) / d
        beta = min(beta, delta)
        # clipped to [0, 1]: round-off can make beta a hair below 0 (two items, rank 1), and a
        # negative coefficient would give a negative variance floor
        return 0.0 if beta <= 0 or delta <= 0 else min(beta / delta, 1.0)
    alpha = frob2 / d ** 2
    num = alpha + mu ** 2
    den = (n + 1) * (alpha - mu ** 2 / d)
    return 1.0 if den == 0 else min(num / den, 1.0)


def fit_gaussian(X: ArrayLike, *, shrinkage="ledoit-wolf") -> ClassGaussian:
    """:class:`ClassGaussian` of the rows of X [shape=(n, d)], the same covariance as
    :func:`gaussian` (to round-off) from one thin SVD: O(n d min(n, d)) time, O(n d) memory."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    mu = X.mean(axis=0)
    Z = X - mu
    _, sv, Vt = np.linalg.svd(Z, full_matrices=False)
    sq = sv ** 2
    keep = sq > (sq[0] if len(sq) else 0.0) * 1e-24  # centring leaves one null direction
    if shrinkage is None:
        a, m = 0.0, n - 1
    else:
        a, m = shrinkage_coefficient(sq, np.einsum("ij,ij->i", Z, Z), n=n, d=d,
                                     shrinkage=shrinkage), n
    floor = a * float(np.sum(sq)) / (n * d)
    return ClassGaussian(mu, Vt[keep].T, (1.0 - a) * sq[keep] / m + floor, floor)


def fit_gaussian_auto(X: ArrayLike, *, shrinkage="ledoit-wolf") -> ClassGaussian | DenseGaussian:
    """The cheaper exact form of the rows' Gaussian: :func:`fit_gaussian` (thin SVD) for at most
    half as many rows as dimensions, :func:`fit_gaussian_dense` (one d x d scatter, no SVD: a
    5,000 x 512 class costs a product instead of an SVD) for more. Two classes of more than
    d/2 rows each take the dense comparison anyway (r_x + r_y > d), which is then one Cholesky
    per class and two products per pair instead of rebuilding a d x d matrix per pair.
    Without shrinkage a class of at most d rows has a singular covariance, whose dense square
    root would take square roots of round-off eigenvalues: it keeps the thin form."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if n > d or (shrinkage is not None and 2 * n > d):
        return fit_gaussian_dense(X, shrinkage=shrinkage)
    return fit_gaussian(X, shrinkage=shrinkage)


def _frechet_dense_dense(gx: DenseGaussian, gy: DenseGaussian) -> float:
    """FD of two dense Gaussians. With C_x = L L^T, L^T C_y L = (L^T C_x^-1/2)(C_x^1/2 C_y
    C_x^1/2)(C_x^-1/2 L), an orthogonal similarity: the same eigenvalues, from one Cholesky
    per Gaussian (kept) instead of an eigendecomposition per pair. Not positive definite (no
    shrinkage): :func:`frechet_from_gaussians`."""
    L = gx.factor()
    if L is None:
        return frechet_from_gaussians(gx.mean, gx.cov, gy.mean, gy.cov)
    M = L.T @ gy.cov @ L
    eig = np.linalg.eigvalsh((M + M.T) / 2)
    cross = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = gx.mean - gy.mean
    return max(float(diff @ diff) + gx.trace() + gy.trace() - 2.0 * cross, 0.0)


def frechet_between(gx: ClassGaussian | DenseGaussian, gy: ClassGaussian | DenseGaussian) -> float:
    """FD of two :class:`ClassGaussian` s, exact, without d x d work when r_x + r_y <= d
    (either may be a :class:`DenseGaussian`: then :func:`_frechet_dense_lowrank`).

    Both covariances act as floor_x I and floor_y I on the complement of U = span of the two
    bases (r = dim U), so C_x^1/2 C_y C_x^1/2 is block diagonal (U, complement) and

        FD = |mu_x - mu_y|^2 + tr_U(A + B - 2 (A^1/2 B A^1/2)^1/2)
             + (d - r) (sqrt(floor_x) - sqrt(floor_y))^2

    with A, B the restrictions of C_x, C_y to U. In the basis U = [P_x, Q] (Q an orthonormal
    basis of the part of P_y orthogonal to P_x), A is diagonal -- (eig_x, floor_x) -- and
    B = floor_y I + W diag(eig_y - floor_y) W^T with W = U^T P_y = [P_x^T P_y; R], R from the
    QR of P_y - P_x P_x^T P_y (W has orthonormal columns): O(d r_x r_y + d r_y^2 + r^3). Otherwise (r_x + r_y > d) the
    larger one dense and :func:`_frechet_dense_lowrank`, O(d^2 r_y + d^3).
    """
    dense = [g for g in (gx, gy) if isinstance(g, DenseGaussian)]
    if len(dense) == 2:
        return _frechet_dense_dense(gx, gy)
    if dense:
        return _frechet_dense_lowrank(dense[0], gy if dense[0] is gx else gx)
    diff = gx.mean - gy.mean
    d = gx.dim
    if gx.rank < gy.rank:
        gx, gy = gy, gx  # the QR below is over the smaller basis
    if gx.rank + gy.rank > d:
        return _frechet_dense_lowrank(DenseGaussian(gx.mean, gx.dense()), gy)
    M = gx.basis.T @ gy.basis                       # (r_x, r_y)
    Q, R = np.linalg.qr(gy.basis - gx.basis @ M)    # (d, r_y), (r_y, r_y)
    W = np.vstack([M, R])                           # U^T P_y, U = [P_x, Q]
    a_diag = np.concatenate([gx.eig, np.full(gy.rank, gx.floor)])
    r = len(a_diag)
    # B = L L^T with L = [W diag(sqrt(eig_y - floor_y)), sqrt(floor_y) I], so the eigenvalues
    # of A^1/2 B A^1/2 are the squared singular values of A^1/2 L: the trace of its square root
    # is their sum, with no square root of a round-off eigenvalue (~1e-16 -> ~1e-8) when the
    # covariances are singular (no shrinkage)
    L = W * np.sqrt(np.clip(gy.eig - gy.floor, 0.0, None))
    if gy.floor > 0:
        L = np.hstack([L, np.sqrt(gy.floor) * np.eye(r)])
    ra = np.sqrt(np.clip(a_diag, 0.0, None))
    cross = float(np.sum(np.linalg.svd(ra[:, None] * L, compute_uv=False)))
    trace_b = float(np.sum(gy.eig)) + (r - gy.rank) * gy.floor  # tr(W D W^T) = tr D: W^T W = I
    fd = (float(diff @ diff) + float(np.sum(a_diag)) + trace_b - 2.0 * cross
          + (d - r) * (np.sqrt(gx.floor) - np.sqrt(gy.floor)) ** 2)
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
    return frechet_between(fit_gaussian(X, shrinkage=shrinkage),
                           fit_gaussian(Y, shrinkage=shrinkage))


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
    # more rows than dimensions: the thin basis would be d x d, the scatter is cheaper
    gy = (fit_gaussian_dense(Y, shrinkage=shrinkage) if Y.shape[0] > Y.shape[1]
          else fit_gaussian(Y, shrinkage=shrinkage))
    return _fd_inf(X, gy, shrinkage=shrinkage, sizes=sizes, n_sizes=n_sizes, n_draws=n_draws,
                   seed=seed)


def _fd_inf(X: np.ndarray, gy, *, shrinkage, sizes, n_sizes: int, n_draws: int,
            seed: int) -> dict:
    """:func:`frechet_distance_inf` of X [shape=(n, d)] against the fitted reference ``gy``."""
    n = X.shape[0]
    if sizes is None:
        sizes = np.unique(np.linspace(max(2, n // 3), n, n_sizes).round().astype(int))
    sizes = np.asarray(sorted(set(int(s) for s in sizes)), dtype=int)
    if len(sizes) < 2 or sizes[0] < 2 or sizes[-1] > n:
        raise UndefinedMetricError(f"FD∞ needs at least two subset sizes in 2..{n}, got "
                                   f"{sizes.tolist()}")
    rng = np.random.default_rng(seed)
    fds = []
    for s in sizes:
        draws = 1 if s == n else n_draws
        vals = []
        for _ in range(draws):
            idx = rng.choice(n, s, replace=False) if s < n else np.arange(n)
            vals.append(frechet_between(gy, fit_gaussian_auto(X[idx], shrinkage=shrinkage)))
        fds.append(float(np.mean(vals)))
    slope, intercept = np.polyfit(1.0 / sizes, np.asarray(fds), 1)
    return {"value": float(intercept), "slope": float(slope), "sizes": sizes.tolist(),
            "fd": fds, "fd_full": fds[-1] if sizes[-1] == n else None}


def frechet_inf_class_vs_rest(X: ArrayLike, labels: ArrayLike, classes: list, *,
                              shrinkage="ledoit-wolf", n_sizes: int = 5, n_draws: int = 3,
                              seed: int = 0) -> dict:
    """:func:`frechet_distance_inf` of each class against all other items.

    Class ``classes[i]`` is drawn with seed ``seed + i``. Where the rest has more items than
    dimensions its Gaussian comes from one scatter of all items minus the class's rows
    (:class:`RestGaussians`), not from a fit of the rest per class.

    Parameters
    ----------
    X : np.ndarray [shape=(n, d)]
    labels : np.ndarray [shape=(n,)]

    Returns
    -------
    dict: class -> :func:`frechet_distance_inf`'s dict, for the classes where it is defined
    (at least 3 items in the class, 2 in the rest).
    """
    X = as_matrix(X)
    labels = as_labels(labels, X.shape[0]).astype(str)
    with _blas_limit():
        return _each_class_vs_rest(X, labels, classes, shrinkage=shrinkage, n_sizes=n_sizes,
                                   n_draws=n_draws, seed=seed)


def _each_class_vs_rest(X, labels, classes, *, shrinkage, n_sizes, n_draws, seed) -> dict:
    rest, out = None, {}
    for i, c in enumerate(classes):
        inside = labels == str(c)
        n_in = int(inside.sum())
        n_rest = X.shape[0] - n_in
        if n_in < 3 or n_rest < 2:
            continue
        if n_rest > X.shape[1]:
            rest = rest if rest is not None else RestGaussians(X)
            gy = rest.without(inside, shrinkage=shrinkage)
        else:
            gy = fit_gaussian(X[~inside], shrinkage=shrinkage)
        try:
            out[c] = _fd_inf(X[inside], gy, shrinkage=shrinkage, sizes=None, n_sizes=n_sizes,
                             n_draws=n_draws, seed=seed + i)
        except UndefinedMetricError:
            continue
    return out


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
    with _blas_limit():
        gauss = {}
        for c in classes:
            rows = X[labels == c]
            if len(rows) >= 2:
                gauss[c] = fit_gaussian_auto(rows, shrinkage=shrinkage)
        D = np.full((len(classes), len(classes)), np.nan)
        for i, a in enumerate(classes):
            if a in gauss:
                D[i, i] = 0.0
            for j in range(i + 1, len(classes)):
                b = classes[j]
                if a in gauss and b in gauss:
                    D[i, j] = D[j, i] = frechet_between(gauss[a], gauss[b])
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
        g = fit_gaussian(X[idx], shrinkage=shrinkage)
        Z = X[idx] - g.mean
        P = Z @ g.basis                 # coordinates in the basis; the rest lies outside it
        quad = np.einsum("ij,ij->i", P / g.eig, P)
        if g.floor > 0:                 # C^-1 = P diag(1/eig) P^T + (I - P P^T) / floor
            rest = np.einsum("ij,ij->i", Z, Z) - np.einsum("ij,ij->i", P, P)
            quad = quad + np.clip(rest, 0.0, None) / g.floor
        # without shrinkage C is singular: the pseudo-inverse, i.e. the basis part only
        out[idx] = quad / X.shape[1]
    return out
