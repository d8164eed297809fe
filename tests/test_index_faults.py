"""Issue 25: the index and the export under damage. Each case damages a copy of a small indexed
demo corpus the way a crash, a full disk or a hostile hand would, then checks the commands:
one line on stderr naming the file and the command that repairs it, exit status 2, no traceback,
the index rebuilt by ``index`` where the export allows it, and nothing written outside the
index folder."""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")

import cli
from conftest import ROOT, indexed_demo_corpus
from search.index import (check_shard, index_root, open_shard, read_index_meta, shard_path,
                          wait_for_hnsw)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return indexed_demo_corpus(tmp_path_factory.mktemp("faults"))


@pytest.fixture
def corpus(built, tmp_path):
    """A private copy of the indexed corpus's embeddings folder: ``(corpus, emb)``."""
    root, emb = built
    copy = tmp_path / "emb"
    shutil.copytree(emb, copy, symlinks=True)
    return root, copy


def _query(root: Path, ext: str = ".wav") -> Path:
    return sorted(root.rglob(f"*{ext}"))[0]


def _segment(emb: Path, name: str = "audio-stats") -> Path:
    return sorted((shard_path(index_root(emb) / name) / "segments").iterdir())[0]


def _export_file(emb: Path, file: str, name: str = "audio-stats") -> Path:
    return Path(os.path.realpath(emb / "export" / name)) / file


def _run(argv, capsys) -> tuple[int, list[str], str]:
    status = cli.main(argv)
    out = capsys.readouterr()
    return status, [line for line in out.err.splitlines() if line.strip()], out.out


def _recommend(root, emb, capsys, *extra, ext=".wav", embedder="audio-stats"):
    return _run(["recommend", str(_query(root, ext)), "--emb-dir", str(emb), "--embedder",
                 embedder, "-k", "3", *extra], capsys)


def _tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> content hash (or link target) of everything under ``folder``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# -- damage to the index: reported in one line, rebuilt by 'index' ---------------------------------

def _truncate_vectors(emb, outside):
    f = next(_segment(emb).rglob("chunk_0.mmap"))
    with open(f, "r+b") as fh:
        fh.truncate(100)
    return f.parent


def _random_payload_pages(emb, outside):
    f = _segment(emb) / "payload_storage" / "page_0.dat"
    f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size))
    return index_root(emb) / "audio-stats"


def _shard_link_elsewhere(emb, outside):
    link = index_root(emb) / "audio-stats" / "shard"
    link.unlink()
    os.symlink(outside, link)
    return link


DAMAGE = {"truncated vector file": _truncate_vectors,
          "random payload pages": _random_payload_pages,
          "shard link pointed elsewhere": _shard_link_elsewhere}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_index_is_one_line_then_rebuilt(corpus, tmp_path, capsys, damage):
    root, emb = corpus
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the index's")
    named = DAMAGE[damage](emb, outside)
    status, err, _ = _recommend(root, emb, capsys)
    assert status == 2 and len(err) == 1, err
    assert str(named) in err[0] and "main.py index --emb-dir" in err[0]
    status, err, _ = _run(["index", "--emb-dir", str(emb)], capsys)
    assert status == 0
    assert any("index audio-stats: 10 items (+10 -0, rebuilt" in line for line in err), err
    folder = index_root(emb) / "audio-stats"
    shard = open_shard(shard_path(folder))
    try:
        assert len(check_shard(shard, folder, read_index_meta(folder)["dim"])) == 10
    finally:
        shard.close()
    status, err, out = _recommend(root, emb, capsys)
    assert status == 0 and len(out.strip().splitlines()) == 4  # a header and 3 results
    assert _tree_digest(outside) == {"keep.txt": hashlib.sha256(b"not the index's").hexdigest()}


def test_truncated_alignment_is_one_line_then_rewritten(corpus, capsys):
    root, emb = corpus
    path = index_root(emb) / "audio-stats__to__midi-stats" / "alignment.npz"
    with open(path, "r+b") as fh:
        fh.truncate(300)
    status, err, _ = _recommend(root, emb, capsys, "--cross-modal")
    assert status == 2 and len(err) == 1 and str(path) in err[0] and "main.py index" in err[0]
    assert _run(["index", "--emb-dir", str(emb)], capsys)[0] == 0
    status, _, out = _recommend(root, emb, capsys, "--cross-modal")
    assert status == 0 and out.count(".mid") == 3


# -- damage to the export: one line naming the file; the other embedders are still indexed ---------

def _garble_paths(emb):
    f = _export_file(emb, "paths.npy")
    f.write_bytes(np.random.default_rng(1).bytes(200))
    return f


def _cut_meta(emb):
    f = _export_file(emb, "meta.json")
    f.write_text('{"format": 2, "n_items"')
    return f


def _short_clip(emb):
    f = _export_file(emb, "clip.npy")
    np.save(f, np.load(f)[:-2])
    return f


def _meta_of_another_shape(emb):
    f = _export_file(emb, "meta.json")
    f.write_text("[1, 2, 3]")
    return f


EXPORT_DAMAGE = {"paths.npy random bytes": _garble_paths, "meta.json cut short": _cut_meta,
                 "clip.npy two rows short": _short_clip, "meta.json a list": _meta_of_another_shape}


@pytest.mark.parametrize("damage", list(EXPORT_DAMAGE))
def test_damaged_export_is_one_line_in_recommend_and_index(corpus, capsys, damage):
    root, emb = corpus
    named = EXPORT_DAMAGE[damage](emb)
    index_before = _tree_digest(index_root(emb) / "audio-stats")
    # every query reads the export (to find a collection item's own vector)
    status, err, _ = _recommend(root, emb, capsys)
    assert status == 2 and len(err) == 1, err
    assert str(named) in err[0] and "--embedders audio-stats" in err[0]
    status, err, _ = _run(["index", "--emb-dir", str(emb)], capsys)
    assert status == 2
    errors = [line for line in err if line.startswith("main.py: error:")]
    assert len(errors) == 1 and str(named) in errors[0]
    assert any(line.startswith("index midi-stats: 10 items") for line in err)  # the rest goes on
    assert _tree_digest(index_root(emb) / "audio-stats") == index_before


# -- queries never change the index; odd query files and sizes -------------------------------------

def test_a_query_changes_no_byte_of_the_index(corpus, capsys):
    root, emb = corpus
    before = _tree_digest(index_root(emb))
    assert _recommend(root, emb, capsys)[0] == 0
    assert _recommend(root, emb, capsys, "--cross-modal", "--label", "rock")[0] == 0
    assert _recommend(root, emb, capsys, "--hubness-reduction", "mp")[0] == 0
    assert _tree_digest(index_root(emb)) == before


def test_a_fifo_or_a_folder_as_query_is_refused_without_reading(corpus, tmp_path):
    root, emb = corpus
    fifo = tmp_path / "query.wav"
    os.mkfifo(fifo)
    for query in (fifo, tmp_path, Path("/dev/zero")):
        proc = subprocess.run([sys.executable, "main.py", "recommend", str(query), "--emb-dir",
                               str(emb), "--embedder", "audio-stats"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1 and "not a regular file" in err[0], err


def test_k_is_range_checked_and_capped_at_the_index_size(corpus, capsys):
    root, emb = corpus
    status, err, _ = _run(["recommend", str(_query(root)), "--emb-dir", str(emb), "--embedder",
                           "audio-stats", "-k", str(10 ** 30)], capsys)
    assert status == 2 and len(err) == 1 and "-k must be between 1 and" in err[0]
    status, _, out = _run(["recommend", str(_query(root)), "--emb-dir", str(emb),
                           "--embedder", "audio-stats", "-k", "5000", "--json"], capsys)
    assert status == 0
    import json
    assert len(json.loads(out)) == 9  # ten items less the query itself


def test_links_planted_for_the_index_bookkeeping_are_not_followed(corpus, tmp_path, capsys):
    root, emb = corpus
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = index_root(emb) / "audio-stats"
    (folder / ".lock").unlink()
    os.symlink(outside / "created-by-the-lock", folder / ".lock")
    (outside / "log").write_text("mine")
    os.symlink(outside / "log", folder / "hnsw.log")
    os.symlink(outside, folder / ".shard-9")  # a stale-looking shard: never removed through
    (folder / "index.json").unlink()  # a rebuild: stale shards removed, graph built aside
    assert _run(["index", "--emb-dir", str(emb), "--embedders", "audio-stats", "--hnsw",
                 "background"], capsys)[0] == 0
    assert wait_for_hnsw(folder, timeout_s=120)
    assert sorted(p.name for p in outside.iterdir()) == ["log"]
    assert (outside / "log").read_text() == "mine"
    assert not (folder / ".lock").is_symlink()


def test_an_empty_export_is_skipped_not_a_failure(tmp_path, capsys):
    from collection.export import export_dir, write_export

    emb = tmp_path / "emb"
    write_export(export_dir(emb, "audio-stats"), ids=[], labels=[], paths=[], pair_ids=[],
                 content_hashes=[], embeddings=[],
                 meta={"embedder": "audio-stats", "modality": "audio", "version": "1"})
    status, err, _ = _run(["index", "--emb-dir", str(emb)], capsys)
    assert status == 2 and "no export to index" in err[-1]
    assert any("holds no item" in line for line in err)


def test_index_that_fails_its_check_after_writing_is_not_declared_ready(corpus, capsys,
                                                                         monkeypatch):
    import search.index as si

    root, emb = corpus
    folder = index_root(emb) / "audio-stats"
    (folder / "index.json").unlink()  # forces a rebuild: points are written, then checked
    real_check = si.check_shard

    def lost_on_disk(shard, at, dim):  # as if the disk dropped what was just written
        if at == folder:
            raise si.DamagedIndexError(f"{at}: the index is damaged (vector 0 is not readable)")
        return real_check(shard, at, dim)

    monkeypatch.setattr(si, "check_shard", lost_on_disk)
    status, err, _ = _run(["index", "--emb-dir", str(emb), "--embedders", "audio-stats"], capsys)
    assert status == 1 and len(err) == 1 and str(folder) in err[0]
    assert read_index_meta(folder)["state"] == "building"  # queries refuse it, 'index' resumes
    monkeypatch.undo()
    status, err, _ = _recommend(root, emb, capsys)
    assert status == 2 and "no finished index" in err[0]


def test_an_index_folder_that_is_a_link_is_refused_not_followed(corpus, tmp_path, capsys):
    """index/<name> planted as a link (here to a copy of the real index): queries and `index`
    refuse it in one line naming the link, and nothing is read or written through it."""
    root, emb = corpus
    folder = index_root(emb) / "audio-stats"
    elsewhere = tmp_path / "elsewhere"
    shutil.move(folder, elsewhere)
    os.symlink(elsewhere, folder)
    before = _tree_digest(elsewhere)
    status, err, _ = _recommend(root, emb, capsys)
    assert status == 2 and len(err) == 1 and f"{folder}: is a symbolic link" in err[0], err
    assert "python main.py index" in err[0]
    status, err, _ = _run(["index", "--emb-dir", str(emb), "--embedders", "audio-stats"], capsys)
    assert status == 2 and any(f"{folder}: is a symbolic link" in e for e in err), err
    assert _tree_digest(elsewhere) == before
    # the link removed, `index` rebuilds a real folder and queries answer again
    folder.unlink()
    assert _run(["index", "--emb-dir", str(emb), "--embedders", "audio-stats"], capsys)[0] == 0
    assert not folder.is_symlink() and _recommend(root, emb, capsys)[0] == 0
