"""``prepare``: crop, render, instruments, transcribe on small generated inputs; the shared
machinery (manifest, cache, resume, bad input, DST checks)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
from hypothesis import given, settings, strategies as st

from conftest import FIXTURES, write_midi, write_wav
from prepare import commands, midi_ops
from prepare.jobs import MANIFEST_NAME, Job, Runner, read_manifest, list_sources


def _piece(path, *, tempo=120.0):
    """Three parts: piano (ch 0), violin (ch 1, CC 7 = 50, a bend), drums (ch 9)."""
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    piano = pretty_midi.Instrument(program=0)
    violin = pretty_midi.Instrument(program=40)
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    for k in range(8):
        piano.notes.append(pretty_midi.Note(80, 60 + k % 5, 0.5 * k, 0.5 * k + 0.4))
        drums.notes.append(pretty_midi.Note(100, 36, 0.5 * k, 0.5 * k + 0.1))
    violin.notes.append(pretty_midi.Note(70, 76, 0.2, 3.5))  # spans any 1-s window inside
    violin.control_changes.append(pretty_midi.ControlChange(7, 50, 0.1))
    violin.pitch_bends.append(pretty_midi.PitchBend(1000, 0.15))
    pm.instruments += [piano, violin, drums]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


# -- MIDI operations ---------------------------------------------------------------------------

def test_crop_midi_clips_notes_and_carries_state(tmp_path):
    src = _piece(tmp_path / "p.mid", tempo=90.0)
    cropped = midi_ops.crop_midi(midi_ops.read_midi(src), 1.0, 2.0)
    cropped.save(str(tmp_path / "c.mid"))
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "c.mid"))
    assert pm.get_tempo_changes()[1][0] == pytest.approx(90.0, rel=1e-5)  # integer µs/beat
    by_program = {(i.program, i.is_drum): i for i in pm.instruments}
    violin = by_program[(40, False)]
    assert len(violin.notes) == 1  # started before the window: starts at 0, ends at the edge
    assert violin.notes[0].start == pytest.approx(0.0, abs=1e-3)
    assert violin.notes[0].end == pytest.approx(1.0, abs=1e-2)
    assert [(c.number, c.value) for c in violin.control_changes] == [(7, 50)]
    assert [b.pitch for b in violin.pitch_bends] == [1000]
    piano = by_program[(0, False)]
    # notes of the source starting in [1, 2): at 1.0 and 1.5 -> 0.0 and 0.5 in the window
    assert [round(n.start, 2) for n in piano.notes] == [0.0, 0.5]
    assert all(n.end <= 1.0 + 1e-2 for i in pm.instruments for n in i.notes)


def test_crop_midi_rejects_bad_window(tmp_path):
    mid = midi_ops.read_midi(_piece(tmp_path / "p.mid"))
    with pytest.raises(ValueError, match="start < end"):
        midi_ops.crop_midi(mid, 2.0, 1.0)


def test_split_parts_by_family_channel_track_and_min_notes(tmp_path):
    mid = midi_ops.read_midi(_piece(tmp_path / "p.mid"))
    fam = midi_ops.split_parts(mid, by="family")
    assert [(p.name, p.label, p.n_notes) for p in fam] == [
        ("00-piano", "piano", 8), ("05-strings", "strings", 1), ("drums", "drums", 8)]
    assert [p.label for p in midi_ops.split_parts(mid, by="family", min_notes=2)] == \
        ["piano", "drums"]
    assert [p.label for p in midi_ops.split_parts(mid, by="channel", labels="program")] == \
        ["acoustic_grand_piano", "violin", "drums"]
    assert len(midi_ops.split_parts(mid, by="track")) == 3  # pretty_midi writes a track each
    for part in fam:  # every part keeps the tempo map and resolution
        assert part.midi.ticks_per_beat == mid.ticks_per_beat
        assert any(m.type == "set_tempo" for m in part.midi.tracks[0])
    with pytest.raises(ValueError, match="by must be"):
        midi_ops.split_parts(mid, by="colour")


def test_read_midi_bad_input_is_input_error(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd nonsense")
    with pytest.raises(commands.InputError, match="not a readable MIDI file"):
        midi_ops.read_midi(bad)


def test_window_starts():
    assert commands.window_starts(10, seconds=3, offset=1) == [1.0]
    assert commands.window_starts(2, seconds=3) == []
    assert commands.window_starts(10, seconds=3, hop=3) == [0.0, 3.0, 6.0]
    assert commands.window_starts(10, seconds=3, hop=3, windows=2) == [0.0, 3.0]
    a = commands.window_starts(10, seconds=3, windows=4, seed=7, name="x.wav")
    assert a == commands.window_starts(10, seconds=3, windows=4, seed=7, name="x.wav")
    assert a != commands.window_starts(10, seconds=3, windows=4, seed=7, name="y.wav")
    assert a == sorted(a) and all(0 <= s <= 7 for s in a) and len(a) == 4


# -- subcommands end to end --------------------------------------------------------------------

def _src(tmp_path):
    src = tmp_path / "src"
    _piece(src / "rock" / "song.mid")
    write_wav(src / "rock" / "song.wav", seconds=4.0, sr=16000)
    write_midi(src / "jazz" / "tune.mid", pitches=(60, 62, 64, 65, 67, 69))
    (src / "jazz" / "broken.mid").write_bytes(b"MThd nonsense")
    (src / "jazz" / "broken.wav").write_bytes(b"RIFF nonsense")
    (src / "notes.txt").write_text("not music")
    return src


def test_crop_pairs_cut_at_the_same_times(tmp_path):
    from main import main
    src = _src(tmp_path)
    dst = tmp_path / "dst"
    assert main(["prepare", "crop", str(src), "--out", str(dst), "--seconds", "1",
                 "--offset", "1.5", "--quiet"]) == 0
    wav, mid = dst / "rock" / "song__t0001500ms.wav", dst / "rock" / "song__t0001500ms.mid"
    data, sr = sf.read(str(wav))
    assert sr == 16000 and len(data) == 16000
    orig, _ = sf.read(str(src / "rock" / "song.wav"))
    assert np.array_equal(data, orig[24000:40000])
    pm = pretty_midi.PrettyMIDI(str(mid))
    assert all(n.end <= 1.0 + 1e-2 for i in pm.instruments for n in i.notes)
    rows = {r["source"]: r for r in read_manifest(dst)}
    assert rows["rock/song.wav"]["status"] == rows["rock/song.mid"]["status"] == "made"
    assert rows["notes.txt"]["status"] == "skipped"
    assert "broken.mid" in rows["jazz/broken.wav"]["reason"]  # the pair's failing file named
    assert rows["jazz/tune.mid"]["status"] == "skipped"  # 1.5 s of MIDI: too short
    assert "too short" in rows["jazz/tune.mid"]["reason"]


def test_render_builtin_cache_and_bad_input(tmp_path, capsys):
    src = _src(tmp_path)
    dst = tmp_path / "dst"
    out = commands.render(src, dst, synth="builtin", progress=False)
    status = {o.job.main.rel: o.status for o in out}
    assert status["jazz/tune.mid"] == "made" and status["jazz/broken.mid"] == "skipped"
    audio, sr = sf.read(str(dst / "jazz" / "tune.wav"))
    assert sr == 22050 and np.abs(audio).max() > 0.1
    assert (dst / "jazz" / "tune.mid").read_bytes() == (src / "jazz" / "tune.mid").read_bytes()
    again = commands.render(src, dst, synth="builtin", progress=False)
    assert {o.job.main.rel: o.status for o in again}["jazz/tune.mid"] == "cached"
    write_midi(src / "jazz" / "tune.mid", pitches=(70, 72))  # a changed file is redone
    third = commands.render(src, dst, synth="builtin", progress=False)
    assert {o.job.main.rel: o.status for o in third}["jazz/tune.mid"] == "made"
    assert {o.job.main.rel: o.status for o in third}["rock/song.mid"] == "cached"


def test_same_content_in_two_folders_gets_outputs_in_both(tmp_path):
    src = tmp_path / "src"
    write_midi(src / "a" / "x.mid")
    write_midi(src / "b" / "x.mid")
    out = commands.render(src, tmp_path / "dst", synth="builtin", progress=False)
    assert [o.status for o in out] == ["made", "made"]
    assert all((tmp_path / "dst" / d / "x.wav").is_file() for d in "ab")


def test_render_without_fluidsynth_says_so_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    src = _src(tmp_path)
    commands.render(src, tmp_path / "dst", progress=True)
    assert capsys.readouterr().out.count("fluidsynth not found") == 1


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth not installed")
def test_render_with_fluidsynth(tmp_path):
    src = _src(tmp_path)
    out = commands.render(src, tmp_path / "dst", synth="fluidsynth", progress=False)
    assert {o.job.main.rel: o.status for o in out}["jazz/tune.mid"] == "made"
    audio, sr = sf.read(str(tmp_path / "dst" / "jazz" / "tune.wav"))
    assert sr == 22050 and np.abs(audio).max() > 0.01


def test_instruments_classes_are_families(tmp_path):
    src = _src(tmp_path)
    dst = tmp_path / "dst"
    commands.instruments(src, dst, synth="builtin", min_notes=2, progress=False)
    made = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.mid"))
    assert made == ["drums/rock__song__drums.mid", "piano/jazz__tune__00-piano.mid",
                    "piano/rock__song__00-piano.mid"]
    assert all(Path(dst / m).with_suffix(".wav").is_file() for m in made)
    from collection.scan import scan_dataset
    scan = scan_dataset(dst)
    assert {i.label for i in scan.usable} == {"drums", "piano"}
    assert all(i.pair_id for i in scan.usable)  # every part is an audio/MIDI pair
    assert (dst / "prepare_manifest.csv").is_file()
    assert len(scan.items) == len(scan.usable)  # prepare's own manifest is not an item


def test_dst_inside_src_or_unwritable_is_one_line_exit_2(tmp_path, capsys):
    from main import main
    src = _src(tmp_path)
    assert main(["prepare", "render", str(src), "--out", str(src / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "inside the source folder" in err[0]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["prepare", "crop", str(src), "--out", str(blocker / "dst")]) == 2
    assert "cannot be written" in capsys.readouterr().err
    assert main(["prepare", "crop", str(src), "--out", str(tmp_path / "d"), "--seconds",
                 "0"]) == 2
    assert not any(src.rglob("*__t*"))  # SRC untouched


class _Killed(BaseException):
    """Stands in for a kill in the middle of a run (pytest keeps KeyboardInterrupt for itself)."""


def test_killed_run_resumes(tmp_path):
    src = _src(tmp_path)
    dst = tmp_path / "dst"
    jobs = [Job([s]) for s in list_sources(src) if s.rel.endswith(".mid") and s.label]
    calls, killed = [], []

    def work(job, dst):
        calls.append(job.main.rel)
        if len(calls) == 2 and not killed:
            killed.append(True)
            raise _Killed
        out = dst / (job.main.rel + ".out")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("done")
        return [out]

    runner = Runner(dst, "test", 1, {}, progress=False)
    with pytest.raises(_Killed):
        runner.run(jobs, work)
    calls.clear()
    out = runner.run(jobs, work)
    assert [o.status for o in out] == ["cached"] + ["made"] * (len(jobs) - 1)
    assert calls == [j.main.rel for j in jobs[1:]]
    assert (dst / MANIFEST_NAME).is_file()


def _model_or_skip():
    from prepare import basic_pitch as bp
    try:
        return bp.resolve_model(allow_download=False)
    except bp.WeightsError as exc:
        pytest.skip(f"basic-pitch model not available offline: {exc}")


def test_transcribe_basic_pitch_end_to_end(tmp_path):
    from main import main
    _model_or_skip()
    src = tmp_path / "src"
    (src / "classical").mkdir(parents=True)
    shutil.copy(FIXTURES / "basic_pitch" / "weber_clarinet_16k_mono.wav",
                src / "classical" / "weber.wav")
    (src / "classical" / "bad.wav").write_bytes(b"\x00" * 100)
    dst = tmp_path / "dst"
    args = ["prepare", "transcribe", str(src), "--out", str(dst), "--save-model-output",
            "--link", "--quiet", "--workers", "2"]
    assert main(args) == 0
    assert (dst / "classical" / "weber.wav").is_symlink()
    ref = FIXTURES / "basic_pitch" / "expected_midi" / "weber_clarinet_16k_mono__default.mid"
    assert (dst / "classical" / "weber.mid").read_bytes() == ref.read_bytes()
    npz = np.load(dst / "classical" / "weber.model_output.npz")
    assert sorted(npz.files) == ["contour", "note", "onset"] and npz["note"].shape[1] == 88
    rows = {r["source"]: r for r in read_manifest(dst)}
    assert rows["classical/bad.wav"]["status"] == "skipped"
    assert main(args) == 0
    assert {r["source"]: r for r in read_manifest(dst)}["classical/weber.wav"]["status"] == \
        "cached"
    assert main(args[:5] + ["--onset-threshold", "2"]) == 2


@pytest.mark.slow
def test_heuristic_finds_a_scale(tmp_path):
    """The baseline hears a plain melody (and runs from the command line)."""
    from prepare.heuristic import transcribe_heuristic
    from collection.demo_corpus import synthesize
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=73)  # flute: nearly pure tones
    for k, p in enumerate((60, 62, 64, 65, 67, 69, 71, 72)):
        inst.notes.append(pretty_midi.Note(100, p, 0.5 * k + 0.1, 0.5 * k + 0.5))
    pm.instruments.append(inst)
    notes, tempo = transcribe_heuristic(synthesize(pm, 22050))
    assert tempo > 0
    pitches = [n[2] for n in notes]
    # extra onsets inside a note are the heuristic's nature: compare the melody
    assert [p for i, p in enumerate(pitches) if i == 0 or p != pitches[i - 1]] == \
        [60, 62, 64, 65, 67, 69, 71, 72]
    from main import main
    (tmp_path / "src" / "folk").mkdir(parents=True)
    sf.write(str(tmp_path / "src" / "folk" / "scale.wav"), synthesize(pm, 22050), 22050)
    assert main(["prepare", "transcribe", str(tmp_path / "src"), "--out", str(tmp_path / "dst"),
                 "--method", "heuristic", "--quiet"]) == 0
    got = pretty_midi.PrettyMIDI(str(tmp_path / "dst" / "folk" / "scale.mid"))
    assert {n.pitch for n in got.instruments[0].notes} == {60, 62, 64, 65, 67, 69, 71, 72}


def test_transcribe_without_model_offline_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from main import main
    from prepare import basic_pitch as bp
    monkeypatch.setattr(bp, "installed_package_model", lambda: None)
    src = _src(tmp_path)
    assert main(["prepare", "transcribe", str(src), "--out", str(tmp_path / "dst")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nmp.onnx" in err[0] and "--no-deps basic-pitch" in err[0]


@pytest.mark.slow
def test_kill_9_then_rerun_completes(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from conftest import ROOT
    src = tmp_path / "src"
    for k in range(40):
        write_midi(src / "g" / f"p{k:02d}.mid", pitches=tuple(range(48, 72)), note_seconds=0.5)
    dst = tmp_path / "dst"
    cmd = [sys.executable, str(ROOT / "main.py"), "prepare", "render", str(src), "--out",
           str(dst), "--synth", "builtin", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((dst / ".prepare").rglob("*.json"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list((dst / ".prepare").rglob("*.json")))
    assert 3 <= done_before < 40
    assert subprocess.run(cmd, timeout=300).returncode == 0
    rows = read_manifest(dst)
    assert len(rows) == 40
    assert sum(r["status"] == "cached" for r in rows) == done_before
    assert all(r["status"] in ("made", "cached") for r in rows)
    for k in range(40):  # every output complete and readable
        assert sf.info(str(dst / "g" / f"p{k:02d}.wav")).frames > 0


def test_crop_midi_note_ending_at_the_window_start_is_not_carried(tmp_path):
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    inst = pretty_midi.Instrument(program=0)
    inst.notes += [pretty_midi.Note(90, 60, 0.0, 1.0), pretty_midi.Note(90, 64, 1.0, 1.5)]
    pm.instruments.append(inst)
    pm.write(str(tmp_path / "p.mid"))
    midi_ops.crop_midi(midi_ops.read_midi(tmp_path / "p.mid"), 1.0, 2.0).save(
        str(tmp_path / "c.mid"))
    notes = pretty_midi.PrettyMIDI(str(tmp_path / "c.mid")).instruments[0].notes
    assert [(n.pitch, round(n.start, 3), round(n.end, 3)) for n in notes] == [(64, 0.0, 0.5)]



@settings(max_examples=40, deadline=None)
@given(notes=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 40), st.integers(1, 30)),
                      min_size=1, max_size=20),
       start=st.integers(0, 60), length=st.integers(1, 40))
def test_crop_midi_equals_clipping_the_notes(tmp_path_factory, notes, start, length):
    """Cropping = intersecting every note with the window (times on a 50 ms grid; one note at
    a time per pitch so note-on/off pairs are unambiguous)."""
    grid = 0.05
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    inst = pretty_midi.Instrument(program=0)
    busy_until = {}
    for voice, gap, dur in notes:
        pitch = 60 + voice
        s = busy_until.get(pitch, 0) + gap
        inst.notes.append(pretty_midi.Note(80, pitch, s * grid, (s + dur) * grid))
        busy_until[pitch] = s + dur
    pm.instruments.append(inst)
    folder = tmp_path_factory.mktemp("crop")
    pm.write(str(folder / "p.mid"))
    a, b = start * grid, (start + length) * grid
    midi_ops.crop_midi(midi_ops.read_midi(folder / "p.mid"), a, b).save(str(folder / "c.mid"))
    got = sorted((n.pitch, round(n.start / grid), round(n.end / grid))
                 for i in pretty_midi.PrettyMIDI(str(folder / "c.mid")).instruments
                 for n in i.notes)
    want = sorted((n.pitch, max(round(n.start / grid), start) - start,
                   min(round(n.end / grid), start + length) - start)
                  for n in inst.notes
                  if round(n.start / grid) < start + length and round(n.end / grid) > start)
    assert got == want
