"""The search package on the real Qdrant Edge engine (no mocks): index build, incremental update,
resume after a kill, configuration check, damaged-index rebuild, recommendations (same- and
cross-modal) through the Python API and the command line."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")

import cli
from conftest import ROOT, indexed_demo_corpus, write_wav
from search import DamagedIndexError, IndexMismatchError, IndexMissingError, Recommender
from search.index import (index_root, open_shard, read_index_meta, shard_path, sync_shard,
                          wait_for_hnsw, write_index_meta)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small paired demo corpus (5 genres x 2 pieces, audio + MIDI), embedded and indexed."""
    return indexed_demo_corpus(tmp_path_factory.mktemp("search"))


def _random_payloads(n, seed=0, start=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 16)).astype(np.float32)
    pay = [{"item_id": f"g{i % 3}/f{i}.wav", "content_hash": f"h{i}", "label": f"g{i % 3}",
            "pair_id": "", "path": f"/x/f{i}.wav", "modality": "audio", "duration": None}
           for i in range(start, start + n)]
    return X, pay


META = {"embedder": "toy", "version": "1", "options": {"a": 1}, "modality": "audio"}


def _exact_top(X, q, k):
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    return list(np.argsort(-(Xn @ (q / np.linalg.norm(q))), kind="stable")[:k])


def test_index_holds_every_export_item_with_payload(corpus):
    root, emb = corpus
    meta = read_index_meta(index_root(emb) / "audio-stats")
    assert meta["state"] == "complete" and meta["n_items"] == 10 and meta["hnsw"] == "ready"
    assert meta["embedder"] == "audio-stats" and "version" in meta and "options" in meta
    assert (index_root(emb) / "audio-stats__to__midi-stats" / "alignment.npz").is_file()
    import qdrant_edge as q
    shard = open_shard(shard_path(index_root(emb) / "audio-stats"))
    try:
        recs, _ = shard.scroll(q.ScrollRequest(limit=100, with_payload=True))
    finally:
        shard.close()
    assert len(recs) == 10
    p = recs[0].payload
    assert set(p) >= {"path", "label", "pair_id", "modality", "content_hash", "duration"}
    assert p["modality"] == "audio" and Path(p["path"]).is_file()


def test_incremental_update_adds_and_removes_only_the_difference(tmp_path):
    folder = tmp_path / "idx"
    X, pay = _random_payloads(30)
    r = sync_shard(folder, META, X, pay)
    assert (r["added"], r["removed"], r["n_items"]) == (30, 0, 30)
    r = sync_shard(folder, META, X, pay)
    assert (r["added"], r["removed"], r["kept"]) == (0, 0, 30)
    X2, pay2 = _random_payloads(5, seed=1, start=30)
    X3, pay3 = np.vstack([X[5:], X2]), pay[5:] + pay2
    r = sync_shard(folder, META, X3, pay3)
    assert (r["added"], r["removed"], r["kept"], r["n_items"]) == (5, 5, 25, 30)
    shard = open_shard(shard_path(folder))
    try:
        import qdrant_edge as q
        hits = shard.query(q.QueryRequest(limit=3, query=q.Query.Nearest(X3[7].tolist(),
                                                                          using="clip"),
                                          with_payload=True))
    finally:
        shard.close()
    assert hits[0].payload["content_hash"] == pay3[7]["content_hash"]


def test_changed_configuration_rebuilds_the_index(tmp_path):
    folder = tmp_path / "idx"
    X, pay = _random_payloads(10)
    sync_shard(folder, META, X, pay)
    r = sync_shard(folder, dict(META, version="2"), X, pay)
    assert r["rebuilt"] and r["added"] == 10
    assert read_index_meta(folder)["version"] == "2"


def test_damaged_index_is_reported_and_rebuilt(tmp_path):
    folder = tmp_path / "idx"
    X, pay = _random_payloads(20)
    sync_shard(folder, META, X, pay)
    for f in shard_path(folder).rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with pytest.raises(DamagedIndexError):
        open_shard(shard_path(folder))
    said = []
    r = sync_shard(folder, META, X, pay, log=said.append)
    assert r["rebuilt"] and r["n_items"] == 20 and r["added"] == 20
    assert any("damaged" in s for s in said)


_KILL_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {root!r})
import search.index as si
si.UPSERT_BATCH = 200
rng = np.random.default_rng(0)
X = rng.standard_normal((20000, 64)).astype(np.float32)
pay = [{{"item_id": f"f{{i}}", "content_hash": f"h{{i}}", "label": "a", "pair_id": "",
        "path": "p", "modality": "audio", "duration": None}} for i in range(len(X))]
si.sync_shard(si.Path({folder!r}), {meta!r}, X, pay, hnsw="off")
"""


def test_killed_build_resumes(tmp_path):
    folder = tmp_path / "idx"
    script = _KILL_SCRIPT.format(root=str(ROOT), folder=str(folder), meta=META)
    proc = subprocess.Popen([sys.executable, "-c", script])
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end:  # kill it once it has started writing points
        meta = read_index_meta(folder) if (folder / "index.json").exists() else None
        if meta and meta["state"] == "building" and any(shard_path(folder).rglob("*.mmap")):
            break
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    meta = read_index_meta(folder)
    if meta["state"] == "complete":
        pytest.skip("the build finished before it could be killed on this machine")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20000, 64)).astype(np.float32)
    pay = [{"item_id": f"f{i}", "content_hash": f"h{i}", "label": "a", "pair_id": "",
            "path": "p", "modality": "audio", "duration": None} for i in range(len(X))]
    r = sync_shard(folder, META, X, pay, hnsw="off")
    assert r["n_items"] == 20000 and r["kept"] > 0 and r["added"] < 20000
    assert read_index_meta(folder)["state"] == "complete"


def test_queries_are_exact_while_hnsw_builds_in_the_background(tmp_path):
    folder = tmp_path / "idx"
    rng = np.random.default_rng(3)
    n = 3000
    X = rng.standard_normal((n, 32)).astype(np.float32)
    pay = [{"item_id": f"f{i}", "content_hash": f"h{i}", "label": "a", "pair_id": "",
            "path": f"p{i}", "modality": "audio", "duration": None} for i in range(n)]
    r = sync_shard(folder, META, X, pay, hnsw="background")
    assert r["hnsw"] == "building"
    rec = Recommender.__new__(Recommender)  # the search step alone, no embedder needed
    rec.emb_dir, rec.hubness_reduction = tmp_path, None
    rec.keep_open, rec._open = False, {}
    rec._meta = lambda name: read_index_meta(folder)
    import search.recommend as sr
    old = sr.index_folder
    sr.index_folder = lambda emb_dir, name: tmp_path / name
    try:
        plain = shard_path(folder)
        hits = rec._search("idx", X[0], limit=10, label=None, exclude_hash="", exclude_pair="",
                           with_vector=False)
        if shard_path(folder) == plain:  # answered by the shard without the graph: exact
            assert [int(p["path"][1:]) for _, p, _ in hits] == _exact_top(X, X[0], 10)
        assert wait_for_hnsw(folder, timeout_s=600)
        assert shard_path(folder) != plain
        hits = rec._search("idx", X[1], limit=10, label=None, exclude_hash="h1",
                           exclude_pair="", with_vector=False)
    finally:
        sr.index_folder = old
    assert len(hits) == 10 and "h1" not in [p["content_hash"] for _, p, _ in hits]
    assert read_index_meta(folder)["hnsw"] == "ready"


def test_recommend_same_and_cross_modal(corpus):
    root, emb = corpus
    query = sorted(root.rglob("*.wav"))[0]
    rec = Recommender(emb, embedder="audio-stats")
    res = rec.recommend(query, k=5)
    assert len(res) == 5 and [r.rank for r in res] == [1, 2, 3, 4, 5]
    assert all(r.modality == "audio" and r.path != str(query) for r in res)
    assert res[0].score >= res[-1].score
    cross = rec.recommend(query, k=4, cross_modal=True)
    assert all(r.modality == "symbolic" for r in cross)
    partner = query.with_suffix(".mid")
    assert str(partner) in [r.path for r in rec.recommend(query, k=10, cross_modal=True)]
    excl = rec.recommend(query, k=10, cross_modal=True, exclude_same_piece=True)
    assert str(partner) not in [r.path for r in excl]
    lab = rec.recommend(query, k=3, label="rock")
    assert lab and all(r.label == "rock" for r in lab)
    mp = Recommender(emb, embedder="audio-stats", hubness_reduction="mp").recommend(query, k=5)
    assert len(mp) == 5 and all(0 <= r.score <= 1 for r in mp)


def test_query_outside_the_collection_is_embedded_through_the_cache(corpus, tmp_path):
    root, emb = corpus
    outside = write_wav(tmp_path / "new.wav", seconds=2.0, freq=330.0)
    rec = Recommender(emb, embedder="audio-stats")
    res = rec.recommend(outside, k=3)
    assert len(res) == 3
    n_cached = len(list((emb / "cache" / "audio-stats").rglob("*.npz")))
    assert rec.recommend(outside, k=3) == res
    assert len(list((emb / "cache" / "audio-stats").rglob("*.npz"))) == n_cached
    # its own content is never among its results, even once it is in the collection
    twin = sorted(root.rglob("*.wav"))[0]
    copy = tmp_path / "copy.wav"
    shutil.copy(twin, copy)
    assert str(twin) not in [r.path for r in rec.recommend(copy, k=9)]


def test_query_with_another_configuration_is_refused(corpus):
    root, emb = corpus
    rec = Recommender(emb, embedder="audio-stats", options={"window_seconds": 3.0})
    with pytest.raises(IndexMismatchError, match="built for"):
        rec.recommend(sorted(root.rglob("*.wav"))[0], k=3)


def test_cli_recommend_json_matches_the_python_api(corpus, capsys):
    root, emb = corpus
    query = sorted(root.rglob("*.mid"))[0]
    assert cli.main(["recommend", str(query), "--emb-dir", str(emb), "--embedder",
                     "midi-stats", "-k", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    api = Recommender(emb, embedder="midi-stats").recommend(query, k=4)
    assert [(o["path"], o["score"], o["label"]) for o in out] == \
        [(r.path, r.score, r.label) for r in api]
    assert cli.main(["recommend", str(query), "--emb-dir", str(emb), "--embedder",
                     "midi-stats", "-k", "2", "--cross-modal"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["rank", "score", "label", "path"] and len(table) == 3
    assert all(line.rstrip().endswith(".wav") for line in table[1:])


def test_cli_bad_input(corpus, tmp_path, capsys):
    root, emb = corpus
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    assert cli.main(["recommend", str(bad), "--emb-dir", str(emb), "--embedder",
                     "audio-stats"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]
    assert cli.main(["recommend", str(tmp_path / "missing.wav"), "--emb-dir", str(emb),
                     "--embedder", "audio-stats"]) == 2
    assert "missing.wav" in capsys.readouterr().err
    empty = tmp_path / "emb"
    assert cli.main(["recommend", str(bad), "--emb-dir", str(empty), "--embedder",
                     "audio-stats"]) == 2
    assert "main.py index" in capsys.readouterr().err
    before = sorted(p.name for p in index_root(emb).iterdir())
    stamp = (index_root(emb) / "audio-stats" / "index.json").stat().st_mtime_ns
    assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url",
                     "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "127.0.0.1:9" in err[0]
    assert sorted(p.name for p in index_root(emb).iterdir()) == before
    assert (index_root(emb) / "audio-stats" / "index.json").stat().st_mtime_ns == stamp


def test_cli_index_reports_counts(corpus, capsys):
    root, emb = corpus
    assert cli.main(["index", "--emb-dir", str(emb), "--embedders", "audio-stats"]) == 0
    err = capsys.readouterr().err
    assert "index audio-stats: 10 items (+0 -0" in err


def test_recommender_refuses_an_index_that_lost_points(tmp_path):
    folder = tmp_path / "index" / "toy"
    X, pay = _random_payloads(10)
    sync_shard(folder, META, X, pay)
    meta = read_index_meta(folder)
    write_index_meta(folder, dict(meta, n_items=11))
    rec = Recommender.__new__(Recommender)
    rec.emb_dir, rec.hubness_reduction = tmp_path, None
    rec.keep_open, rec._open = False, {}
    rec._meta = lambda name: read_index_meta(folder)
    with pytest.raises(DamagedIndexError, match="rebuild"):
        rec._search("toy", X[0], limit=3, label=None, exclude_hash="", exclude_pair="",
                    with_vector=False)


def test_missing_index_names_the_command(tmp_path):
    with pytest.raises(IndexMissingError, match="main.py index"):
        Recommender(tmp_path, embedder="audio-stats")


def test_a_run_updates_the_index_unless_no_index(tmp_path, capsys):
    pytest.importorskip("toy_embedders")
    data = tmp_path / "data"
    for genre, f in (("rock", 440.0), ("jazz", 220.0)):
        for i in range(3):
            write_wav(data / genre / f"{genre}{i}.wav", freq=f + 30 * i)
    args = ["--dataset", str(data), "--embedders", "audio-stats", "--out", str(tmp_path / "o"),
            "--no-analysis", "--quiet"]
    assert cli.main(args + ["--emb-dir", str(tmp_path / "e1"), "--no-index"]) == 0
    assert not (tmp_path / "e1" / "index").exists()
    assert cli.main(args + ["--emb-dir", str(tmp_path / "e2")]) == 0
    meta = read_index_meta(tmp_path / "e2" / "index" / "audio-stats")
    assert meta["state"] == "complete" and meta["n_items"] == 6


def test_index_held_open_by_the_page_is_reported_busy(corpus, capsys):
    root, emb = corpus
    rec = Recommender(emb, embedder="audio-stats", keep_open=True)
    try:
        rec.recommend(sorted(root.rglob("*.wav"))[0], k=2)
        assert cli.main(["index", "--emb-dir", str(emb), "--embedders", "audio-stats"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "open in another process" in err[0]
    finally:
        rec.close()
    assert cli.main(["index", "--emb-dir", str(emb), "--embedders", "audio-stats"]) == 0


def test_unchanged_reindex_keeps_generation_and_graph(tmp_path):
    folder = tmp_path / "idx"
    X, pay = _random_payloads(50)
    sync_shard(folder, META, X, pay)
    before = read_index_meta(folder)
    assert before["hnsw"] == "ready"
    r = sync_shard(folder, META, X, pay)
    after = read_index_meta(folder)
    assert r["hnsw"] == "ready" and after["generation"] == before["generation"]
    assert shard_path(folder).exists()


def test_index_of_an_older_format_is_rebuilt(tmp_path):
    # e.g. format 1 (UUID point ids, a weaker graph): rebuilt, not patched point by point
    folder = tmp_path / "idx"
    X, pay = _random_payloads(20)
    sync_shard(folder, META, X, pay)
    meta = read_index_meta(folder)
    write_index_meta(folder, dict(meta, format=meta["format"] - 1))
    said = []
    r = sync_shard(folder, META, X, pay, log=said.append)
    assert r["rebuilt"] and r["added"] == 20 and r["n_items"] == 20
    assert any("another configuration" in s for s in said)
    assert read_index_meta(folder)["format"] == meta["format"]


def test_filter_fields_have_keyword_indexes(tmp_path):
    # recommend excludes the query's own content hash in every query: without an index that
    # filter read every point's payload
    from search.index import FILTER_FIELDS
    folder = tmp_path / "idx"
    X, pay = _random_payloads(30)
    sync_shard(folder, META, X, pay)
    shard = open_shard(shard_path(folder))
    try:
        assert set(shard.info().payload_schema) >= set(FILTER_FIELDS)
    finally:
        shard.close()


def test_shard_copy_retries_when_a_file_vanishes_mid_copy(tmp_path, monkeypatch):
    # a reader holding the shard open renames .atomicwrite* files into place meanwhile
    import search.index as si
    src = tmp_path / "src"
    (src / "segments").mkdir(parents=True)
    (src / "segments" / "a.dat").write_bytes(b"x")
    (src / "segments" / ".atomicwriteQQ").write_bytes(b"tmp")
    real, calls = si.shutil.copytree, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise si.shutil.Error([("gone", "gone", "[Errno 2] No such file or directory")])
        return real(*args, **kwargs)
    monkeypatch.setattr(si.shutil, "copytree", flaky)
    si._copy_shard(src, tmp_path / "dst")
    assert len(calls) >= 2 and (tmp_path / "dst" / "segments" / "a.dat").read_bytes() == b"x"
    assert not (tmp_path / "dst" / "segments" / ".atomicwriteQQ").exists()


def test_exclusions_dropped_after_the_query_equal_the_engine_filter(corpus, monkeypatch):
    import search.recommend as sr
    root, emb = corpus
    query = sorted(root.rglob("*.wav"))[0]
    rec = Recommender(emb, embedder="audio-stats")
    kwargs = [dict(k=9), dict(k=10, cross_modal=True, exclude_same_piece=True),
              dict(k=3, label="rock")]
    post = [rec.recommend(query, **kw) for kw in kwargs]
    monkeypatch.setattr(sr, "POST_FILTER_MAX", -1)  # every exclusion as a filter in the walk
    assert [rec.recommend(query, **kw) for kw in kwargs] == post
    assert str(query) not in [r.path for r in post[0]] and len(post[0]) == 9
