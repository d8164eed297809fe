"""Issue 4: hostile files end to end, concurrent runs, a full disk, bounded memory."""
import csv
import errno
import os
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

import main
import toy_embedders
from conftest import ROOT, write_midi, write_wav
from embedders import get_embedder
from collection.export import export_dir, load_export
from collection.store import EmbeddingStore


def _manifest(out_dir):
    with open(out_dir / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _hostile_audio(folder):
    """Every awkward audio case of the issue; returns {name: expected 'embedded'|'skipped'}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    expect = {}
    good = write_wav(folder / "good.wav", seconds=1.0)
    data = good.read_bytes()
    (folder / "truncated.wav").write_bytes(data[:len(data) // 2])  # header promises more
    expect["truncated.wav"] = "embedded"  # libsndfile reads the samples that are there
    (folder / "header_only.wav").write_bytes(data[:30])
    expect["header_only.wav"] = "skipped"
    (folder / "random.wav").write_bytes(rng.bytes(5000))
    expect["random.wav"] = "skipped"
    (folder / "zero_length.wav").write_bytes(b"")
    expect["zero_length.wav"] = "skipped"
    sf.write(folder / "no_samples.wav", np.zeros((0, 1)), 22050)
    expect["no_samples.wav"] = "skipped"
    sf.write(folder / "silence.wav", np.zeros(22050), 22050)
    sf.write(folder / "short_0.05s.wav", 0.1 * rng.standard_normal(int(0.05 * 22050)), 22050)
    write_wav(folder / "rate_8k.wav", seconds=0.5, sr=8000)
    write_wav(folder / "rate_192k.wav", seconds=0.5, sr=192000)
    write_wav(folder / "six_channels.wav", seconds=0.5, channels=6)
    for subtype in ("PCM_U8", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        write_wav(folder / f"sub_{subtype}.wav", seconds=0.5, subtype=subtype)
    write_wav(folder / "flac.flac", seconds=0.5)
    for name in ("nan", "inf"):
        sig = np.full(2000, 0.1)
        sig[100] = np.nan if name == "nan" else np.inf
        sf.write(folder / f"{name}.wav", sig, 22050, subtype="FLOAT")
        expect[f"{name}.wav"] = "skipped"
    (folder / "folder.wav").mkdir()  # a folder named like a file: not an item at all
    for p in folder.iterdir():
        if p.is_file():
            expect.setdefault(p.name, "embedded")
    return expect


def _hostile_midi(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    expect = {}
    good = write_midi(folder / "good.mid")
    expect["good.mid"] = "embedded"
    (folder / "random.mid").write_bytes(rng.bytes(400))
    expect["random.mid"] = "skipped"
    (folder / "truncated.mid").write_bytes(good.read_bytes()[:40])
    expect["truncated.mid"] = "skipped"
    end = b"\x00\xff\x2f\x00"
    hdr = lambda kind, div: b"MThd" + struct.pack(">IHHH", 6, kind, 1, div)  # noqa: E731
    track = lambda body: b"MTrk" + struct.pack(">I", len(body)) + body  # noqa: E731
    (folder / "type2.mid").write_bytes(hdr(2, 480) + track(b"\x00\x90\x3c\x40\x60\x80\x3c\x00" + end))
    expect["type2.mid"] = "skipped"
    (folder / "smpte.mid").write_bytes(hdr(0, (256 - 25) << 8 | 40)
                                       + track(b"\x00\x90\x3c\x40\x60\x80\x3c\x00" + end))
    expect["smpte.mid"] = "embedded"
    (folder / "no_notes.mid").write_bytes(hdr(0, 480) + track(end))
    expect["no_notes.mid"] = "skipped"
    write_midi(folder / "drums_only.mid", pitches=(36, 38, 42), is_drum=True)
    expect["drums_only.mid"] = "embedded"
    huge = b"\x00\x90\x3c\x40" + b"\x8f\xff\xff\x7f\x80\x3c\x00" + end  # delta of 2^28 - 1 ticks
    (folder / "huge_ticks.mid").write_bytes(hdr(0, 96) + track(huge))
    expect["huge_ticks.mid"] = "embedded"
    text = b"\x00\xff\x03\x06\xe9t\xe9\xff\xfe\x81"  # track name in no known encoding
    (folder / "odd_text.mid").write_bytes(hdr(0, 96) + track(text + b"\x00\x90\x3c\x40\x60\x80\x3c\x00" + end))
    expect["odd_text.mid"] = "embedded"
    return expect


def test_hostile_files_are_skipped_with_reasons_and_counts_add_up(tmp_path, capsys):
    data = tmp_path / "data"
    expect = {f"audio/{k}": v for k, v in _hostile_audio(data / "audio").items()}
    expect.update({f"midi/{k}": v for k, v in _hostile_midi(data / "midi").items()})
    (data / "empty class").mkdir()
    (data / "caf\u00e9 m\u00fasica").mkdir()
    write_midi(data / "caf\u00e9 m\u00fasica" / "one file \u266b.mid")
    expect["caf\u00e9 m\u00fasica/one file \u266b.mid"] = "embedded"
    out = tmp_path / "out"
    code = main.main(["--dataset", str(data), "--embedders", "audio-stats", "midi-stats",
                      "--emb-dir", str(tmp_path / "emb"), "--out", str(out), "--no-analysis",
                      "--quiet"])
    assert code == 0
    rows = _manifest(out)
    status = {r["path"]: r["status"] for r in rows if r["embedder"] or r["status"] == "skipped"}
    for path, want in expect.items():
        assert status.get(path) == want, (path, status.get(path), rows)
    for r in rows:
        if r["status"] == "skipped":
            assert r["reason"], r
    assert not any(r["path"].startswith("audio/folder.wav") for r in rows)
    # every file found is accounted for exactly once
    files = [p for p in data.rglob("*") if p.is_file()]
    assert len({r["path"] for r in rows}) == len(files)
    err = capsys.readouterr()
    assert "empty class" in err.out + err.err  # the empty class folder is reported


def test_two_runs_sharing_one_embeddings_folder(tmp_path):
    data = tmp_path / "data"
    for g in ("a", "b"):
        for i in range(8):
            write_wav(data / g / f"{i}.wav", freq=300 + 40 * i + 7 * (g == "b"))
    script = tmp_path / "run.py"
    script.write_text(f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]\n"
                      "import toy_embedders, main\nsys.exit(main.main(sys.argv[1:]))\n")
    env = {**os.environ, toy_embedders.SLOW_ENV: "0.05"}
    procs = [subprocess.Popen([sys.executable, str(script), "--dataset", str(data), "--embedders",
                               "toy-audio", "--emb-dir", str(tmp_path / "emb"), "--out",
                               str(tmp_path / f"out{k}"), "--no-analysis", "--quiet"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    store = EmbeddingStore(tmp_path / "emb")
    entries = list((tmp_path / "emb" / "cache").rglob("*.npz"))
    assert len(entries) == 16
    assert not list((tmp_path / "emb").rglob("*.tmp"))
    for e in entries:  # every entry is complete and trusted
        with np.load(e) as z:
            assert np.all(np.isfinite(z["clip"]))
    assert store is not None
    exported = load_export(export_dir(tmp_path / "emb", "toy-audio"))
    assert len(exported.ids) == 16


def test_full_disk_mid_run_exits_1_and_keeps_a_valid_cache(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    for i in range(6):
        write_wav(data / "g" / f"{i}.wav", freq=200 + 30 * i)
    argv = ["--dataset", str(data), "--embedders", "toy-audio", "--emb-dir", str(tmp_path / "emb"),
            "--out", str(tmp_path / "out"), "--no-analysis", "--quiet"]
    real_savez = np.savez
    calls = {"n": 0}

    def savez_until_full(fh, **arrays):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savez(fh, **arrays)

    monkeypatch.setattr(np, "savez", savez_until_full)
    assert main.main(argv) == 1
    err = capsys.readouterr().err
    assert "disk is full" in err and "\n" == err[-1] and err.count("\n") <= 2
    entries = list((tmp_path / "emb" / "cache").rglob("*.npz"))
    assert len(entries) == 3 and not list((tmp_path / "emb").rglob("*.tmp"))
    monkeypatch.setattr(np, "savez", real_savez)
    assert main.main(argv) == 0  # the same command again finishes the job
    row = next(r for r in _manifest(tmp_path / "out") if r["path"] == "g/0.wav")
    assert row["status"] == "embedded"
    assert len(list((tmp_path / "emb" / "cache").rglob("*.npz"))) == 6


def test_long_file_streams_in_bounded_memory(tmp_path):
    """A 2-hour file is resampled block by block: peak memory stays far below the file's size."""
    sr = 4000
    path = tmp_path / "two_hours.wav"
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        block = (0.1 * np.sin(np.arange(sr * 60) * 0.3)).astype(np.float32)
        for _ in range(120):
            f.write(block)
    emb = get_embedder("audio-stats", sample_rate=8000)
    whole_bytes = 2 * 3600 * 8000 * 4  # the resampled file as float32: 230 MB
    tracemalloc.start()
    n = 0
    for chunk in emb._resampled_blocks(str(path)):
        n += len(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == pytest.approx(2 * 3600 * 8000, rel=1e-4)
    assert peak < whole_bytes / 10, peak
