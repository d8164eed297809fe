"""Controlled changes of a piece: MIDI variants (rendered) and audio deformations, cached.

A MIDI intervention changes exactly one thing of the MIDI and the variant is rendered with the
same renderer as the original, so an audio embedder compares rendering with rendering. The
original itself goes through the same pretty_midi read/write (:data:`ORIGINAL`), so a symbolic
embedder also compares like with like. Audio deformations change the rendered original:
``gain`` and ``lowpass`` through pedalboard (Spotify's audio effects library), ``noise`` as
seeded white Gaussian noise at the given signal-to-noise ratio (pedalboard has no noise
source; the formula is one line: noise power = signal power / 10^(SNR/10)).

Variants are files in a cache folder, named by the hash of (source content hash,
intervention, renderer identity, seed, :data:`VARIANT_VERSION`): written atomically, so a
re-run renders nothing and a killed run resumes; a variant that cannot be made (no notes
left, a render failure) is remembered with its reason in a ``.failed`` file.
"""
from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.fsutil import atomic_path, atomic_write_text, remove_stale_files
from .attributes import ProbeError

__all__ = ["AUDIO_INTERVENTIONS", "INTERVENTIONS", "MIDI_INTERVENTIONS", "ORIGINAL",
           "VARIANT_VERSION", "VariantError", "clean_stale_temp", "VariantTask", "apply_audio", "apply_midi",
           "intervention_rng", "is_audio_only", "make_variant", "remove_failure_marks",
           "variant_key"]

VARIANT_VERSION = 1
#: The original passed through pretty_midi and the renderer: what every variant is compared to.
ORIGINAL = "original"
MIDI_INTERVENTIONS = ("transpose:+1", "transpose:+2", "transpose:+5", "transpose:+7",
                      "transpose:+12", "tempo:0.8", "tempo:1.25", "instrument:swap",
                      "velocity:0.5", "dropout:0.1", "dropout:0.3", "jitter:0.03")
AUDIO_INTERVENTIONS = ("noise:20db", "gain:-12db", "lowpass:4000")
INTERVENTIONS = MIDI_INTERVENTIONS + AUDIO_INTERVENTIONS


class VariantError(ProbeError):
    """A variant that cannot be made (no notes left, unreadable source, render failure)."""


def is_audio_only(name: str) -> bool:
    return name in AUDIO_INTERVENTIONS


def _kind_amount(name: str) -> tuple[str, str]:
    if name not in INTERVENTIONS:
        raise ValueError(f"unknown intervention {name!r}; known: {' '.join(INTERVENTIONS)}")
    kind, _, amount = name.partition(":")
    return kind, amount


def intervention_rng(seed: int, source_hash: str, name: str) -> np.random.Generator:
    """The generator of one (piece, intervention): the same piece gets the same change."""
    return np.random.default_rng([int(seed), zlib.crc32(source_hash.encode()),
                                  zlib.crc32(name.encode())])


def _swap_program(program: int, rng: np.random.Generator) -> int:
    """A program of another GM family (8 programs each), same position within the family."""
    family = program // 8
    other = int(rng.choice([f for f in range(16) if f != family]))
    return other * 8 + program % 8


def apply_midi(pm, name: str, rng: np.random.Generator):
    """Change one thing of a PrettyMIDI in place (and return it).

    ``transpose:+k`` moves pitched notes k semitones (drums stay; notes leaving 0..127 are
    dropped); ``tempo:f`` plays f times as fast (every time, tempo map included, divided by f);
    ``instrument:swap`` moves every pitched part to a program of another GM family;
    ``velocity:f`` scales velocities (at least 1); ``dropout:p`` removes round(p * n) notes
    chosen at random; ``jitter:s`` moves each onset by up to s seconds (uniform, durations
    kept, never before 0).

    Raises
    ------
    VariantError
        No notes are left.
    """
    if name == ORIGINAL:
        return pm
    kind, amount = _kind_amount(name)
    if kind in ("noise", "gain", "lowpass"):
        raise ValueError(f"{name} is an audio deformation, not a MIDI change")
    if kind == "transpose":
        k = int(amount)
        for inst in pm.instruments:
            if not inst.is_drum:
                for n in inst.notes:
                    n.pitch += k
                inst.notes = [n for n in inst.notes if 0 <= n.pitch <= 127]
    elif kind == "tempo":
        factor = float(amount)
        end = pm.get_end_time()
        pm.adjust_times([0.0, end], [0.0, end / factor])
    elif kind == "instrument":
        for inst in pm.instruments:
            if not inst.is_drum:
                inst.program = _swap_program(inst.program, rng)
    elif kind == "velocity":
        for inst in pm.instruments:
            for n in inst.notes:
                n.velocity = int(np.clip(round(n.velocity * float(amount)), 1, 127))
    elif kind == "dropout":
        notes = [(i, j) for i, inst in enumerate(pm.instruments) for j in range(len(inst.notes))]
        drop = set(map(int, rng.choice(len(notes), size=int(round(float(amount) * len(notes))),
                                       replace=False))) if notes else set()
        drop_pairs = {notes[d] for d in drop}
        for i, inst in enumerate(pm.instruments):
            inst.notes = [n for j, n in enumerate(inst.notes) if (i, j) not in drop_pairs]
    elif kind == "jitter":
        s = float(amount)
        for inst in pm.instruments:
            for n in inst.notes:
                shift = float(rng.uniform(-s, s))
                shift = max(shift, -n.start)
                n.start += shift
                n.end += shift
    if not any(inst.notes for inst in pm.instruments):
        raise VariantError(f"{name}: no notes left")
    return pm


def apply_audio(y: np.ndarray, sr: int, name: str, rng: np.random.Generator) -> np.ndarray:
    """An audio deformation of a mono signal.

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples,)]
    sr : int
    name : one of :data:`AUDIO_INTERVENTIONS`

    Returns
    -------
    np.ndarray [shape=(n_samples,), dtype=float32]
    """
    import pedalboard

    kind, amount = _kind_amount(name)
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"apply_audio takes a mono signal, got shape {y.shape}")
    if kind == "noise":
        snr_db = float(amount.removesuffix("db"))
        power = float(np.mean(y.astype(np.float64) ** 2))
        noise = rng.standard_normal(len(y)) * np.sqrt(power / 10 ** (snr_db / 10))
        return (y + noise).astype(np.float32)
    if kind == "gain":
        board = pedalboard.Pedalboard([pedalboard.Gain(gain_db=float(amount.removesuffix("db")))])
    elif kind == "lowpass":
        board = pedalboard.Pedalboard([pedalboard.LowpassFilter(cutoff_frequency_hz=float(amount))])
    else:
        raise ValueError(f"{name} is not an audio deformation")
    return board(y[None, :], sr)[0].astype(np.float32)


def variant_key(source_hash: str, name: str, renderer: dict, seed: int) -> str:
    """Cache key of one variant: a hash of everything that changes its files."""
    blob = json.dumps({"source": source_hash, "intervention": name, "renderer": renderer,
                       "seed": int(seed), "version": VARIANT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class VariantTask:
    """One variant to make: its source, name and where its files go.

    Files: ``base + ".mid"`` (MIDI changes and the original), ``base + ".wav"`` (when
    ``render``; audio deformations read ``original_wav``, the rendered original), and
    ``base + ".failed"`` holding the reason it could not be made.
    """

    piece: str
    source_midi: str
    source_hash: str
    name: str
    key: str
    base: str
    render: bool = True
    original_wav: str | None = None

    @property
    def midi(self) -> str | None:
        return None if is_audio_only(self.name) else self.base + ".mid"

    @property
    def wav(self) -> str | None:
        return self.base + ".wav" if self.render or is_audio_only(self.name) else None

    @property
    def failed_path(self) -> Path:
        return Path(self.base + ".failed")

    def done(self) -> bool:
        return all(Path(p).is_file() for p in (self.midi, self.wav) if p)

    def failure(self) -> str | None:
        try:
            return self.failed_path.read_text("utf-8").strip() or "failed"
        except OSError:
            return None


def make_variant(task: VariantTask, renderer, seed: int) -> str | None:
    """Make one variant's files (MIDI, then its rendering; or the deformed original).

    A MIDI file already there (a run killed while rendering) is kept and only rendered.
    Returns ``None`` on success, else the reason, which is also written beside the files so
    the next run does not try again.
    """
    import pretty_midi
    import soundfile as sf

    rng = intervention_rng(seed, task.source_hash, task.name)
    try:
        if is_audio_only(task.name):
            y, sr = sf.read(task.original_wav, dtype="float32", always_2d=True)
            out = apply_audio(y.mean(axis=1), sr, task.name, rng)
            with atomic_path(task.wav, suffix=".tmp.wav") as tmp:
                sf.write(str(tmp), np.clip(out, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")
            return None
        if not Path(task.midi).is_file():
            try:
                pm = pretty_midi.PrettyMIDI(task.source_midi)
            except Exception as exc:  # any parse failure of a damaged file
                raise VariantError(f"cannot read MIDI ({type(exc).__name__}: {exc})"[:300]) \
                    from None
            apply_midi(pm, task.name, rng)
            with atomic_path(task.midi, suffix=".tmp.mid") as tmp:
                pm.write(str(tmp))
        if task.wav is not None:
            try:
                renderer.render(Path(task.midi), Path(task.wav))
            except Exception as exc:  # InputError from the renderer, or a synth crash
                raise VariantError(f"render failed: {getattr(exc, 'reason', exc)}"[:300]) \
                    from None
    except VariantError as exc:
        reason = str(exc)
        atomic_write_text(task.failed_path, reason + "\n")
        return reason
    return None


def clean_stale_temp(variant_dir: str | os.PathLike, older_than_s: float = 24 * 3600) -> int:
    """Remove temporary files left by killed runs (only old ones: another run may be live)."""
    return remove_stale_files(variant_dir, ".*.tmp.*", older_than_s=older_than_s)


def remove_failure_marks(tasks) -> None:
    """Forget remembered failures (``--retry-failed``)."""
    for t in tasks:
        try:
            os.unlink(t.failed_path)
        except FileNotFoundError:
            pass
