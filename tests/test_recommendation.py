"""Recommendation quality metrics: known answers."""
import numpy as np
import pytest
from scipy import stats

from analysis._common import UndefinedMetricError
from analysis.recommendation import (coverage, hubness_skewness, k_occurrence,
                                     mutual_proximity_empirical, mutual_proximity_gaussian,
                                     neighbour_lists, never_recommended_share, precision_at_k,
                                     precision_chance, recommendation_quality, wilson_interval)


def test_wilson_interval_known_values():
    # 8 of 10 at 95 %: the textbook Wilson interval (0.4902, 0.9433)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_precision_at_k_on_hand_made_lists():
    labels = np.array(["a", "a", "b", "b"])
    nb = np.array([[1, 2], [0, 3], [3, 0], [2, 1]])  # each item: one right, one wrong
    p = precision_at_k(nb, labels)
    assert p["value"] == 0.5 and (p["successes"], p["trials"]) == (4, 8)
    assert p["chance"] == pytest.approx(1 / 3)  # one same-label item among 3 others
    assert p["ci95"][0] < 0.5 < p["ci95"][1]


def test_precision_chance_unbalanced():
    labels = np.array(["a"] * 3 + ["b"])
    # a: 2 of 3 others share it; b: 0 of 3
    assert precision_chance(labels) == pytest.approx((3 * 2 / 3 + 0) / 4)


def test_k_occurrence_coverage_and_hubness():
    nb = np.array([[1], [0], [0], [0]])  # item 0 is a hub, 2 and 3 never recommended
    occ = k_occurrence(nb)
    assert occ.tolist() == [3, 1, 0, 0] and occ.sum() == 4
    assert never_recommended_share(occ) == 0.5 and coverage(occ) == 0.5
    assert hubness_skewness(occ) == pytest.approx(stats.skew([3, 1, 0, 0]))
    assert hubness_skewness(occ) > 0
    with pytest.raises(UndefinedMetricError):
        hubness_skewness([1, 1, 1, 1])


def test_neighbour_lists_exclude_self_and_follow_cosine():
    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    nb = neighbour_lists(X, k=1)
    assert nb.ravel().tolist() == [1, 0, 3, 2]


def test_mutual_proximity_empirical_known_answer():
    # points on a line: distances |i - j| after mapping angles; use cosine on 2-D directions
    ang = np.array([0.0, 0.1, 0.5, 1.2])
    X = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    S = mutual_proximity_empirical(X)
    D = 1 - np.cos(ang[:, None] - ang[None, :])
    # by hand for (0, 1): j in {2, 3}: both farther from 0 and from 1 than d(0, 1) -> 2 / 2
    assert S[0, 1] == pytest.approx(1.0)
    # (0, 3): the farthest pair: no j is farther from both -> 0
    assert S[0, 3] == pytest.approx(0.0)
    assert np.allclose(S, S.T) and np.all(np.diag(S) == 1.0)
    assert D[0, 1] < D[0, 3]


def test_mutual_proximity_gaussian_symmetric_and_reduces_hubness():
    rng = np.random.default_rng(0)
    # high-dimensional data concentrates distances: the classic source of hubs
    X = rng.standard_normal((300, 100)) + 0.0
    X[:, 0] += rng.gamma(1.0, 2.0, 300)  # skew the data so hubs appear
    S = mutual_proximity_gaussian(X)
    assert np.allclose(S, S.T) and np.all((S >= 0) & (S <= 1))
    plain = hubness_skewness(k_occurrence(neighbour_lists(X, k=10)))
    mp = hubness_skewness(k_occurrence(neighbour_lists(X, k=10, hubness_reduction="mp")))
    assert mp < plain


def test_recommendation_quality_names_and_perfect_clusters():
    rng = np.random.default_rng(1)
    centres = np.eye(4) * 10
    X = np.vstack([c + rng.standard_normal((15, 4)) * 0.1 for c in centres])
    labels = np.repeat(list("abcd"), 15)
    q = recommendation_quality(X, labels)
    assert set(q) == {"recommend_precision_at_5", "recommend_precision_at_10",
                      "recommend_coverage_at_10", "hubness_skewness_k10",
                      "hubness_never_recommended_k10"}
    assert q["recommend_precision_at_5"]["value"] == 1.0
    assert q["recommend_precision_at_10"]["chance"] == pytest.approx(14 / 59)
    assert 0 <= q["recommend_coverage_at_10"] <= 1
    assert q["recommend_coverage_at_10"] + q["hubness_never_recommended_k10"] == \
        pytest.approx(1.0)


def test_procrustes_alignment_recovers_a_rotation():
    from analysis.recommendation import fit_procrustes_alignment
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 6)) * np.arange(6, 0, -1)  # distinct PCA variances
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    Y = X @ Q + 3.0
    fit = fit_procrustes_alignment(X, Y)
    A = (X - fit["source_mean"]) @ fit["source_basis"] @ fit["rotation"]
    B = (Y - fit["target_mean"]) @ fit["target_basis"]
    assert np.allclose(A, B, atol=1e-8)
