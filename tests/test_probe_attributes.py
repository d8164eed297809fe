"""The attribute extractors against hand-made MIDI whose key, tempo, density and instruments
are known by construction."""
import numpy as np
import pretty_midi
import pytest

from probe.attributes import (MAJOR_PROFILE, MidiReadError, estimate_key, midi_attributes,
                              weighted_tempo)


def _write(path, instruments, *, tempo=120.0, key_number=None):
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    for program, is_drum, notes in instruments:
        inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
        inst.notes = [pretty_midi.Note(v, p, s, e) for p, s, e, v in notes]
        pm.instruments.append(inst)
    if key_number is not None:
        pm.key_signature_changes.append(pretty_midi.KeySignature(key_number, 0.0))
    pm.write(str(path))
    return path


def _scale_piece(tonic, steps, *, start=0.0, dur=0.5, vel=80):
    return [(60 + tonic + s, start + i * dur, start + (i + 1) * dur, vel)
            for i, s in enumerate(steps)]


MAJOR_TUNE = [0, 4, 7, 12, 7, 4, 0, 2, 4, 5, 7, 11, 12, 7, 0]       # triad-heavy, ends on tonic
MINOR_TUNE = [0, 3, 7, 12, 7, 3, 0, 2, 3, 5, 7, 8, 11, 12, 7, 3, 0]


def test_key_tempo_density_instruments_of_a_known_piece(tmp_path):
    melody = _scale_piece(2, MAJOR_TUNE)                     # D major, 15 notes of 0.5 s
    bass = [(38, 0.0, 7.5, 60)]                               # one held D
    drums = [(36, 0.5 * i, 0.5 * i + 0.1, 100) for i in range(15)]
    path = _write(tmp_path / "d.mid", [(0, False, melody), (33, False, bass),
                                       (0, True, drums)], tempo=96.0)
    a = midi_attributes(path)
    assert a["key"] == "D major" and a["mode"] == "major" and a["tonic"] == "D"
    assert a["tempo"] == pytest.approx(96.0, abs=0.01)
    assert a["note_density"] == pytest.approx(31 / 7.5)        # 15 + 1 + 15 notes in 7.5 s
    assert a["instrument_family"] == "Piano"                  # the pitched part with most notes
    assert a["has_drums"] == "yes"
    assert a["polyphony"] == pytest.approx(2.0)               # melody over a held bass
    pitches = [n[0] for n in melody] + [38]
    assert a["pitch_mean"] == pytest.approx(np.mean(pitches))
    assert a["pitch_range"] == 74 - 38
    assert a["velocity_mean"] == pytest.approx((15 * 80 + 60 + 15 * 100) / 31)


def test_minor_key_and_family_without_drums(tmp_path):
    path = _write(tmp_path / "a.mid", [(40, False, _scale_piece(9, MINOR_TUNE))])
    a = midi_attributes(path)
    assert a["key"] == "A minor" and a["tonic"] == "A"
    assert a["instrument_family"] == "Strings"                # program 40: violin
    assert a["has_drums"] == "no"
    assert a["polyphony"] == pytest.approx(1.0)


def test_every_key_is_found_when_transposed():
    for tonic in range(12):
        for ref, mode in ((MAJOR_PROFILE, "major"),):
            t, m, r = estimate_key(np.roll(ref, tonic))
            assert (t, m) == (tonic, mode) and r == pytest.approx(1.0)


def test_tempo_is_weighted_by_duration(tmp_path):
    # 120 BPM for 2 s, then 60 BPM for the remaining 6 s: (2*120 + 6*60) / 8 = 75
    import mido
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000, time=0),
                            mido.Message("note_on", note=60, velocity=80, time=0),
                            mido.MetaMessage("set_tempo", tempo=1000000, time=1920),  # 2 s
                            mido.Message("note_off", note=60, velocity=0, time=2880)])  # +6 s
    mid.tracks.append(track)
    path = tmp_path / "t.mid"
    mid.save(str(path))
    pm = pretty_midi.PrettyMIDI(str(path))
    times, tempi = pm.get_tempo_changes()
    assert list(np.round(tempi)) == [120, 60] and times[1] == pytest.approx(2.0, abs=0.01)
    assert weighted_tempo(pm) == pytest.approx(75.0, abs=0.5)


def test_key_signature_only_when_asked(tmp_path):
    # the notes say D major, the key-signature event says B minor (key_number 12 + 11)
    path = _write(tmp_path / "k.mid", [(0, False, _scale_piece(2, MAJOR_TUNE))], key_number=23)
    assert midi_attributes(path)["key"] == "D major"
    assert midi_attributes(path, key_source="signature")["key"] == "B minor"
    plain = _write(tmp_path / "p.mid", [(0, False, _scale_piece(2, MAJOR_TUNE))])
    with pytest.raises(MidiReadError, match="no key-signature"):
        midi_attributes(plain, key_source="signature")


def test_unreadable_and_empty_midi(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not a midi file at all")
    with pytest.raises(MidiReadError, match="cannot read MIDI"):
        midi_attributes(bad)
    empty = _write(tmp_path / "empty.mid", [(0, False, [])])
    with pytest.raises(MidiReadError, match="no notes"):
        midi_attributes(empty)


def test_drums_only_has_no_key(tmp_path):
    path = _write(tmp_path / "dr.mid", [(0, True, [(36, 0.5 * i, 0.5 * i + 0.1, 90)
                                                   for i in range(8)])])
    a = midi_attributes(path)
    assert "key" not in a and a["instrument_family"] == "Drums" and a["has_drums"] == "yes"
