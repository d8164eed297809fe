"""The synthetic demo corpus: paired, deterministic, idempotent, genres that differ."""
import json

import numpy as np
import pretty_midi
import pytest
import soundfile as sf

from collection.scan import scan_dataset
from collection.demo_corpus import (CORPUS_INFO, GENRES, build_demo_corpus, compose,
                                   fluidsynth_available)


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
