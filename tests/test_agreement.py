"""analysis.agreement against scikit-learn's definitions, on random and degenerate cases."""
import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, v_measure_score

from analysis import agreement as cs


def _cases():
    rng = np.random.default_rng(7)
    for n, kl, kc in [(2, 2, 2), (10, 3, 4), (80, 5, 5), (300, 7, 3), (1000, 10, 12)]:
        labels = rng.integers(0, kl, n)
        yield f"random n={n}", labels, rng.integers(0, kc, n)
        noisy = labels.copy()
        flip = rng.random(n) < 0.2
        noisy[flip] = rng.integers(0, kl, flip.sum())
        yield f"related n={n}", labels, noisy + 100  # other names, same partition mostly
    lab = np.repeat(np.arange(4), 5)
    yield "identical", lab, lab
    yield "one cluster", lab, np.zeros(20, int)
    yield "one class", np.zeros(20, int), lab
    yield "both single", np.zeros(9, int), np.ones(9, int)
    yield "singletons", lab, np.arange(20)
    yield "string labels", np.array(list("aabbccab")), np.array([3, 3, 1, 1, 2, 2, 3, 1])


@pytest.mark.parametrize("name,labels,clusters", list(_cases()), ids=[c[0] for c in _cases()])
def test_scores_equal_scikit_learn(name, labels, clusters):
    t = cs.contingency(labels, clusters)
    assert t.sum() == len(labels)
    assert cs.v_measure(t) == pytest.approx(v_measure_score(labels, clusters), abs=1e-13)
    assert cs.adjusted_rand(t) == pytest.approx(adjusted_rand_score(labels, clusters), abs=1e-13)
    assert cs.adjusted_mutual_info(t) == pytest.approx(
        adjusted_mutual_info_score(labels, clusters, average_method="arithmetic"), abs=1e-12)


def test_known_answers():
    lab = np.repeat(np.arange(3), 4)
    perm = cs.contingency(lab, (lab + 1) % 3)  # the same partition under other names
    assert cs.v_measure(perm) == pytest.approx(1.0) and cs.adjusted_rand(perm) == 1.0
    assert cs.adjusted_mutual_info(perm) == pytest.approx(1.0)
    # a 2x2 table where every label is split evenly over both clusters: no information
    half = np.array([[2, 2], [2, 2]])
    assert cs.mutual_information(half) == 0.0 and cs.v_measure(half) == 0.0
    assert cs.adjusted_rand(half) < 0  # fewer agreeing pairs than chance


@pytest.mark.parametrize("name,labels,clusters", list(_cases()), ids=[c[0] for c in _cases()])
def test_macro_f1_equals_scikit_learn(name, labels, clusters):
    from sklearn.metrics import f1_score
    pred = clusters if clusters.dtype == labels.dtype else clusters.astype(labels.dtype)
    want = f1_score(labels, pred, average="macro", zero_division=0)
    assert cs.macro_f1(labels, pred) == pytest.approx(want, abs=1e-13)


def test_macro_f1_known_answers():
    assert cs.macro_f1([0, 0, 1, 1], [0, 0, 1, 1]) == 1.0
    # class 0: TP 1, FN 1, FP 0 -> 2/3; class 1: TP 2, FP 1 -> 4/5; class 2 never occurs -> 0
    assert cs.macro_f1([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert cs.macro_f1(["a", "b"], ["c", "c"]) == 0.0  # a predicted-only value counts, as 0
