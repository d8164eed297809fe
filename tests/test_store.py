"""The embedding store: content-addressed keys, atomic writes, damaged entries."""
import errno
import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

from embedders import Embedding
from collection.store import (DamagedEntryError, EmbeddingStore, StoreError, atomic_save_npz,
                              cache_key)


def _emb(seed=0, n=3, dim=4):
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n, dim)).astype(np.float32)
    return Embedding(frames=f, clip=f.mean(0), timestamps=np.arange(n) * 0.5, info={"k": 1})


def test_key_depends_on_name_version_options_content_only():
    base = cache_key("e", "1", {"a": 1, "b": 2}, "h")
    assert base == cache_key("e", "1", {"b": 2, "a": 1}, "h")  # option order irrelevant
    assert len({base, cache_key("f", "1", {"a": 1, "b": 2}, "h"),
                cache_key("e", "2", {"a": 1, "b": 2}, "h"),
                cache_key("e", "1", {"a": 1, "b": 3}, "h"),
                cache_key("e", "1", {"a": 1, "b": 2}, "h2")}) == 5


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.floats(allow_nan=False),
                                                      st.text(max_size=5), st.booleans()),
                       max_size=5),
       st.text(min_size=1, max_size=10))
def test_key_is_deterministic_and_order_free(options, content):
    reordered = dict(reversed(list(options.items())))
    k = cache_key("e", "1", options, content)
    assert k == cache_key("e", "1", reordered, content)
    assert len(k) == 64 and k != cache_key("e", "1", options, content + "x")


def test_round_trip(tmp_path):
    store = EmbeddingStore(tmp_path)
    emb = _emb()
    path = store.put("toy", "ab" * 32, emb, meta={"embedder": "toy"})
    assert path.parent.name == "ab" and path.parent.parent.name == "toy"
    got = store.get("toy", "ab" * 32)
    np.testing.assert_array_equal(got.frames, emb.frames)
    np.testing.assert_array_equal(got.clip, emb.clip)
    np.testing.assert_array_equal(got.timestamps, emb.timestamps)
    assert got.info == {"k": 1}
    # numpy alone reads it, no pickle
    with np.load(path, allow_pickle=False) as npz:
        assert json.loads(str(npz["meta"][()]))["key"] == "ab" * 32
    assert store.get("toy", "cd" * 32) is None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_key", "nan"])
def test_damaged_entry_is_reported_removed_and_not_trusted(tmp_path, damage):
    store = EmbeddingStore(tmp_path)
    key = "ef" * 32
    path = store.put("toy", key, _emb(), meta={})
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\0" * 100)
    elif damage == "wrong_key":
        other = store.put("toy", "00" * 32, _emb(), meta={})
        path.write_bytes(other.read_bytes())
    else:
        bad = _emb()
        bad.frames[0, 0] = np.nan
        atomic_save_npz(path, frames=bad.frames, clip=bad.clip, timestamps=bad.timestamps,
                        meta=np.array(json.dumps({"key": key})))
    assert store.get("toy", key) is None
    assert not path.exists()
    assert store.damaged and str(path) == store.damaged[0][0]


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    store = EmbeddingStore(tmp_path)

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(StoreError, match="disk is full"):
        store.put("toy", "12" * 32, _emb(), meta={})
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []


def test_peek_reads_clip_and_count_and_iter_frames_streams_blocks(tmp_path):
    store = EmbeddingStore(tmp_path)
    emb = _emb(n=7, dim=5)
    store.put("toy", "ab" * 32, emb, meta={})
    summary = store.peek("toy", "ab" * 32)
    np.testing.assert_array_equal(summary.clip, emb.clip)
    assert summary.n_frames == 7
    blocks = list(store.iter_frames("toy", "ab" * 32, block_bytes=3 * 5 * 4))  # 3 rows a block
    assert [b.shape for b, _ in blocks] == [(3, 5), (3, 5), (1, 5)]
    np.testing.assert_array_equal(np.concatenate([b for b, _ in blocks]), emb.frames)
    np.testing.assert_array_equal(np.concatenate([t for _, t in blocks]), emb.timestamps)
    assert store.peek("toy", "cd" * 32) is None and not store.damaged


def test_damage_inside_frames_passes_peek_and_is_caught_while_streaming(tmp_path):
    """peek() does not read frames; iter_frames() checks them (CRC, values), removes the entry."""
    store = EmbeddingStore(tmp_path)
    key = "9a" * 32
    emb = _emb(n=2000, dim=8)  # 64 kB: larger than what reading the header pulls in
    path = store.put("toy", key, emb, meta={})
    data = bytearray(path.read_bytes())
    pos = data.index(emb.frames[1000].tobytes())  # flip one byte in the middle of the frames
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))
    assert store.peek("toy", key).n_frames == 2000 and not store.damaged
    with pytest.raises(DamagedEntryError, match="CRC|non-finite"):
        for _ in store.iter_frames("toy", key, block_bytes=64):
            pass
    assert not path.exists() and store.damaged[0][0] == str(path)


def test_peek_rejects_frames_that_disagree_with_the_clip(tmp_path):
    store = EmbeddingStore(tmp_path)
    key = "5e" * 32
    path = store.put("toy", key, _emb(), meta={})
    atomic_save_npz(path, frames=np.zeros((3, 5), np.float32), clip=np.zeros(4, np.float32),
                    timestamps=np.zeros(0), meta=np.array(json.dumps({"key": key})))
    assert store.peek("toy", key) is None and not path.exists()


def test_stale_temp_files_are_cleaned(tmp_path):
    store = EmbeddingStore(tmp_path)
    store.put("toy", "34" * 32, _emb(), meta={})
    tmp = store.entry_path("toy", "34" * 32).parent / ".x.tmp"
    tmp.write_bytes(b"half")
    assert store.clean_stale_temp(older_than_s=3600) == 0  # might belong to a live run
    assert store.clean_stale_temp(older_than_s=-1) == 1 and not tmp.exists()
