"""Musical attributes of a MIDI file: the symbolic side of a pair as ground truth.

Read with pretty_midi (parsing, tempo map, GM instrument classes); the key is estimated from
the duration-weighted pitch-class profile with the **Krumhansl–Kessler** key profiles
(Krumhansl 1990, probe-tone ratings): the key whose rotated profile correlates best (Pearson)
with the piece's profile. The key-signature meta event is used instead only when asked
(``key_source="signature"``), since many files carry none or a wrong one (C major by default).

>>> midi_attributes("song.mid")["key"]                                # doctest: +SKIP
'A minor'
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["ATTRIBUTES", "CATEGORICAL", "CONTINUOUS", "KEY_SOURCES", "MAJOR_PROFILE",
           "MINOR_PROFILE", "PITCH_CLASSES", "MidiReadError", "ProbeError", "estimate_key",
           "midi_attributes", "pitch_class_profile", "weighted_tempo"]


class ProbeError(Exception):
    """Base class of the probe package's errors."""


class MidiReadError(ProbeError):
    """A MIDI file that cannot be read, or holds no notes: listed, the run goes on."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
#: Krumhansl–Kessler probe-tone profiles, tonic first (Krumhansl 1990, table 2.1).
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
KEY_SOURCES = ("profile", "signature")

#: Attribute name -> kind. Categories get a logistic probe, continuous values a ridge probe.
CATEGORICAL = ("key", "mode", "tonic", "instrument_family", "has_drums")
CONTINUOUS = ("tempo", "note_density", "polyphony", "pitch_mean", "pitch_range",
              "velocity_mean")
ATTRIBUTES = {**{a: "category" for a in CATEGORICAL}, **{a: "continuous" for a in CONTINUOUS}}


def pitch_class_profile(pm) -> np.ndarray:
    """Duration-weighted pitch-class profile of the pitched (non-drum) notes.

    Returns
    -------
    np.ndarray [shape=(12,)]
        Seconds sounding per pitch class (C first); all zero without pitched notes.
    """
    prof = np.zeros(12)
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        for n in inst.notes:
            prof[n.pitch % 12] += max(0.0, n.end - n.start)
    return prof


def estimate_key(profile: np.ndarray) -> tuple[int, str, float]:
    """The Krumhansl–Kessler key of a pitch-class profile.

    Parameters
    ----------
    profile : np.ndarray [shape=(12,)]

    Returns
    -------
    (tonic, mode, r): tonic pitch class 0..11, ``"major"`` or ``"minor"``, and the Pearson
    correlation of the best key (ties go to the first in C..B, major before minor).
    """
    profile = np.asarray(profile, dtype=np.float64)
    if profile.shape != (12,):
        raise ValueError(f"a pitch-class profile has 12 entries, got shape {profile.shape}")
    if not np.any(profile > 0) or np.ptp(profile) == 0:
        raise ValueError("a flat or empty pitch-class profile has no key")
    best = (-2.0, 0, "major")
    for mode, ref in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            r = float(np.corrcoef(profile, np.roll(ref, tonic))[0, 1])
            if r > best[0] + 1e-12:
                best = (r, tonic, mode)
    return best[1], best[2], best[0]


def weighted_tempo(pm) -> float:
    """Tempo in BPM from the tempo map, each tempo weighted by how long it lasts."""
    times, tempi = pm.get_tempo_changes()
    end = max(pm.get_end_time(), float(times[-1]) if len(times) else 0.0)
    if not len(tempi):
        return 120.0  # the MIDI default
    bounds = np.append(times, end)
    weights = np.diff(bounds)
    if weights.sum() <= 0:
        return float(tempi[0])
    return float(np.sum(tempi * weights) / weights.sum())


def _mean_polyphony(notes) -> float:
    """Mean number of sounding notes over the time at least one sounds."""
    events = sorted([(n.start, 1) for n in notes] + [(n.end, -1) for n in notes])
    sounding, last, covered, weighted = 0, None, 0.0, 0.0
    for t, step in events:
        if last is not None and sounding > 0:
            covered += t - last
            weighted += sounding * (t - last)
        sounding += step
        last = t
    return weighted / covered if covered > 0 else 0.0


def _signature_key(pm, path) -> tuple[int, str]:
    if not pm.key_signature_changes:
        raise MidiReadError(path, "no key-signature event (key_source='signature')")
    number = pm.key_signature_changes[0].key_number  # pretty_midi: 0-11 major, 12-23 minor
    return number % 12, "major" if number < 12 else "minor"


def midi_attributes(path: str | os.PathLike, *, key_source: str = "profile") -> dict:
    """Every attribute of :data:`ATTRIBUTES` for one MIDI file.

    Parameters
    ----------
    path : str or Path
    key_source : {"profile", "signature"}
        Key from the Krumhansl–Kessler profile match (default), or from the first key-signature
        meta event.

    Returns
    -------
    dict: ``key`` ("A minor"), ``mode``, ``tonic`` ("A"), ``instrument_family`` (GM class of the
    pitched part with the most notes, "Drums" when there is none), ``has_drums`` ("yes"/"no"),
    and floats ``tempo`` (BPM), ``note_density`` (notes per second, all notes), ``polyphony``,
    ``pitch_mean``, ``pitch_range`` (MIDI numbers, pitched notes), ``velocity_mean``.

    Raises
    ------
    MidiReadError
        Unreadable file, or no notes.
    """
    # one pass over one file, attribute by attribute (over 60 lines with its docstring)
    import pretty_midi

    if key_source not in KEY_SOURCES:
        raise ValueError(f"key_source must be one of {KEY_SOURCES}, got {key_source!r}")
    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # pretty_midi/mido raise many types on a damaged file
        raise MidiReadError(path, f"cannot read MIDI ({type(exc).__name__}: {exc})"[:300]) \
            from None
    all_notes = [n for inst in pm.instruments for n in inst.notes]
    pitched = [inst for inst in pm.instruments if not inst.is_drum and inst.notes]
    if not all_notes:
        raise MidiReadError(path, "no notes")
    duration = pm.get_end_time()
    out: dict = {}
    if key_source == "signature":
        tonic, mode = _signature_key(pm, path)
    elif pitched:
        try:
            tonic, mode, _ = estimate_key(pitch_class_profile(pm))
        except ValueError:
            tonic, mode = None, None
    else:
        tonic, mode = None, None
    if tonic is not None:
        out.update(key=f"{PITCH_CLASSES[tonic]} {mode}", mode=mode, tonic=PITCH_CLASSES[tonic])
    notes = [n for inst in pitched for n in inst.notes]
    main = max(pitched, key=lambda i: len(i.notes)) if pitched else None
    out["instrument_family"] = (pretty_midi.program_to_instrument_class(main.program)
                                if main is not None else "Drums")
    out["has_drums"] = "yes" if any(i.is_drum and i.notes for i in pm.instruments) else "no"
    out["tempo"] = weighted_tempo(pm)
    out["note_density"] = len(all_notes) / duration if duration > 0 else 0.0
    if notes:
        pitches = np.array([n.pitch for n in notes], dtype=np.float64)
        out["polyphony"] = _mean_polyphony(notes)
        out["pitch_mean"] = float(pitches.mean())
        out["pitch_range"] = float(pitches.max() - pitches.min())
    out["velocity_mean"] = float(np.mean([n.velocity for n in all_notes]))
    return out
