"""Small synthetic corpora for the training tests and ``bench/bench_train.py``.

:func:`make_corpus` writes three classes of short chord pulses (2.5 s, 16 kHz) built from
three musical factors, each with three levels:

* **tempo** -- onsets per second: ``slow`` 2, ``mid`` 4, ``fast`` 8 (each file +-10 %);
* **harmony** -- the chord every onset sounds, from consonant to dissonant: ``open`` (root,
  fifth, octave: 0-7-12 semitones), ``major`` (0-4-7), ``cluster`` (0-1-2: rough, beating).
  Major against minor (one semitone in one voice) was left out on purpose: at the shared front
  end's resolution (64 mel bands, 31 Hz FFT bins) a semitone in the 110-440 Hz register spans
  less than one band, a test of the front end more than of learning;
* **timbre** -- the harmonic spectrum and the envelope of each note: ``pluck`` (all harmonics,
  amplitude ~1/h, sharp attack, fast exponential decay), ``reed`` (odd harmonics only, ~1/h,
  10 ms attack, held for 80 % of the gap between onsets), ``swell`` (nearly a sine, harmonics
  ~1/h**3, a smooth rise and fall over the whole gap).

``factor`` says how the classes differ:

* ``"tempo"``, ``"harmony"`` or ``"timbre"``: the classes are the three levels of that factor
  and *only* of that factor; the other two factors are drawn at random, per file, from their
  three levels, so they are nuisances. A test per factor shows which factor a method learns.
* ``"all"``: class *k* takes level *k* of every factor at once (``slow-open-pluck``,
  ``mid-major-reed``, ``fast-cluster-swell``): the easiest task, a sanity check.

In every class and for every factor, these vary at random per file: register (chord root
110-440 Hz, two octaves), the phase of the pulse and of every partial, the spectral slope
(+-0.25 on the exponent) and the highest partial (2.5-5 kHz), the decay time, loudness (peak
0.1-0.9) and white noise (6-30 dB SNR). A randomly initialised network picks up register,
noise and level as readily as the class, so learning has something to add.

What a short run learns (``tests/test_training.py`` settings: 30 training files, 6 epochs;
self-supervised: held-out k-NN accuracy on 30 other files, mean over k = 1, 3, 5, trained minus
the same network at random init; crnn: accuracy on its 6-file test split, chance 1/3), seeds
0 / 1 / 2 of corpus and training, measured when the corpus was written:

=========  ======================  ======================  ==================
factor     simsiam margin          cpc margin              crnn test accuracy
=========  ======================  ======================  ==================
all        +0.13 / +0.16 / +0.11   +0.10 / +0.07 / +0.23   1.00 / 1.00 / 1.00
timbre     +0.07 / +0.03 / +0.28   +0.23 / +0.20 / -0.04   1.00 / 0.67 / 0.83
tempo      +0.00 / +0.06 / +0.18   +0.18 / +0.13 / -0.01   0.50 / 0.33 / 0.50
harmony    +0.18 / +0.01 / +0.02   +0.13 / +0.10 / -0.10   0.33 / 0.50 / 0.50
=========  ======================  ======================  ==================

So the tests assert ``all`` for every method and timbre alone for the crnn; one factor alone
with the other two as nuisances is not reliably learned by the self-supervised methods in so
short a run (the crnn overfits its 20 training files on tempo and harmony).

:func:`make_pulse_corpus` is the original tempo-only corpus (single harmonic tones), kept as
it was for the tests that only need *some* trainable collection (kill-and-resume).

:func:`kill_and_resume`, a real ``SIGKILL`` of ``main.py train`` after a given epoch's
checkpoint, then ``--resume`` to the end.
"""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import numpy as np

FACTORS = ("tempo", "harmony", "timbre", "all")
#: Levels of each factor, in class order.
TEMPI = (("slow", 2.0), ("mid", 4.0), ("fast", 8.0))
CHORDS = (("open", (0, 7, 12)), ("major", (0, 4, 7)), ("cluster", (0, 1, 2)))
TIMBRES = ("pluck", "reed", "swell")


def class_names(factor: str) -> tuple[str, ...]:
    """The three class folder names of ``factor``, in level order."""
    if factor == "tempo":
        return tuple(n for n, _ in TEMPI)
    if factor == "harmony":
        return tuple(n for n, _ in CHORDS)
    if factor == "timbre":
        return TIMBRES
    if factor == "all":
        return tuple(f"{a[0]}-{b[0]}-{c}" for a, b, c in zip(TEMPI, CHORDS, TIMBRES))
    raise ValueError(f"factor must be one of {', '.join(FACTORS)}, got {factor!r}")


def synth_clip(rng: np.random.Generator, *, tempo: int, harmony: int, timbre: int,
               sr: int = 16000, seconds: float = 2.5) -> np.ndarray:
    """One clip with the given level (0, 1, 2) of each factor and random nuisances.

    Returns
    -------
    np.ndarray [shape=(round(sr * seconds),), dtype=float64], peak in [0.1, 0.9]
    """
    t = np.arange(int(round(sr * seconds))) / sr
    rate = TEMPI[tempo][1] * rng.uniform(0.9, 1.1)
    gap = 1.0 / rate
    since = ((t * rate + rng.uniform()) % 1.0) * gap          # seconds since the last onset
    kind = TIMBRES[timbre]
    if kind == "pluck":
        env = np.exp(-since / (0.06 * rng.uniform(0.8, 1.25)))
        harmonics, slope = np.arange(1, 41), 1.0
    elif kind == "reed":
        env = np.clip(since / 0.01, 0, 1) * np.clip((0.8 * gap - since) / (0.05 * gap), 0, 1)
        harmonics, slope = np.arange(1, 41, 2), 1.0
    else:
        env = np.sin(np.pi * since / gap) ** 2
        harmonics, slope = np.arange(1, 41), 3.0
    slope += rng.uniform(-0.25, 0.25)
    top = rng.uniform(2500, 5000)
    root = 110 * 2 ** rng.uniform(0, 2)
    tone = np.zeros_like(t)
    for semitones in CHORDS[harmony][1]:
        f0 = root * 2 ** (semitones / 12)
        for h in harmonics[harmonics * f0 < top]:
            tone += np.sin(2 * np.pi * (f0 * h * t + rng.uniform())) / h ** slope
    y = env * tone
    y /= np.sqrt(np.mean(y ** 2)) + 1e-12
    snr_db = rng.uniform(6, 30)
    y = y + 10 ** (-snr_db / 20) * rng.standard_normal(t.shape)
    return rng.uniform(0.1, 0.9) * y / np.abs(y).max()


def make_corpus(root, *, factor: str = "all", n_per_class: int = 10, seed: int = 0,
                sr: int = 16000, seconds: float = 2.5) -> list[str]:
    """Write ``root/<class>/<class>_NN.wav`` (16-bit); returns the paths (sorted).

    ``factor``: ``"tempo"``, ``"harmony"``, ``"timbre"`` (classes differ in that factor only,
    the others random per file) or ``"all"`` (classes differ in all three at once). The same
    ``seed`` gives the same files; another seed is a held-out set of the same classes.
    """
    import soundfile as sf

    names = class_names(factor)
    rng = np.random.default_rng(seed)
    paths = []
    for k, name in enumerate(names):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(n_per_class):
            levels = {f: (k if factor in (f, "all") else int(rng.integers(3)))
                      for f in ("tempo", "harmony", "timbre")}
            y = synth_clip(rng, sr=sr, seconds=seconds, **levels)
            path = os.path.join(root, name, f"{name}_{i:02d}.wav")
            sf.write(path, y, sr)
            paths.append(path)
    return sorted(paths)


def make_pulse_corpus(root, *, n_per_class: int = 10, seed: int = 0, sr: int = 16000,
                      seconds: float = 3.0) -> list[str]:
    """The original tempo-only corpus: pulses at 2, 4 or 8 per second (+-10 %) of one harmonic
    tone (110-880 Hz, 1-5 harmonics) in noise. Writes ``root/<class>/<class>_NN.wav``;
    returns the paths (sorted)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    paths = []
    t = np.arange(int(sr * seconds)) / sr
    for name, rate in TEMPI:
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(n_per_class):
            f0 = 110 * 2 ** rng.uniform(0, 3)
            n_harm = int(rng.integers(1, 6))
            phase = (t * rate * rng.uniform(0.9, 1.1) + rng.uniform()) % 1.0
            tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, n_harm + 1))
            y = np.exp(-phase / 0.06) * tone + rng.uniform(0.01, 0.2) * rng.standard_normal(t.shape)
            path = os.path.join(root, name, f"{name}_{i:02d}.wav")
            sf.write(path, 0.3 * y / np.abs(y).max(), sr)
            paths.append(path)
    return sorted(paths)


def kill_and_resume(train_args: list[str], out, *, after_epoch: int = 1, env: dict | None = None,
                    timeout: float = 300) -> None:
    """Run ``main.py train TRAIN_ARGS --out OUT --quiet`` in a subprocess, kill it (SIGKILL)
    once the checkpoint of epoch ``after_epoch`` is written (the hook that
    ``tests/hold_after_epoch.py`` injects), check that ``loss.csv`` holds exactly those epochs,
    then run the same command with ``--resume`` to the end (asserting it succeeds). ``env``:
    extra environment variables for both runs."""
    from conftest import ROOT

    args = [*map(str, train_args), "--out", str(out), "--quiet"]
    argv = [sys.executable, str(ROOT / "main.py"), "train", *args]
    base = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "hold_after_epoch.py"),
                             str(after_epoch), *args], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env=base)
    try:
        line = proc.stdout.readline()
        assert line.strip() == f"holding after epoch {after_epoch}", line
        proc.send_signal(signal.SIGKILL)   # a real kill, after that epoch's checkpoint
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with open(os.path.join(out, "loss.csv"), newline="") as fh:
        assert len(list(csv.reader(fh))) == 1 + after_epoch
    done = subprocess.run(argv + ["--resume"], env=base, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
