"""A synthetic embedder as heavy as default OpenL3 on output: 6144-d frames, 10 per second.

For ``bench_memory.py`` only (not in ``embedders/``, so never offered by the command line).
Its frames are cheap to make and deterministic: random numbers seeded by the file's bytes, one
frame per 0.1 s of the duration the WAV header states. Importing this module registers it.
"""
import hashlib

import numpy as np
import soundfile as sf

from embedders import AUDIO, Embedder, Embedding, register

DIM = 6144
FRAMES_PER_SECOND = 10


def heavy_frames(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The frames and timestamps the heavy embedder gives ``path``.

    Returns
    -------
    frames : np.ndarray [shape=(n_frames, 6144), dtype=float32]
    timestamps : np.ndarray [shape=(n_frames,), dtype=float64]
    """
    with open(path, "rb") as fh:
        seed = int.from_bytes(hashlib.sha256(fh.read()).digest()[:8], "little")
    info = sf.info(path)
    n_frames = max(1, int(round(info.frames / info.samplerate * FRAMES_PER_SECOND)))
    frames = np.random.default_rng(seed).random((n_frames, DIM), dtype=np.float32)
    return frames, np.arange(n_frames) / FRAMES_PER_SECOND


@register
class HeavyEmbedder(Embedder):
    name = "heavy"
    modality = AUDIO
    version = "1"
    extensions = (".wav",)
    option_defaults = {"device": None, "batch_size": None}
    description = "synthetic 6144-d frames at 10/s (memory benchmark only)"

    def _embed_file(self, path):
        frames, timestamps = heavy_frames(path)
        return Embedding(frames=frames, clip=frames.mean(0), timestamps=timestamps)
