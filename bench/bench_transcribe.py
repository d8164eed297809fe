"""Transcription quality and speed: basic-pitch (ONNX Runtime) vs the peak-picking heuristic,
side by side in one run.

Composes MIDI pieces with the demo corpus's composer (pitched parts only: drums are dropped,
neither method transcribes them), renders them to audio (FluidSynth with pretty_midi's General
MIDI soundfont when installed, else the built-in synthesizer; ``--midi-dir`` adds your own MIDI
files), transcribes each rendering both ways and scores the notes against the source MIDI with
``mir_eval.transcription`` (50 ms onset tolerance, pitch within 50 cents; once onset only, once
with offsets within 20 % of the note or 50 ms). Prints precision / recall / F1 summed over all
notes of all pieces, and seconds of compute per minute of audio (model loading excluded), plus
the CPU. Usage: ``python bench/bench_transcribe.py [--pieces N] [--bars B] [--threads T]``
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collection import demo_corpus  # noqa: E402
from prepare import basic_pitch as bp  # noqa: E402
from prepare.commands import Renderer  # noqa: E402
from prepare.heuristic import transcribe_heuristic  # noqa: E402
from machine import describe_cpu  # noqa: E402


def reference_notes(pm):
    """(intervals (n, 2) s, pitches (n,) Hz) of the pitched notes of a PrettyMIDI."""
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    if not notes:
        return np.zeros((0, 2)), np.zeros(0)
    return (np.array([[n.start, n.end] for n in notes]),
            440.0 * 2 ** ((np.array([n.pitch for n in notes]) - 69) / 12))


def as_arrays(notes):
    """[(start, end, midi pitch, ...)] -> (intervals, Hz), dropping zero-length notes."""
    notes = [n for n in notes if n[1] > n[0]]
    if not notes:
        return np.zeros((0, 2)), np.zeros(0)
    return (np.array([[n[0], n[1]] for n in notes], dtype=float),
            440.0 * 2 ** ((np.array([n[2] for n in notes], dtype=float) - 69) / 12))


class Score:
    """Note matches summed over pieces (micro-averaged precision / recall / F1)."""

    def __init__(self):
        self.n_ref = self.n_est = self.hit_on = self.hit_off = 0
        self.seconds = 0.0

    def add(self, ref, est):
        import mir_eval.transcription as mt
        self.n_ref += len(ref[1])
        self.n_est += len(est[1])
        if len(ref[1]) and len(est[1]):
            self.hit_on += len(mt.match_notes(ref[0], ref[1], est[0], est[1],
                                              onset_tolerance=0.05, offset_ratio=None))
            self.hit_off += len(mt.match_notes(ref[0], ref[1], est[0], est[1],
                                               onset_tolerance=0.05, offset_ratio=0.2))

    def prf(self, hits):
        p = hits / self.n_est if self.n_est else 0.0
        r = hits / self.n_ref if self.n_ref else 0.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces", type=int, default=2, help="pieces per genre of the demo composer")
    ap.add_argument("--bars", type=int, default=8)
    ap.add_argument("--midi-dir", default=None, help="also score these .mid files")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    ap.add_argument("--synth", default="auto", choices=("auto", "fluidsynth", "builtin"))
    args = ap.parse_args()
    import pretty_midi

    model = bp.BasicPitchModel(threads=args.threads)
    renderer = Renderer(synth=args.synth, sample_rate=bp.SAMPLE_RATE, verbose=False)
    pieces = []
    for genre in demo_corpus.GENRES:
        for i in range(args.pieces):
            pm = demo_corpus.compose(genre, i, bars=args.bars)
            pm.instruments = [inst for inst in pm.instruments if not inst.is_drum]
            pieces.append((f"{genre}_{i:02d}", pm))
    if args.midi_dir:
        for path in sorted(Path(args.midi_dir).glob("*.mid")):
            pieces.append((path.stem, pretty_midi.PrettyMIDI(str(path))))
    scores = {"basic-pitch": Score(), "heuristic": Score()}
    audio_seconds = 0.0
    transcribe_heuristic(np.zeros(bp.SAMPLE_RATE, np.float32))  # librosa/numba warm-up
    with tempfile.TemporaryDirectory() as tmp:
        for name, pm in pieces:
            mid, wav = Path(tmp) / f"{name}.mid", Path(tmp) / f"{name}.wav"
            pm.write(str(mid))
            renderer.render(mid, wav)
            audio = bp.load_audio(wav)
            audio_seconds += len(audio) / bp.SAMPLE_RATE
            ref = reference_notes(pretty_midi.PrettyMIDI(str(mid)))
            t0 = time.perf_counter()
            events = bp.model_output_to_notes(model.predict_audio(audio))
            scores["basic-pitch"].seconds += time.perf_counter() - t0
            scores["basic-pitch"].add(ref, as_arrays([e.as_tuple() for e in events]))
            t0 = time.perf_counter()
            notes, _ = transcribe_heuristic(audio, sr=bp.SAMPLE_RATE)
            scores["heuristic"].seconds += time.perf_counter() - t0
            scores["heuristic"].add(ref, as_arrays(notes))
    print(f"CPU: {describe_cpu()}")
    print(f"renderer: {renderer.synth}; {len(pieces)} pieces, {audio_seconds / 60:.2f} min of "
          f"audio, {scores['heuristic'].n_ref} reference notes (drums excluded)")
    print("| method | notes found | onset P / R / F1 | onset+offset P / R / F1 | "
          "s per audio min | × real time |")
    print("|---|---|---|---|---|---|")
    for method, s in scores.items():
        on, off = s.prf(s.hit_on), s.prf(s.hit_off)
        per_min = s.seconds / (audio_seconds / 60)
        print(f"| {method} | {s.n_est} | {on[0]:.3f} / {on[1]:.3f} / **{on[2]:.3f}** | "
              f"{off[0]:.3f} / {off[1]:.3f} / **{off[2]:.3f}** | {per_min:.2f} | "
              f"{60 / per_min:.0f}× |")


if __name__ == "__main__":
    main()
