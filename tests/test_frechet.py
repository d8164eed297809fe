"""Fréchet distance: known answers, stability, FD∞, class matrix, outlier scores."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from analysis import frechet_distance, frechet_distance_inf
from analysis._common import UndefinedMetricError
from analysis.frechet import frechet_class_matrix, frechet_item_scores


@pytest.mark.parametrize("shrinkage", ["ledoit-wolf", "oas", None])
def test_identity_gaussians_mu_apart_tend_to_mu_squared(shrinkage):
    """N(0, I) vs N(mu, I): FD = |mu|^2 exactly; the estimate's error shrinks with n."""
    rng = np.random.default_rng(0)
    d, mu = 6, np.array([3.0, -1.0, 0, 0, 2.0, 0])
    errors = []
    for n in (300, 3000, 30000):
        X = rng.normal(size=(n, d))
        Y = rng.normal(size=(n, d)) + mu
        fd = frechet_distance(X, Y, shrinkage=shrinkage)
        errors.append(abs(fd - mu @ mu))
        assert fd == pytest.approx(mu @ mu, abs=20 * d / np.sqrt(n)), n
    assert errors[-1] < errors[0]
    assert errors[-1] < 0.1


def test_identical_sets_give_zero_never_negative_or_complex():
    rng = np.random.default_rng(1)
    for n, d in ((5, 40), (50, 50), (400, 8)):  # n < d: a singular sample covariance
        X = rng.normal(size=(n, d)) * 1e3
        for shrinkage in ("ledoit-wolf", "oas", None):
            fd = frechet_distance(X, X.copy(), shrinkage=shrinkage)
            assert isinstance(fd, float) and np.isfinite(fd)
            assert 0.0 <= fd < 1e-6 * np.trace(np.cov(X, rowvar=False))


def test_two_samples_of_one_distribution_are_close_and_fd_inf_removes_the_bias():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(200, 20)), rng.normal(size=(4000, 20))
    fd = frechet_distance(X, Y, shrinkage=None)
    r = frechet_distance_inf(X, Y, shrinkage=None, seed=0)
    assert fd > 0.05  # the finite-sample bias of 200 items in 20 dimensions
    assert abs(r["value"]) < fd / 2
    assert r["slope"] > 0 and len(r["sizes"]) == 5 and r["sizes"][-1] == 200
    assert r["fd_full"] == pytest.approx(fd)


def test_scale_dependence_and_what_normalisation_removes():
    rng = np.random.default_rng(3)
    y = np.repeat(["a", "b", "c"], 30)
    X = rng.normal(size=(90, 5)) + np.repeat(np.eye(3, 5) * 4, 30, axis=0)
    m1, m2 = frechet_class_matrix(X, y), frechet_class_matrix(10 * X, y)
    assert np.allclose(m2["matrix"], 100 * m1["matrix"])
    assert np.allclose(m2["normalized"], m1["normalized"])
    assert np.allclose(m1["matrix"], m1["matrix"].T) and np.all(np.diag(m1["matrix"]) == 0)


def test_outlier_scores_find_the_planted_item():
    rng = np.random.default_rng(4)
    y = np.repeat(["a", "b"], 40)
    X = rng.normal(size=(80, 6)) + np.repeat([[0] * 6, [5] * 6], 40, axis=0)
    X[7] += 12.0
    s = frechet_item_scores(X, y)
    assert int(np.argmax(s)) == 7
    assert np.mean(s[40:]) == pytest.approx(1.0, abs=0.15)  # a class without an outlier


def test_bad_input_is_refused_precisely():
    X = np.zeros((5, 3))
    with pytest.raises(ValueError, match="dimension"):
        frechet_distance(X, np.zeros((5, 4)))
    with pytest.raises(UndefinedMetricError, match="at least 2 items"):
        frechet_distance(X[:1], X)
    with pytest.raises(ValueError, match="shrinkage"):
        frechet_distance(X, X, shrinkage="ridge")


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 6)),
              elements=st.floats(-1e3, 1e3, allow_nan=False, width=32)),
       arrays(np.float64, st.tuples(st.integers(2, 12), st.just(1)),
              elements=st.floats(-1e3, 1e3, allow_nan=False, width=32)),
       st.sampled_from(["ledoit-wolf", "oas", None]))
def test_property_finite_nonnegative_symmetric(X, y_col, shrinkage):
    Y = np.repeat(y_col, X.shape[1], axis=1) * 0.5 + 1.0
    a = frechet_distance(X, Y, shrinkage=shrinkage)
    b = frechet_distance(Y, X, shrinkage=shrinkage)
    assert np.isfinite(a) and a >= 0.0 and isinstance(a, float)
    scale = (1.0 + np.sum(X.var(axis=0)) + np.sum(Y.var(axis=0))
             + np.sum((X.mean(0) - Y.mean(0)) ** 2))
    assert abs(a - b) <= 1e-6 * scale


def test_set_metrics_against_a_reference():
    from analysis import evaluate_set
    rng = np.random.default_rng(5)
    R = rng.normal(size=(300, 4))
    X = rng.normal(size=(100, 4)) + [2, 0, 0, 0]
    r = evaluate_set(X, R)
    mean_gap = float(np.sum((X.mean(axis=0) - R.mean(axis=0)) ** 2))  # the sample's |mu|^2
    assert r["frechet_to_reference"]["value"] == pytest.approx(mean_gap, abs=0.3)
    assert r["frechet_inf_to_reference"]["value"] == pytest.approx(mean_gap, abs=1.0)
    assert r["n"] == 100 and r["n_reference"] == 300
