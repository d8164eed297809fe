"""probe_folds gives exactly scikit-learn's StratifiedGroupKFold(shuffle=True) test folds (its
own greedy reimplemented for speed): the reference below is the sklearn-based probe_folds it
replaced."""
import warnings

import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from analysis import separability
from analysis._common import UndefinedMetricError


def sklearn_folds(labels, groups, *, n_splits, seed):
    """Test-fold index [shape=(n,)] per item from scikit-learn, with the same group ids and
    fold count as probe_folds (the code probe_folds used until it had its own greedy)."""
    labels = np.asarray(labels)
    n = len(labels)
    g = separability.groups_or_self(groups, n)
    ns = separability.effective_n_splits(labels, g, n_splits=n_splits)
    if ns < 2:
        raise UndefinedMetricError("fewer than 2 folds possible")
    cv = StratifiedGroupKFold(n_splits=ns, shuffle=True, random_state=seed)
    fold = np.full(n, -1, dtype=np.int64)
    _, g_codes = np.unique(g.astype(str), return_inverse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f, (_, te) in enumerate(cv.split(np.zeros((n, 1)), labels, g_codes)):
            fold[te] = f
    return fold


def balanced(rng, n_classes, n_per):
    return np.repeat(np.arange(n_classes), n_per)


def imbalanced(rng, n_classes, n_per):
    # sizes from n_per // 3 (>= 6, so 6 folds stay possible) up to 2 * n_per
    sizes = rng.integers(max(6, n_per // 3), 2 * n_per + 1, size=n_classes)
    return np.repeat(np.arange(n_classes), sizes)


def singletons(rng, labels):
    return None


def pairs(rng, labels):
    # items 2i and 2i+1 share a piece (mostly the same class: sorted labels); every 7th alone
    groups = np.array([f"p{i // 2}" for i in range(len(labels))])
    groups[::7] = ""
    return groups


def mixed_groups(rng, labels):
    # groups of 1..5 items of whatever classes fall together (mixed classes within a group)
    n = len(labels)
    sizes = rng.integers(1, 6, size=n)
    ids = np.repeat(np.arange(n), sizes)[:n]
    return np.array([f"piece{v}" for v in rng.permutation(ids)])


@pytest.mark.parametrize("make_groups", [singletons, pairs, mixed_groups])
@pytest.mark.parametrize("make_labels", [balanced, imbalanced])
@pytest.mark.parametrize("as_strings", [False, True])
def test_folds_equal_sklearn(make_labels, make_groups, as_strings):
    # seeds 0..30; n_splits cycles 2..6 and the class count 2..25 with the seed
    for seed in range(31):
        rng = np.random.default_rng(1000 + seed)
        n_classes = 2 + (7 * seed) % 24
        labels = make_labels(rng, n_classes, max(6, 72 // n_classes))
        labels = rng.permutation(labels)
        if as_strings:
            labels = np.array([f"genre-{v}" for v in labels])
        groups = make_groups(rng, labels)
        n_splits = 2 + seed % 5
        try:
            want = sklearn_folds(labels, groups, n_splits=n_splits, seed=seed)
        except UndefinedMetricError:
            with pytest.raises(UndefinedMetricError):
                separability.probe_folds(labels, groups, n_splits=n_splits, seed=seed)
            continue
        got = separability.probe_folds(labels, groups, n_splits=n_splits, seed=seed)
        np.testing.assert_array_equal(got, want, err_msg=f"seed={seed} n_splits={n_splits}")


@pytest.mark.parametrize("n_splits", [7, 8, 10])
def test_folds_equal_sklearn_many_folds_and_one_class(n_splits):
    # more folds than numpy's 8-way unrolled sums cover, and one class (std over one column)
    rng = np.random.default_rng(n_splits)
    for labels in (rng.integers(0, 3, size=90), np.zeros(40, dtype=int)):
        for seed in range(5):
            want = sklearn_folds(labels, None, n_splits=n_splits, seed=seed)
            got = separability.probe_folds(labels, None, n_splits=n_splits, seed=seed)
            np.testing.assert_array_equal(got, want)


def test_folds_equal_sklearn_singletons_at_probe_scale():
    # the profiled case: 1,000 items, 20 classes, every item its own group
    labels = np.array([f"g{i % 20}" for i in np.random.default_rng(5).permutation(1000)])
    want = sklearn_folds(labels, None, n_splits=5, seed=3)
    np.testing.assert_array_equal(separability.probe_folds(labels, None, n_splits=5, seed=3),
                                  want)


@pytest.mark.parametrize("labels, groups, n_splits", [
    (np.array(["a", "a", "b", "b"]), np.array(["p", "p", "q", "r"]), 5),  # class a: one piece
    (np.array(["a", "a", "a", "b"]), None, 5),                            # class b: one item
    (np.array(["a", "a", "b", "b"]), None, 1),                            # one fold asked
    (np.array([], dtype=str), None, 5),                                    # no items
])
def test_raises_where_a_split_is_impossible(labels, groups, n_splits):
    with pytest.raises(UndefinedMetricError):
        sklearn_folds(labels, groups, n_splits=n_splits, seed=0)
    with pytest.raises(UndefinedMetricError):
        separability.probe_folds(labels, groups, n_splits=n_splits, seed=0)
