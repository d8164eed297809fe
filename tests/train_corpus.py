"""What the training tests share.

:func:`make_pulse_corpus`, a small synthetic corpus: three classes that differ in tempo (pulses
at 2, 4 or 8 per second, +-10 %), while register (110-880 Hz), timbre (1-5 harmonics), phase
and background-noise level vary at random within every class -- nuisances a random network
picks up as readily as the class, so learning has something to add.

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


def kill_and_resume(train_args: list[str], out, *, after_epoch: int = 1, env: dict | None = None,
                    timeout: float = 300) -> None:
    """Run ``main.py train TRAIN_ARGS --out OUT --quiet`` in a subprocess, kill it (SIGKILL)
    once the checkpoint of epoch ``after_epoch`` is written (the runner's hold hook), check
    that ``loss.csv`` holds exactly those epochs, then run the same command with ``--resume``
    to the end (asserting it succeeds). ``env``: extra environment variables for both runs."""
    from conftest import ROOT
    from training.runner import HOLD_ENV

    argv = [sys.executable, str(ROOT / "main.py"), "train", *map(str, train_args), "--out",
            str(out), "--quiet"]
    base = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**base, HOLD_ENV: str(after_epoch)})
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
