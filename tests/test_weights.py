"""The weight-file fingerprint shared by the model embedders (their identity in cache keys)."""
import hashlib
import json
import os

from embedders.lib import weights as wts


def test_fingerprint_names_size_and_hash_and_is_remembered(tmp_path, monkeypatch):
    path = tmp_path / "model.bin"
    path.write_bytes(b"weights" * 1000)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert wts.weights_fingerprint(path) == f"model.bin:7000:{sha[:16]}"
    memo = json.loads((wts.cache_dir() / wts.FINGERPRINT_MEMO).read_text())
    assert list(memo.values()) == [sha]

    # a repeat reads nothing: neither in this process nor, via the memo file, in a new one
    def no_reads(*args, **kwargs):
        raise AssertionError("the file was hashed again")
    monkeypatch.setattr(wts, "sha256_file", no_reads)
    assert wts.weights_fingerprint(path) == f"model.bin:7000:{sha[:16]}"
    monkeypatch.setattr(wts, "_digests", {})
    assert wts.weights_fingerprint(str(path)) == f"model.bin:7000:{sha[:16]}"

    # a link keeps its own name; the hash is the target's
    link = tmp_path / "official_name.h5"
    os.symlink(path, link)
    assert wts.weights_fingerprint(link) == f"official_name.h5:7000:{sha[:16]}"


def test_a_changed_file_is_hashed_again(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"a" * 10)
    first = wts.weights_fingerprint(path)
    path.write_bytes(b"b" * 11)
    second = wts.weights_fingerprint(path)
    assert first != second
    assert second == f"w.pth:11:{hashlib.sha256(b'b' * 11).hexdigest()[:16]}"


def test_an_unwritable_cache_only_costs_a_rehash(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv(wts.CACHE_ENV, str(blocker))
    path = tmp_path / "w.bin"
    path.write_bytes(b"c")
    assert wts.weights_fingerprint(path).startswith("w.bin:1:")
