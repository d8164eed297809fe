"""``midi-stats``: hand-made symbolic descriptors, a weight-free control for learned MIDI models.

The file is parsed with mido and turned into a note list here rather than through pretty_midi,
whose tick-to-time table grows with the largest tick value (a file with one huge delta time would
need gigabytes). Tempo maps are applied piecewise, SMPTE time division is honoured, and type 2
files (independent sequential patterns, which have no single timeline) are refused.

Every descriptor is scaled to be of order one, so no single family dominates cosine geometry:
pitch-class histogram (duration weighted), pitch statistics, melodic interval histogram, note and
onset density, polyphony, note durations, velocities, tempo, General MIDI instrument families,
drum share and a drum-kit histogram. ``frames`` describe consecutive windows (only windows where
notes start), the clip vector describes the whole piece at once (not the mean of the windows).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import register
from .base import SYMBOLIC, ConfigurationError, Embedder, Embedding, InputError
from .base import input_file_size

MIDI_EXTENSIONS = (".mid", ".midi")
MAX_FILE_BYTES = 64 * 2 ** 20
MAX_EVENTS = 4_000_000
DRUM_CHANNEL = 9

GM_FAMILIES = ("piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "ensemble",
               "brass", "reed", "pipe", "synth_lead", "synth_pad", "synth_effects", "ethnic",
               "percussive", "sound_effects")
DRUM_GROUPS = {"kick": (35, 36), "snare": (37, 38, 39, 40), "hihat": (42, 44, 46),
               "cymbal": (49, 51, 52, 53, 55, 57, 59), "tom": (41, 43, 45, 47, 48, 50)}


@dataclass
class NoteList:
    """Notes of one piece as arrays (one entry per note).

    Attributes
    ----------
    start, end : np.ndarray [shape=(n,), dtype=float64]   seconds
    pitch, velocity, program, track : np.ndarray [shape=(n,), dtype=int]
    drum : np.ndarray [shape=(n,), dtype=bool]            channel 10 notes
    tempo_times, tempo_bpm : np.ndarray [shape=(n_tempi,)] tempo changes (time in seconds)
    """

    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    program: np.ndarray
    track: np.ndarray
    drum: np.ndarray
    tempo_times: np.ndarray
    tempo_bpm: np.ndarray

    def subset(self, mask: np.ndarray) -> "NoteList":
        return NoteList(self.start[mask], self.end[mask], self.pitch[mask], self.velocity[mask],
                        self.program[mask], self.track[mask], self.drum[mask], self.tempo_times,
                        self.tempo_bpm)


def read_notes(path: str) -> NoteList:
    """Parse a MIDI file into a :class:`NoteList`; :class:`InputError` with the reason if not."""
    import mido

    size = input_file_size(path)
    if size > MAX_FILE_BYTES:
        raise InputError(path, f"MIDI file is {size / 2 ** 20:.0f} MB, over the "
                               f"{MAX_FILE_BYTES // 2 ** 20} MB limit")
    try:
        mid = mido.MidiFile(path, clip=True)
    except PermissionError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from exc
    except (EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        text = str(exc).strip() or type(exc).__name__
        raise InputError(path, f"not a readable MIDI file ({text[:160]})") from exc
    if mid.type == 2:
        raise InputError(path, "type 2 MIDI (independent sequential patterns) is not supported")
    division = int(mid.ticks_per_beat)  # mido reads the field as a signed 16-bit number
    if division == 0:
        raise InputError(path, "invalid time division 0")
    smpte_seconds_per_tick = None
    if division < 0:  # SMPTE: high byte = -frames per second, low byte = ticks per frame
        fps = -(division >> 8)
        tpf = division & 0xFF
        if fps not in (24, 25, 29, 30) or tpf == 0:
            raise InputError(path, f"invalid SMPTE time division (fps={fps}, ticks/frame={tpf})")
        smpte_seconds_per_tick = 1.0 / ((29.97 if fps == 29 else fps) * tpf)

    # Merge tracks on absolute ticks. Sorting key keeps file order for simultaneous events.
    events = []
    n_events = 0
    for ti, track in enumerate(mid.tracks):
        tick = 0
        n_events += len(track)
        if n_events > MAX_EVENTS:
            raise InputError(path, f"more than {MAX_EVENTS:,} MIDI events; refusing to parse")
        for order, msg in enumerate(track):
            tick += msg.time
            kind = msg.type
            if kind in ("note_on", "note_off", "set_tempo", "program_change"):
                events.append((tick, ti, order, msg))
    events.sort(key=lambda e: (e[0], e[1], e[2]))

    # Tempo map in ticks (ignored for SMPTE, where time does not depend on tempo).
    tempo_ticks, tempos = [0], [500000]
    for tick, _, _, msg in events:
        if msg.type == "set_tempo":
            if tick == tempo_ticks[-1]:
                tempos[-1] = msg.tempo
            else:
                tempo_ticks.append(tick)
                tempos.append(msg.tempo)
    tempo_ticks_a = np.asarray(tempo_ticks, dtype=np.float64)
    sec_per_tick = np.asarray(tempos, dtype=np.float64) / 1e6 / division
    seg_start_sec = np.concatenate([[0.0], np.cumsum(np.diff(tempo_ticks_a) * sec_per_tick[:-1])])

    def to_seconds(ticks: np.ndarray) -> np.ndarray:
        ticks = np.asarray(ticks, dtype=np.float64)
        if smpte_seconds_per_tick is not None:
            return ticks * smpte_seconds_per_tick
        idx = np.searchsorted(tempo_ticks_a, ticks, side="right") - 1
        return seg_start_sec[idx] + (ticks - tempo_ticks_a[idx]) * sec_per_tick[idx]

    programs = [0] * 16
    sounding: dict[tuple[int, int, int], list] = {}
    notes = []  # (start_tick, end_tick, pitch, velocity, program, track, drum)
    last_tick = events[-1][0] if events else 0
    for tick, ti, _, msg in events:
        if msg.type == "program_change":
            programs[msg.channel] = msg.program
        elif msg.type == "note_on" and msg.velocity > 0:
            sounding.setdefault((ti, msg.channel, msg.note), []).append(
                (tick, msg.velocity, programs[msg.channel]))
        elif msg.type in ("note_on", "note_off"):
            started = sounding.get((ti, msg.channel, msg.note))
            if started:
                t0, vel, prog = started.pop(0)
                notes.append((t0, tick, msg.note, vel, prog, ti, msg.channel == DRUM_CHANNEL))
    for (ti, channel, pitch), started in sounding.items():  # never closed: end at the last event
        for t0, vel, prog in started:
            notes.append((t0, last_tick, pitch, vel, prog, ti, channel == DRUM_CHANNEL))
    if not notes:
        raise InputError(path, "MIDI file has no notes")
    arr = np.asarray([n[:6] for n in notes], dtype=np.float64)
    start, end = to_seconds(arr[:, 0]), to_seconds(arr[:, 1])
    order = np.lexsort((arr[:, 2], start))
    tempo_times = to_seconds(tempo_ticks_a)
    bpm = 60e6 / np.asarray(tempos, dtype=np.float64)
    return NoteList(start=start[order], end=end[order], pitch=arr[order, 2].astype(int),
                    velocity=arr[order, 3].astype(int), program=arr[order, 4].astype(int),
                    track=arr[order, 5].astype(int),
                    drum=np.asarray([n[6] for n in notes], dtype=bool)[order],
                    tempo_times=tempo_times, tempo_bpm=bpm)


def feature_names() -> list[str]:
    """Names of the dimensions of :func:`describe`, in order."""
    return ([f"pitch_class_{i}" for i in range(12)]
            + ["pitch_mean", "pitch_std", "pitch_min", "pitch_max", "pitch_range"]
            + [f"interval_{i}" for i in range(12)] + ["interval_octave_or_more"]
            + ["log_notes_per_second", "log_onsets_per_second"]
            + ["log_polyphony_mean", "log_polyphony_max"]
            + ["log2_duration_mean", "log2_duration_std"]
            + ["velocity_mean", "velocity_std"]
            + ["log2_tempo_over_120", "log_tempo_changes"]
            + [f"family_{f}" for f in GM_FAMILIES]
            + ["drum_share", "log_drum_onsets_per_second", "log_programs"]
            + [f"drum_{g}" for g in DRUM_GROUPS] + ["drum_other"])


def _share(values: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    hist = np.bincount(values, weights=weights, minlength=n_bins)[:n_bins]
    total = hist.sum()
    return hist / total if total > 0 else hist


def describe(notes: NoteList, t0: float, t1: float) -> np.ndarray:
    """Descriptor vector of the notes starting in ``[t0, t1)`` (the span sets the densities).

    Returns
    -------
    np.ndarray [shape=(len(feature_names()),), dtype=float32]
    """
    span = max(t1 - t0, 1e-3)
    tonal = ~notes.drum
    p = notes.pitch[tonal]
    dur = np.maximum(notes.end - notes.start, 1e-3)
    out = []
    out.append(_share(p % 12, dur[tonal], 12))
    if p.size:
        out.append(np.array([p.mean(), p.std(), p.min(), p.max(), p.max() - p.min()]) / 127.0)
    else:
        out.append(np.zeros(5))
    # Melodic intervals: consecutive onsets within a track, chord tones (same onset) skipped.
    steps = []
    for tr in np.unique(notes.track[tonal]):
        sel = tonal & (notes.track == tr)
        s, q = notes.start[sel], notes.pitch[sel]
        new_onset = np.concatenate([[True], np.diff(s) > 1e-6])
        top = q[new_onset]
        steps.append(np.abs(np.diff(top)))
    steps = np.concatenate(steps) if steps else np.zeros(0, int)
    out.append(_share(np.minimum(steps, 12).astype(int), np.ones(len(steps)), 13))
    onsets = np.unique(np.round(notes.start, 4))
    out.append(np.log1p([len(notes.start) / span, len(onsets) / span]))
    # Polyphony: notes sounding at each onset.
    starts_sorted, ends_sorted = np.sort(notes.start), np.sort(notes.end)
    active = (np.searchsorted(starts_sorted, onsets, side="right")
              - np.searchsorted(ends_sorted, onsets, side="right"))
    out.append(np.log1p([active.mean(), active.max()]))
    ld = np.log2(dur[tonal]) if tonal.any() else np.log2(dur)
    out.append([ld.mean(), ld.std()])
    v = notes.velocity / 127.0
    out.append([v.mean(), v.std()])
    # Tempo in force over [t0, t1), weighted by how long each tempo lasts there.
    bounds = np.clip(np.concatenate([notes.tempo_times, [np.inf]]), t0, t1)
    w = np.diff(bounds)
    bpm = (np.sum(w * notes.tempo_bpm) / w.sum()) if w.sum() > 0 else notes.tempo_bpm[0]
    changes = np.sum((notes.tempo_times > t0) & (notes.tempo_times < t1))
    out.append([np.log2(bpm / 120.0), np.log1p(changes)])
    out.append(_share(notes.program[tonal] // 8, np.ones(int(tonal.sum())), 16))
    drum_pitches = notes.pitch[notes.drum]
    out.append([notes.drum.mean(),
                np.log1p(len(np.unique(np.round(notes.start[notes.drum], 4))) / span),
                np.log1p(len(np.unique(notes.program[tonal])))])
    groups = np.full(len(drum_pitches), len(DRUM_GROUPS))
    for gi, members in enumerate(DRUM_GROUPS.values()):
        groups[np.isin(drum_pitches, members)] = gi
    out.append(_share(groups, np.ones(len(groups)), len(DRUM_GROUPS) + 1))
    return np.concatenate([np.asarray(o, dtype=np.float64).ravel() for o in out]).astype(np.float32)


@register
class MidiStats(Embedder):
    name = "midi-stats"
    modality = SYMBOLIC
    version = "1"
    extensions = MIDI_EXTENSIONS
    description = ("pitch / interval / rhythm / velocity / tempo / instrumentation statistics "
                   "of the notes (mido); no weights")
    parallel_files = True
    option_defaults = {"window_seconds": 10.0}

    def validate_options(self) -> None:
        w = self.options["window_seconds"]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0:
            raise ConfigurationError(f"midi-stats: window_seconds must be a positive number, "
                                     f"got {w!r}")

    @property
    def feature_names(self) -> list[str]:
        return feature_names()

    @property
    def dim(self) -> int:
        return len(feature_names())

    def _embed_file(self, path: str) -> Embedding:
        notes = read_notes(path)
        first, last = float(notes.start.min()), float(max(notes.end.max(), notes.start.max()))
        clip = describe(notes, first, max(last, first + 1e-3))
        # Only windows in which notes start: a huge silent gap (a giant delta time) costs nothing.
        w = float(self.options["window_seconds"])
        index = np.floor((notes.start - first) / w).astype(np.int64)
        frames, stamps = [], []
        for k in np.unique(index):
            t0 = first + k * w
            frames.append(describe(notes.subset(index == k), t0, t0 + w))
            stamps.append(t0)
        return Embedding(frames=np.stack(frames), clip=clip, timestamps=np.asarray(stamps),
                         info={"n_notes": int(len(notes.start)), "seconds": round(last - first, 3)})
