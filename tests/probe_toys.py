"""Known-answer embedders and a corpus with known keys, for the probe tests.

``test-pc-hist``: the duration-weighted pitch-class histogram of a MIDI file (knows pitch, is
blind to tempo and octave); ``test-ioi-hist``: a histogram of log inter-onset intervals (knows
tempo and rhythm, is blind to pitch); ``test-random``: a vector drawn from the file's hash
(knows nothing).
"""
import hashlib
from pathlib import Path

import numpy as np

from embedders import SYMBOLIC, Embedder, Embedding, register

KEYS = {"c_major": (0, "major"), "a_minor": (9, "minor"), "fs_major": (6, "major")}
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 11)


def _read(path):
    import pretty_midi
    return pretty_midi.PrettyMIDI(str(path))


class _Known(Embedder):
    modality = SYMBOLIC
    extensions = (".mid", ".midi")
    version = "1"
    option_defaults = {}
    parallel_files = True

    def vector(self, path: str) -> np.ndarray:
        raise NotImplementedError

    def _embed_file(self, path):
        v = self.vector(path).astype(np.float32)
        return Embedding(frames=v[None, :], clip=v)


@register
class PitchClassHistogram(_Known):
    name = "test-pc-hist"
    description = "duration-weighted pitch-class histogram (tests only)"

    def vector(self, path):
        h = np.zeros(12)
        for inst in _read(path).instruments:
            if not inst.is_drum:
                for n in inst.notes:
                    h[n.pitch % 12] += n.end - n.start
        return h / max(h.sum(), 1e-12)


@register
class InterOnsetHistogram(_Known):
    name = "test-ioi-hist"
    description = "histogram of log2 inter-onset intervals (tests only)"

    def vector(self, path):
        onsets = np.unique(np.round([n.start for i in _read(path).instruments
                                     for n in i.notes], 4))
        ioi = np.diff(onsets)
        h, _ = np.histogram(np.log2(ioi[ioi > 0]), bins=48, range=(np.log2(0.05), np.log2(4.0)))
        return h / max(h.sum(), 1)


@register
class RandomVector(_Known):
    name = "test-random"
    description = "random vector seeded by the file's bytes (tests only)"

    def vector(self, path):
        seed = int(hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12], 16)
        return np.random.default_rng(seed).standard_normal(16)


def write_piece(path, *, tonic: int, mode: str, rng, bpm: float, program: int = 0,
                drums: bool = False, n_notes: int = 12):
    """A short piece that states its key: tonic triad held under a scale melody ending on the
    tonic. Rhythm in eighths/quarters/halves at ``bpm``."""
    import pretty_midi
    scale = MAJOR if mode == "major" else MINOR
    beat = 60.0 / bpm
    pm = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    mel = pretty_midi.Instrument(program=program)
    t = 0.0
    for k in range(n_notes):
        degree = 0 if k in (0, n_notes - 1) else int(rng.choice([0, 1, 2, 3, 4, 5, 6, 0, 2, 4]))
        dur = beat * float(rng.choice([0.5, 1.0, 1.0, 2.0]))
        vel = int(rng.integers(50, 110))
        mel.notes.append(pretty_midi.Note(vel, 60 + tonic + scale[degree], t, t + dur))
        t += dur
    third = 4 if mode == "major" else 3
    pad = pretty_midi.Instrument(program=program)
    for iv in (0, third, 7):
        pad.notes.append(pretty_midi.Note(60, 48 + tonic + iv, 0.0, t))
    pm.instruments += [mel, pad]
    if drums:
        kit = pretty_midi.Instrument(program=0, is_drum=True)
        for b in range(int(t / beat)):
            kit.notes.append(pretty_midi.Note(90, 36 if b % 2 == 0 else 38, b * beat,
                                              b * beat + 0.1))
        pm.instruments.append(kit)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


def key_corpus(root, *, per_key: int = 10, seed: int = 0, n_notes: int = 12) -> dict:
    """``root/<key label>/piece_NN.mid`` for each key of :data:`KEYS`; piano or strings, half
    with drums, tempo 70-170 BPM. Returns ``{item id: (tonic, mode)}``."""
    rng = np.random.default_rng(seed)
    known = {}
    for label, (tonic, mode) in KEYS.items():
        for i in range(per_key):
            rel = f"{label}/piece_{i:02d}.mid"
            write_piece(Path(root) / rel, tonic=tonic, mode=mode, rng=rng,
                        bpm=float(rng.uniform(70, 170)), program=int(rng.choice([0, 48])),
                        drums=bool(i % 2), n_notes=n_notes)
            known[rel] = (tonic, mode)
    return known
