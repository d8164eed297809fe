"""Issue 27: resamples scored in batches of item weights equal the ones bootstrap_ci draws and
scores one at a time."""
import numpy as np

from analysis import crossspace
from analysis.bootstrap import bootstrap_ci, resample_counts
from analysis.centroids import centroid_matrix_correlation_resamples


def test_resample_counts_are_the_draws_of_bootstrap_ci():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 50).astype(str)
    groups = np.array([f"p{i // 2}" for i in range(50)])
    seen = []
    bootstrap_ci(lambda v: seen.append(np.bincount(v, minlength=50)) or 0.0, np.arange(50),
                 n_boot=23, seed=4, strata=labels, groups=groups)
    W = np.vstack(list(resample_counts(50, n_boot=23, seed=4, strata=labels, groups=groups,
                                       chunk=5)))
    assert W.shape == (23, 50) and np.array_equal(W, np.array(seen))


def test_batched_centroid_correlations_equal_one_at_a_time():
    rng = np.random.default_rng(1)
    labels = np.repeat(["a", "b", "c", "d", "e"], 12)
    X = rng.normal(size=(5, 8))[np.repeat(np.arange(5), 12)] + rng.normal(size=(60, 8))
    Y = X @ rng.normal(size=(8, 6)) + rng.normal(size=(60, 6))
    f = crossspace.centroid_matrix_correlation_resampler(X, Y, labels, center=True)
    one = []
    bootstrap_ci(lambda idx: one.append(f(idx)) or 0.0, np.arange(60), n_boot=30, seed=2,
                 strata=labels)
    batched = centroid_matrix_correlation_resamples(
        X, Y, labels, resample_counts(60, n_boot=30, seed=2, strata=labels, chunk=7))
    np.testing.assert_allclose(batched, one, rtol=1e-12, atol=1e-13)
