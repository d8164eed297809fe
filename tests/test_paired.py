"""Paired tests between embedders (issue 21): known answers of McNemar's exact test, the
clustered (per-piece) version, the paired bootstrap and Holm's adjustment."""
import numpy as np
import pytest
from scipy.stats import binomtest

from analysis.paired import (clustered_mcnemar, dependence_variance, holm, mcnemar_exact,
                             newcombe_paired_interval, paired_accuracy_test, paired_bootstrap,
                             sign_flip_test)


def test_identical_correctness_gives_p_one_exactly():
    a = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1, 1])
    r = mcnemar_exact(a, a)
    assert r["p_value"] == 1.0
    assert r["b"] == r["c"] == 0 and r["difference"] == 0.0
    lo, hi = r["ci95"]
    assert lo < 0 < hi  # no evidence either way, and never zero-width


def test_twenty_extra_correct_of_forty_is_significant():
    # a right where b is wrong on 20 items, never the reverse; 20 items both right
    a = np.ones(40)
    b = np.r_[np.zeros(20), np.ones(20)]
    r = mcnemar_exact(a, b)
    assert (r["b"], r["c"], r["n"]) == (20, 0, 40)
    assert r["p_value"] < 0.01
    assert r["p_value"] == pytest.approx(2 * 0.5 ** 20)
    assert r["difference"] == pytest.approx(0.5)
    assert 0 < r["ci95"][0] < 0.5 < r["ci95"][1] <= 1


def test_swapping_embedders_flips_the_sign_and_keeps_p():
    rng = np.random.default_rng(3)
    a = (rng.random(60) < 0.7).astype(int)
    b = (rng.random(60) < 0.5).astype(int)
    ab, ba = mcnemar_exact(a, b), mcnemar_exact(b, a)
    assert ab["p_value"] == ba["p_value"]
    assert ab["difference"] == -ba["difference"]
    assert ab["ci95"] == pytest.approx([-ba["ci95"][1], -ba["ci95"][0]])


def test_mcnemar_p_is_scipys_exact_binomial_test():
    for nb, nc in [(7, 2), (3, 11), (5, 5), (1, 0), (15, 6)]:
        a = np.r_[np.ones(nb), np.zeros(nc), np.ones(4), np.zeros(3)]
        b = np.r_[np.zeros(nb), np.ones(nc), np.ones(4), np.zeros(3)]
        expected = binomtest(nb, nb + nc, 0.5).pvalue
        assert mcnemar_exact(a, b)["p_value"] == pytest.approx(expected, rel=1e-12)


def test_newcombe_interval_covers_the_true_difference_about_95_percent():
    # simulated paired classifiers with correlated errors: coverage of the true p_a - p_b
    rng = np.random.default_rng(0)
    probs = np.array([0.55, 0.15, 0.05, 0.25])  # both, only a, only b, neither
    true = probs[1] - probs[2]
    hits = 0
    for _ in range(2000):
        cell = rng.choice(4, size=60, p=probs)
        counts = np.bincount(cell, minlength=4)
        lo, hi = newcombe_paired_interval(*counts)
        hits += lo <= true <= hi
    assert 0.93 <= hits / 2000 <= 0.975


def test_newcombe_rejects_bad_tables():
    with pytest.raises(ValueError):
        newcombe_paired_interval(0, 0, 0, 0)
    with pytest.raises(ValueError):
        newcombe_paired_interval(1, -1, 0, 3)


def test_clustered_with_singletons_is_mcnemar():
    rng = np.random.default_rng(1)
    a = (rng.random(50) < 0.8).astype(int)
    b = (rng.random(50) < 0.6).astype(int)
    plain = mcnemar_exact(a, b)
    clus = clustered_mcnemar(a, b, None)
    assert clus["p_value"] == pytest.approx(plain["p_value"], rel=1e-12)
    assert clus["design_effect"] == 1.0
    assert clus["ci95"] == pytest.approx(plain["ci95"])
    assert clus["exact"]


def test_clustered_counts_pieces_not_items():
    # 10 pieces, each with an audio and a MIDI item that agree: 20 discordant items but only
    # 10 independent discordant pieces -> the p-value is that of 10 of 10, not 20 of 20
    a = np.ones(20)
    b = np.r_[np.zeros(20)]
    groups = np.repeat([f"p{i}" for i in range(10)], 2)
    clus = clustered_mcnemar(a, b, groups)
    assert clus["n_units"] == 10
    assert clus["p_value"] == pytest.approx(2 * 0.5 ** 10)
    assert mcnemar_exact(a, b)["p_value"] == pytest.approx(2 * 0.5 ** 20)


def test_clustered_interval_widens_with_correlated_pieces():
    rng = np.random.default_rng(5)
    piece_a = (rng.random(30) < 0.8).astype(float)
    piece_b = (rng.random(30) < 0.5).astype(float)
    a, b = np.repeat(piece_a, 2), np.repeat(piece_b, 2)  # both items of a piece agree
    groups = np.repeat(np.arange(30).astype(str), 2)
    clus = clustered_mcnemar(a, b, groups)
    plain = mcnemar_exact(a, b)
    assert clus["design_effect"] == pytest.approx(2.0)
    assert clus["ci95"][1] - clus["ci95"][0] > plain["ci95"][1] - plain["ci95"][0]
    assert clus["p_value"] > plain["p_value"]


def test_fractional_correctness_is_exact_on_the_repeat_grid():
    # correctness averaged over 4 repeated splits: multiples of 1/4; the exact test must equal
    # brute-force enumeration of all sign flips
    rng = np.random.default_rng(2)
    a = rng.integers(0, 5, size=12) / 4
    b = rng.integers(0, 5, size=12) / 4
    r = clustered_mcnemar(a, b, None)
    d = a - b
    signs = np.array(np.meshgrid(*[[-1, 1]] * 12)).reshape(12, -1).T
    brute = np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-12)
    assert r["exact"] and r["p_value"] == pytest.approx(brute)


def test_sign_flip_monte_carlo_agrees_with_exact():
    d = np.random.default_rng(4).normal(0.3, 1.0, size=14)  # irrational: no exact grid
    mc = sign_flip_test(d, n_perm=20000, seed=1)
    assert not mc["exact"]
    signs = np.array(np.meshgrid(*[[-1, 1]] * 14)).reshape(14, -1).T
    brute = np.mean(np.abs(signs @ d) >= abs(d.sum()))
    assert mc["p_value"] == pytest.approx(brute, abs=0.01)
    assert sign_flip_test(np.zeros(5))["p_value"] == 1.0


def test_paired_accuracy_test_dispatch():
    a = np.array([1, 1, 0, 1, 0, 1])
    b = np.array([0, 1, 0, 0, 1, 1])
    assert paired_accuracy_test(a, b)["test"].startswith("mcnemar")
    assert paired_accuracy_test(a, b)["n_units"] == 6
    g = np.array(["x", "x", "y", "y", "z", "z"])
    r = paired_accuracy_test(a, b, g)
    assert r["n_units"] == 3 and "sign-flip" in r["test"]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        mcnemar_exact([1, 0], [1, 0, 1])
    with pytest.raises(ValueError):
        mcnemar_exact([1, 0.5], [1, 0])
    with pytest.raises(ValueError):
        clustered_mcnemar([1, 2], [1, 0], None)


def _mean(v):
    return float(np.mean(v))


def test_paired_bootstrap_sees_a_consistent_shift_that_separate_intervals_miss():
    # b = a minus a small constant on every piece: separate intervals overlap widely, the
    # paired difference is certain
    rng = np.random.default_rng(6)
    sa = rng.normal(0.5, 0.2, size=80)
    sb = sa - 0.02
    r = paired_bootstrap(_mean, [sa], [sb], n_boot=500, seed=0)
    assert r["difference"] == pytest.approx(0.02)
    assert r["ci95"][0] == pytest.approx(0.02) and r["ci95"][1] == pytest.approx(0.02)
    assert r["p_value"] == pytest.approx(2 / 501)
    same = paired_bootstrap(_mean, [sa], [sa], n_boot=200, seed=0)
    assert same["p_value"] == 1.0 and same["difference"] == 0.0


def test_paired_bootstrap_symmetric_and_grouped():
    rng = np.random.default_rng(7)
    sa, sb = rng.normal(0.6, 0.3, 60), rng.normal(0.5, 0.3, 60)
    groups = np.repeat(np.arange(30), 2)
    ab = paired_bootstrap(_mean, [sa], [sb], groups=groups, n_boot=300, seed=3)
    ba = paired_bootstrap(_mean, [sb], [sa], groups=groups, n_boot=300, seed=3)
    assert ab["p_value"] == pytest.approx(ba["p_value"])
    assert ab["ci95"] == pytest.approx([-ba["ci95"][1], -ba["ci95"][0]])
    assert ab["ci95"][0] <= ab["difference"] <= ab["ci95"][1]
    with pytest.raises(ValueError):
        paired_bootstrap(_mean, [sa], [sb[:10]], n_boot=10)


def test_holm_textbook_example():
    # four hypotheses, raw p 0.01, 0.04, 0.03, 0.005: sorted 0.005 x 4 = 0.02, 0.01 x 3 = 0.03,
    # 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone); at 5 % only the first two reject
    adj = holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_edge_cases():
    assert holm([]) == []
    assert holm([0.3]) == [0.3]
    assert holm([0.5, 0.6, 0.9]) == pytest.approx([1.0, 1.0, 1.0])
    assert holm([None, 0.01, float("nan"), 0.02]) == [None, 0.02, None, 0.02]
    with pytest.raises(ValueError):
        holm([1.5])


def test_design_effect_deflates_mcnemar_to_effective_counts():
    # 20 of 20 discordant items in a's favour, but each item counted twice (deff 2): the same
    # p as 10 of 10 independent items
    a, b = np.ones(20), np.zeros(20)
    r = mcnemar_exact(a, b, design_effect=2.0)
    assert r["p_value"] == pytest.approx(2 * 0.5 ** 10)
    assert r["design_effect"] == 2.0 and "design effect" in r["test"]
    # real-valued counts continue the binomial: between the neighbouring integer answers
    mid = mcnemar_exact(a, b, design_effect=20 / 15)["p_value"]
    assert 2 * 0.5 ** 20 < mid == pytest.approx(2 * 0.5 ** 15)
    x = np.r_[np.ones(9), np.zeros(3), np.ones(10)]
    y = np.r_[np.zeros(9), np.ones(3), np.ones(10)]
    assert mcnemar_exact(x, y, design_effect=1.5)["p_value"] > mcnemar_exact(x, y)["p_value"]
    assert mcnemar_exact(x, x, design_effect=3.0)["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(a, b, design_effect=0.5)


def test_dependence_variance_is_the_cluster_robust_variance_for_pieces():
    e = np.array([0.3, -0.1, 0.2, 0.4, -0.8])
    assert dependence_variance(e) == pytest.approx(np.sum(e ** 2))
    # pieces {0, 1}, {2, 3, 4}: sum over pieces of the squared piece sums
    edges = [[0, 1], [2, 3], [2, 4], [3, 4], [4, 3], [1, 1]]  # duplicates and self-links ignored
    assert dependence_variance(e, edges) == pytest.approx(0.2 ** 2 + (-0.2) ** 2)
