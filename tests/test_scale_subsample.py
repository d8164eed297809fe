"""Issue 27: what is computed on a subsample agrees with the full computation, and what is
computed in blocks equals the one-matrix computation."""
import numpy as np
import pytest

from analysis import retrieval
from analysis._common import l2_normalize
from analysis.metrics import get
from analysis.metrics.context import PairContext


def _pair(n, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"c{i}" for i in range(5)], n // 5)
    X = rng.normal(size=(5, 12))[np.repeat(np.arange(5), n // 5)] + rng.normal(size=(n, 12))
    Y = X @ rng.normal(size=(12, 9)) + 2.0 * rng.normal(size=(n, 9))
    return X, Y, labels


def test_rsa_on_a_subsample_lies_in_the_full_interval():
    X, Y, labels = _pair(360)
    kw = {"n_bootstrap": 60, "n_permutations": 99}
    full = get("rsa_spearman").fn(PairContext(X, Y, labels, rsa_max_items=360, **kw))
    ctx = PairContext(X, Y, labels, rsa_max_items=240, **kw)
    sub = get("rsa_spearman").fn(ctx)
    assert sub.params["items_subsampled"] == {"n_items": 240, "of": 360, "seed": 0}
    assert "items_subsampled" not in full.params
    assert full.ci[0] <= sub.value <= full.ci[1]
    assert sub.value != full.value  # it really is another computation
    p = get("rsa_mantel_p").fn(ctx)
    assert p.params["items_subsampled"]["n_items"] == 240 and 0 < p.value <= 1


def test_blocked_retrieval_ranks_equal_one_matrix(monkeypatch):
    rng = np.random.default_rng(1)
    Q, G = rng.normal(size=(300, 6)), rng.normal(size=(300, 6))
    G[10] = G[11]                                   # a tie with the true partner
    S = np.round(l2_normalize(Q) @ l2_normalize(G).T, 12)
    true = np.diag(S)
    want = 1 + np.sum(S > true[:, None], axis=1) + (np.sum(S == true[:, None], axis=1) - 1)
    monkeypatch.setattr(retrieval, "RANK_BLOCK", 300 * 7)   # 7 rows per block
    np.testing.assert_array_equal(retrieval.retrieval_scores(Q, G), want)


def test_subspace_iteration_finds_the_top_pca_axes(monkeypatch):
    # above PCA_EXACT_MAX_DIM the split PCA is iterative: its subspace must be the exact one's
    # when the spectrum has a gap (the case PCA + Procrustes relies on)
    rng = np.random.default_rng(2)
    n, dim, d = 400, 60, 8
    X = rng.normal(size=(n, d)) @ rng.normal(size=(d, dim)) * 3 + 0.3 * rng.normal(size=(n, dim))
    tr, te = np.arange(300), np.arange(300, 400)
    exact = retrieval._SplitPca(X).fit(tr, te, d)[1]
    monkeypatch.setattr(retrieval, "PCA_EXACT_MAX_DIM", 10)
    pca = retrieval._SplitPca(X)
    for _ in range(2):  # cold, then warm-started
        approx = pca.fit(tr, te, d)[1]
        # same subspace: the projector difference vanishes
        P, Q = exact @ exact.T, approx @ approx.T
        assert np.linalg.norm(P - Q) < 1e-8


def test_rsa_resampler_equals_ranking_each_resample():
    from analysis._common import UndefinedMetricError, center_unit, cosine_distance_matrix
    from analysis.rsa import RsaResampler, rsa_from_distances
    X, Y, _ = _pair(60, seed=2)
    X[7], Y[7] = X[3], Y[3]                         # a duplicated item: tied distances
    Y[20:30] = Y[20]                                # ten copies: many ties in one matrix
    DA, DB = (cosine_distance_matrix(center_unit(A)) for A in (X, Y))
    resample = RsaResampler(DA, DB)
    assert resample.starts_a is not None and resample.starts_b is not None
    rng = np.random.default_rng(0)
    for idx in [np.arange(60)] + [rng.integers(0, 60, 60) for _ in range(6)]:
        want = rsa_from_distances(DA[np.ix_(idx, idx)], DB[np.ix_(idx, idx)], exclude=idx)
        assert resample(idx) == pytest.approx(want, rel=1e-12)
    with pytest.raises(UndefinedMetricError):       # drawn only from the ten copies
        resample(np.array([20, 21, 22, 23, 24, 21]))
    with pytest.raises(UndefinedMetricError):       # one distinct source: no pair at all
        resample(np.array([5, 5, 5]))
