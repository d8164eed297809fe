"""The peak-picking transcription baseline: a re-creation of how the earlier study made MIDI for
GTZAN, kept to measure what a trained model adds (``prepare transcribe --method heuristic``).

Recipe (librosa): onsets from the onset-strength envelope; the beat tracker's tempo written as
the MIDI tempo; one note per inter-onset segment, at the strongest ``piptrack`` pitch peak in
the segment, from its onset to the next onset; segments whose RMS is more than ``silence_db``
below the loudest frame are silence and skipped. Monophonic by construction: the study's
complaint that it "lost much of the music" is what the benchmark measures.
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 22050
HOP = 512


def transcribe_heuristic(audio: np.ndarray, *, sr: int = SAMPLE_RATE, fmin: float = 65.0,
                         fmax: float = 2093.0, silence_db: float = 40.0):
    """Notes from mono audio ``(n_samples,)``.

    Returns
    -------
    notes : list of (start_s, end_s, midi_pitch, velocity)
    tempo : float
        Beats per minute from ``librosa.beat.beat_track`` (120 when it finds none).
    """
    import librosa

    y = np.asarray(audio, dtype=np.float32)
    envelope = librosa.onset.onset_strength(y=y, sr=sr, hop_length=HOP)
    tempo, _ = librosa.beat.beat_track(onset_envelope=envelope, sr=sr, hop_length=HOP)
    tempo = float(np.atleast_1d(tempo)[0]) or 120.0
    onsets = librosa.onset.onset_detect(onset_envelope=envelope, sr=sr, hop_length=HOP)
    pitches, mags = librosa.piptrack(y=y, sr=sr, hop_length=HOP, fmin=fmin, fmax=fmax)
    rms = librosa.feature.rms(y=y, hop_length=HOP)[0]
    n = min(pitches.shape[1], len(rms))
    floor = (rms.max() if rms.size else 0.0) * 10 ** (-silence_db / 20)
    bounds = list(onsets[onsets < n]) + [n]
    notes = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= a or rms[a:b].mean() <= floor:
            continue  # silence
        seg_mags = mags[:, a:b]
        f, t = np.unravel_index(np.argmax(seg_mags), seg_mags.shape)
        if seg_mags[f, t] <= 0:
            continue
        pitch = int(np.round(librosa.hz_to_midi(pitches[f, a + t])))
        if not 0 <= pitch <= 127:
            continue
        loud = rms[a:b].max() / (rms.max() or 1.0)
        velocity = int(np.clip(np.round(40 + 87 * loud), 1, 127))
        start, end = a * HOP / sr, b * HOP / sr
        notes.append((start, end, pitch, velocity))
    return notes, tempo


def heuristic_midi(notes, tempo: float):
    """A ``pretty_midi.PrettyMIDI`` (piano, at ``tempo``) holding ``notes``."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(velocity=v, pitch=p, start=s, end=e) for s, e, p, v in notes]
    pm.instruments.append(inst)
    return pm
