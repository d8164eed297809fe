"""The synthetic demo corpus: paired, deterministic, idempotent, genres that differ."""
import json

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from collection.scan import scan_dataset
from collection.demo_corpus import (CLASSICAL_BAND, CORPUS_INFO, DRIVE_TEMPO, GENRES,
                                   build_demo_corpus, compose, fluidsynth_available)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    info = build_demo_corpus(root, n_per_genre=2, synth="builtin")
    return root, info


def test_layout_and_pairs(corpus):
    root, info = corpus
    assert info["synth"] == "builtin" and info["made"] == 2 * len(GENRES)
    scan = scan_dataset(root)
    assert scan.classes == sorted(GENRES)
    assert len(scan.items) == 4 * len(GENRES)  # the info file is hidden, not a skipped file
    assert scan.summary()["n_pairs"] == 2 * len(GENRES)
    assert json.loads((root / CORPUS_INFO).read_text())["synth"] == "builtin"


def test_audio_matches_its_midi(corpus):
    root, _ = corpus
    for genre in GENRES:
        pm = pretty_midi.PrettyMIDI(str(root / genre / f"{genre}_00.mid"))
        audio, sr = sf.read(root / genre / f"{genre}_00.wav")
        assert sr == 22050
        assert len(audio) / sr == pytest.approx(pm.get_end_time() + 0.5, abs=0.05)
        assert 0.5 < np.max(np.abs(audio)) <= 1.0


def test_idempotent_and_deterministic(corpus, tmp_path):
    root, _ = corpus
    wav = root / "rock" / "rock_01.wav"
    before = wav.stat().st_mtime_ns
    assert build_demo_corpus(root, n_per_genre=2, synth="builtin")["made"] == 0
    assert wav.stat().st_mtime_ns == before
    wav.unlink()  # an interrupted build: only the missing file is made again
    assert build_demo_corpus(root, n_per_genre=2, synth="builtin")["made"] == 1
    other = tmp_path / "again"
    build_demo_corpus(other, n_per_genre=1, genres=("jazz",), synth="builtin")
    assert (other / "jazz" / "jazz_00.mid").read_bytes() == (root / "jazz" / "jazz_00.mid").read_bytes()
    np.testing.assert_array_equal(sf.read(other / "jazz" / "jazz_00.wav")[0],
                                  sf.read(root / "jazz" / "jazz_00.wav")[0])


def test_genres_differ_in_tempo_and_instrumentation():
    tempo = {g: compose(g, 0).estimate_tempo() for g in GENRES}
    drums = {g: any(i.is_drum for i in compose(g, 0).instruments) for g in GENRES}
    assert drums == {"ballad": False, "rock": True, "jazz": True, "electronic": True,
                     "chamber": False}
    bpm = {g: compose(g, 0).get_tempo_changes()[1][0] for g in GENRES}
    assert bpm["ballad"] < 80 < bpm["chamber"] < 101 < bpm["rock"]
    assert all(t > 0 for t in tempo.values())


def _pieces(genre: str, n: int = 8) -> list:
    return [compose(genre, i) for i in range(n)]


def _midi_descriptors(pm, tmp_path) -> dict:
    """midi-stats' reading of one composed piece, by feature name."""
    from embedders.midi_stats import describe, feature_names, read_notes
    path = tmp_path / "piece.mid"
    pm.write(str(path))
    notes = read_notes(str(path))
    return dict(zip(feature_names(), describe(notes, 0.0, float(notes.end.max()))))


def test_designed_overlap_ballad_chamber_share_instruments_not_harmony(tmp_path):
    """Ballad and chamber: the same three programs in every piece; tempo ranges apart, and major
    against harmonic minor (the raised seventh over a minor third above the tonic)."""
    ballad, chamber = _pieces("ballad"), _pieces("chamber")
    programs = {frozenset(i.program for i in pm.instruments) for pm in ballad + chamber}
    assert programs == {frozenset(CLASSICAL_BAND)}
    assert max(pm.get_tempo_changes()[1][0] for pm in ballad) < min(
        pm.get_tempo_changes()[1][0] for pm in chamber)
    # symbolic descriptors see the difference: more melodic steps of 1-2 semitones in chamber
    steps = {g: np.mean([(lambda d: d["interval_1"] + d["interval_2"])(
        _midi_descriptors(pm, tmp_path)) for pm in pieces])
        for g, pieces in (("ballad", ballad), ("chamber", chamber))}
    assert steps["chamber"] > 2 * steps["ballad"]


def test_designed_overlap_rock_electronic_differ_only_in_sound(tmp_path):
    """Rock and electronic: tempo range, drum pattern and note content drawn alike; programs
    differ but fall in the same General MIDI families except the chord instrument, and the drums
    are other sounds of the same kind, so midi-stats' drum groups match exactly."""
    rock, electronic = _pieces("rock"), _pieces("electronic")
    for pm in rock + electronic:
        assert DRIVE_TEMPO[0] <= pm.get_tempo_changes()[1][0] <= DRIVE_TEMPO[1]
    programs = {g: {i.program for pm in pieces for i in pm.instruments if not i.is_drum}
                for g, pieces in (("rock", rock), ("electronic", electronic))}
    assert not programs["rock"] & programs["electronic"]  # they sound different ...
    families = {g: {p // 8 for p in ps} for g, ps in programs.items()}
    assert families["rock"] & families["electronic"] == {4}  # ... both have a bass
    kits = {g: {n.pitch for pm in pieces for i in pm.instruments if i.is_drum for n in i.notes}
            for g, pieces in (("rock", rock), ("electronic", electronic))}
    assert kits["rock"] != kits["electronic"]
    drum_rows = [k for k in _midi_descriptors(rock[0], tmp_path) if k.startswith("drum_")]
    for name in drum_rows:  # same drum groups, so the same symbolic drum descriptors
        assert _midi_descriptors(rock[0], tmp_path)[name] == pytest.approx(
            _midi_descriptors(electronic[0], tmp_path)[name], abs=0.02), name
    # same note content: per piece, as many notes per bar in every part
    def parts(pm):
        return sorted((i.is_drum, len(i.notes)) for i in pm.instruments)
    assert [parts(pm) for pm in rock] == [parts(pm) for pm in electronic]


def test_older_corpus_version_is_written_anew(tmp_path):
    build_demo_corpus(tmp_path, n_per_genre=1, genres=("rock",), synth="builtin")
    info = json.loads((tmp_path / CORPUS_INFO).read_text())
    (tmp_path / CORPUS_INFO).write_text(json.dumps({**info, "version": info["version"] - 1}))
    mid = tmp_path / "rock" / "rock_00.mid"
    mid.write_bytes(b"old music")
    assert build_demo_corpus(tmp_path, n_per_genre=1, genres=("rock",), synth="builtin")["made"] == 1
    assert mid.read_bytes() != b"old music"
    assert json.loads((tmp_path / CORPUS_INFO).read_text())["version"] == info["version"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="synth"):
        build_demo_corpus(tmp_path, synth="moog")
    with pytest.raises(ValueError, match="unknown demo genre"):
        compose("polka", 0)


@pytest.mark.skipif(not fluidsynth_available(), reason="fluidsynth program not installed")
def test_fluidsynth_render(tmp_path):
    info = build_demo_corpus(tmp_path, n_per_genre=1, genres=("rock",), synth="fluidsynth")
    audio, sr = sf.read(tmp_path / "rock" / "rock_00.wav")
    assert info["synth"] == "fluidsynth" and sr == 22050 and np.abs(audio).max() > 0.01
