"""Embedding a dataset through the store: caching, invalidation, resume after a kill."""
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import toy_embedders
from conftest import ROOT, write_midi, write_wav
from embedders import get_embedder
from collection.pipeline import embed_dataset
from collection.export import export_dir, load_export, read_export
from collection.pipeline import EmbedderRun, embed_items
from collection.scan import hash_items, scan_dataset
from collection.store import EmbeddingStore
from embedders import Embedding


def _data(root, n=3):
    for genre in ("rock", "jazz"):
        for i in range(n):
            write_wav(root / genre / f"p{i}.wav", freq=200 + 50 * i + (genre == "jazz") * 13)
            write_midi(root / genre / f"p{i}.mid", pitches=(60 + i, 64, 67 + (genre == "jazz")))
    return root


def _run(tmp_path, data, **opts):
    embs = [get_embedder("toy-audio", **opts), get_embedder("toy-midi", **opts)]
    return embed_dataset(data, embs, emb_dir=tmp_path / "emb", out_dir=tmp_path / "out",
                         progress=False)


def test_first_run_computes_second_run_reuses(tmp_path):
    data = _data(tmp_path / "data")
    first = _run(tmp_path, data)
    assert {n: r.n_computed for n, r in first.runs.items()} == {"toy-audio": 6, "toy-midi": 6}
    second = _run(tmp_path, data)
    assert {n: (r.n_computed, r.n_cached) for n, r in second.runs.items()} == \
        {"toy-audio": (0, 6), "toy-midi": (0, 6)}
    for name in first.runs:
        np.testing.assert_array_equal(first.sets[name].vectors, second.sets[name].vectors)
    s = first.sets["toy-midi"]
    assert s.labels.tolist().count("rock") == 3
    assert all(p for p in s.pair_ids)  # every MIDI has its audio twin
    # the clip vector is the known function of the file bytes
    idx = s.ids.tolist().index("rock/p0.mid")
    expected = toy_embedders.byte_histogram(str(data / "rock" / "p0.mid")) * 1.5
    np.testing.assert_allclose(s.vectors[idx], expected, rtol=1e-6)


def test_changed_file_or_option_recomputes_only_what_changed(tmp_path):
    data = _data(tmp_path / "data")
    _run(tmp_path, data)
    write_midi(data / "jazz" / "p1.mid", pitches=(40, 41, 42, 43))
    os.rename(data / "rock" / "p0.wav", data / "rock" / "renamed.wav")  # same bytes, new path
    again = _run(tmp_path, data)
    assert again.runs["toy-midi"].n_computed == 1 and again.runs["toy-midi"].n_cached == 5
    assert again.runs["toy-audio"].n_computed == 0
    other = _run(tmp_path, data, bins=4)
    assert all(r.n_computed == 6 for r in other.runs.values())
    assert other.sets["toy-audio"].dim == 4


def test_counts_always_add_up_and_bad_files_are_listed(tmp_path):
    data = _data(tmp_path / "data", n=2)
    (data / "rock" / "broken.mid").write_bytes(b"BAD!")
    (data / "rock" / "empty.wav").write_bytes(b"")
    (data / "rock" / "cover.jpg").write_bytes(b"\xff\xd8")
    res = _run(tmp_path, data)
    for run in res.runs.values():
        assert run.n_found == run.n_embedded + len(run.skipped)
    rows = (tmp_path / "out" / "manifest.csv").read_text().splitlines()
    joined = "\n".join(rows)
    assert "rock/broken.mid" in joined and "marked bad for the test" in joined
    assert "rock/empty.wav" in joined and "file is empty" in joined
    assert "rock/cover.jpg" in joined and "unsupported file type" in joined
    # every file appears at least once in the manifest
    assert {r.split(",")[0] for r in rows[1:]} == {it.id for it in res.scan.items}


def test_export_matches_run_and_is_numpy_readable(tmp_path):
    data = _data(tmp_path / "data", n=2)
    res = _run(tmp_path, data)
    assert res.runs["toy-audio"].export_path == str(export_dir(tmp_path / "emb", "toy-audio"))
    exported = load_export(res.runs["toy-audio"].export_path)
    np.testing.assert_array_equal(exported.vectors, res.sets["toy-audio"].vectors)
    assert exported.ids.tolist() == res.sets["toy-audio"].ids.tolist()
    # the frames streamed into the export are those the embedder computes
    frames = np.load(export_dir(tmp_path / "emb", "toy-midi") / "frames.npy", mmap_mode="r")
    offsets = np.load(export_dir(tmp_path / "emb", "toy-midi") / "frame_offsets.npy")
    emb = get_embedder("toy-midi")
    for i, path in enumerate(np.load(export_dir(tmp_path / "emb", "toy-midi") / "paths.npy")):
        np.testing.assert_array_equal(frames[offsets[i]:offsets[i + 1]], emb.compute(path).frames)


def _arrays_and_objects(obj, seen=None):
    """Every ndarray and object reachable from ``obj`` through attributes and containers."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return
    seen.add(id(obj))
    yield obj
    if isinstance(obj, np.ndarray):
        return
    if isinstance(obj, dict):
        children = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set)):
        children = list(obj)
    else:
        children = list(getattr(obj, "__dict__", {}).values())
    for child in children:
        yield from _arrays_and_objects(child, seen)


def test_a_run_keeps_no_frames_in_memory(tmp_path):
    """Memory does not grow with frames: a run holds clip vectors and counts, never frames."""
    data = _data(tmp_path / "data", n=4)
    res = _run(tmp_path, data)
    again = _run(tmp_path, data)  # the cached path too
    for result in (res, again):
        for run in result.runs.values():
            assert isinstance(run, EmbedderRun) and run.n_embedded == 8
            found = list(_arrays_and_objects(run))
            assert not any(isinstance(o, Embedding) for o in found)
            arrays = [o for o in found if isinstance(o, np.ndarray)]
            assert len(arrays) == 8 and all(a.ndim == 1 for a in arrays)  # one clip per item
            assert sum(e.n_frames for e in run.entries) == 16


def test_cached_entries_frames_are_not_read_until_the_export(tmp_path, monkeypatch):
    data = _data(tmp_path / "data", n=2)
    _run(tmp_path, data)
    scan = scan_dataset(data)
    hash_items(scan.items, progress=False)
    store = EmbeddingStore(tmp_path / "emb")
    monkeypatch.setattr(EmbeddingStore, "get", lambda *a, **k: pytest.fail("frames loaded"))
    monkeypatch.setattr(EmbeddingStore, "iter_frames", lambda *a, **k: pytest.fail("frames read"))
    run = embed_items(scan.usable, get_embedder("toy-audio"), store, progress=False)
    assert run.n_cached == 4 and run.n_computed == 0


def test_entry_damaged_inside_its_frames_is_recomputed_at_export(tmp_path):
    data = _data(tmp_path / "data", n=2)
    first = _run(tmp_path, data)
    entry = next(e for e in first.runs["toy-audio"].entries if e.item.id == "rock/p1.wav")
    path = EmbeddingStore(tmp_path / "emb").entry_path("toy-audio", entry.key)
    with np.load(path) as npz:
        stored = {k: npz[k] for k in npz.files}
    stored["frames"] = stored["frames"].copy()
    stored["frames"][1, 0] = np.inf  # passes the cheap check (clip, shapes), not the stream
    np.savez(path, **stored)
    again = _run(tmp_path, data)
    run = again.runs["toy-audio"]
    assert [p for p, _ in again.damaged_cache_entries] == [str(path)]
    assert (run.n_computed, run.n_cached) == (1, 3) and path.is_file()
    exp = read_export(run.export_path)
    i = exp.ids.tolist().index("rock/p1.wav")
    assert np.isfinite(exp.frames).all()
    np.testing.assert_array_equal(exp.item_frames(i),
                                  get_embedder("toy-audio").compute(entry.item.path).frames)
    rows = (tmp_path / "out" / "manifest.csv").read_text()
    assert "rock/p1.wav,rock,audio" in rows


def test_worker_processes_give_the_same_vectors(tmp_path):
    data = _data(tmp_path / "data")
    serial = _run(tmp_path / "a", data)
    embs = [get_embedder("toy-audio"), get_embedder("toy-midi")]
    pooled = embed_dataset(data, embs, emb_dir=tmp_path / "b" / "emb", out_dir=tmp_path / "b",
                           workers=2, progress=False)
    for name in serial.runs:
        np.testing.assert_array_equal(serial.sets[name].vectors, pooled.sets[name].vectors)


def test_file_changing_during_embedding_is_not_cached(tmp_path, monkeypatch):
    data = _data(tmp_path / "data", n=1)
    emb = get_embedder("toy-midi")
    real = type(emb)._embed_file

    def touch_then_embed(self, path):
        out = real(self, path)
        if path.endswith("rock/p0.mid"):
            with open(path, "ab") as fh:
                fh.write(b"\0")
        return out

    monkeypatch.setattr(type(emb), "_embed_file", touch_then_embed)
    res = embed_dataset(data, [emb], emb_dir=tmp_path / "emb", out_dir=tmp_path / "out",
                        progress=False)
    reasons = {it.id: r for it, r in res.runs["toy-midi"].skipped}
    assert "changed while it was being embedded" in reasons["rock/p0.mid"]


KILL_SCRIPT = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
import toy_embedders, main
if __name__ == "__main__":  # a spawned child imports this file again
    sys.exit(main.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_run_resumes_and_matches_uninterrupted(tmp_path, sig):
    data = _data(tmp_path / "data", n=6)  # 24 files
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests")))
    emb_dir = tmp_path / "emb"
    argv = [sys.executable, str(script), "--dataset", str(data), "--embedders", "toy-audio",
            "toy-midi", "--emb-dir", str(emb_dir), "--out", str(tmp_path / "out"),
            "--no-analysis", "--quiet"]
    env = {**os.environ, toy_embedders.SLOW_ENV: "0.15"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until some, not all, entries are written
        done = list((emb_dir / "cache").rglob("*.npz")) if (emb_dir / "cache").exists() else []
        if len(done) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig != signal.SIGKILL:
        assert proc.returncode == 130 and b"run the same command again" in err
    n_done = len(list((emb_dir / "cache").rglob("*.npz")))
    assert 5 <= n_done < 24
    resumed = subprocess.run(argv, env={**os.environ}, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    reference = _run(tmp_path / "ref", data)
    for name in ("toy-audio", "toy-midi"):
        got = load_export(export_dir(emb_dir, name))
        want = reference.sets[name]
        assert got.ids.tolist() == want.ids.tolist(), resumed.stdout
        np.testing.assert_array_equal(got.vectors, want.vectors)
    lines = resumed.stdout.splitlines()
    row = next(line for line in lines if line.startswith("toy-audio"))
    computed, cached = int(row.split()[3]), int(row.split()[4])
    assert computed + cached == 12 and cached >= 1


def test_embedder_notes_reach_the_manifest_and_summary_also_when_cached(tmp_path):
    """A file CLaMP 2 embeds with a note (SMPTE division) says so in its manifest row and in
    the run summary, on the first run and on a fully cached re-run."""
    import csv
    import shutil

    fixtures = Path(__file__).parent / "fixtures" / "clamp2"
    data = tmp_path / "data" / "classical"
    data.mkdir(parents=True)
    shutil.copy(fixtures / "midi_edge" / "smpte_25fps_type1.mid", data / "smpte.mid")
    shutil.copy(fixtures / "midi" / "scale.mid", data / "scale.mid")
    for attempt in range(2):
        emb = get_embedder("clamp2", weights=str(fixtures / "tiny_clamp2.pth"), device="cpu")
        result = embed_dataset(tmp_path / "data", [emb], emb_dir=tmp_path / "emb",
                               out_dir=tmp_path / "out", progress=False)
        assert result.runs["clamp2"].n_cached == (0 if attempt == 0 else 2)
        with open(result.manifest_path, newline="") as fh:
            rows = {r["path"]: r for r in csv.DictReader(fh)}
        assert rows["classical/smpte.mid"]["note"].startswith("SMPTE time division")
        assert rows["classical/scale.mid"]["note"] == ""
        counts = result.summary()["note_counts"]["clamp2"]
        assert sum(counts.values()) == 1 and next(iter(counts)).startswith("SMPTE")
