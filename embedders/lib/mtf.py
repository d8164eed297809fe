"""MIDI → MTF ("MIDI Text Format") → M3 patches, as used by CLaMP 2 (symbolic path).

Pure functions, no torch. The text is the one the CLaMP 2 reference converter writes with
``m3_compatible=True`` (the format its weights were trained on):

* the file is parsed with mido (1.3.x) and its tracks are merged the way mido's ``merged_track``
  does it: absolute ticks, a stable sort by tick (ties keep track order, then file order), deltas
  recomputed, every ``end_of_track`` removed (its delta moves to the next message) and one final
  ``end_of_track`` carrying the delta of trailing removed ones;
* after merging, nine text-like meta types and sysex are dropped, *with* their delta (the next
  kept message keeps its own delta: this timing quirk is part of the format);
* every kept message becomes one line, the ``str`` of each value of ``msg.dict()`` joined with a
  space (time first for channel messages, last for meta messages), escaped with
  ``unicode_escape``; the first line is ``ticks_per_beat N``; lines are joined with ``\\n`` and
  there is no trailing newline.

The patchilizer merges consecutive lines of the same message type into patches of at most 62
characters and encodes each one as ``[1] + ord(chars) + [2]`` cut / padded to 64 ids, with a BOS
patch (64 × 1) in front and an EOS patch (1 followed by 63 × 2) at the end.

Accepted inputs are exactly those the reference converter accepts: anything mido reads, except
type 2 files (mido gives them no merged track, so the reference fails on them). Unusual ones are
converted as the reference converts them and get a short note (:func:`midi_to_mtf_and_notes`):
SMPTE time division (the header line holds the signed division as mido reads it, e.g.
``ticks_per_beat -6360``), division 0, a non-standard format number (tracks merged as for type 1)
and files without any sounding note.

Our own safety limits (documented refusals rather than crashes or hangs): files over
:data:`MAX_FILE_BYTES`, over :data:`MAX_MESSAGES` messages, or holding a run of more than
:data:`MAX_HIGH_BYTE_RUN` bytes ≥ 0x80 (mido's variable-length number reader would need quadratic
time on it) are refused with :class:`~embedders.base.InputError`.
"""
from __future__ import annotations

import io
import os
import re
from operator import itemgetter
from typing import Union

import numpy as np

from ..base import InputError

#: Largest MIDI file read (bytes). mido keeps one Python object per message (a few hundred
#: bytes each), so a 4 MiB file of 2-byte running-status messages is already ~1 GB of objects.
MAX_FILE_BYTES = 4 * 2 ** 20
#: Largest number of messages (all tracks together) accepted after parsing.
MAX_MESSAGES = 1_000_000
#: Longest run of bytes ≥ 0x80 accepted in the raw file (a variable-length number is at most
#: 4 bytes in a valid file; long UTF-8 / Shift-JIS texts in meta events stay far below this).
MAX_HIGH_BYTE_RUN = 16384

#: Meta message types the CLaMP 2 converter leaves out (m3_compatible=True).
DROPPED_META_TYPES = frozenset({
    "text", "copyright", "track_name", "instrument_name", "lyrics", "marker", "cue_marker",
    "device_name", "sequencer_specific"})
#: Non-meta message types it leaves out (F0 and F7 sysex events both parse as ``sysex``).
DROPPED_MESSAGE_TYPES = frozenset({"sysex"})

PATCH_SIZE = 64
PATCH_LENGTH = 512
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
CHAR_VOCAB = 128

Source = Union[str, os.PathLike, bytes, bytearray]

_LINE_RE = re.compile(r".*?\n|.*$")


def _label(source: Source, path: str | None) -> str:
    if path is not None:
        return str(path)
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    return str(source)


def _read_bytes(source: Source, label: str) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        try:
            size = os.path.getsize(source)
        except OSError as exc:
            raise InputError(label, f"cannot read file: {exc.strerror or exc}") from exc
        if size > MAX_FILE_BYTES:
            raise InputError(label, f"MIDI file is {size / 2 ** 20:.1f} MiB, over the "
                                    f"{MAX_FILE_BYTES / 2 ** 20:.0f} MiB limit")
        try:
            with open(source, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise InputError(label, f"cannot read file: {exc.strerror or exc}") from exc
    if not data:
        raise InputError(label, "file is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise InputError(label, f"MIDI file is over the {MAX_FILE_BYTES / 2 ** 20:.0f} MiB limit")
    return data


def _longest_high_run(data: bytes) -> int:
    """Length of the longest run of consecutive bytes ≥ 0x80."""
    high = np.frombuffer(data, dtype=np.uint8) >= 0x80
    if not high.any():
        return 0
    padded = np.concatenate(([False], high, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[0::2]).max())


def load_midi(source: Source, *, path: str | None = None):
    """Parse MIDI bytes or a file with mido (reference defaults: latin1, ``clip=False``).

    Returns
    -------
    mido.MidiFile

    Raises
    ------
    InputError
        Unreadable, oversized or malformed files, and type 2 files (which the reference cannot
        convert either).
    """
    import mido

    label = _label(source, path)
    data = _read_bytes(source, label)
    if data[:4] != b"MThd":
        raise InputError(label, "not a MIDI file (no 'MThd' header)")
    run = _longest_high_run(data)
    if run > MAX_HIGH_BYTE_RUN:
        raise InputError(label, f"malformed MIDI: {run} consecutive bytes >= 0x80 "
                                f"(limit {MAX_HIGH_BYTE_RUN})")
    try:
        mid = mido.MidiFile(file=io.BytesIO(data))
    except MemoryError as exc:
        raise InputError(label, "MIDI file too large to parse in memory") from exc
    except EOFError as exc:
        raise InputError(label, "truncated MIDI file (unexpected end of data)") from exc
    except Exception as exc:  # mido raises OSError, ValueError, KeyError, KeySignatureError...
        text = str(exc).strip() or type(exc).__name__
        raise InputError(label, f"not a readable MIDI file ({text[:160]})") from exc
    if mid.type == 2:
        # mido builds no merged track for type 2, so the reference converter fails on these files
        raise InputError(label, "type 2 MIDI (independent sequential patterns): the CLaMP 2 "
                                "reference cannot merge its tracks either")
    n_messages = sum(len(t) for t in mid.tracks)
    if n_messages > MAX_MESSAGES:
        raise InputError(label, f"{n_messages:,} MIDI messages, over the {MAX_MESSAGES:,} limit")
    return mid


def merged_messages(tracks) -> list:
    """``(delta_ticks, message)`` pairs in mido ``merged_track`` order, without copying messages.

    The final ``end_of_track`` is returned as ``(delta, None)``.
    """
    stamped = []
    for track in tracks:
        now = 0
        for msg in track:
            now += msg.time
            stamped.append((now, msg))
    stamped.sort(key=itemgetter(0))  # stable: ties keep track order, then order in the track
    out = []
    prev = 0
    carry = 0  # deltas of removed end_of_track messages
    for tick, msg in stamped:
        delta = tick - prev
        prev = tick
        if msg.type == "end_of_track":
            carry += delta
            continue
        out.append((delta + carry, msg))
        carry = 0
    out.append((carry, None))
    return out


def _keep(msg) -> bool:
    if msg.is_meta:
        return msg.type not in DROPPED_META_TYPES
    return msg.type not in DROPPED_MESSAGE_TYPES


def message_line(msg, delta: int) -> str:
    """One MTF line: the values of ``msg.dict()`` (with ``time=delta``) joined by spaces."""
    fields = msg.dict()
    if msg.is_meta:
        # a meta message copied with a new time keeps its attribute order: time stays last
        fields["time"] = delta
        values = fields.values()
    else:
        # a channel / system message copied with a new time is rebuilt from its spec:
        # type, time, then the spec's value names
        from mido.messages.specs import SPEC_BY_TYPE
        values = [fields["type"], delta] + [fields[k] for k in SPEC_BY_TYPE[msg.type]["value_names"]]
    line = " ".join(str(v) for v in values).strip()
    return line.encode("unicode_escape").decode("utf-8")


def header_notes(mid) -> list[str]:
    """Short notes on unusual but accepted header fields of a parsed file (empty if none)."""
    notes = []
    division = mid.ticks_per_beat
    if division < 0:
        fps, per_frame = -(division >> 8), division & 0xFF
        notes.append(f"SMPTE time division ({fps} fps, {per_frame} ticks/frame)")
    elif division == 0:
        notes.append("time division 0")
    if mid.type not in (0, 1):
        notes.append(f"non-standard MIDI format {mid.type}: tracks merged as for type 1")
    return notes


def midi_to_mtf_and_notes(source: Source, *, path: str | None = None) -> tuple[str, list[str]]:
    """Convert a MIDI file (path or bytes) to CLaMP 2 MTF text, with notes on unusual input.

    Returns
    -------
    text : str
        The MTF text (no trailing newline), identical to the reference converter's.
    notes : list of str
        Short notes on accepted but unusual input (``"SMPTE time division (25 fps, 40
        ticks/frame)"``, ``"no sounding notes"``, ...); empty for an ordinary file.

    Raises
    ------
    InputError
        Anything that makes the file unusable, with a one-line reason.
    """
    label = _label(source, path)
    mid = load_midi(source, path=label)
    notes = header_notes(mid)
    lines = [f"ticks_per_beat {mid.ticks_per_beat}"]
    has_note = False
    try:
        for delta, msg in merged_messages(mid.tracks):
            if msg is None:
                lines.append(f"end_of_track {delta}")
                continue
            if not _keep(msg):
                continue
            if msg.type == "note_on" and msg.velocity > 0:
                has_note = True
            lines.append(message_line(msg, delta))
    except ValueError as exc:  # e.g. an absurd delta time beyond Python's int→str digit limit
        raise InputError(label, f"cannot convert MIDI to text ({str(exc)[:160]})") from exc
    if not has_note:
        notes.append("no sounding notes")
    return "\n".join(lines), notes


def midi_to_mtf(source: Source, *, path: str | None = None) -> str:
    """Convert a MIDI file (path or bytes) to CLaMP 2 MTF text (no trailing newline).

    Parameters
    ----------
    source : str, os.PathLike, bytes
        The MIDI file, or its bytes.
    path : str, optional
        Name used in error messages when ``source`` is bytes.

    Raises
    ------
    InputError
        Anything that makes the file unusable, with a one-line reason.
    """
    return midi_to_mtf_and_notes(source, path=path)[0]


def read_mtf(path: str | os.PathLike) -> str:
    """Read an ``.mtf`` file as the reference extractor does (UTF-8, universal newlines)."""
    label = str(path)
    try:
        size = os.path.getsize(path)
        if size > 8 * MAX_FILE_BYTES:
            raise InputError(label, f"MTF file is {size / 2 ** 20:.1f} MiB, over the "
                                    f"{8 * MAX_FILE_BYTES / 2 ** 20:.0f} MiB limit")
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except InputError:
        raise
    except UnicodeDecodeError as exc:
        raise InputError(label, f"MTF file is not valid UTF-8 ({exc.reason})") from exc
    except OSError as exc:
        raise InputError(label, f"cannot read file: {exc.strerror or exc}") from exc
    if not text.strip():
        raise InputError(label, "MTF file is empty")
    if text.split("\n", 1)[0].split(" ")[0] != "ticks_per_beat":
        raise InputError(label, "not an MTF file (first line must start with 'ticks_per_beat')")
    return text


def mtf_patch_strings(text: str, patch_size: int = PATCH_SIZE) -> list[str]:
    """Merge MTF lines into patch strings (without BOS/EOS), as the M3 patchilizer does."""
    from unidecode import unidecode

    text = unidecode(text)
    lines = [s for s in _LINE_RE.findall(text) if s]
    if not lines:
        return []
    if lines[0].split(" ")[0] != "ticks_per_beat":
        raise ValueError("not MTF text: the first line must start with 'ticks_per_beat'")
    limit = patch_size - 2
    patches: list[str] = []
    cur = ""
    for line in lines:
        parts = line.split(" ")
        rest = " ".join(parts[1:])
        if cur.startswith(parts[0]) and len(cur) + len(rest) <= limit:
            cur = cur[:-1] + "\t" + rest
        else:
            if cur:
                patches.append(cur)
            cur = line
    if cur:
        patches.append(cur)
    return patches


def patchilize(text: str, patch_size: int = PATCH_SIZE, dtype=np.int64) -> np.ndarray:
    """MTF text → patch ids including the BOS and EOS patches.

    Each patch string s becomes ``[1] + [ord(c) for c in s] + [2]``, cut to ``patch_size`` ids and
    zero-padded (so a string of ``patch_size - 1`` characters or more loses its EOS id).

    Returns
    -------
    np.ndarray [shape=(n_patches, patch_size), dtype=dtype]

    Raises
    ------
    ValueError
        Text that is not MTF, or characters outside the 128-id vocabulary.
    """
    strings = mtf_patch_strings(text, patch_size)
    strings = [chr(BOS_ID) * patch_size] + strings + [chr(EOS_ID) * patch_size]
    out = np.zeros((len(strings), patch_size), dtype=dtype)
    out[:, 0] = BOS_ID
    room = patch_size - 1
    for i, s in enumerate(strings):
        try:
            raw = s[:room].encode("ascii")
        except UnicodeEncodeError as exc:
            raise ValueError(f"character {s[exc.start]!r} is outside the {CHAR_VOCAB}-id "
                             f"vocabulary") from None
        n = len(raw)
        out[i, 1:1 + n] = np.frombuffer(raw, dtype=np.uint8)
        if n < room:
            out[i, 1 + n] = EOS_ID
    return out


def segment_bounds(n_patches: int, length: int = PATCH_LENGTH) -> list[tuple[int, int]]:
    """``[start, end)`` rows of each segment; the last one is the last ``length`` rows."""
    if n_patches <= 0:
        return []
    bounds = [(i, min(i + length, n_patches)) for i in range(0, n_patches, length)]
    bounds[-1] = (max(0, n_patches - length), n_patches)
    return bounds


def segment_weights(n_patches: int, length: int = PATCH_LENGTH) -> list[int]:
    """Weights of the segments in the global mean: ``length`` per full chunk, then the remainder."""
    weights = [length] * (n_patches // length)
    if n_patches % length:
        weights.append(n_patches % length)
    return weights
