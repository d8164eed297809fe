"""The export folder: layout, numpy-only reading, old .npz exports, atomic swap under kills."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import ROOT
from embedders import Embedding
from collection import export as export_mod
from collection.export import (ExportWriter, clean_stale_exports, export_dir, load_export,
                               read_export, write_export)
from collection.store import StoreError, atomic_save_npz

META = {"embedder": "toy", "modality": "audio", "version": "1", "options": {"o": 1}}


def _embs(seed=0, sizes=(2, 3), dim=4, timestamps=True):
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(sizes):
        f = rng.standard_normal((n, dim)).astype(np.float32)
        ts = np.arange(n) * 0.5 if timestamps and i % 2 == 0 else None
        out.append(Embedding(frames=f, clip=f.mean(0) if n else np.zeros(dim), timestamps=ts))
    return out


def _write(dest, embs, tag="run"):
    n = len(embs)
    return write_export(dest, ids=[f"g/{tag}{i}.wav" for i in range(n)], labels=["g"] * n,
                        paths=[f"/d/g/{tag}{i}.wav" for i in range(n)],
                        pair_ids=[f"g/{tag}{i}" if i == 0 else "" for i in range(n)],
                        content_hashes=[f"h{i}" for i in range(n)], embeddings=embs,
                        meta={**META, "tag": tag})


def test_round_trip_layout_and_numpy_alone(tmp_path):
    embs = _embs(sizes=(2, 3, 0, 4))  # an item may have no frames
    dest = export_dir(tmp_path, "toy")
    assert dest == tmp_path / "export" / "toy"
    assert _write(dest, embs) == dest
    names = {p.name for p in dest.iterdir()}
    assert names == {"meta.json", "clip.npy", "frames.npy", "frame_offsets.npy", "timestamps.npy",
                     "ids.npy", "labels.npy", "paths.npy", "pair_ids.npy", "content_hashes.npy"}
    # numpy alone, no pickle; frames memory-mapped
    frames = np.load(dest / "frames.npy", mmap_mode="r", allow_pickle=False)
    off = np.load(dest / "frame_offsets.npy")
    ts = np.load(dest / "timestamps.npy", mmap_mode="r")
    assert isinstance(frames, np.memmap) and frames.dtype == np.float32
    assert off.tolist() == [0, 2, 5, 5, 9] and frames.shape == (9, 4) and ts.shape == (9,)
    for i, emb in enumerate(embs):
        np.testing.assert_array_equal(frames[off[i]:off[i + 1]], emb.frames)
    np.testing.assert_array_equal(ts[0:2], [0.0, 0.5])
    assert np.isnan(ts[2:5]).all()  # item 1 has no timestamps
    np.testing.assert_array_equal(np.load(dest / "clip.npy"), np.stack([e.clip for e in embs]))
    assert np.load(dest / "pair_ids.npy").tolist() == ["g/run0", "", "", ""]
    meta = json.loads((dest / "meta.json").read_text())
    assert (meta["format"], meta["n_items"], meta["n_frames"], meta["dim"]) == (2, 4, 9, 4)
    assert meta["options"] == {"o": 1}
    exp = read_export(dest)
    np.testing.assert_array_equal(exp.item_frames(3), embs[3].frames)
    s = load_export(dest)
    assert s.name == "toy" and s.dim == 4 and s.ids.tolist()[1] == "g/run1.wav"


def test_empty_collection(tmp_path):
    dest = export_dir(tmp_path, "toy")
    _write(dest, [])
    exp = read_export(dest)
    assert exp.clip.shape == (0, 0) and exp.frames.shape == (0, 0)
    assert exp.frame_offsets.tolist() == [0] and exp.timestamps.shape == (0,)
    assert exp.meta["dim"] == 0 and len(load_export(dest)) == 0


def test_old_npz_exports_are_still_read(tmp_path):
    """Format 1: one <embedder>.npz, as written before the export became a folder."""
    path = tmp_path / "toy.npz"
    frames = np.arange(20, dtype=np.float32).reshape(5, 4)
    atomic_save_npz(path, ids=np.array(["a/x.wav", "b/y.wav"]), labels=np.array(["a", "b"]),
                    paths=np.array(["/d/a/x.wav", "/d/b/y.wav"]), pair_ids=np.array(["a/x", ""]),
                    content_hashes=np.array(["h1", "h2"]), clip=frames[:2] + 0.5, frames=frames,
                    frame_offsets=np.array([0, 2, 5]), timestamps=np.full(5, np.nan),
                    meta=np.array(json.dumps({**META, "dataset": "/d"})))
    s = load_export(path)
    assert s.name == "toy" and s.modality == "audio" and s.labels.tolist() == ["a", "b"]
    assert s.pair_ids[0] == "a/x" and s.options == {"o": 1}
    np.testing.assert_array_equal(s.vectors, frames[:2] + 0.5)
    np.testing.assert_array_equal(read_export(path).item_frames(1), frames[2:])


def test_item_whose_blocks_fail_leaves_no_rows(tmp_path):
    def failing_blocks():
        yield np.ones((3, 4), np.float32), None
        raise ValueError("damaged")

    with ExportWriter(export_dir(tmp_path, "toy"), meta=META) as writer:
        writer.add_item(id="a", label="g", path="a", clip=np.zeros(4),
                        frame_blocks=[(np.zeros((2, 4)), None)])
        with pytest.raises(ValueError, match="damaged"):
            writer.add_item(id="b", label="g", path="b", clip=np.ones(4),
                            frame_blocks=failing_blocks())
        writer.add_item(id="c", label="g", path="c", clip=np.full(4, 2.0),
                        frame_blocks=[(np.full((1, 4), 2.0), np.array([3.0]))])
        with pytest.raises(ValueError, match="one export holds one space"):
            writer.add_item(id="d", label="g", path="d", clip=np.zeros(5), frame_blocks=[])
        writer.commit()
    exp = read_export(export_dir(tmp_path, "toy"))
    assert exp.ids.tolist() == ["a", "c"] and exp.frame_offsets.tolist() == [0, 2, 3]
    np.testing.assert_array_equal(exp.frames[2], [2.0] * 4)
    assert exp.timestamps[2] == 3.0


def test_new_export_replaces_old_and_leaves_nothing_behind(tmp_path):
    dest = export_dir(tmp_path, "toy")
    _write(dest, _embs(0), tag="old")
    _write(dest, _embs(1, sizes=(1,)), tag="new")
    assert read_export(dest).meta["tag"] == "new" and len(load_export(dest)) == 1
    assert len(list(dest.parent.iterdir())) == 2  # the link and the one folder it points to


def _tag_of(dest):
    """The run an export comes from, after checking every array belongs to that run."""
    exp = read_export(dest, mmap_mode=None)
    tag = exp.meta["tag"]
    want = {"old": _embs(0), "new": _embs(1, sizes=(3, 1, 2))}[tag]
    assert exp.ids.tolist() == [f"g/{tag}{i}.wav" for i in range(len(want))]
    np.testing.assert_array_equal(exp.frames, np.concatenate([e.frames for e in want]))
    np.testing.assert_array_equal(exp.clip, np.stack([e.clip for e in want]))
    return tag


class _Killed(BaseException):
    """Stands for a kill: nothing after it runs (not even `except Exception` handlers)."""


@pytest.mark.parametrize("no_symlinks", [False, True])
def test_kill_at_any_step_leaves_the_old_or_the_new_export(tmp_path, monkeypatch, no_symlinks):
    """Interrupt the export at every file-system call it makes, in turn."""
    if no_symlinks:
        monkeypatch.setattr(os, "symlink", lambda *a, **k: (_ for _ in ()).throw(OSError(1, "no")))
    calls = ["fsync", "rename", "replace", "symlink"] if not no_symlinks else ["fsync", "rename"]
    real = {name: getattr(os, name) for name in calls}
    seen = {"old": 0, "new": 0}
    for step in range(40):
        dest = export_dir(tmp_path / str(step), "toy")
        _write(dest, _embs(0), tag="old")
        count = {"n": 0}

        def counting(real_fn):
            def call(*a, **k):
                count["n"] += 1
                if count["n"] == step + 1:
                    raise _Killed()
                return real_fn(*a, **k)
            return call

        for name in calls:
            monkeypatch.setattr(os, name, counting(real[name]))
        try:
            _write(dest, _embs(1, sizes=(3, 1, 2)), tag="new")
            finished = True
        except _Killed:
            finished = False
        for name in calls:
            monkeypatch.setattr(os, name, real[name])
        if not finished and not (dest.exists() or dest.is_symlink()):
            # only the no-symlink swap has this window; the next run puts the old one back
            assert no_symlinks
            export_mod._recover_renamed_aside(dest)
        seen[_tag_of(dest)] += 1
        if finished:
            break
    # killed before the swap: the old one; killed after it (cleaning up): the new one
    assert finished and seen["old"] >= 5 and seen["new"] >= 1, seen


def test_readers_never_see_a_mix_while_exports_are_swapped(tmp_path):
    dest = export_dir(tmp_path, "toy")
    _write(dest, _embs(0), tag="old")
    stop = threading.Event()

    def writer():
        k = 0
        while not stop.is_set():
            if k % 2:
                _write(dest, _embs(1, sizes=(3, 1, 2)), tag="new")
            else:
                _write(dest, _embs(0), tag="old")
            k += 1

    thread = threading.Thread(target=writer)
    thread.start()
    tags = set()
    try:
        deadline = time.time() + 2.0
        while time.time() < deadline:
            tags.add(_tag_of(dest))
    finally:
        stop.set()
        thread.join()
    assert tags == {"old", "new"}


def test_failed_export_write_keeps_the_previous_export(tmp_path, monkeypatch):
    dest = export_dir(tmp_path, "toy")
    _write(dest, _embs(0), tag="old")
    import errno

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_mod, "_save_npy", full_disk)
    with pytest.raises(StoreError, match="disk is full"):
        _write(dest, _embs(1, sizes=(3, 1, 2)), tag="new")
    assert _tag_of(dest) == "old"
    assert len(list(dest.parent.iterdir())) == 2  # no temporary folder left


def test_stale_leftovers_are_cleaned_but_not_the_current_export(tmp_path):
    dest = export_dir(tmp_path, "toy")
    _write(dest, _embs(0), tag="old")
    (dest.parent / ".toy.abc.tmp").mkdir()
    os.symlink("nowhere", dest.parent / ".toy.x.link")
    assert clean_stale_exports(dest) == 0  # young: may belong to a live run
    assert clean_stale_exports(dest, older_than_s=-1) == 2
    assert _tag_of(dest) == "old" and len(list(dest.parent.iterdir())) == 2


KILL_WRITER = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
import numpy as np
from collection.export import ExportWriter
dest, k = sys.argv[1], 0
while True:  # alternate two exports whose every array says which run wrote it
    tag = k % 2
    with ExportWriter(dest, meta={{"embedder": "toy", "modality": "audio", "tag": tag}}) as w:
        for i in range(40):
            w.add_item(id=f"{{tag}}-{{i}}", label="g", path="p", clip=np.full(64, tag),
                       frame_blocks=[(np.full((500, 64), tag, np.float32), None)])
        w.commit()
    k += 1
    print(k, flush=True)
"""


def test_real_kill_during_export_leaves_a_whole_export(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(KILL_WRITER.format(root=str(ROOT), tests=str(ROOT / "tests")))
    dest = export_dir(tmp_path / "emb", "toy")
    rng = np.random.default_rng(0)
    for attempt in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(dest)], stdout=subprocess.PIPE)
        assert proc.stdout.readline()  # at least one export finished
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        exp = read_export(dest, mmap_mode=None)
        tag = exp.meta["tag"]
        assert exp.ids.tolist() == [f"{tag}-{i}" for i in range(40)]
        assert (exp.clip == tag).all() and (exp.frames == tag).all()
        assert exp.frames.shape == (40 * 500, 64)
