"""2-D maps: PCA and t-SNE on data whose answer is known."""
import numpy as np
import pytest

from analysis import projection
from analysis._common import UndefinedMetricError


def blobs(n_per, k=4, dim=20, spread=0.05, seed=0):
    """k tight clusters around random directions (well separated in cosine terms)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * 5
    X = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centers])
    y = np.repeat(np.arange(k), n_per)
    return X, y


def nn1_accuracy(Y, labels):
    d = ((Y[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float(np.mean(labels[d.argmin(axis=1)] == labels))


@pytest.mark.parametrize("cells", [10**9, 0])  # exact SVD, randomized SVD
def test_pca_recovers_the_two_largest_axes(cells):
    rng = np.random.default_rng(1)
    n, d = 300, 12
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    # latent coordinates with exactly uncorrelated, centred columns of std 10, 3, 0.01, ...
    z = rng.normal(size=(n, d))
    q, _ = np.linalg.qr(z - z.mean(axis=0))
    latent = q * np.sqrt(n - 1) * np.array([10.0, 3.0] + [0.01] * (d - 2))
    X = latent @ basis.T + 7.0  # rotated, translated
    Y, params = projection.pca_2d(X, seed=0, exact_max_cells=cells)
    assert params["svd_solver"] == ("full" if cells else "randomized")
    assert Y.shape == (n, 2)
    for j in range(2):  # the map's axes are the two largest latent axes, up to sign
        assert min(np.abs(Y[:, j] - latent[:, j]).max(),
                   np.abs(Y[:, j] + latent[:, j]).max()) < 1e-6 * 10
    assert params["explained_variance_ratio"] == pytest.approx(
        [100 / (109 + 10 * 1e-4), 9 / (109 + 10 * 1e-4)], rel=1e-6)


def test_pca_degenerate_inputs():
    Y, _ = projection.pca_2d(np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]]))
    assert Y.shape == (2, 2) and np.allclose(Y[:, 1], 0.0)
    with pytest.raises(UndefinedMetricError):
        projection.pca_2d(np.ones((1, 3)))


def test_perplexity_adapts_to_small_data_and_classes():
    assert projection.tsne_perplexity(1000) == 30.0
    assert projection.tsne_perplexity(31) == pytest.approx(10.0)  # (n - 1) / 3
    labels = np.repeat(np.arange(50), 4)  # 200 items in classes of 4
    assert projection.tsne_perplexity(200, labels) == 5.0
    assert projection.tsne_perplexity(6) == pytest.approx(5 / 3)


def test_tsne_keeps_separated_clusters_apart_and_is_seeded():
    X, y = blobs(30)
    Y1, params = projection.tsne_2d(X, y, seed=3)
    Y2, _ = projection.tsne_2d(X, y, seed=3)
    assert Y1.shape == (120, 2) and np.isfinite(Y1).all()
    assert nn1_accuracy(Y1, y) == 1.0
    np.testing.assert_array_equal(Y1, Y2)
    assert params["metric"] == "cosine" and params["seed"] == 3
    with pytest.raises(UndefinedMetricError):
        projection.tsne_2d(X[:4])


@pytest.mark.slow
def test_tsne_at_large_n_uses_fft_and_keeps_clusters():
    # 3,000 points are past the FFT threshold (2,000); bench/bench_analysis.py times 100,000
    X, y = blobs(750, k=4, dim=32, spread=0.3, seed=2)
    Y, params = projection.tsne_2d(X, y, seed=0)
    assert params["negative_gradient_method"] == "fft"
    assert Y.shape == (3000, 2) and np.isfinite(Y).all()
    # every class is a compact island: its points are nearer their own centroid than any other
    cents = np.stack([Y[y == c].mean(axis=0) for c in range(4)])
    nearest = ((Y[:, None, :] - cents[None]) ** 2).sum(-1).argmin(axis=1)
    assert np.mean(nearest == y) > 0.99
