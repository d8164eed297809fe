"""``audio-stats``: hand-made audio descriptors, a weight-free control for learned audio models.

Per analysis window (default 2 s, no overlap) the audio is described by the mean and standard
deviation over STFT frames of librosa's log-mel spectrogram, MFCCs, chroma, spectral contrast and
spectral shape (centroid, bandwidth, roll-off, flatness, zero-crossing rate, RMS). One window is
one row of ``frames``; the clip vector is the mean of the windows.

Audio is mixed to mono (channel mean) and resampled to ``sample_rate`` with soxr (VHQ), streamed
block by block so a long file never sits in memory whole.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import register
from .lib.audio_io import AUDIO_EXTENSIONS, iter_audio_blocks, to_mono
from .base import AUDIO, ConfigurationError, Embedder, Embedding, InputError

_SHAPE = ("spectral_centroid_khz", "spectral_bandwidth_khz", "spectral_rolloff_khz",
          "spectral_flatness", "zero_crossing_rate", "rms")


@register
class AudioStats(Embedder):
    name = "audio-stats"
    modality = AUDIO
    version = "1"
    extensions = AUDIO_EXTENSIONS
    description = ("librosa log-mel / MFCC / chroma / spectral-contrast / spectral-shape "
                   "statistics (mean and std per window); no weights")
    parallel_files = True
    option_defaults = {"sample_rate": 22050, "window_seconds": 2.0, "n_fft": 2048,
                       "hop_length": 512, "n_mels": 64, "n_mfcc": 20}

    def validate_options(self) -> None:
        o = self.options
        for key in ("sample_rate", "n_fft", "hop_length", "n_mels", "n_mfcc"):
            if not isinstance(o[key], int) or isinstance(o[key], bool) or o[key] <= 0:
                raise ConfigurationError(f"audio-stats: {key} must be a positive integer, "
                                         f"got {o[key]!r}")
        if not isinstance(o["window_seconds"], (int, float)) or o["window_seconds"] <= 0:
            raise ConfigurationError("audio-stats: window_seconds must be a positive number, "
                                     f"got {o['window_seconds']!r}")
        if o["sample_rate"] < 8000:
            raise ConfigurationError("audio-stats: sample_rate must be at least 8000 Hz")
        if o["n_mfcc"] > o["n_mels"]:
            raise ConfigurationError("audio-stats: n_mfcc cannot exceed n_mels")

    @property
    def frame_feature_names(self) -> list[str]:
        """Names of the per-STFT-frame features, in order."""
        o = self.options
        return ([f"logmel_{i}" for i in range(o["n_mels"])]
                + [f"mfcc_{i}" for i in range(o["n_mfcc"])]
                + [f"chroma_{i}" for i in range(12)]
                + [f"contrast_{i}" for i in range(7)]
                + list(_SHAPE))

    @property
    def feature_names(self) -> list[str]:
        """Names of the output dimensions: ``mean_<feature>`` then ``std_<feature>``."""
        base = self.frame_feature_names
        return [f"mean_{n}" for n in base] + [f"std_{n}" for n in base]

    @property
    def dim(self) -> int:
        return len(self.feature_names)

    # -- computation --------------------------------------------------------------------------
    def _frame_features(self, y: np.ndarray) -> np.ndarray:
        """Per-STFT-frame features of one window.

        Parameters
        ----------
        y : np.ndarray [shape=(n_samples,), dtype=float32]

        Returns
        -------
        np.ndarray [shape=(n_stft_frames, n_frame_features)]
        """
        from .lib.jit import import_librosa
        librosa = import_librosa()

        o = self.options
        sr, n_fft, hop = o["sample_rate"], o["n_fft"], o["hop_length"]
        if len(y) < n_fft:  # very short clips: zero-pad to one full FFT frame
            y = np.pad(y, (0, n_fft - len(y)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns on silent / tiny inputs
            stft = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
            power = stft ** 2
            mel = librosa.feature.melspectrogram(S=power, sr=sr, n_mels=o["n_mels"])
            logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
            mfcc = librosa.feature.mfcc(S=logmel, n_mfcc=o["n_mfcc"])
            chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_fft=n_fft)
            contrast = librosa.feature.spectral_contrast(S=stft, sr=sr, n_fft=n_fft)
            centroid = librosa.feature.spectral_centroid(S=stft, sr=sr, n_fft=n_fft) / 1000.0
            bandwidth = librosa.feature.spectral_bandwidth(S=stft, sr=sr, n_fft=n_fft) / 1000.0
            rolloff = librosa.feature.spectral_rolloff(S=stft, sr=sr, n_fft=n_fft) / 1000.0
            flatness = librosa.feature.spectral_flatness(S=stft)
            zcr = librosa.feature.zero_crossing_rate(y, frame_length=n_fft, hop_length=hop)
            rms = librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop)
        n = min(a.shape[1] for a in (logmel, chroma, zcr, rms))
        feats = np.concatenate([a[:, :n] for a in (logmel, mfcc, chroma, contrast, centroid,
                                                   bandwidth, rolloff, flatness, zcr, rms)])
        # Silence makes some ratios undefined; 0 is the natural value there (no energy).
        return np.nan_to_num(feats.T, nan=0.0, posinf=0.0, neginf=0.0)

    def _window_vector(self, y: np.ndarray) -> np.ndarray:
        f = self._frame_features(y)
        return np.concatenate([f.mean(axis=0), f.std(axis=0)]).astype(np.float32)

    def _resampled_blocks(self, path: str):
        """Mono float32 blocks at ``sample_rate``, resampled as one continuous stream."""
        import soxr

        target = self.options["sample_rate"]
        stream = None
        for block, sr in iter_audio_blocks(path, block_seconds=30.0, dtype="float32"):
            mono = to_mono(block).astype(np.float32)
            if sr == target:
                yield mono
                continue
            if stream is None:
                stream = soxr.ResampleStream(sr, target, 1, dtype="float32", quality="VHQ")
            yield stream.resample_chunk(mono, last=False)
        if stream is not None:
            yield stream.resample_chunk(np.zeros(0, np.float32), last=True)

    def _embed_file(self, path: str) -> Embedding:
        sr = self.options["sample_rate"]
        win = max(1, int(round(self.options["window_seconds"] * sr)))
        vectors, starts = [], []
        buf = np.zeros(0, np.float32)
        consumed = 0  # samples already turned into windows
        for chunk in self._resampled_blocks(path):
            buf = np.concatenate([buf, chunk]) if buf.size else chunk
            while buf.size >= win:
                vectors.append(self._window_vector(buf[:win]))
                starts.append(consumed / sr)
                buf, consumed = buf[win:], consumed + win
        # A tail shorter than half a window is folded into nothing unless it is all there is.
        if buf.size and (not vectors or buf.size >= win // 2):
            vectors.append(self._window_vector(buf))
            starts.append(consumed / sr)
        if not vectors:
            raise InputError(path, "audio has 0 samples after resampling")
        frames = np.stack(vectors)
        if not np.all(np.isfinite(frames)):
            raise InputError(path, "features are not finite (audio values out of range?)")
        return Embedding(frames=frames, clip=frames.mean(axis=0), timestamps=np.asarray(starts),
                         info={"resampler": "soxr VHQ", "sample_rate": sr,
                               "n_windows": len(vectors)})
