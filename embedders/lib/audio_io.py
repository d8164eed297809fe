"""Reading audio for the embedders: one place that turns a file into checked samples.

Everything soundfile (libsndfile) reads is accepted. Problems with a file's content raise
:class:`~embedders.base.InputError` naming the file and the reason, so a run can skip it.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from ..base import InputError, input_file_size

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                    ".au", ".snd", ".caf", ".w64", ".rf64")


def _open(path: str):
    import soundfile as sf

    input_file_size(path)
    try:
        return sf.SoundFile(path)
    except PermissionError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from exc
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise InputError(path, f"not a readable audio file ({_short(exc)})") from exc


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:200]


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """``(sample_rate, n_channels, n_samples)`` of a file without reading the samples."""
    path = str(path)
    with _open(path) as snd:
        return int(snd.samplerate), int(snd.channels), int(snd.frames)


def _check_block(path: str, block: np.ndarray) -> None:
    if not np.all(np.isfinite(block)):
        raise InputError(path, "audio contains NaN or infinite samples")


def read_audio(path: str | os.PathLike, *, dtype: str = "float64",
               max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read a whole file.

    Parameters
    ----------
    path : str
    dtype : str
        ``"float64"`` (the reference implementations' choice) or ``"float32"``.
    max_seconds : float or None
        Read at most this much from the start.

    Returns
    -------
    audio : np.ndarray [shape=(n_samples, n_channels)]
        Samples in [-1, 1] for integer formats, soundfile's layout.
    sr : int

    Raises
    ------
    InputError
        Unreadable, empty, zero samples, or non-finite samples.
    """
    path = str(path)
    with _open(path) as snd:
        sr = int(snd.samplerate)
        frames = snd.frames if max_seconds is None else min(snd.frames, int(max_seconds * sr))
        try:
            audio = snd.read(frames=frames, dtype=dtype, always_2d=True)
        except Exception as exc:
            raise InputError(path, f"audio data cannot be decoded ({_short(exc)})") from exc
    if audio.shape[0] == 0:
        raise InputError(path, "audio has 0 samples")
    _check_block(path, audio)
    return audio, sr


def iter_audio_blocks(path: str | os.PathLike, *, block_seconds: float = 60.0,
                      dtype: str = "float64") -> Iterator[tuple[np.ndarray, int]]:
    """Stream a file in blocks, so long files never sit in memory whole.

    Yields
    ------
    block : np.ndarray [shape=(n, n_channels)]
    sr : int
    """
    path = str(path)
    with _open(path) as snd:
        sr = int(snd.samplerate)
        blocksize = max(1, int(block_seconds * sr))
        seen = 0
        try:
            for block in snd.blocks(blocksize=blocksize, dtype=dtype, always_2d=True):
                _check_block(path, block)
                seen += block.shape[0]
                yield block, sr
        except InputError:
            raise
        except Exception as exc:
            raise InputError(path, f"audio data cannot be decoded ({_short(exc)})") from exc
    if seen == 0:
        raise InputError(path, "audio has 0 samples")


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Mean over channels of ``(n_samples, n_channels)`` audio → ``(n_samples,)``."""
    audio = np.asarray(audio)
    return audio.mean(axis=1) if audio.ndim == 2 else audio
