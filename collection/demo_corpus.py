"""A small synthetic, paired, genre-labelled corpus for the offline demo and the benchmarks.

Five genres that overlap on purpose, so that audio and symbolic embedders have something to
disagree about. Each piece is written as MIDI (pretty_midi) and rendered to audio from that same
MIDI, so every piece is an audio/MIDI pair (same folder, same stem). Key, tempo, progression,
melody and (within a genre's palette) instruments vary from piece to piece (seeded):

============  =======  ==========================================  ===============================
genre         tempo    harmony / rhythm                            instruments (General MIDI)
============  =======  ==========================================  ===============================
ballad        64-76    major I-vi-IV-V, piano arpeggios in eighths  piano, string ensemble, cello
chamber       88-100   harmonic minor i-iv-V-i, stepwise quarters   piano, string ensemble, cello
rock          120-132  minor loop, root-fifth chords in eighths     overdriven guitar, bass, kit
electronic    120-132  the same drive, drawn alike                  square lead, synth bass, 808ish
jazz          100-132  ii-V-I seventh chords, swung walking bass    piano comping, upright bass, ride
============  =======  ==========================================  ===============================

The designed overlaps: **ballad and chamber share their instruments** and differ in harmony,
rhythm and tempo (a timbre-driven audio space should confuse them, a symbolic one should not);
**rock and electronic share tempo, harmony, rhythm and drum pattern** and differ in sound only
(programs, and drums of the same kind: kick 36/35, snare/clap 38/39, crash/splash 49/55), so a
symbolic descriptor sees them apart only through the instrument family.

Audio is rendered with the ``fluidsynth`` program and the General MIDI soundfont that pretty_midi
ships, when both are present; otherwise with a small additive synthesizer written here (sine and
saw partials with envelopes, noise and sine drums). ``.corpus.json`` records which was used. The
build is deterministic and idempotent: files already present are left alone, and every file is
written to a temporary name and renamed, so an interrupted build resumes cleanly.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np

from common.fsutil import atomic_path

CORPUS_VERSION = 2
GENRES = ("ballad", "rock", "jazz", "electronic", "chamber")
SAMPLE_RATE = 22050
SYNTHS = ("auto", "fluidsynth", "builtin")
#: Hidden, so the dataset scan does not list it as a skipped file.
CORPUS_INFO = ".corpus.json"


def soundfont_path() -> Path | None:
    """The General MIDI soundfont bundled with pretty_midi, if installed."""
    try:
        import pretty_midi
    except ImportError:
        return None
    path = Path(pretty_midi.__file__).with_name("TimGM6mb.sf2")
    return path if path.is_file() else None


def fluidsynth_available() -> bool:
    return shutil.which("fluidsynth") is not None and soundfont_path() is not None


# -- composition -------------------------------------------------------------------------------

MAJOR = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
NATURAL_MINOR = (0, 2, 3, 5, 7, 8, 10)


def _chord(root_midi: int, scale: tuple, degree: int, size: int = 3) -> list[int]:
    """Stacked thirds on a scale degree (0-based), as MIDI pitches."""
    out = []
    for k in range(size):
        step = degree + 2 * k
        out.append(root_midi + scale[step % 7] + 12 * (step // 7))
    return out


def _rng(genre: str, index: int) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{genre}/{index}/v{CORPUS_VERSION}".encode()))


class _Score:
    """One piece being written: its random generator, and the MIDI once the tempo is drawn."""

    def __init__(self, rng: np.random.Generator):
        import pretty_midi

        self.rng, self.pretty_midi, self.pm, self.gain = rng, pretty_midi, None, 0

    def start(self, low_bpm: float, high_bpm: float) -> float:
        """Draw the tempo, start the MIDI; the length of one beat in seconds."""
        bpm = float(self.rng.uniform(low_bpm, high_bpm))
        # a whole piece played softer or louder: per-piece variation the audio hears strongly
        self.gain = int(self.rng.integers(-24, 13))
        self.pm = self.pretty_midi.PrettyMIDI(initial_tempo=bpm)
        return 60.0 / bpm

    def inst(self, program: int, is_drum: bool = False):
        i = self.pretty_midi.Instrument(program=program, is_drum=is_drum)
        self.pm.instruments.append(i)
        return i

    def pick(self, *programs) -> int:  # some variety of instrumentation within a genre
        return int(programs[int(self.rng.integers(0, len(programs)))])

    def note(self, i, pitch, start, dur, vel) -> None:
        vel = int(np.clip(vel + self.gain + self.rng.integers(-6, 7), 1, 127))
        i.notes.append(self.pretty_midi.Note(velocity=vel, pitch=int(pitch), start=float(start),
                                             end=float(start + dur)))


#: The instruments ballad and chamber share (General MIDI): piano, string ensemble, cello.
CLASSICAL_BAND = (0, 48, 42)
#: The tempo range rock and electronic share (beats per minute).
DRIVE_TEMPO = (120.0, 132.0)


def _ballad(score: _Score, key: int, bars: int) -> None:
    """Slow major I-vi-IV-V: piano arpeggios in eighths, a string pad, cello roots."""
    beat = score.start(64, 76)
    piano, strings, cello = (score.inst(p) for p in CLASSICAL_BAND)
    prog = [0, 5, 3, 4] if score.rng.random() < 0.5 else [0, 3, 4, 0]
    for b in range(bars):
        t = b * 4 * beat
        ch = _chord(48 + key, MAJOR, prog[b % 4])
        for k, p in enumerate(ch + [ch[0] + 12, ch[1] + 12, ch[2], ch[1]]):  # arpeggio
            score.note(piano, p, t + k * beat / 2, beat * 1.5, 60)
        for p in ch:
            score.note(strings, p + 12, t, 4 * beat, 45)
        score.note(cello, ch[0] - 12, t, 4 * beat, 55)
        for k in range(2):  # slow melody, half notes on chord tones
            top = ch[int(score.rng.integers(0, 3))] + 24
            score.note(piano, top, t + 2 * k * beat, 2 * beat, 72)


def _chamber(score: _Score, key: int, bars: int) -> None:
    """The ballad's instruments in another idiom: harmonic minor i-iv-V-i, a stepwise string
    line in quarters, piano chords on half notes, cello walking in quarters."""
    beat = score.start(88, 100)
    piano, strings, cello = (score.inst(p) for p in CLASSICAL_BAND)
    prog = [0, 3, 4, 0] if score.rng.random() < 0.5 else [0, 5, 4, 0]
    pos = 3
    for b in range(bars):
        t = b * 4 * beat
        deg = prog[b % 4]
        ch = _chord(48 + key % 7, HARMONIC_MINOR, deg)
        for h in range(2):  # piano: block chords, half notes
            for p in ch:
                score.note(piano, p, t + 2 * h * beat, 2 * beat * 0.9, 58)
        for q in range(4):
            pos = int(np.clip(pos + score.rng.choice([-2, -1, 1, 2]), 0, 9))
            p = 60 + key % 7 + HARMONIC_MINOR[pos % 7] + 12 * (pos // 7)
            score.note(strings, p, t + q * beat, beat * 0.95, 70)  # stepwise line
            score.note(cello, ch[q % 3] - 12, t + q * beat, beat * 0.9, 62)


def _drive(score: _Score, key: int, bars: int, *, chords: int, bass: int, kit: tuple) -> None:
    """What rock and electronic share: tempo, a minor four-chord loop, chords and bass in straight
    eighths, kick on every beat with a backbeat snare and eighth hats. Only the sound differs: the
    two programs, and ``kit`` (kick, snare, crash) picks other drums of the same kind."""
    beat = score.start(*DRIVE_TEMPO)
    chord_inst, bass_inst = score.inst(chords), score.inst(bass)
    drums = score.inst(0, is_drum=True)
    kick, snare, crash = kit
    prog = [0, 5, 2, 6] if score.rng.random() < 0.5 else [0, 3, 4, 3]
    for b in range(bars):
        t = b * 4 * beat
        root = 45 + key % 7 + NATURAL_MINOR[prog[b % 4]]
        for e in range(8):
            s = t + e * beat / 2
            for p in (root + 12, root + 19, root + 24):  # root, fifth, octave
                score.note(chord_inst, p, s, beat / 2 * 0.9, 96)
            score.note(bass_inst, root - 12, s, beat / 2 * 0.9, 95)
            score.note(drums, 42, s, 0.05, 80)
        for q in range(4):
            score.note(drums, kick, t + q * beat, 0.1, 115)
            if q % 2 == 1:
                score.note(drums, snare, t + q * beat, 0.1, 105)
        score.note(drums, crash, t, 0.3, 100)


def _rock(score: _Score, key: int, bars: int) -> None:
    """Overdriven or distortion guitar power chords and electric bass over the shared drive."""
    _drive(score, key, bars, chords=score.pick(29, 30), bass=score.pick(33, 34),
           kit=(36, 38, 49))


def _electronic(score: _Score, key: int, bars: int) -> None:
    """Square-wave synth lead, synth bass, electronic kick, clap and splash over the shared
    drive."""
    _drive(score, key, bars, chords=80, bass=score.pick(38, 39), kit=(35, 39, 55))


def _jazz(score: _Score, key: int, bars: int) -> None:
    """Syncopated seventh-chord comping, walking bass, swung ride."""
    beat = score.start(100, 132)
    swing = beat * 2 / 3
    piano, bass = score.inst(score.pick(0, 26, 11)), score.inst(score.pick(32, 33))
    drums = score.inst(0, is_drum=True)
    prog = [1, 4, 0, 0] if score.rng.random() < 0.5 else [1, 4, 0, 5]
    for b in range(bars):
        t = b * 4 * beat
        deg = prog[b % 4]
        ch = _chord(52 + key % 7, MAJOR, deg, size=4)  # seventh chords
        for hit in (0.0, 1.0 + 2 / 3, 3.0 - 1 / 3):  # syncopated comping
            if score.rng.random() < 0.85:
                for p in ch:
                    score.note(piano, p, t + hit * beat, beat * 0.6, 62)
        walk = _chord(36 + key % 7, MAJOR, deg, size=4)
        for q in range(4):  # walking bass, one note per beat with chromatic approach
            p = walk[q] if q < 3 else walk[0] + (1 if score.rng.random() < 0.5 else -1)
            score.note(bass, p, t + q * beat, beat * 0.9, 85)
        for q in range(4):  # ride cymbal, swung
            score.note(drums, 51, t + q * beat, 0.2, 70)
            if q % 2 == 1:
                score.note(drums, 51, t + q * beat + swing, 0.2, 55)
                score.note(drums, 44, t + q * beat, 0.1, 60)


#: Genre -> the function writing its bars.
_WRITERS = {"ballad": _ballad, "rock": _rock, "jazz": _jazz, "electronic": _electronic,
            "chamber": _chamber}


def compose(genre: str, index: int, *, bars: int = 4):
    """The MIDI of one piece.

    Returns
    -------
    pretty_midi.PrettyMIDI
    """
    if genre not in GENRES:
        raise ValueError(f"unknown demo genre {genre!r}; choose from {', '.join(GENRES)}")
    score = _Score(_rng(genre, index))
    key = int(score.rng.integers(0, 12))
    _WRITERS[genre](score, key, bars)
    return score.pm


# -- rendering ---------------------------------------------------------------------------------

def render_fluidsynth(midi_path: str | os.PathLike, wav_path: str | os.PathLike, sr: int, *,
                      soundfont: str | os.PathLike | None = None) -> None:
    """Render a MIDI file to a WAV file with the ``fluidsynth`` program and a General MIDI
    soundfont (default: pretty_midi's). Raises RuntimeError when FluidSynth fails."""
    cmd = ["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(sr), "-T", "wav",
           "-F", str(wav_path), str(soundfont or soundfont_path()), str(midi_path)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    if proc.returncode != 0 or not wav_path.is_file() or wav_path.stat().st_size < 1000:
        raise RuntimeError(f"fluidsynth failed on {midi_path}: "
                           f"{proc.stderr.decode(errors='replace').strip()[:300]}")


def _adsr(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(n)
    a, r = min(n, int(attack * sr)), min(n, int(release * sr))
    if a:
        env[:a] = np.linspace(0, 1, a, endpoint=False)
    if r:
        env[n - r:] *= np.linspace(1, 0, r)
    return env


def synthesize(pm, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Render a PrettyMIDI with the built-in additive synth.

    Returns
    -------
    np.ndarray [shape=(n_samples,), dtype=float32], peak about 0.8
    """
    end = pm.get_end_time() + 0.5
    out = np.zeros(int(end * sr) + 1)
    noise_rng = np.random.default_rng(0)
    for inst in pm.instruments:
        family = inst.program // 8
        for nt in inst.notes:
            n = max(1, int((nt.end - nt.start) * sr))
            t = np.arange(n) / sr
            amp = nt.velocity / 127.0
            if inst.is_drum:
                if nt.pitch in (35, 36):  # kick: falling sine
                    n = int(0.25 * sr)
                    t = np.arange(n) / sr
                    sig = np.sin(2 * np.pi * (50 + 80 * np.exp(-t * 30)) * t) * np.exp(-t * 12)
                else:  # snare/hats/cymbals: filtered noise bursts of different lengths
                    decay = {38: 20, 39: 25, 40: 20, 49: 4, 51: 8}.get(nt.pitch, 40)
                    n = int(min(1.0, 5.0 / decay) * sr)
                    t = np.arange(n) / sr
                    noise = noise_rng.standard_normal(n)
                    if nt.pitch in (42, 44, 46, 49, 51):
                        noise = np.diff(noise, prepend=0.0)  # brighter
                    sig = 0.5 * noise * np.exp(-t * decay)
            else:
                f0 = 440.0 * 2 ** ((nt.pitch - 69) / 12)
                if family == 3:  # guitar: saw-like, many partials (driven below)
                    partials = [(k, 1.0 / k) for k in range(1, 12) if k * f0 < sr / 2]
                elif family == 10:  # synth lead: square-like, odd partials only
                    partials = [(k, 1.0 / k) for k in range(1, 16, 2) if k * f0 < sr / 2]
                elif family in (4, ):  # bass: few partials
                    partials = [(1, 1.0), (2, 0.5), (3, 0.2)]
                elif family in (5, 6, 11):  # strings / pads: odd-ish partials, slow attack
                    partials = [(k, 0.7 / k) for k in (1, 2, 3, 5) if k * f0 < sr / 2]
                elif family == 9:  # flute: nearly pure
                    partials = [(1, 1.0), (2, 0.1)]
                else:  # piano-like
                    partials = [(k, 0.6 ** (k - 1)) for k in range(1, 6) if k * f0 < sr / 2]
                sig = sum(a * np.sin(2 * np.pi * k * f0 * t) for k, a in partials)
                attack = 0.08 if family in (5, 6, 9, 11) else 0.005
                sig = sig * _adsr(n, sr, attack, min(0.05, (nt.end - nt.start) / 2))
                if family == 0:
                    sig *= np.exp(-t * 2.5)
                elif family == 3:  # overdrive: soft clipping, so guitar and synth lead differ
                    sig = np.tanh(2.5 * sig)
            i0 = int(nt.start * sr)
            seg = out[i0:i0 + len(sig)]
            seg += amp * sig[:len(seg)] * 0.3
    peak = np.max(np.abs(out)) or 1.0
    return (0.8 * out / peak).astype(np.float32)


# -- the corpus --------------------------------------------------------------------------------

def _atomic_write_bytes(path: Path, write) -> None:
    with atomic_path(path, suffix=".tmp" + path.suffix) as tmp:
        write(tmp)


def build_demo_corpus(root: str | os.PathLike, *, n_per_genre: int = 8,
                      genres: tuple[str, ...] = GENRES, synth: str = "auto",
                      sample_rate: int = SAMPLE_RATE, bars: int = 4) -> dict:
    """Write the demo corpus under ``root`` (``root/<genre>/<genre>_NN.mid`` and ``.wav``).

    Parameters
    ----------
    root : str or Path
    n_per_genre : int
        Pieces per genre.
    synth : {"auto", "fluidsynth", "builtin"}
        Renderer; ``"auto"`` uses FluidSynth when the program and pretty_midi's soundfont exist.

    Returns
    -------
    dict
        What ``.corpus.json`` holds: genres, pieces, synth used, sample rate, files made now.
    """
    # long mostly by its docstring; the body: pick the renderer, write each missing piece (all
    # of them when the corpus on disk is of another version), then .corpus.json
    import soundfile as sf

    if synth not in SYNTHS:
        raise ValueError(f"synth must be one of {', '.join(SYNTHS)}, got {synth!r}")
    if synth == "auto":
        synth = "fluidsynth" if fluidsynth_available() else "builtin"
    elif synth == "fluidsynth" and not fluidsynth_available():
        raise RuntimeError("synth='fluidsynth' needs the fluidsynth program on PATH and "
                           "pretty_midi's TimGM6mb.sf2 soundfont")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    info_path = root / CORPUS_INFO
    previous = {}
    if info_path.is_file():
        try:
            previous = json.loads(info_path.read_text())
        except (OSError, ValueError):
            previous = {}
    if previous.get("synth") and previous.get("version") == CORPUS_VERSION:
        synth = previous["synth"]  # keep one renderer for the whole corpus
    # a corpus of another version (other music) is written anew, not mixed with this one
    stale = bool(previous) and previous.get("version") != CORPUS_VERSION
    made = 0
    for genre in genres:
        for i in range(n_per_genre):
            stem = root / genre / f"{genre}_{i:02d}"
            mid, wav = stem.with_suffix(".mid"), stem.with_suffix(".wav")
            if mid.is_file() and wav.is_file() and not stale:
                continue
            pm = compose(genre, i, bars=bars)
            if stale or not mid.is_file():
                _atomic_write_bytes(mid, lambda p: pm.write(str(p)))
            if synth == "fluidsynth":
                _atomic_write_bytes(wav, lambda p: render_fluidsynth(mid, p, sample_rate))
            else:
                audio = synthesize(pm, sample_rate)
                _atomic_write_bytes(wav, lambda p: sf.write(str(p), audio, sample_rate,
                                                            subtype="PCM_16", format="WAV"))
            made += 1
    info = {"version": CORPUS_VERSION, "genres": list(genres), "n_per_genre": n_per_genre,
            "synth": synth, "sample_rate": sample_rate,
            "soundfont": str(soundfont_path()) if synth == "fluidsynth" else None}
    _atomic_write_bytes(info_path, lambda p: p.write_text(json.dumps(info, indent=2)))
    return {**info, "made": made}
