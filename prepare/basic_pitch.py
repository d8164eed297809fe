"""Spotify's basic-pitch (ICASSP 2022 model, package 0.4.0) run with ONNX Runtime, and its note
creation re-implemented: audio file -> model output -> note events -> MIDI file.

The published ONNX export of the network is run as it ships (the reference package itself picks
that file when TensorFlow is absent), so the model output is the reference's by construction; the
windowing, stitching and note creation around it follow ``basic_pitch.inference.predict`` step by
step (see ``shared/specs/basic_pitch.md``), including its dtypes, because an onset peak decided in
float64 instead of float32 can move a note.

Shapes: ``note`` and ``onset`` are ``(n_frames, 88)`` (MIDI 21..108), ``contour`` is
``(n_frames, 264)`` (3 bins per semitone from 27.5 Hz), at 22050 / 256 frames per second.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import zipfile
from pathlib import Path

import numpy as np

from embedders.base import WeightsError
from embedders.lib.audio_io import read_audio
from embedders.lib.weights import cache_dir, download, weights_fingerprint
from common.fsutil import atomic_path, sha256_file

SAMPLE_RATE = 22050
FFT_HOP = 256
FRAMES_PER_SECOND = SAMPLE_RATE // FFT_HOP  # 86: an integer in the reference, not 86.13
WINDOW_SAMPLES = 2 * SAMPLE_RATE - FFT_HOP  # 43844 samples per model call
WINDOW_FRAMES = 172
OVERLAP_FRAMES = 30
HOP_SAMPLES = WINDOW_SAMPLES - OVERLAP_FRAMES * FFT_HOP  # 36164
MIDI_OFFSET = 21
N_PITCHES = 88
CONTOUR_BINS_PER_SEMITONE = 3
N_CONTOUR_BINS = 264
ENERGY_TOLERANCE = 11
#: Windows per ONNX Runtime call. One, as the reference: the exported graph normalises the
#: log-CQT by its minimum and maximum over the whole input batch, so batching windows changes
#: the outputs (measured: up to 0.05 on the contour on the fixtures).
WINDOW_BATCH = 1
PITCH_BEND_RANGE_TICKS = 8192

MODEL_FILE = "nmp.onnx"
MODEL_SHA256 = "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec"
WHEEL_NAME = "basic_pitch-0.4.0-py2.py3-none-any.whl"
WHEEL_SHA256 = "738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0"
WHEEL_URL = ("https://files.pythonhosted.org/packages/99/0e/3a36d22562daeb0ae3c78ac78da3f8dba96"
             "543c5576ed57d4acb8ddbab5b/" + WHEEL_NAME)
MODEL_IN_WHEEL = "basic_pitch/saved_models/icassp_2022/nmp.onnx"
_INPUT = "serving_default_input_2:0"
_OUTPUTS = {"note": "StatefulPartitionedCall:1", "onset": "StatefulPartitionedCall:2",
            "contour": "StatefulPartitionedCall:0"}
HOW_TO_PROVIDE = (f"Provide it with --model PATH (the {MODEL_FILE} from the basic-pitch 0.4.0 "
                  f"wheel, {MODEL_IN_WHEEL}), put it in the cache folder, or "
                  "`pip install --no-deps basic-pitch==0.4.0`.")


@dataclasses.dataclass(frozen=True)
class NoteOptions:
    """The reference ``predict`` options that shape the notes (same names and defaults)."""

    onset_threshold: float = 0.5
    frame_threshold: float = 0.3
    minimum_note_length: float = 127.70  # milliseconds
    minimum_frequency: float | None = None  # Hz
    maximum_frequency: float | None = None  # Hz
    multiple_pitch_bends: bool = False
    melodia_trick: bool = True
    midi_tempo: float = 120.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first option out of range."""
        for name in ("onset_threshold", "frame_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.minimum_note_length < 0:
            raise ValueError(f"minimum_note_length must be >= 0 ms, got {self.minimum_note_length}")
        for name in ("minimum_frequency", "maximum_frequency"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 Hz, got {value}")
        if (self.minimum_frequency is not None and self.maximum_frequency is not None
                and self.minimum_frequency >= self.maximum_frequency):
            raise ValueError("minimum_frequency must be below maximum_frequency")
        if not self.midi_tempo > 0:
            raise ValueError(f"midi_tempo must be > 0, got {self.midi_tempo}")

    @property
    def minimum_note_frames(self) -> int:
        return int(np.round(self.minimum_note_length / 1000 * (SAMPLE_RATE / FFT_HOP)))


# -- the model file ----------------------------------------------------------------------------

def installed_package_model() -> Path | None:
    """``nmp.onnx`` inside an installed ``basic_pitch`` package, found without importing it
    (its ``__init__`` probes TensorFlow and friends)."""
    try:
        spec = importlib.util.find_spec("basic_pitch")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "saved_models" / "icassp_2022" / MODEL_FILE
        if path.is_file():
            return path
    return None


def resolve_model(path: str | os.PathLike | None = None, *, allow_download: bool = True) -> Path:
    """The basic-pitch ONNX model: ``path`` (a file, or a folder holding ``nmp.onnx``), else the
    user cache (``<cache>/basic_pitch/nmp.onnx``), else an installed ``basic-pitch`` package,
    else the 0.4.0 wheel downloaded once from PyPI (SHA-256 checked) with the model extracted
    into the cache.

    Raises
    ------
    WeightsError
        A given path that does not exist, or no model and no download possible.
    """
    if path is not None:
        path = Path(path).expanduser()
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.is_file():
            raise WeightsError(f"basic-pitch model not found at {path}. {HOW_TO_PROVIDE}")
        return path
    cached = cache_dir("basic_pitch") / MODEL_FILE
    if cached.is_file():
        return cached
    installed = installed_package_model()
    if installed is not None:
        return installed
    if not allow_download:
        raise WeightsError(f"basic-pitch model {MODEL_FILE} not found. {HOW_TO_PROVIDE}")
    wheel = download(WHEEL_URL, cache_dir("basic_pitch") / WHEEL_NAME, sha256=WHEEL_SHA256,
                     how_to_provide=HOW_TO_PROVIDE)
    try:
        with zipfile.ZipFile(wheel) as zf, atomic_path(cached, suffix=".part") as tmp:
            tmp.write_bytes(zf.read(MODEL_IN_WHEEL))
            if sha256_file(tmp) != MODEL_SHA256:
                raise WeightsError(f"{MODEL_IN_WHEEL} in {wheel} has an unexpected SHA-256")
    finally:
        wheel.unlink(missing_ok=True)  # 0.7 MB of TensorFlow formats we never use
    return cached


class BasicPitchModel:
    """The published network in an ONNX Runtime session.

    Parameters
    ----------
    model_path : str or Path, optional
        See :func:`resolve_model`.
    threads : int
        ONNX Runtime intra-op threads (default 1, with thread spinning off: on a shared 2-core
        machine this was 3x faster per window than ONNX Runtime's default, with identical
        outputs on every fixture; run files in parallel with ``--workers`` instead).
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *, threads: int = 1):
        self.model_path = resolve_model(model_path)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise WeightsError("basic-pitch needs onnxruntime: pip install onnxruntime") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads or 1))
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise WeightsError(f"{self.model_path} is not a usable ONNX model: {exc}") from exc
        self.identity = weights_fingerprint(self.model_path)

    def run_windows(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """One model call on ``(n, 43844, 1)`` float32 windows -> ``note``/``onset``
        ``(n, 172, 88)``, ``contour`` ``(n, 172, 264)``. The reference's numbers need n = 1
        (see :data:`WINDOW_BATCH`)."""
        out = self.session.run(list(_OUTPUTS.values()),
                               {_INPUT: np.asarray(windows, dtype=np.float32)})
        return dict(zip(_OUTPUTS, out))

    def predict_audio(self, audio: np.ndarray) -> dict[str, np.ndarray]:
        """Model output for mono float32 audio at 22050 Hz, windowed and stitched as the
        reference: ``{"note": (n, 88), "onset": (n, 88), "contour": (n, 264)}``,
        ``n = floor(len(audio) * 86 / 22050)``."""
        audio = np.asarray(audio, dtype=np.float32)
        padded = np.concatenate([np.zeros(OVERLAP_FRAMES * FFT_HOP // 2, np.float32), audio])
        parts: dict[str, list[np.ndarray]] = {k: [] for k in _OUTPUTS}
        half = OVERLAP_FRAMES // 2
        starts = list(range(0, len(padded), HOP_SAMPLES))
        for b in range(0, len(starts), WINDOW_BATCH):
            batch = np.zeros((len(starts[b:b + WINDOW_BATCH]), WINDOW_SAMPLES, 1), np.float32)
            for j, start in enumerate(starts[b:b + WINDOW_BATCH]):
                window = padded[start:start + WINDOW_SAMPLES]  # the last one zero-padded
                batch[j, :len(window), 0] = window
            for name, arr in self.run_windows(batch).items():
                parts[name].extend(arr[:, half:-half])
        n_frames = int(np.floor(len(audio) * (FRAMES_PER_SECOND / SAMPLE_RATE)))
        return {name: np.concatenate(p)[:n_frames] for name, p in parts.items()}

    def predict_file(self, path: str | os.PathLike) -> dict[str, np.ndarray]:
        """Model output for an audio file (read as ``librosa.load(path, sr=22050, mono=True)``,
        i.e. channel mean then soxr HQ)."""
        return self.predict_audio(load_audio(path))


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """Mono float32 samples at 22050 Hz, as ``librosa.load(path, sr=22050, mono=True)`` gives
    them (float32 decode, channel mean, soxr HQ, length ``ceil(n * 22050 / sr)``), without
    importing librosa (and numba) for it.

    Raises
    ------
    InputError
        Unreadable or empty audio, or non-finite samples.
    """
    import soxr

    path = str(path)
    audio, sr = read_audio(path, dtype="float32")  # InputError naming the file and the reason
    mono = np.mean(audio.T, axis=0)  # librosa's channel-first mean
    if sr == SAMPLE_RATE:
        return mono
    n_out = int(np.ceil(mono.shape[-1] * (float(SAMPLE_RATE) / sr)))
    resampled = soxr.resample(mono, sr, SAMPLE_RATE, quality="soxr_hq")
    if len(resampled) < n_out:
        resampled = np.pad(resampled, (0, n_out - len(resampled)))
    return np.asarray(resampled[:n_out], dtype=np.float32)


# -- note creation -----------------------------------------------------------------------------

def frame_times(n_frames: int) -> np.ndarray:
    """Seconds of each model frame as the reference reports them ``(n_frames,)``: a fixed
    correction every 172 frames (kept although stitched windows give 142 frames each, so that
    times match the reference to the tick)."""
    idx = np.arange(n_frames)
    original = (idx * FFT_HOP).astype(int) / float(SAMPLE_RATE)
    window_offset = (FFT_HOP / SAMPLE_RATE) * (WINDOW_FRAMES - WINDOW_SAMPLES / FFT_HOP) + 0.0018
    return original - window_offset * np.floor(idx / WINDOW_FRAMES)


def _hz_to_midi(hz: float) -> float:
    return 12 * (np.log2(hz) - np.log2(440.0)) + 69


def _inferred_onsets(onsets: np.ndarray, frames: np.ndarray, n_diff: int = 2) -> np.ndarray:
    # onsets from rises of the note activation: min over 1- and 2-frame differences, scaled to
    # the onset maximum; float64 like the reference (its zero padding is float64)
    diffs = []
    for n in range(1, n_diff + 1):
        padded = np.concatenate([np.zeros((n, frames.shape[1])), frames])
        diffs.append(padded[n:, :] - padded[:-n, :])
    rise = np.min(diffs, axis=0)
    rise[rise < 0] = 0
    rise[:n_diff, :] = 0
    with np.errstate(invalid="ignore", divide="ignore"):  # silence: 0/0 -> NaN, no peaks
        rise = np.max(onsets) * rise / np.max(rise)
    return np.max([onsets, rise], axis=0)


def _extend(energy: np.ndarray, t: int, pitch: int, step: int, frame_threshold: float,
            stop: int, zero: bool) -> tuple[int, int]:
    # walk from t in direction step until ENERGY_TOLERANCE frames in a row are below threshold
    # (or stop is reached); returns (position after the walk, count of trailing low frames)
    k = 0
    i = t
    while (i < stop if step > 0 else i > stop) and k < ENERGY_TOLERANCE:
        k = k + 1 if energy[i, pitch] < frame_threshold else 0
        if zero:
            energy[i, max(pitch - 1, 0):pitch + 2] = 0
        i += step
    return i, k


def output_to_note_frames(note: np.ndarray, onset: np.ndarray, *, onset_threshold: float = 0.5,
                          frame_threshold: float = 0.3, minimum_note_frames: int = 11,
                          minimum_frequency: float | None = None,
                          maximum_frequency: float | None = None,
                          melodia_trick: bool = True) -> list[tuple[int, int, int, np.floating]]:
    """Notes as ``(start_frame, end_frame, midi_pitch, amplitude)`` from the note and onset
    activations ``(n_frames, 88)``, in the reference's order (onset-seeded notes from the last
    onset backwards, then melodia-trick notes by decreasing peak).

    ``note`` and ``onset`` are modified in place by the frequency limits, as in the reference.
    """
    # Long on purpose: one pass of the reference's note decoding, kept in its order (limits,
    # onset peaks, then the melodia trick) so the notes match it step for step.
    n_frames = note.shape[0]
    if maximum_frequency is not None:
        hi = int(np.round(_hz_to_midi(maximum_frequency) - MIDI_OFFSET))
        onset[:, hi:] = 0
        note[:, hi:] = 0
    if minimum_frequency is not None:
        lo = int(np.round(_hz_to_midi(minimum_frequency) - MIDI_OFFSET))
        onset[:, :lo] = 0
        note[:, :lo] = 0
    import scipy.signal

    onsets = _inferred_onsets(onset, note)
    peak_values = np.zeros(onsets.shape)
    peaks = scipy.signal.argrelmax(onsets, axis=0)
    peak_values[peaks] = onsets[peaks]
    times, pitches = np.where(peak_values >= onset_threshold)
    energy = np.zeros(note.shape)
    energy[:, :] = note
    events = []
    for t0, p in zip(times[::-1], pitches[::-1]):
        if t0 >= n_frames - 1:
            continue
        i, k = _extend(energy, t0 + 1, p, 1, frame_threshold, n_frames - 1, zero=False)
        end = i - k
        if end - t0 <= minimum_note_frames:
            continue
        energy[t0:end, max(p - 1, 0):p + 2] = 0
        events.append((int(t0), int(end), int(p) + MIDI_OFFSET, np.mean(note[t0:end, p])))
    if melodia_trick:
        # The reference repeatedly takes the argmax of the whole remaining energy while it
        # exceeds the threshold. Energy only ever drops to 0, so that argmax is always the next
        # cell, in order of decreasing original value (ties: lowest flat index, as np.argmax),
        # among the cells initially above the threshold that are not yet zeroed: one sort
        # instead of two full scans per pick, with the same picks in the same order.
        flat = energy.reshape(-1)
        candidates = np.flatnonzero(flat > frame_threshold)
        order = candidates[np.argsort(-flat[candidates], kind="stable")]
        for idx in order:
            if not flat[idx] > frame_threshold:
                continue  # zeroed by an earlier note
            t_mid, p = divmod(int(idx), energy.shape[1])
            energy[t_mid, p] = 0
            i, k = _extend(energy, t_mid + 1, p, 1, frame_threshold, n_frames - 1, zero=True)
            end = i - 1 - k
            i, k = _extend(energy, t_mid - 1, p, -1, frame_threshold, 0, zero=True)
            start = i + 1 + k
            if end - start <= minimum_note_frames:
                continue
            events.append((int(start), int(end), int(p) + MIDI_OFFSET,
                           np.mean(note[start:end, p])))
    return events


def pitch_bends(contour: np.ndarray, notes: list, *, tolerance_bins: int = 25) -> list[list[int]]:
    """Per note, per frame: the contour peak near the note (Gaussian-weighted, sigma 5 bins,
    within ``tolerance_bins``) minus the note's bin, in 1/3 semitones."""
    import scipy.signal.windows

    width = 2 * tolerance_bins + 1
    weights = scipy.signal.windows.gaussian(width, std=5)
    bends = []
    for start, end, pitch, _ in notes:
        hz = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
        centre = int(np.round(12.0 * CONTOUR_BINS_PER_SEMITONE * np.log2(hz / 27.5)))
        lo = max(centre - tolerance_bins, 0)
        hi = min(N_CONTOUR_BINS, centre + tolerance_bins + 1)
        w = weights[max(0, tolerance_bins - centre):
                    width - max(0, centre - (N_CONTOUR_BINS - tolerance_bins - 1))]
        shift = tolerance_bins - max(0, tolerance_bins - centre)
        bends.append([int(b) for b in np.argmax(contour[start:end, lo:hi] * w, axis=1) - shift])
    return bends


@dataclasses.dataclass
class NoteEvent:
    """One transcribed note: seconds, MIDI pitch, amplitude in [0, 1], bends in 1/3 semitones
    (one per frame) or None."""

    start: float
    end: float
    pitch: int
    amplitude: float
    bends: list[int] | None

    def as_tuple(self) -> tuple:
        return (self.start, self.end, self.pitch, self.amplitude, self.bends)


def model_output_to_notes(model_output: dict[str, np.ndarray],
                          options: NoteOptions = NoteOptions()) -> list[NoteEvent]:
    """Note events from a model output (``note``, ``onset``, ``contour``), as the reference's
    ``predict`` returns them. The frequency limits zero columns of ``model_output`` in place."""
    options.validate()
    frames = output_to_note_frames(
        model_output["note"], model_output["onset"], onset_threshold=options.onset_threshold,
        frame_threshold=options.frame_threshold, minimum_note_frames=options.minimum_note_frames,
        minimum_frequency=options.minimum_frequency, maximum_frequency=options.maximum_frequency,
        melodia_trick=options.melodia_trick)
    bends = pitch_bends(model_output["contour"], frames)
    times = frame_times(model_output["contour"].shape[0])
    return [NoteEvent(float(times[s]), float(times[e]), p, a, b)
            for (s, e, p, a), b in zip(frames, bends)]


def notes_to_midi(notes: list[NoteEvent], *, multiple_pitch_bends: bool = False,
                  midi_tempo: float = 120.0):
    """The reference's MIDI: a ``pretty_midi.PrettyMIDI`` at ``midi_tempo``, program 4 (Electric
    Piano 1), velocity ``round(127 * amplitude)``, bends ``round(bend * 4096 / 3)`` spread evenly
    over the note. One instrument, where notes overlapping another lose their bends (one bend
    wheel per channel); with ``multiple_pitch_bends``, one instrument per pitch, bends kept."""
    import pretty_midi

    rows = [n.as_tuple() for n in notes]
    if not multiple_pitch_bends:
        rows = sorted(rows)
        for i in range(len(rows) - 1):
            for j in range(i + 1, len(rows)):
                if rows[j][0] >= rows[i][1]:
                    break
                rows[i] = rows[i][:-1] + (None,)
                rows[j] = rows[j][:-1] + (None,)
    pm = pretty_midi.PrettyMIDI(initial_tempo=midi_tempo)
    program = pretty_midi.instrument_name_to_program("Electric Piano 1")
    instruments: dict[int, object] = {}
    for start, end, pitch, amplitude, bends in rows:
        key = pitch if multiple_pitch_bends else 0
        if key not in instruments:
            instruments[key] = pretty_midi.Instrument(program=program)
        inst = instruments[key]
        inst.notes.append(pretty_midi.Note(velocity=int(np.round(127 * amplitude)), pitch=pitch,
                                           start=start, end=end))
        if not bends:
            continue
        ticks = np.round(np.array(bends) * 4096 / CONTOUR_BINS_PER_SEMITONE).astype(int)
        ticks = np.clip(ticks, -PITCH_BEND_RANGE_TICKS, PITCH_BEND_RANGE_TICKS - 1)
        for when, value in zip(np.linspace(start, end, len(bends)), ticks):
            inst.pitch_bends.append(pretty_midi.PitchBend(int(value), float(when)))
    pm.instruments.extend(instruments.values())
    return pm
