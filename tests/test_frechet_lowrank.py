"""The low-rank Fréchet path (issue 27) equals the dense d x d computation.

A shrinkage covariance is floor * I outside the span of its class's rows, so the FD of two
classes needs only that span; these tests check it against the dense computation (sklearn's
covariance estimators, d x d eigendecompositions) with n < d and n > d, with and without
shrinkage, and against a 50-digit reference where the dense float64 one is itself inexact.
"""
import mpmath
import numpy as np
import pytest

from analysis import frechet as F

CASES = [(5, 7, 40), (30, 20, 64), (3, 100, 50), (10, 10, 19),   # n_x + n_y <= d: low-rank
         (50, 60, 40), (200, 150, 32), (60, 50, 50)]             # n > d or r_x + r_y > d: dense


def _pair(n, m, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, d) + 1.0
    Y = rng.normal(size=(m, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    return X, Y


@pytest.mark.parametrize("shrinkage", ["ledoit-wolf", "oas"])
@pytest.mark.parametrize("n,m,d", CASES)
def test_lowrank_equals_dense_with_shrinkage(n, m, d, shrinkage):
    X, Y = _pair(n, m, d, seed=n * 1000 + d)
    mx, Cx = F.gaussian(X, shrinkage=shrinkage)   # sklearn's estimator, d x d
    my, Cy = F.gaussian(Y, shrinkage=shrinkage)
    dense = F.frechet_from_gaussians(mx, Cx, my, Cy)
    gx, gy = F.fit_gaussian(X, shrinkage=shrinkage), F.fit_gaussian(Y, shrinkage=shrinkage)
    np.testing.assert_allclose(gx.dense(), Cx, rtol=1e-9, atol=1e-12 * np.abs(Cx).max())
    assert F.frechet_between(gx, gy) == pytest.approx(dense, rel=1e-8)
    assert F.frechet_between(gy, gx) == pytest.approx(dense, rel=1e-8)


def test_shrinkage_coefficients_equal_sklearn():
    from sklearn.covariance import OAS, LedoitWolf
    for n, d in ((8, 30), (40, 12), (300, 5)):
        X = np.random.default_rng(n + d).normal(size=(n, d)) @ np.diag(np.arange(1, d + 1))
        Z = X - X.mean(0)
        sq = np.linalg.svd(Z, compute_uv=False) ** 2
        norms = np.einsum("ij,ij->i", Z, Z)
        for name, est in (("ledoit-wolf", LedoitWolf()), ("oas", OAS())):
            a = F.shrinkage_coefficient(sq, norms, n=n, d=d, shrinkage=name)
            assert a == pytest.approx(est.fit(X).shrinkage_, rel=1e-10)


def _fd_mp(X, Y, digits=50):
    """Reference FD without shrinkage (ddof=1) in 50-digit arithmetic."""
    mpmath.mp.dps = digits

    def cov(A):
        A = mpmath.matrix(A.tolist())
        n = A.rows
        mean = [sum(A[i, j] for i in range(n)) / n for j in range(A.cols)]
        Z = mpmath.matrix([[A[i, j] - mean[j] for j in range(A.cols)] for i in range(n)])
        return mean, (Z.T * Z) / (n - 1)
    mx, Cx = cov(X)
    my, Cy = cov(Y)
    w, V = mpmath.eigsy(Cx)
    root = V * mpmath.diag([mpmath.sqrt(max(x, 0)) for x in w]) * V.T
    K = root * Cy * root
    e, _ = mpmath.eigsy((K + K.T) / 2)
    cross = sum(mpmath.sqrt(max(x, 0)) for x in e)
    diff = sum((a - b) ** 2 for a, b in zip(mx, my))
    tr = sum(Cx[i, i] + Cy[i, i] for i in range(Cx.rows))
    return float(diff + tr - 2 * cross)


@pytest.mark.parametrize("n,m,d", [(4, 5, 14), (6, 3, 12)])
def test_lowrank_without_shrinkage_matches_high_precision(n, m, d):
    # Without shrinkage both covariances are singular: the dense float64 path takes square roots
    # of round-off eigenvalues (~1e-16 -> ~1e-8 each), the low-rank one never sees them; so the
    # reference here is the dense formula in 50-digit arithmetic.
    X, Y = _pair(n, m, d, seed=7 * n + d)
    ref = _fd_mp(X, Y)
    got = F.frechet_between(F.fit_gaussian(X, shrinkage=None), F.fit_gaussian(Y, shrinkage=None))
    assert got == pytest.approx(ref, rel=1e-10)
    mx, Cx = F.gaussian(X, shrinkage=None)
    my, Cy = F.gaussian(Y, shrinkage=None)
    assert F.frechet_from_gaussians(mx, Cx, my, Cy) == pytest.approx(ref, rel=1e-6)


def test_item_scores_equal_dense_mahalanobis():
    rng = np.random.default_rng(3)
    labels = np.repeat(["a", "b", "c"], [6, 30, 9])
    X = rng.normal(size=(len(labels), 20)) + (labels == "b")[:, None] * 2.0
    for shrinkage in ("ledoit-wolf", None):
        got = F.frechet_item_scores(X, labels, shrinkage=shrinkage)
        for c in np.unique(labels):
            idx = labels == c
            mu, C = F.gaussian(X[idx], shrinkage=shrinkage)
            Z = X[idx] - mu
            want = np.einsum("ij,ji->i", Z, np.linalg.pinv(C, rcond=1e-12, hermitian=True) @ Z.T)
            np.testing.assert_allclose(got[idx], want / X.shape[1], rtol=1e-8)


def test_class_matrix_high_dimension_is_cheap_and_equals_pairwise():
    # 6 classes x 15 items in 3,000 dimensions: the dense path would need 6 eigendecompositions
    # of 3,000 x 3,000 matrices per pair; the low-rank one works in 30 x 30.
    rng = np.random.default_rng(11)
    labels = np.repeat([f"c{i}" for i in range(6)], 15)
    X = rng.normal(size=(90, 3000)) + rng.normal(size=(6, 3000))[np.repeat(np.arange(6), 15)]
    m = F.frechet_class_matrix(X, labels)
    assert m["matrix"][0, 1] == pytest.approx(
        F.frechet_distance(X[labels == "c0"], X[labels == "c1"]), rel=1e-12)
    assert np.all(m["matrix"][~np.eye(6, dtype=bool)] > 0)


@pytest.mark.parametrize("shrinkage", ["ledoit-wolf", "oas", None])
def test_rest_gaussian_from_one_scatter_equals_sklearn(shrinkage):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(90, 12)) * rng.uniform(0.5, 3.0, 12) + 5.0
    left_out = rng.random(90) < 0.2
    rest = F.RestGaussians(X).without(left_out, shrinkage=shrinkage)
    mu, C = F.gaussian(X[~left_out], shrinkage=shrinkage)
    np.testing.assert_allclose(rest.mean, mu, rtol=1e-12)
    np.testing.assert_allclose(rest.cov, C, rtol=1e-10, atol=1e-12 * np.abs(C).max())


def _fd_inf_dense_reference(inside, rest, *, shrinkage, seed, n_sizes=4, n_draws=2):
    """FD∞ with the same draws as frechet_distance_inf, every FD from sklearn's d x d
    covariances and frechet_from_gaussians (square root, products, eigvalsh)."""
    n = len(inside)
    sizes = np.unique(np.linspace(max(2, n // 3), n, n_sizes).round().astype(int))
    my, Cy = F.gaussian(rest, shrinkage=shrinkage)
    rng, fds = np.random.default_rng(seed), []
    for s in sizes:
        vals = []
        for _ in range(1 if s == n else n_draws):
            idx = rng.choice(n, s, replace=False) if s < n else np.arange(n)
            mx, Cx = F.gaussian(inside[idx], shrinkage=shrinkage)
            vals.append(F.frechet_from_gaussians(my, Cy, mx, Cx))
        fds.append(np.mean(vals))
    return np.polyfit(1.0 / sizes, fds, 1)[1], fds


@pytest.mark.parametrize("shrinkage", ["ledoit-wolf", "oas"])
def test_class_vs_rest_fd_inf_equals_the_dense_computation(shrinkage):
    # 150 items in 40-d, 6 classes: every rest outnumbers the dimensions (its Gaussian from
    # the one scatter) and every class subset is low-rank (the dense-vs-low-rank path)
    rng = np.random.default_rng(5)
    labels = np.array(list("abcdef"))[rng.integers(0, 6, 150)]
    X = rng.normal(size=(150, 40)) + 2.0 * rng.normal(size=(6, 40))[
        np.searchsorted(np.unique(labels), labels)]
    classes = sorted(set(labels))
    got = F.frechet_inf_class_vs_rest(X, labels, classes, shrinkage=shrinkage, n_sizes=4,
                                      n_draws=2, seed=3)
    assert sorted(got) == classes
    for i, c in enumerate(classes):
        inside = labels == c
        value, fds = _fd_inf_dense_reference(X[inside], X[~inside], shrinkage=shrinkage,
                                             seed=3 + i)
        np.testing.assert_allclose(got[c]["fd"], fds, rtol=1e-9)
        assert got[c]["value"] == pytest.approx(value, rel=1e-9)
        same = F.frechet_distance_inf(X[inside], X[~inside], shrinkage=shrinkage, n_sizes=4,
                                      n_draws=2, seed=3 + i)
        assert same["value"] == pytest.approx(got[c]["value"], rel=1e-12)


def test_dense_against_low_rank_without_shrinkage_matches_high_precision():
    # a rest of 20 rows in 12-d (dense) against 4 rows (rank 3): only the 3 x 3 block counts
    X, Y = _pair(4, 20, 12, seed=19)
    ref = _fd_mp(X, Y)
    got = F.frechet_between(F.fit_gaussian_dense(Y, shrinkage=None),
                            F.fit_gaussian(X, shrinkage=None))
    assert got == pytest.approx(ref, rel=1e-10)
