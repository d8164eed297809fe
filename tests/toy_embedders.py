"""Tiny deterministic embedders for testing the pipeline without real models.

Their vectors are simple functions of the file bytes, so a test knows the answer. ``SLOW_ENV``
makes each file take a while, so a test can kill a run mid-way.
"""
import os
import time

import numpy as np

from embedders import AUDIO, SYMBOLIC, Embedder, Embedding, InputError, register

SLOW_ENV = "TOY_EMBEDDER_SECONDS_PER_FILE"


def byte_histogram(path: str, bins: int = 8) -> np.ndarray:
    data = np.frombuffer(open(path, "rb").read(), dtype=np.uint8)
    if data.size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    if data[:4].tobytes() == b"BAD!":
        raise InputError(path, "marked bad for the test")
    hist = np.bincount(data // (256 // bins), minlength=bins).astype(np.float64)
    return hist / hist.sum()


class _ToyBase(Embedder):
    version = "1"
    option_defaults = {"bins": 8, "device": None, "batch_size": None}
    option_types = {"device": str, "batch_size": int}
    parallel_files = True
    description = "byte histogram (tests only)"

    def _embed_file(self, path):
        delay = float(os.environ.get(SLOW_ENV, "0") or 0)
        if delay:
            time.sleep(delay)
        hist = byte_histogram(path, self.options["bins"])
        frames = np.stack([hist, hist * 2.0]).astype(np.float32)
        return Embedding(frames=frames, clip=frames.mean(0), timestamps=np.array([0.0, 1.0]))


@register
class ToyAudio(_ToyBase):
    name = "toy-audio"
    modality = AUDIO
    extensions = (".wav", ".flac")


@register
class ToyMidi(_ToyBase):
    name = "toy-midi"
    modality = SYMBOLIC
    extensions = (".mid", ".midi")


@register
class ToySegfaultAudio(_ToyBase):
    """toy-audio that kills its process with SIGSEGV on a file whose name holds 'crash', as a
    native library's fault would (no Python exception to catch)."""
    name = "toy-segfault-audio"
    modality = AUDIO
    extensions = (".wav", ".flac")

    def _embed_file(self, path):
        if "crash" in os.path.basename(path):
            import signal
            os.kill(os.getpid(), signal.SIGSEGV)
        return super()._embed_file(path)
