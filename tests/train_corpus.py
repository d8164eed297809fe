"""A small synthetic corpus for the training tests: three classes that differ in tempo (pulses
at 2, 4 or 8 per second, +-10 %), while register (110-880 Hz), timbre (1-5 harmonics), phase
and background-noise level vary at random within every class -- nuisances a random network
picks up as readily as the class, so learning has something to add."""
from __future__ import annotations

import os

import numpy as np

CLASSES = (("slow", 2.0), ("mid", 4.0), ("fast", 8.0))


def make_pulse_corpus(root, *, n_per_class: int = 10, seed: int = 0, sr: int = 16000,
                      seconds: float = 3.0) -> list[str]:
    """Write ``root/<class>/<class>_NN.wav``; returns the paths (sorted)."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    paths = []
    t = np.arange(int(sr * seconds)) / sr
    for name, rate in CLASSES:
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
