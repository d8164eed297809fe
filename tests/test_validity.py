"""Issue 11: the metrics on data whose answer is known (independent spaces, rotated copies,
shared offsets, perfect and imbalanced classifiers, per-item rescaling)."""
import itertools

import numpy as np
import pytest

from analysis import crossspace, evaluate_embedder, evaluate_pair, separability, structure
from analysis.compare import EmbedderContext, knn_accuracy
from analysis.intervals import (balanced_accuracy_interval, clopper_pearson,
                                finalize_interval, rubin_interval)
from analysis.schema import EMBEDDER_METRICS, P_VALUES, PAIR_METRICS


def rotation(dim, seed=0):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def clusters(n_per=10, k=4, dim=16, spread=0.05, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim))
    X = centers[np.repeat(np.arange(k), n_per)] + spread * rng.normal(size=(k * n_per, dim))
    return X + offset, np.repeat([f"c{i}" for i in range(k)], n_per)


def assert_intervals_honest(result, names):
    """Every interval contains its value and has non-zero width."""
    for m in names:
        e = result[m]
        if m in P_VALUES or e["value"] is None:
            continue
        lo, hi = e["ci95"]
        assert lo <= e["value"] <= hi, (m, e)
        assert hi - lo > 0, (m, e)
        assert e["params"].get("ci_method"), (m, e["params"])


# ----------------------------------------------------------------------------- CKA
def song_cka(X, Y):
    """Debiased CKA straight from Song et al.'s formula on n x n Gram matrices."""
    def hsic(K, L):
        n = len(K)
        K, L = K.copy(), L.copy()
        np.fill_diagonal(K, 0)
        np.fill_diagonal(L, 0)
        one = np.ones(n)
        return (np.sum(K * L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * (one @ K @ L @ one)) / (n * (n - 3))
    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def test_cka_debiased_is_song_et_al_and_translation_invariant():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(15, 6)) + 4.0
    Y = X @ rng.normal(size=(6, 9)) + rng.normal(size=(15, 9))
    assert crossspace.cka_debiased(X, Y) == pytest.approx(song_cka(X, Y), abs=1e-10)
    assert crossspace.cka_debiased(X - 7.0, Y) == pytest.approx(song_cka(X, Y), abs=1e-10)


@pytest.mark.parametrize("gram", [True, False])
def test_debiased_resample_is_the_distinct_source_u_statistic(gram):
    """A resample with repeated rows: each of the three HSIC moments is averaged over tuples of
    rows with distinct sources only (brute force), so copies never pair with each other."""
    rng = np.random.default_rng(5)
    n = 7
    X = rng.normal(size=(n, 3))
    Y = X @ rng.normal(size=(3, 4)) + rng.normal(size=(n, 4))
    idx = np.array([0, 0, 1, 2, 3, 3, 3, 5, 6])
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)

    def brute(A, B):
        K, L = A[idx] @ A[idx].T, B[idx] @ B[idx].T
        m = len(idx)
        def mean_over(r, term):
            return np.mean([term(*t) for t in itertools.permutations(range(m), r)
                            if len({idx[i] for i in t}) == r])
        return (mean_over(2, lambda i, j: K[i, j] * L[i, j])
                + mean_over(4, lambda i, j, q, r: K[i, j] * L[q, r])
                - 2 * mean_over(3, lambda i, j, q: K[i, j] * L[i, q]))
    want = brute(Xc, Yc) / np.sqrt(brute(Xc, Xc) * brute(Yc, Yc))
    f = crossspace.linear_cka_resampler(X, Y, max_gram_items=100 if gram else 0)
    lin, deb = f.both(idx)
    assert deb == pytest.approx(want, abs=1e-5)
    assert lin == pytest.approx(crossspace.linear_cka(X[idx], Y[idx]), abs=1e-5)
    assert f.both(np.arange(n))[1] == pytest.approx(crossspace.cka_debiased(X, Y), abs=1e-5)


def test_independent_spaces_cka_debiased_near_zero_where_plain_cka_is_not():
    """The issue's case: n = 40, 218 vs 65 dims, independent Gaussians."""
    rng = np.random.default_rng(0)
    deb, lin = [], []
    for _ in range(60):
        X, Y = rng.normal(size=(40, 218)), rng.normal(size=(40, 65))
        deb.append(crossspace.cka_debiased(X, Y))
        lin.append(crossspace.linear_cka(X, Y))
    assert abs(np.mean(deb)) < 0.05
    assert np.mean(lin) > 0.6  # the bias the debiased estimator removes


def test_permutation_p_not_significant_for_independent_and_minimal_for_a_copy():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(40, 20)), rng.normal(size=(40, 10))
    r = crossspace.cka_permutation_test(X, Y, n_permutations=199, seed=0)
    assert r["p"] > 0.05
    assert r["cka"] == pytest.approx(crossspace.cka_debiased(X, Y), abs=1e-5)
    assert r["null_q95"] > r["null_mean"]
    Z = 3.0 * X @ rotation(20, seed=2) + 1.5
    c = crossspace.cka_permutation_test(X, Z, n_permutations=199, seed=0)
    assert c["cka"] == pytest.approx(1.0, abs=1e-6)
    assert c["p"] == pytest.approx(1 / 200)


def test_permutation_paths_agree():
    """Gram gather (wide features) and feature products give the same null."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(30, 200))
    Y = X[:, :50] + rng.normal(size=(30, 50))
    g = crossspace.cka_permutation_test(X, Y, n_permutations=99, seed=3)
    f = crossspace.cka_permutation_test(X, Y, n_permutations=99, seed=3, max_gram_items=0)
    assert g["path"] == "gram" and f["path"] == "features"
    assert g["cka"] == pytest.approx(f["cka"], abs=1e-5)
    assert g["null_q95"] == pytest.approx(f["null_q95"], abs=1e-4)
    assert g["p"] == f["p"]


def test_pair_metrics_on_independent_and_rotated_spaces():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(40, 20)), rng.normal(size=(40, 10))
    labels = np.repeat(["a", "b", "c", "d"], 10)
    p = evaluate_pair(X, Y, labels, n_bootstrap=100, n_permutations=99)
    assert abs(p["cka_debiased"]["value"]) < 0.1
    assert p["cka_permutation_p"]["value"] > 0.05
    assert p["cka_permutation_p"]["params"]["null_q95"] > 0
    lo, hi = p["cka_linear"]["ci95"]  # the old interval [0.27, 0.42] missed the value 0.21
    assert lo <= p["cka_linear"]["value"] <= hi
    assert "ci_extended_to_value" not in p["cka_debiased"]["params"]
    assert_intervals_honest(p, PAIR_METRICS)
    Z = 2.5 * X @ rotation(20, seed=1)  # cosine measures are not translation-invariant
    q = evaluate_pair(X, Z, labels, n_bootstrap=50, n_permutations=99)
    assert q["cka_debiased"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert q["cka_permutation_p"]["value"] == pytest.approx(1 / 100)
    assert q["rsa_spearman"]["value"] == pytest.approx(1.0)
    assert q["knn_jaccard_k10"]["value"] == pytest.approx(1.0)
    assert_intervals_honest(q, PAIR_METRICS)
    assert q["cka_debiased"]["params"]["ci_degenerate_widened"]  # every resample gave 1


def test_cka_debiased_bootstrap_interval_covers_the_population_value():
    """Coverage of the interval on repeated draws from a population whose debiased CKA is
    known (from 20,000 items): at least the nominal 95% at n = 40 (measured 0.99)."""
    from analysis.bootstrap import bootstrap_values
    rng = np.random.default_rng(0)
    W = rng.normal(size=(20, 10)) / np.sqrt(20)

    def draw(n):
        X = rng.normal(size=(n, 20))
        return X, 0.5 * X @ W + rng.normal(size=(n, 10))
    target = crossspace.cka_debiased(*draw(20000))
    hits = []
    for r in range(60):
        X, Y = draw(40)
        f = crossspace.linear_cka_resampler(X, Y)
        vals = bootstrap_values(f.both, 40, n_boot=200, seed=r)[:, 1]
        lo, hi = np.percentile(vals, [2.5, 97.5])
        hits.append(lo <= target <= hi)
    assert np.mean(hits) >= 0.93


# ----------------------------------------------------------------------------- centring
def test_common_offset_saturates_only_the_uncentred_centroid_matrix():
    X, y = clusters(n_per=15, k=7, dim=24, spread=0.5, offset=0.0, seed=3)
    X = X + 25.0  # the shared offset of hand-made descriptors / post-ReLU embeddings
    iu = np.triu_indices(7, k=1)
    unc = structure.centroid_cosine_matrix(X, y, center=False)[1][iu]
    cen = structure.centroid_cosine_matrix(X, y)[1][iu]
    assert unc.min() > 0.9
    assert cen.max() - cen.min() > 0.8 and cen.min() < -0.3
    r = evaluate_embedder(X, y, n_bootstrap=10)
    assert r["centroid_cosine"]["params"]["centered"] is True
    assert r["centroid_cosine_uncentered"]["params"]["centered"] is False
    np.testing.assert_allclose(np.asarray(r["centroid_cosine"]["matrix"])[iu], cen)


def test_centred_rsa_and_jaccard_see_through_an_offset():
    """Two views of one latent geometry; adding a big offset to one view leaves the centred
    neighbourhood overlap and RSA where they were, while the uncentred ones drop."""
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(80, 8))
    X = Z @ rng.normal(size=(8, 30))
    Y = Z @ rng.normal(size=(8, 20)) + 0.2 * rng.normal(size=(80, 20))
    Xo = X + 40.0 * np.abs(rng.normal(size=30))

    def rho(A, B, **kw):
        return crossspace.rsa(A, B, n_permutations=0, **kw)["rho"]
    assert abs(crossspace.knn_jaccard(Xo, Y) - crossspace.knn_jaccard(X, Y)) < 0.03
    assert crossspace.knn_jaccard(Xo, Y, center=False) < \
        crossspace.knn_jaccard(X, Y, center=False) - 0.05
    assert abs(rho(Xo, Y) - rho(X, Y)) < 0.03
    assert rho(Xo, Y, center=False) < rho(X, Y, center=False) - 0.15


def test_centroid_correlation_resampler_equals_the_resampled_rows():
    """The weighted bootstrap of centroid_matrix_correlation (no gathered copies) is the metric
    of X[idx], Y[idx], labels[idx], also when a class is missing from the resample."""
    X, y = clusters(n_per=6, k=5, dim=8, spread=0.8, seed=1, offset=2.0)
    Y = X @ np.random.default_rng(0).normal(size=(8, 6)) + np.random.default_rng(1).normal(
        size=(30, 6))
    rng = np.random.default_rng(3)
    for center in (True, False):
        f = crossspace.centroid_matrix_correlation_resampler(X, Y, y, center=center)
        for idx in [rng.integers(0, 30, 30) for _ in range(3)] + [np.arange(6, 30)]:
            want = crossspace.centroid_matrix_correlation(X[idx], Y[idx], y[idx], center=center)
            assert f(idx) == pytest.approx(want, abs=1e-10)


def test_jaccard_chance_matches_simulation():
    n, k = 40, 10
    rng = np.random.default_rng(0)
    sims = []
    for _ in range(300):
        X, Y = rng.normal(size=(n, 5)), rng.normal(size=(n, 5))
        sims.append(crossspace.knn_jaccard(X, Y, k=k))
    chance = crossspace.knn_jaccard_chance(n, k)
    assert abs(np.mean(sims) - chance) < 0.01
    assert chance == pytest.approx(k / (2 * (n - 1) - k), abs=0.01)
    assert chance < 0.75 * k / (n - 1)  # the old, wrong chance level


# ----------------------------------------------------------------------------- intervals
def test_forty_of_forty_has_a_lower_bound_below_one():
    lo, hi = clopper_pearson(40, 40)
    assert lo == pytest.approx(0.025 ** (1 / 40)) and lo < 0.92 and hi == 1.0
    assert clopper_pearson(0, 40)[0] == 0.0 and clopper_pearson(0, 40)[1] > 0.05
    X, y = clusters(n_per=10, k=4)
    r = evaluate_embedder(X, y, n_bootstrap=30)
    for m in ("knn_accuracy_k1", "knn_accuracy_k5", "knn_balanced_accuracy_k1",
              "probe_accuracy", "probe_balanced_accuracy", "probe_macro_f1", "v_measure"):
        assert r[m]["value"] == pytest.approx(1.0), m
        assert r[m]["ci95"][0] < 1.0 and r[m]["ci95"][1] == pytest.approx(1.0), (m, r[m])
    assert r["knn_accuracy_k1"]["ci95"][0] == pytest.approx(0.025 ** (1 / 40))
    assert_intervals_honest(r, EMBEDDER_METRICS)


def test_grouped_items_count_pieces_as_units():
    X, y = clusters(n_per=10, k=4)
    pieces = np.array([f"p{i // 2}" for i in range(40)])  # two items per piece
    ctx = EmbedderContext(X, y, pieces)
    assert ctx.n_units == 20
    e = knn_accuracy(ctx, k=1)
    assert e.ci[0] == pytest.approx(0.025 ** (1 / 20))
    assert "20 independent pieces" in e.params["ci_note"]


def test_finalize_interval_contains_and_widens():
    ci, flags = finalize_interval(0.21, [0.27, 0.42])
    assert ci == [0.21, 0.42] and flags["ci_extended_to_value"] == pytest.approx(0.06)
    ci, flags = finalize_interval(1.0, [1.0, 1.0], n_units=40, bounds=(0, 1))
    assert ci[0] == pytest.approx(0.025 ** (1 / 40)) and ci[1] == 1.0
    assert "ci_degenerate_widened" in flags
    assert balanced_accuracy_interval([5, 5], [5, 5])[0] < 0.95


def test_rubin_interval_adds_between_split_spread():
    values = np.array([0.3, 0.5, 0.7, 0.4, 0.6])
    within = np.full(5, 0.001)
    ci, info = rubin_interval(values, within)
    assert info["between_split_sd"] == pytest.approx(np.std(values, ddof=1))
    assert ci[1] - ci[0] > 2 * 1.96 * np.sqrt(0.001)
    ci, info = rubin_interval(np.ones(20), np.zeros(20), proportion_units=12)
    assert ci[1] == 1.0 and ci[0] == pytest.approx(0.025 ** (1 / 12))
    # splits that all scored 1 up to round-off (seen at 1,000 items: 1000.0000000000005 of
    # 1000 successes) give the all-agree interval, not a ValueError
    ci, _ = rubin_interval(np.full(3, 1.0 + 4e-16), np.zeros(3), proportion_units=1000)
    assert ci[1] == 1.0 and ci[0] == pytest.approx(0.025 ** (1 / 1000))


# ----------------------------------------------------------------------------- chance levels
def test_imbalanced_noise_balanced_accuracy_at_chance():
    """Pure noise, 180 vs 20 items: accuracy ~0.9 from the majority class alone."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 16))
    y = np.array(["big"] * 180 + ["small"] * 20)
    r = evaluate_embedder(X, y, n_bootstrap=20)
    assert r["knn_accuracy_k5"]["value"] > 0.85
    assert r["knn_accuracy_k5"]["params"]["chance_majority"] == pytest.approx(0.9)
    for m in ("knn_balanced_accuracy_k1", "knn_balanced_accuracy_k5",
              "probe_balanced_accuracy"):
        e = r[m]
        assert e["params"]["chance_uniform"] == 0.5
        assert abs(e["value"] - 0.5) < 0.12, (m, e["value"])
        assert e["ci95"][0] <= 0.5 <= e["ci95"][1], (m, e)
    assert any("imbalanced" in n for n in r["notes"])
    assert separability.balanced_accuracy(y, np.full(200, "big")) == 0.5
    assert_intervals_honest(r, EMBEDDER_METRICS)


# ----------------------------------------------------------------------------- variance ratio
def test_per_item_rescaling_leaves_the_variance_ratio_unchanged():
    X, y = clusters(n_per=20, k=3, spread=0.6, seed=2)
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=(len(y), 1))
    a = structure.within_total_variance_ratio(X, y)
    assert structure.within_total_variance_ratio(X * w, y) == pytest.approx(a, abs=1e-12)
    raw = structure.within_total_variance_ratio(X, y, normalize=False)
    assert structure.within_total_variance_ratio(X * w, y, normalize=False) != \
        pytest.approx(raw, abs=0.01)
    r = evaluate_embedder(X * w, y, n_bootstrap=20)
    assert r["within_total_variance_ratio"]["value"] == pytest.approx(a, abs=1e-12)
    assert r["within_total_variance_ratio_raw"]["value"] != pytest.approx(a, abs=0.01)


# ----------------------------------------------------------------------------- retrieval
def test_retrieval_is_the_mean_over_stratified_splits():
    X, y = clusters(n_per=10, k=4, dim=12, spread=1.0, seed=4)
    Y = X @ rotation(12, seed=3) + 0.8 * np.random.default_rng(0).normal(size=X.shape)
    r = crossspace.repeated_procrustes_retrieval(X, Y, y, n_splits=8, seed=2)
    per = [s["recall_at_1"] for s in r["splits"]]
    assert r["recall_at_1"] == pytest.approx(np.mean(per))
    tr, te = crossspace.stratified_split(y, test_fraction=0.3, seed=5)
    assert len(te) == 12 and sorted(np.unique(y[te], return_counts=True)[1]) == [3, 3, 3, 3]
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 40
    p = evaluate_pair(X, Y, y, n_bootstrap=10, n_permutations=19, retrieval_splits=8, seed=2)
    e = p["retrieval_recall_at_1"]
    assert e["value"] == pytest.approx(r["recall_at_1"])
    assert e["params"]["n_splits"] == 8
    assert e["params"]["split_min"] <= e["value"] <= e["params"]["split_max"]
    assert e["ci95"][0] <= min(e["value"], e["params"]["split_min"]) + 1e-9
    assert_intervals_honest(p, PAIR_METRICS)
