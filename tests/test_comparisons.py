"""Paired comparisons of two embedders on their shared items (issue 21)."""
import numpy as np
import pytest

from analysis import separability
from analysis.comparisons import (COMPARISON_KEYS, add_holm, compare_all, compare_embedders,
                                  compare_sets, shared_items)
from analysis.paired import holm, mcnemar_exact
from collection.embedding_set import EmbeddingSet

K = 4
LABELS = np.repeat([f"c{i}" for i in range(K)], 12)
METRICS = ["knn_accuracy_k1", "knn_accuracy_k5", "knn_balanced_accuracy_k1",
           "knn_balanced_accuracy_k5", "probe_accuracy", "probe_balanced_accuracy"]


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Many tiny logistic-regression fits: BLAS threads only add overhead on a shared machine
    (10-20x per fit measured with 2 busy cores)."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1):
        yield


def spaces(seed=0, n=len(LABELS)):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, 6)) * 3
    good = centres[np.repeat(np.arange(K), n // K)] + rng.normal(size=(n, 6))
    noise = rng.normal(size=(n, 6))
    return good, noise


def test_entries_have_the_documented_keys_and_find_the_better_space():
    good, noise = spaces()
    rows = compare_embedders(good, noise, LABELS, names=("good", "noise"), probe_repeats=3)
    assert [r["metric"] for r in rows] == METRICS
    for r in rows:
        assert set(COMPARISON_KEYS) <= set(r)
        assert (r["a"], r["b"], r["on"], r["n_items"], r["n_units"]) == (
            "good", "noise", "shared items", 48, 48)
        assert r["difference"] == pytest.approx(r["value_a"] - r["value_b"])
        assert r["ci95"][0] <= r["difference"] <= r["ci95"][1]
        assert r["difference"] > 0.3 and r["ci95"][0] > 0
        assert r["p_value"] < 0.001 and r["p_holm"] >= r["p_value"]
    assert [r["p_holm"] for r in rows] == pytest.approx(holm([r["p_value"] for r in rows]))


def test_knn_entry_is_mcnemar_on_the_leave_one_out_correctness():
    good, noise = spaces(1)
    rows = {r["metric"]: r for r in compare_embedders(good, noise, LABELS, families=("knn",))}
    assert list(rows) == METRICS[:4]
    ca = separability.knn_correct(good, LABELS, k=1)
    cb = separability.knn_correct(noise, LABELS, k=1)
    r = rows["knn_accuracy_k1"]
    deff = r["params"]["design_effect"]
    assert deff >= 1
    ref = mcnemar_exact(ca, cb, design_effect=deff)
    assert r["p_value"] == ref["p_value"] and r["ci95"] == ref["ci95"]
    assert r["p_value"] >= mcnemar_exact(ca, cb)["p_value"]  # dependence only widens
    assert r["value_a"] == pytest.approx(ca.mean()) and r["test"].startswith("mcnemar")
    assert r["params"]["discordant"] == [ref["b"], ref["c"]]


def test_knn_test_holds_its_level_on_exchangeable_embedders():
    # two spaces drawn from one distribution (same class centres, fresh noise): the true
    # difference is 0. Treating items as independent rejected 12-13 % at 5 % here (mutual
    # nearest neighbours are right or wrong together); the dependence-aware test must not.
    labels = np.repeat([f"c{i}" for i in range(4)], 15)
    centres = np.random.default_rng(0).normal(size=(4, 6)) * 0.8
    rejected = {"knn_accuracy_k1": 0, "knn_balanced_accuracy_k1": 0}
    naive = 0
    sims = 150
    for s in range(sims):
        rng = np.random.default_rng(1000 + s)
        Xa = centres[np.repeat(np.arange(4), 15)] + rng.normal(size=(60, 6))
        Xb = centres[np.repeat(np.arange(4), 15)] + rng.normal(size=(60, 6))
        for r in compare_embedders(Xa, Xb, labels, knn_ks=(1,), families=("knn",)):
            rejected[r["metric"]] += r["p_value"] < 0.05
        naive += mcnemar_exact(separability.knn_correct(Xa, labels, k=1),
                               separability.knn_correct(Xb, labels, k=1))["p_value"] < 0.05
    assert naive / sims > 0.09  # the problem is real on this set
    for m, count in rejected.items():
        assert count / sims < 0.09, (m, count)


def test_identical_embedders_do_not_differ():
    good, _ = spaces(2)
    for r in compare_embedders(good, good.copy(), LABELS, probe_repeats=2):
        assert r["difference"] == 0.0 and r["p_value"] == 1.0, r["metric"]
        assert r["ci95"][0] < 0 < r["ci95"][1]  # not zero-width


def test_swapping_embedders_flips_the_difference():
    good, noise = spaces(3)
    ab = compare_embedders(good, noise, LABELS, probe_repeats=2)
    ba = compare_embedders(noise, good, LABELS, probe_repeats=2)
    for x, y in zip(ab, ba):
        assert x["difference"] == pytest.approx(-y["difference"])
        assert x["p_value"] == pytest.approx(y["p_value"])


def test_probe_comparison_uses_the_repeated_probe_of_each_space():
    good, noise = spaces(4)
    groups = np.repeat(np.arange(24).astype(str), 2)
    rows = {r["metric"]: r for r in compare_embedders(good, noise, LABELS, groups, seed=5,
                                                       probe_repeats=3)}
    ref = separability.repeated_linear_probe(good, LABELS, groups, n_repeats=3, seed=5)
    r = rows["probe_accuracy"]
    assert r["value_a"] == pytest.approx(ref["accuracy"]["value"])
    assert r["n_units"] == 24 and r["params"]["n_repeats"] == 3
    assert "sign-flip" in r["test"]


def test_undefined_metrics_are_reported_not_raised():
    good, noise = spaces(5)
    rows = compare_embedders(good, noise, np.full(len(LABELS), "one"), probe_repeats=2)
    assert [r["metric"] for r in rows] == METRICS
    for r in rows:
        assert r["value_a"] is None and r["p_value"] is None and r["p_holm"] is None
        assert "classes" in r["note"]
    with pytest.raises(ValueError):
        compare_embedders(good, noise[:10], LABELS)


def make_sets():
    """audio-stats on 48 paired items; midi-stats on the same 48 pieces plus 6 unpaired MIDI."""
    good, noise = spaces(6)
    pair = np.array([f"p{i}" for i in range(48)])
    audio = EmbeddingSet("audio-stats", "audio", [f"a/{p}.wav" for p in pair], LABELS, pair,
                         noise)
    extra = np.random.default_rng(9).normal(size=(6, 6))
    midi = EmbeddingSet("midi-stats", "symbolic",
                        [f"m/{p}.mid" for p in pair] + [f"m/x{i}.mid" for i in range(6)],
                        np.r_[LABELS, ["c0"] * 6], np.r_[pair, [""] * 6],
                        np.r_[good, extra])
    return audio, midi


def test_compare_sets_uses_the_shared_items_and_keeps_all_item_counts():
    audio, midi = make_sets()
    ia, ib, how = shared_items(audio, midi)
    assert how == "pair id" and len(ia) == 48
    rows = compare_sets(midi, audio, probe_repeats=2)
    for r in rows:
        assert (r["n_items"], r["n_items_a_all"], r["n_items_b_all"]) == (48, 54, 48)
        assert r["matched_by"] == "pair id" and r["n_label_mismatch"] == 0
    # the shared-items value differs from midi's value on all its items
    shared = next(r for r in rows if r["metric"] == "knn_accuracy_k1")["value_a"]
    all_items = separability.knn_accuracy(midi.vectors, midi.labels, k=1)
    assert shared == pytest.approx(separability.knn_accuracy(midi.vectors[:48], LABELS, k=1))
    assert shared != pytest.approx(all_items)


def test_compare_sets_drops_items_whose_labels_disagree_and_handles_no_overlap():
    audio, midi = make_sets()
    midi.labels[:3] = "other"
    rows = compare_sets(audio, midi, probe_repeats=2)
    assert rows[0]["n_items"] == 45 and rows[0]["n_label_mismatch"] == 3
    lonely = EmbeddingSet("lonely", "audio", ["z1.wav", "z2.wav"], ["c0", "c1"], ["", ""],
                          np.eye(2))
    none = compare_sets(audio, lonely)
    assert len(none) == 1 and none[0]["p_value"] is None and "shared" in none[0]["note"]


def test_compare_all_applies_holm_across_every_comparison():
    audio, midi = make_sets()
    third = EmbeddingSet("third", "audio", audio.ids, audio.labels, audio.pair_ids,
                         audio.vectors[:, ::-1] + 0.1)
    rows = compare_all([audio, midi, third], probe_repeats=2)
    assert len(rows) == 3 * len(METRICS)
    assert {(r["a"], r["b"]) for r in rows} == {("audio-stats", "midi-stats"),
                                                ("audio-stats", "third"),
                                                ("midi-stats", "third")}
    assert [r["p_holm"] for r in rows] == pytest.approx(holm([r["p_value"] for r in rows]))
    assert add_holm([]) == []
