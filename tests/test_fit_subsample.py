"""Issue 27: above FIT_MAX_ITEMS items the probe and the k-means agreement are fitted on a seeded,
class-stratified subsample of whole pieces. The subsample is recorded in the entries' params, and
its values lie inside the intervals of the full computation (measured here at a size where both
fit)."""
import numpy as np
import pytest

from analysis import separability
from analysis.metrics import EmbedderContext, get, guard


def _clustered(n, dim=24, classes=5, noise=2.2, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, dim))
    X = centres[y] + noise * rng.normal(size=(n, dim))
    return X, np.array([f"c{v}" for v in y])


def test_subsample_keeps_pieces_whole_and_classes_in_proportion():
    labels = np.array(["a"] * 9000 + ["b"] * 950 + ["c"] * 50)
    groups = np.array([f"p{i // 2}" for i in range(len(labels))])
    rows = separability.subsample_rows(labels, groups, max_items=1000, seed=3)
    assert np.all(np.diff(rows) > 0)
    kept = set(groups[rows].tolist())
    # every kept piece is kept whole
    assert sum(1 for g in groups if g in kept) == len(rows)
    _, counts = np.unique(labels[rows], return_counts=True)
    assert counts[0] == 900 and 95 <= counts[1] <= 96 and counts[2] == 10  # 10: min_per_class
    assert np.array_equal(rows, separability.subsample_rows(labels, groups, max_items=1000,
                                                            seed=3))
    assert not np.array_equal(rows, separability.subsample_rows(labels, groups, max_items=1000,
                                                                seed=4))
    assert separability.subsample_rows(labels, max_items=len(labels)) is None


def test_small_collections_are_not_subsampled():
    X, y = _clustered(300)
    e = guard(get("probe_accuracy"), EmbedderContext(X, y))
    assert "items_subsampled" not in e["params"]


@pytest.mark.slow
def test_subsampled_values_lie_in_the_full_intervals():
    X, y = _clustered(2400, dim=16)
    full = EmbedderContext(X, y)
    assert full.fit_rows() is None  # 2,400 <= FIT_MAX_ITEMS: every item
    sub = EmbedderContext(X, y)
    sub.fit_max_items = 1200
    for name in ("probe_accuracy", "probe_balanced_accuracy", "v_measure",
                 "adjusted_mutual_info", "adjusted_rand"):
        ef, es = guard(get(name), full), guard(get(name), sub)
        s = es["params"]["items_subsampled"]
        assert s["of"] == 2400 and 1200 <= s["n_items"] <= 1205 and s["seed"] == 0
        lo, hi = ef["ci95"]
        assert lo <= es["value"] <= hi, (name, es["value"], ef["ci95"])
        # the subsample's interval is wider (fewer pieces), and honest about it
        assert es["ci95"][1] - es["ci95"][0] > hi - lo


def test_tsne_above_the_cap_maps_a_subsample_and_says_so(tmp_path):
    from analysis import plots, projection
    X, y = _clustered(400, dim=8)
    groups = np.array([f"p{i // 2}" for i in range(400)])
    Y, params = projection.tsne_2d(X, y, groups=groups, max_items=120, seed=1)
    rows = projection.map_rows(400, y, groups, seed=1, max_items=120)
    assert Y.shape == (400, 2)
    drawn = np.isfinite(Y).all(axis=1)
    assert np.array_equal(np.flatnonzero(drawn), rows)
    assert params["items_subsampled"]["n_items"] == len(rows) and \
        params["items_subsampled"]["of"] == 400
    # pieces stay whole: both items of a drawn pair are drawn
    assert np.array_equal(drawn[0::2], drawn[1::2])
    png = plots.plot_map(Y, y, tmp_path / "m", title="t")[0]
    assert png.stat().st_size > 5_000
    # PCA maps every item at any size
    Yp, pp = projection.project(X, "pca", y, groups=groups)
    assert np.isfinite(Yp).all() and "items_subsampled" not in pp


def test_interactive_page_shows_the_mapped_subsample(monkeypatch):
    from collections import OrderedDict

    from analysis import projection, run
    from collection.embedding_set import EmbeddingSet
    monkeypatch.setattr(projection, "MAP_MAX_ITEMS", 100)
    X, y = _clustered(300, dim=8)
    pairs = np.array([f"p{i}" for i in range(300)])
    a = EmbeddingSet("a", "audio", np.char.add(pairs, ".wav"), y, pairs, X)
    b = EmbeddingSet("b", "symbolic", np.char.add(pairs, ".mid"), y, pairs, X[:, ::-1])
    coords = OrderedDict(tsne=OrderedDict(a=np.arange(600.0).reshape(300, 2),
                                          b=np.arange(600.0).reshape(300, 2)))
    notes = []
    c2, s2 = run._map_subsample(coords, [a, b], notes, seed=0)
    rows = projection.map_rows(300, y, pairs, seed=0)
    assert len(s2[0]) == len(rows) < 300
    # paired sets show the same pieces
    assert np.array_equal(s2[0].pair_ids, s2[1].pair_ids)
    assert np.array_equal(c2["tsne"]["a"], coords["tsne"]["a"][rows])
    assert len(notes) == 2 and "subsample" in notes[0]


def test_cka_on_a_subsample_lies_in_the_full_interval():
    from analysis.metrics import PairContext
    X, y = _clustered(1500, dim=12)
    rng = np.random.default_rng(5)
    Y = X @ rng.normal(size=(12, 10)) + 3.0 * rng.normal(size=(1500, 10))
    kw = {"n_bootstrap": 100, "n_permutations": 99}
    full, sub = PairContext(X, Y, y, **kw), PairContext(X, Y, y, **kw)
    sub.cka_max_items = 600
    for name in ("cka_debiased", "cka_linear"):
        ef, es = guard(get(name), full), guard(get(name), sub)
        assert "items_subsampled" not in ef["params"]
        assert es["params"]["items_subsampled"]["of"] == 1500
        assert 600 <= es["params"]["items_subsampled"]["n_items"] <= 605
        assert ef["ci95"][0] <= es["value"] <= ef["ci95"][1], (name, es["value"], ef["ci95"])
        assert es["value"] != ef["value"]
    p = guard(get("cka_permutation_p"), sub)
    assert p["params"]["items_subsampled"]["of"] == 1500 and 0 < p["value"] <= 1


def test_jaccard_over_query_items_lies_in_the_full_interval(monkeypatch):
    from analysis.metrics import PairContext
    from analysis.metrics import neighbourhood
    X, y = _clustered(1200, dim=10)
    rng = np.random.default_rng(7)
    Y = X @ rng.normal(size=(10, 10)) + 2.0 * rng.normal(size=(1200, 10))
    m = get("knn_jaccard_k10")
    full = guard(m, PairContext(X, Y, y, n_bootstrap=200))
    monkeypatch.setattr(neighbourhood, "JACCARD_MAX_QUERIES", 400)
    sub = guard(m, PairContext(X, Y, y, n_bootstrap=200))
    s = sub["params"]["items_subsampled"]
    assert s["of"] == 1200 and 400 <= s["n_items"] <= 405 and "query" in s["how"]
    assert sub["params"]["chance"] == full["params"]["chance"]
    assert full["ci95"][0] <= sub["value"] <= full["ci95"][1], (sub["value"], full["ci95"])


def test_large_maps_rasterise_their_markers_in_the_svg(tmp_path, monkeypatch):
    from analysis import plots
    rng = np.random.default_rng(0)
    Y, y = rng.normal(size=(600, 2)), np.array([f"c{i % 4}" for i in range(600)])
    small = plots.plot_map(Y, y, tmp_path / "vector", title="t")[1].read_text()
    monkeypatch.setattr(plots, "RASTER_POINTS", 500)
    big = plots.plot_map(Y, y, tmp_path / "raster", title="t")[1].read_text()
    assert "<image" not in small and "<image" in big
    assert len(big) < len(small)


def test_retrieval_over_sampled_queries_lies_in_the_full_interval(monkeypatch):
    from analysis import retrieval
    from analysis.metrics import PairContext
    X, y = _clustered(1000, dim=12)
    rng = np.random.default_rng(9)
    Y = X @ rng.normal(size=(12, 12)) + 1.5 * rng.normal(size=(1000, 12))
    full = {k: guard(get(k), PairContext(X, Y, y, retrieval_splits=6))
            for k in ("retrieval_recall_at_5", "retrieval_mrr")}
    monkeypatch.setattr(retrieval, "RETRIEVAL_MAX_QUERIES", 120)
    ctx = PairContext(X, Y, y, retrieval_splits=6)
    for name, ef in full.items():
        es = guard(get(name), ctx)
        assert ef["params"]["n_queries"] == ef["params"]["n_test"] == 300
        assert es["params"]["n_queries"] == 120 and es["params"]["n_test"] == 300
        assert es["params"]["items_subsampled"]["of"] == 300
        assert ef["ci95"][0] <= es["value"] <= ef["ci95"][1], (name, es["value"], ef["ci95"])
        assert es["ci95"][1] - es["ci95"][0] > ef["ci95"][1] - ef["ci95"][0]


def test_a_run_above_the_cap_compares_embedders_on_a_subsample(tmp_path, monkeypatch):
    from analysis.run import run_analysis
    from collection.embedding_set import EmbeddingSet
    monkeypatch.setattr(separability, "FIT_MAX_ITEMS", 150)
    X, y = _clustered(300, dim=8)
    rng = np.random.default_rng(3)
    stems = np.array([f"{y[i]}/p{i:03d}" for i in range(300)])
    sets = [EmbeddingSet("a", "audio", np.char.add(stems, ".wav"), y, stems, X),
            EmbeddingSet("b", "symbolic", np.char.add(stems, ".mid"), y, stems,
                         X @ rng.normal(size=(8, 8)) + rng.normal(size=(300, 8)))]
    m = run_analysis(sets, tmp_path / "out", plot_dir=tmp_path / "p", cos_dir=tmp_path / "c",
                     var_dir=tmp_path / "v", methods=(), seed=0, n_bootstrap=30,
                     n_permutations=19)
    assert not any("comparisons failed" in n for n in m["notes"]), m["notes"]
    probe = [c for c in m["comparisons"] if c["metric"] == "probe_accuracy"]
    assert len(probe) == 1 and probe[0]["p_value"] is not None
    assert probe[0]["params"]["items_subsampled"]["of"] == 300
    assert m["embedders"]["a"]["probe_accuracy"]["params"]["items_subsampled"]["of"] == 300
