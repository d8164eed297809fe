"""Metric functions of analysis/ on constructed data with known answers."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from analysis import bootstrap, crossspace, separability, structure
from analysis._common import UndefinedMetricError
from analysis import evaluate_embedder, evaluate_pair
from analysis.io import write_json_atomic


def clusters(n_per=10, k=4, dim=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    y = np.repeat([f"c{i}" for i in range(k)], n_per)
    X = centers[np.repeat(np.arange(k), n_per)] + spread * rng.normal(size=(k * n_per, dim))
    return X, y


def rotation(dim, seed=0):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


# ----------------------------------------------------------------------------- separability
def test_silhouette_equals_sklearn_on_the_cosine_distance_matrix():
    """The class-sum silhouette (no n x n matrix) is sklearn's, with a singleton class, a
    duplicated vector and a zero vector thrown in."""
    from sklearn.metrics import silhouette_samples
    from analysis._common import cosine_distance_matrix
    rng = np.random.default_rng(7)
    X = rng.normal(size=(40, 6)) + rng.normal(size=6)
    X[5] = X[4]
    X[9] = 0.0
    y = np.array(["a"] * 15 + ["b"] * 14 + ["c"] * 10 + ["solo"])
    got = separability.silhouette_samples_cosine(X, y)
    want = silhouette_samples(cosine_distance_matrix(X), y, metric="precomputed")
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert got[-1] == 0.0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(3, 60), k=st.integers(1, 12),
       ties=st.booleans())
def test_cosine_neighbours_equal_a_full_stable_sort(seed, n, k, ties):
    """The partial top-k equals the stable full sort, ties (duplicate and integer vectors)
    broken by index, for all rows or a subset."""
    from analysis._common import cosine_neighbors, l2_normalize
    rng = np.random.default_rng(seed)
    X = rng.integers(-1, 2, size=(n, 3)).astype(float) if ties else rng.normal(size=(n, 4))
    k = min(k, n - 1)
    Xn = l2_normalize(X)
    S = np.round(Xn @ Xn.T, 12)
    np.fill_diagonal(S, -np.inf)
    want = np.argsort(-S, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(cosine_neighbors(X, k, chunk=7), want)
    rows = rng.permutation(n)[: max(1, n // 3)]
    np.testing.assert_array_equal(cosine_neighbors(X, k, rows=rows), want[rows])


def test_separated_clusters_score_perfectly():
    X, y = clusters()
    assert separability.silhouette_cosine(X, y) > 0.9
    assert separability.knn_accuracy(X, y, k=1) == 1.0
    assert separability.knn_accuracy(X, y, k=5) == 1.0
    r = separability.linear_probe(X, y, n_splits=5, seed=0)
    assert r["accuracy"] == 1.0 and r["macro_f1"] == 1.0 and r["n_splits"] == 5
    cl = separability.kmeans_clusters(X, y, seed=0)
    agree = separability.cluster_agreement(y, cl)
    assert agree["v_measure"] == pytest.approx(1.0)
    assert agree["adjusted_rand"] == pytest.approx(1.0)


def test_random_labels_score_near_chance():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 8))
    y = np.repeat(["a", "b", "c", "d"], 30)
    assert abs(separability.silhouette_cosine(X, y)) < 0.1
    assert separability.knn_accuracy(X, y, k=5) < 0.5


def test_knn_tie_goes_to_nearest():
    # item 0's two neighbours: item 1 (class b, nearer) and item 2 (class c): 1-1 tie -> b
    X = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, -0.3], [-1.0, 0.0], [-1.0, 0.2]])
    y = np.array(["a", "b", "c", "a", "a"])
    pred = separability.knn_predictions(X, y, k=2)
    assert pred[0] == "b"


def test_grouped_probe_never_splits_a_pair():
    X, y = clusters(n_per=12, k=3)
    # pairs: items 2i and 2i+1 of the same class share a pair id; a few unpaired
    groups = np.array([f"p{i // 2}" for i in range(len(y))])
    groups[::7] = ""
    fold = separability.probe_folds(y, groups, n_splits=4, seed=3)
    for g in set(groups.tolist()) - {""}:
        assert len(set(fold[groups == g].tolist())) == 1, g
    r = separability.linear_probe(X, y, groups, n_splits=4, seed=3)
    assert r["n_splits"] == 4
    np.testing.assert_array_equal(r["fold"], fold)


def test_probe_splits_reduced_and_impossible():
    X, y = clusters(n_per=3, k=3)
    assert separability.effective_n_splits(y, None, n_splits=5) == 3
    r = separability.linear_probe(X, y, n_splits=5)
    assert r["n_splits"] == 3
    groups = np.array(["p0"] * 3 + ["p1"] * 3 + ["p2"] * 3)  # each class one piece
    with pytest.raises(UndefinedMetricError):
        separability.linear_probe(X, y, groups)


def test_degenerate_inputs_raise_undefined():
    X = np.random.default_rng(0).normal(size=(5, 3))
    one = np.array(["a"] * 5)
    for fn in (separability.silhouette_cosine, separability.knn_accuracy):
        with pytest.raises(UndefinedMetricError):
            fn(X, one)
    with pytest.raises(UndefinedMetricError):
        separability.kmeans_clusters(X[:2], np.array(["a", "b"]))
    with pytest.raises(UndefinedMetricError):
        separability.silhouette_cosine(X[:3], np.array(["a", "b", "c"]))


def test_validate_raises_precise_errors():
    with pytest.raises(ValueError, match="2-d"):
        separability.validate(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="labels has 4 entries"):
        separability.validate(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        separability.validate(np.array([[np.nan, 1.0]]), ["a"])
    with pytest.raises(ValueError, match="same items"):
        crossspace.validate(np.zeros((3, 2)), np.zeros((4, 2)))


# ----------------------------------------------------------------------------- structure
def test_within_total_ratio_known_value():
    X = np.array([[0.0], [2.0], [10.0], [12.0]])
    y = np.array(["a", "a", "b", "b"])
    # raw: within: 4 * 1^2 = 4; total around 6: 36 + 16 + 16 + 36 = 104
    raw = dict(normalize=False)
    assert structure.within_total_variance_ratio(X, y, **raw) == pytest.approx(4 / 104)
    assert structure.within_total_variance_ratio(X * 7.5 + 3, y, **raw) == pytest.approx(4 / 104)
    assert structure.within_total_variance_ratio(X, np.array(["a"] * 4), **raw) == \
        pytest.approx(1.0)
    # default (issue 11): on unit vectors, here [0], [1], [1], [1]: within 1/2, total 3/4
    assert structure.within_total_variance_ratio(X, y) == pytest.approx(2 / 3)


def test_confusion_hand_example():
    X = np.array([[1.0, 0.0], [1.0, 0.1], [0.1, 1.0],   # class a; the last sits with b
                  [0.0, 1.0], [0.1, 1.0]])               # class b
    y = np.array(["a", "a", "a", "b", "b"])
    classes, M, pred = structure.nearest_centroid_confusion(X, y)
    assert classes == ["a", "b"]
    np.testing.assert_array_equal(M, [[2, 1], [0, 2]])
    assert list(pred) == ["a", "a", "b", "b", "b"]


def test_centroid_cosine_matrix_and_variance_table():
    X = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    y = np.array(["a", "a", "b", "b"])
    classes, M = structure.centroid_cosine_matrix(X, y, center=False)
    np.testing.assert_allclose(M, [[1, 0], [0, 1]], atol=1e-12)
    # centred (the default since issue 11): the two mean directions point away from each other
    np.testing.assert_allclose(structure.centroid_cosine_matrix(X, y)[1], [[1, -1], [-1, 1]],
                               atol=1e-12)
    rows = structure.class_variance_table(X, y)
    assert [r["n"] for r in rows] == [2, 2]
    assert rows[0]["raw_variance"] == pytest.approx(np.var([1, 2]) / 2)
    assert rows[0]["mean_cosine_distance"] == pytest.approx(0.0)
    total = X.var(axis=0).mean()
    assert rows[1]["normalized_variance"] == pytest.approx(np.var([1, 3]) / 2 / total)


def test_nearest_neighbours_listing():
    X, y = clusters(n_per=6, k=3)
    ids = np.array([f"{c}/f{i}.wav" for i, c in enumerate(y)])
    nb = structure.nearest_neighbours(X, y, ids, k=5, per_class=2)
    assert len(nb) == 6
    assert all(len(q["neighbours"]) == 5 and q["same_label"] == 1.0 for q in nb)


# ----------------------------------------------------------------------------- cross-space
def test_rotated_scaled_copy_matches_perfectly():
    X, y = clusters(n_per=15, k=4, dim=12, spread=0.3)
    Y = 3.7 * X @ rotation(12, seed=5)
    assert crossspace.linear_cka(X, Y) == pytest.approx(1.0)
    assert crossspace.linear_cka(X, Y + 5.0) == pytest.approx(1.0)  # centred: translation ok
    r = crossspace.rsa(X, Y, n_permutations=99, seed=0)
    assert r["rho"] == pytest.approx(1.0)
    assert r["p"] == pytest.approx(1 / 100)
    assert crossspace.knn_jaccard(X, Y, k=10) == pytest.approx(1.0)
    assert crossspace.centroid_matrix_correlation(X, Y, y) == pytest.approx(1.0)
    ret = crossspace.procrustes_retrieval(X, Y + 2.0, seed=1)
    assert ret["recall_at_1"] == 1.0 and ret["mrr"] == 1.0
    assert ret["chance"]["recall_at_1"] == pytest.approx(1 / ret["n_test"])


def test_independent_spaces_score_near_chance():
    rng = np.random.default_rng(7)
    X, Y = rng.normal(size=(150, 10)), rng.normal(size=(150, 10))
    assert crossspace.linear_cka(X, Y) < 0.2
    r = crossspace.rsa(X, Y, n_permutations=199, seed=0)
    assert abs(r["rho"]) < 0.1
    assert r["p"] > 0.05
    ret = crossspace.procrustes_retrieval(X, Y, seed=0)
    assert ret["recall_at_1"] <= ret["chance"]["recall_at_1"] + 0.1
    assert ret["mrr"] <= ret["chance"]["mrr"] + 0.15
    assert crossspace.knn_jaccard(X, Y, k=10) < 0.2


def test_retrieval_chance_levels():
    ch = crossspace.retrieval_chance(4)
    assert ch["recall_at_1"] == 0.25 and ch["recall_at_5"] == 1.0
    assert ch["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)


def test_match_items_by_pair_id():
    ia, ib = crossspace.match_items(["p1", "", "p2", "p3"], ["p3", "p2", "", "p9"])
    assert ia.tolist() == [2, 3] and ib.tolist() == [1, 0]


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    X, y = clusters(n_per=8, k=3, spread=0.4)
    est = separability.silhouette_cosine(X, y)
    s = separability.silhouette_samples_cosine(X, y)
    a = bootstrap.bootstrap_mean_ci(s, n_boot=100, seed=3, strata=y)
    b = bootstrap.bootstrap_mean_ci(s, n_boot=100, seed=3, strata=y)
    assert a["ci95"] == b["ci95"]
    assert a["ci95"][0] <= est <= a["ci95"][1]
    w, t = structure.within_total_contributions(X, y)
    assert w.sum() / t.sum() == pytest.approx(structure.within_total_variance_ratio(X, y))
    c = bootstrap.bootstrap_ci(lambda w, t: w.sum() / t.sum(), w, t, n_boot=100, seed=1,
                               strata=y)
    assert c["ci95"][0] <= structure.within_total_variance_ratio(X, y) <= c["ci95"][1]


def test_bootstrap_skips_undefined_and_resamples_groups_whole():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(5), 2)
    idx = bootstrap.resample_indices(10, rng, groups=groups)
    drawn = groups[idx]
    for g in np.unique(drawn):
        assert np.sum(drawn == g) % 2 == 0
    strata = np.array(["a"] * 6 + ["b"] * 4)
    idx = bootstrap.resample_indices(10, rng, strata=strata)
    assert np.sum(strata[idx] == "a") == 6

    def picky(v):
        if v[0] > 0.5:
            raise UndefinedMetricError("nope")
        return float(np.mean(v))
    r = bootstrap.bootstrap_ci(picky, rng.random(20), n_boot=50, seed=0)
    assert 0 < r["n_valid"] < 50


# ----------------------------------------------------------------------------- properties
vec_arrays = st.integers(0, 10_000).map(lambda s: np.random.default_rng(s))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), lo=st.floats(0.01, 1.0), hi=st.floats(1.0, 100.0))
def test_cosine_metrics_invariant_to_positive_scaling(seed, lo, hi):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(24, 5))
    y = np.repeat(["a", "b", "c"], 8)
    w = rng.uniform(lo, hi, size=(24, 1))
    assert separability.silhouette_cosine(X * w, y) == pytest.approx(
        separability.silhouette_cosine(X, y), abs=1e-9)
    for k in (1, 5):
        np.testing.assert_array_equal(separability.knn_predictions(X * w, y, k=k),
                                      separability.knn_predictions(X, y, k=k))
    np.testing.assert_allclose(structure.centroid_cosine_matrix(X * w, y)[1],
                               structure.centroid_cosine_matrix(X, y)[1], atol=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e3), n=st.integers(5, 40),
       dim=st.integers(2, 12))
def test_cka_invariant_to_rotation_and_isotropic_scaling(seed, scale, n, dim):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, dim)), rng.normal(size=(n, dim + 1))
    base = crossspace.linear_cka(X, Y)
    assert 0.0 <= base <= 1.0 + 1e-9
    assert crossspace.linear_cka(scale * X @ rotation(dim, seed), Y) == pytest.approx(
        base, abs=1e-8)
    assert crossspace.linear_cka(X, Y) == pytest.approx(crossspace.linear_cka(Y, X), abs=1e-10)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(4, 30), gram=st.booleans())
def test_cka_resampler_equals_cka_of_the_resampled_rows(seed, n, gram):
    """The bootstrap's weighted CKA (no resampled matrices built) is the CKA of X[idx], Y[idx]
    with repeated rows, on both of its paths."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)) + rng.normal(size=5) * 10
    Y = X @ rng.normal(size=(5, 7)) + rng.normal(size=(n, 7))
    f = crossspace.linear_cka_resampler(X, Y, max_gram_items=10_000 if gram else 0)
    for _ in range(3):
        idx = rng.integers(0, n, size=n)
        if len(np.unique(idx)) < 2:
            continue
        assert f(idx) == pytest.approx(crossspace.linear_cka(X[idx], Y[idx]), abs=2e-5)
    assert f(np.arange(n)) == pytest.approx(crossspace.linear_cka(X, Y), abs=2e-5)


# ----------------------------------------------------------------------------- dict API
def test_evaluate_embedder_and_pair_entries():
    X, y = clusters(n_per=8, k=3)
    r = evaluate_embedder(X, y, None, n_bootstrap=20, seed=0)
    for m in ("silhouette_cosine", "knn_accuracy_k1", "knn_accuracy_k5", "probe_accuracy",
              "probe_macro_f1", "v_measure", "adjusted_rand", "within_total_variance_ratio"):
        assert set(r[m]) >= {"value", "ci95", "params"}, m
        assert r[m]["value"] is not None, (m, r[m])
        lo, hi = r[m]["ci95"]
        assert lo <= r[m]["value"] + 1e-9 and r[m]["value"] <= hi + 1e-9, m
    p = evaluate_pair(X, 2 * X @ rotation(16), y, n_bootstrap=10, n_permutations=19)
    assert p["cka_linear"]["value"] == pytest.approx(1.0)
    assert p["retrieval_recall_at_1"]["params"]["chance"] == pytest.approx(
        1 / p["retrieval_n_test"])
    assert "ci95" not in p["rsa_mantel_p"]


def test_rsa_on_many_items_uses_a_recorded_subset(monkeypatch):
    import analysis.metrics.context as context
    monkeypatch.setattr(context, "RSA_MAX_ITEMS", 25)
    X, y = clusters(n_per=15, k=4)
    Y = 3 * X @ rotation(16, seed=1)
    p = evaluate_pair(X, Y, y, n_bootstrap=10, n_permutations=19, seed=4)
    e = p["rsa_spearman"]
    assert e["value"] == pytest.approx(1.0)  # a rotated copy: same geometry on any subset
    assert e["params"]["items_subsampled"] == {"n_items": 25, "of": 60, "seed": 4}
    assert "25 of the 60" in e["note"]
    assert p["rsa_mantel_p"]["params"]["items_subsampled"]["n_items"] == 25
    assert p["rsa_mantel_p"]["value"] == pytest.approx(1 / 20)
    assert "items_subsampled" not in p["cka_linear"]["params"]  # the others use every item


def test_evaluate_embedder_degenerate_notes():
    r = evaluate_embedder(np.zeros((0, 4)), np.array([], dtype=str), n_bootstrap=5)
    assert r["n_items"] == 0 and r["notes"]
    assert all(r[m]["value"] is None and r[m]["note"] for m in
               ("silhouette_cosine", "knn_accuracy_k1", "probe_accuracy", "v_measure"))
    X = np.random.default_rng(0).normal(size=(3, 4))
    r = evaluate_embedder(X, np.array(["a", "b", "c"]), n_bootstrap=5)
    assert r["probe_accuracy"]["value"] is None and "probe" in r["probe_accuracy"]["note"]


def test_json_writer_converts_nan(tmp_path):
    p = write_json_atomic({"a": float("nan"), "b": np.float32(1.5), "c": [np.inf, 1]},
                          tmp_path / "m.json")
    assert json.loads(p.read_text()) == {"a": None, "b": 1.5, "c": [None, 1]}
    assert not list(tmp_path.glob("*.tmp"))
