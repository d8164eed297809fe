"""Scanning a folder tree: labels, modalities, pairs, skipped files, hashes."""
import os

import pytest

from conftest import write_midi, write_wav
from collection.scan import HashIndex, hash_items, modality_of, scan_dataset


def _tree(root):
    write_wav(root / "rock" / "a.wav")
    write_midi(root / "rock" / "a.mid")
    write_wav(root / "rock" / "live" / "b.flac", seconds=0.2)
    write_midi(root / "jazz" / "c.midi")
    (root / "jazz" / "notes.txt").write_text("liner notes")
    (root / "jazz" / ".hidden.wav").write_bytes(b"xx")
    (root / ".git").mkdir()
    (root / ".git" / "x.wav").write_bytes(b"xx")
    (root / "empty_genre").mkdir()
    (root / "stray.wav").write_bytes(b"RIFF")
    return root


def test_labels_modalities_and_pairs(tmp_path):
    scan = scan_dataset(_tree(tmp_path))
    by_id = {it.id: it for it in scan.items}
    assert set(by_id) == {"rock/a.wav", "rock/a.mid", "rock/live/b.flac", "jazz/c.midi",
                          "jazz/notes.txt", "stray.wav"}
    assert by_id["rock/live/b.flac"].label == "rock"
    assert by_id["rock/a.wav"].modality == "audio" and by_id["rock/a.mid"].modality == "symbolic"
    assert by_id["rock/a.wav"].pair_id == by_id["rock/a.mid"].pair_id == "rock/a"
    assert by_id["jazz/c.midi"].pair_id == "" and by_id["rock/live/b.flac"].pair_id == ""
    assert "unsupported file type '.txt'" in by_id["jazz/notes.txt"].skip_reason
    assert "no class folder" in by_id["stray.wav"].skip_reason
    assert scan.classes == ["jazz", "rock"]
    assert scan.empty_classes == ["empty_genre"]
    assert any("empty_genre" in w for w in scan.warnings)
    summary = scan.summary()
    assert summary["n_pairs"] == 1
    assert summary["counts"]["rock"] == {"audio": 2, "symbolic": 1}
    assert summary["n_files"] == len(scan.items) == summary["n_usable"] + len(summary["unusable"])


def test_ambiguous_stems_are_not_paired(tmp_path):
    write_wav(tmp_path / "pop" / "x.wav")
    write_wav(tmp_path / "pop" / "x.flac")
    write_midi(tmp_path / "pop" / "x.mid")
    scan = scan_dataset(tmp_path)
    assert all(it.pair_id == "" for it in scan.items)
    assert any("not paired" in w for w in scan.warnings)


def test_pairs_need_the_same_folder(tmp_path):
    write_wav(tmp_path / "pop" / "a" / "x.wav")
    write_midi(tmp_path / "pop" / "b" / "x.mid")
    assert all(it.pair_id == "" for it in scan_dataset(tmp_path).items)


def test_symlink_loop_and_folder_named_like_a_file(tmp_path):
    write_midi(tmp_path / "folk" / "x.wav" / "inside.mid")  # a folder called x.wav
    os.symlink(tmp_path / "folk", tmp_path / "folk" / "loop")
    scan = scan_dataset(tmp_path)
    assert [it.id for it in scan.items] == ["folk/x.wav/inside.mid"]
    assert any("symlink loop" in w for w in scan.warnings)


def test_non_ascii_and_spaces(tmp_path):
    write_midi(tmp_path / "música antigua" / "canción nº 1.mid")
    scan = scan_dataset(tmp_path)
    assert scan.items[0].label == "música antigua" and not scan.items[0].skip_reason


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_dataset(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        scan_dataset(tmp_path / "f")


def test_content_hash_ignores_path_and_uses_index(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_midi(data / "a" / "one.mid")
    write_midi(data / "b" / "two.mid")  # same bytes, other name and class
    scan = scan_dataset(data)
    index = HashIndex(tmp_path / "idx.json")
    hash_items(scan.items, index=index)
    h = [it.content_hash for it in scan.items]
    assert h[0] == h[1] and len(h[0]) == 64
    index.save()
    # A fresh index reads the saved one: no file is re-read (reading would fail here).
    import collection.scan as ds

    def no_reads(path, chunk_size=0):
        raise AssertionError("file was re-read")

    monkeypatch.setattr(ds, "sha256_file", no_reads)
    scan2 = scan_dataset(data)
    hash_items(scan2.items, index=HashIndex(tmp_path / "idx.json"))
    assert [it.content_hash for it in scan2.items] == h
    # A changed file is hashed again (size/mtime differ).
    monkeypatch.undo()
    (data / "a" / "one.mid").write_bytes(b"MThd changed")
    scan3 = scan_dataset(data)
    hash_items(scan3.items, index=HashIndex(tmp_path / "idx.json"))
    assert scan3.items[0].content_hash != h[0] and scan3.items[1].content_hash == h[0]


def test_unreadable_file_is_skipped_with_reason(tmp_path, monkeypatch):
    import builtins
    write_midi(tmp_path / "a" / "locked.mid")
    write_midi(tmp_path / "a" / "fine.mid")
    real_open = builtins.open

    def guarded_open(path, *args, **kwargs):  # chmod 0 does not stop root, so fake EACCES
        if str(path).endswith("locked.mid"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    scan = scan_dataset(tmp_path)
    hash_items(scan.items)
    by_id = {it.id: it for it in scan.items}
    assert by_id["a/locked.mid"].skip_reason == "cannot read file (Permission denied)"
    assert by_id["a/fine.mid"].content_hash and not by_id["a/fine.mid"].skip_reason


def test_modality_of():
    assert modality_of("x.WAV") == "audio" and modality_of("x.Mid") == "symbolic"
    assert modality_of("x.mtf") == "symbolic" and modality_of("x.pdf") == ""
