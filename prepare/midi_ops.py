"""MIDI surgery on mido files: cut a time window out of a piece with its state carried in, and
split a multitrack piece into instrument parts. Pure functions: ``mido.MidiFile`` in, new
``mido.MidiFile`` out, nothing written.

Times are seconds on the piece's own tempo map; tick resolution (``ticks_per_beat``) is kept.
"""
from __future__ import annotations

import dataclasses
import os

import mido
import numpy as np

from embedders.base import InputError

#: General MIDI instrument families (program // 8), as class labels.
GM_FAMILIES = ("piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "ensemble",
               "brass", "reed", "pipe", "synth_lead", "synth_pad", "synth_effects", "ethnic",
               "percussive", "sound_effects")
DRUMS = "drums"
DRUM_CHANNEL = 9
#: Meta messages that describe the whole piece (kept in every part and carried into windows).
_CONDUCTOR_META = ("set_tempo", "time_signature", "key_signature")


def read_midi(path: str | os.PathLike) -> mido.MidiFile:
    """Parse a MIDI file; :class:`~embedders.base.InputError` naming the reason when mido cannot,
    or when its time division is SMPTE (no beats to keep tick resolution in)."""
    try:
        mid = mido.MidiFile(str(path), clip=True)
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise InputError(path, f"not a readable MIDI file ({str(exc)[:200] or type(exc).__name__})")
    if mid.type == 2:
        raise InputError(path, "type 2 MIDI (independent sequences) is not supported")
    if mid.ticks_per_beat <= 0:
        raise InputError(path, "SMPTE or zero time division is not supported")
    return mid


def _absolute(track) -> list[tuple[int, mido.Message]]:
    tick, out = 0, []
    for msg in track:
        tick += msg.time
        out.append((tick, msg))
    return out


def _tempo_map(mid: mido.MidiFile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ticks, seconds, tempo)`` at every tempo change (first row: tick 0, 120 BPM unless set)."""
    changes = sorted((t, m.tempo) for tr in mid.tracks for t, m in _absolute(tr)
                     if m.type == "set_tempo")
    ticks, tempos = [0], [500000]
    for t, tempo in changes:
        if t == ticks[-1]:
            tempos[-1] = tempo
        else:
            ticks.append(t)
            tempos.append(tempo)
    ticks_a, tempos_a = np.array(ticks, dtype=np.float64), np.array(tempos, dtype=np.float64)
    spt = tempos_a / 1e6 / mid.ticks_per_beat  # seconds per tick in each segment
    secs = np.concatenate([[0.0], np.cumsum(np.diff(ticks_a) * spt[:-1])])
    return ticks_a, secs, spt


def seconds_to_tick(mid: mido.MidiFile, seconds: float) -> float:
    """Fractional tick at ``seconds`` on the file's tempo map."""
    ticks, secs, spt = _tempo_map(mid)
    i = int(np.searchsorted(secs, seconds, side="right") - 1)
    return float(ticks[i] + (seconds - secs[i]) / spt[i])


def crop_midi(mid: mido.MidiFile, start: float, end: float) -> mido.MidiFile:
    """The window ``[start, end)`` seconds of a piece as a new file starting at 0.

    Notes sounding at ``start`` begin at 0 (same velocity); notes still sounding at ``end``
    get a note-off there. The tempo, time and key signature in force at ``start``, and per
    channel the last program, controller values and pitch-bend before ``start``, are written at
    tick 0 of their track, so the window sounds as it does inside the piece. Events in the
    window keep their tick offsets (resolution and tempo map unchanged); the window's ticks are
    the original ones minus the tick of ``start`` (rounded to the tick grid).
    """
    if not end > start >= 0:
        raise ValueError(f"need 0 <= start < end, got start={start}, end={end}")
    t0 = seconds_to_tick(mid, start)
    t1 = seconds_to_tick(mid, end)
    # window edges on the tick grid: an event written at a rounded tick for time t belongs to
    # the side of the edge that t is on
    first = int(round(t0))  # first tick inside the window
    stop = int(round(t1))  # first tick after it
    shift = first
    out = mido.MidiFile(type=mid.type if mid.type in (0, 1) else 1,
                        ticks_per_beat=mid.ticks_per_beat, charset=mid.charset)
    for track in mid.tracks:
        timed_in = [(t, m) for t, m in _absolute(track) if m.type != "end_of_track"]
        # before the window: everything earlier, and note-offs exactly at its start (a note
        # ending there does not sound in the window)
        is_before = [t < first or (t == first and _is_note_off(m)) for t, m in timed_in]
        state: dict = {}  # carried-in state: key -> message
        sounding: dict[tuple[int, int], mido.Message] = {}
        for (tick, msg), before in zip(timed_in, is_before):
            if not before:
                continue
            if msg.type in _CONDUCTOR_META or msg.type == "track_name":
                state[msg.type] = msg
            elif msg.type == "program_change":
                state[("program", msg.channel)] = msg
            elif msg.type == "control_change":
                state[("cc", msg.channel, msg.control)] = msg
            elif msg.type == "pitchwheel":
                state[("bend", msg.channel)] = msg
            _track_note(sounding, msg)
        at_start = list(sounding.values())  # notes sounding when the window opens
        events: list[tuple[int, mido.Message]] = []
        for (tick, msg), before in zip(timed_in, is_before):
            if not before and tick < stop:
                events.append((max(0, tick - shift), msg))
                _track_note(sounding, msg)
        head = [m.copy(time=0) for m in state.values()]
        head += [m.copy(time=0) for m in at_start]
        end_tick = max(0, stop - shift)
        tail = [(end_tick, mido.Message("note_off", channel=m.channel, note=m.note, velocity=0))
                for m in sounding.values()]
        timed = [(0, m) for m in head] + events + tail
        new = mido.MidiTrack()
        last = 0
        for tick, msg in sorted(timed, key=lambda e: e[0]):  # stable: keeps order within a tick
            new.append(msg.copy(time=tick - last))
            last = tick
        new.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - last)))
        out.tracks.append(new)
    return out


def _is_note_off(msg) -> bool:
    return msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0)


def _track_note(sounding: dict, msg) -> None:
    """Keep ``sounding`` ((channel, note) -> note-on) up to date with one message."""
    if msg.type == "note_on" and msg.velocity > 0:
        sounding[(msg.channel, msg.note)] = msg
    elif _is_note_off(msg):
        sounding.pop((msg.channel, msg.note), None)


@dataclasses.dataclass
class Part:
    """One instrument part of a piece: its name (used in file names), its class label, the
    number of notes, and the part as a MIDI file."""

    name: str
    label: str
    n_notes: int
    midi: mido.MidiFile


def _program_label(program: int, is_drum: bool, labels: str) -> str:
    if is_drum:
        return DRUMS
    if labels == "program":
        import pretty_midi
        name = pretty_midi.program_to_instrument_name(program).lower()
        return "".join(c if c.isalnum() else "_" for c in name).strip("_")
    return GM_FAMILIES[program // 8]


def _streams(mid: mido.MidiFile):
    """The piece's events in absolute ticks: ``conductor`` (tempo, time and key signatures),
    ``streams`` ((track, channel) -> its channel messages) and ``names`` (track -> its first
    track name)."""
    conductor: list[tuple[int, mido.Message]] = []
    streams: dict[tuple[int, int], list[tuple[int, mido.Message]]] = {}
    names: dict[int, mido.Message] = {}
    for ti, track in enumerate(mid.tracks):
        for tick, msg in _absolute(track):
            if msg.type in _CONDUCTOR_META:
                conductor.append((tick, msg))
            elif msg.type == "track_name" and ti not in names:
                names[ti] = msg
            elif not msg.is_meta and hasattr(msg, "channel"):
                streams.setdefault((ti, msg.channel), []).append((tick, msg))
    return conductor, streams, names


def split_parts(mid: mido.MidiFile, *, by: str = "family", labels: str = "family",
                min_notes: int = 1) -> list[Part]:
    """Split a piece into instrument parts.

    Parameters
    ----------
    mid : mido.MidiFile
    by : {"family", "track", "channel"}
        ``family``: one part per General MIDI family (program // 8) and one for drums (channel
        10); ``track``: one per track; ``channel``: one per MIDI channel. A (track, channel)
        stream belongs to the family of its first program change (program 0 if none).
    labels : {"family", "program"}
        Class of a part: its family (``drums`` for channel 10), or its program's name; a part
        holding several programs takes the one with the most notes.
    min_notes : int
        Parts with fewer notes are dropped.

    Returns
    -------
    list of Part, ordered by name. Every part keeps the tempo, time and key signatures of the
    whole piece (gathered into its first track) and the resolution.
    """
    if by not in ("family", "track", "channel"):
        raise ValueError(f"by must be family, track or channel, got {by!r}")
    if labels not in ("family", "program"):
        raise ValueError(f"labels must be family or program, got {labels!r}")
    conductor, streams, names = _streams(mid)
    groups: dict[str, list[tuple[int, int]]] = {}
    notes_by_program: dict[str, dict[tuple[int, bool], int]] = {}
    for (ti, ch), events in streams.items():
        program = next((m.program for _, m in events if m.type == "program_change"), 0)
        is_drum = ch == DRUM_CHANNEL
        n = sum(1 for _, m in events if m.type == "note_on" and m.velocity > 0)
        if by == "family":
            key = DRUMS if is_drum else f"{program // 8:02d}-{GM_FAMILIES[program // 8]}"
        elif by == "track":
            key = f"track{ti:02d}"
        else:
            key = f"ch{ch + 1:02d}"
        groups.setdefault(key, []).append((ti, ch))
        counts = notes_by_program.setdefault(key, {})
        counts[(program, is_drum)] = counts.get((program, is_drum), 0) + n
    parts = []
    for key in sorted(groups):
        counts = notes_by_program[key]
        n_notes = sum(counts.values())
        if n_notes < max(1, min_notes):
            continue
        program, is_drum = max(counts, key=lambda k: (counts[k], -k[0]))
        out = mido.MidiFile(type=1, ticks_per_beat=mid.ticks_per_beat, charset=mid.charset)
        out.tracks.append(_track_from(sorted(conductor, key=lambda e: e[0])))
        for ti, ch in sorted(groups[key]):
            head = [(0, names[ti])] if ti in names else []
            out.tracks.append(_track_from(head + streams[(ti, ch)]))
        parts.append(Part(key, _program_label(program, is_drum, labels), n_notes, out))
    return parts


def _track_from(events: list[tuple[int, mido.Message]]) -> mido.MidiTrack:
    track, last = mido.MidiTrack(), 0
    for tick, msg in events:
        track.append(msg.copy(time=tick - last))
        last = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track
