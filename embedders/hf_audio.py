"""``hf-audio``: any Hugging Face ``transformers`` audio encoder, one chosen layer over time.

Pipeline: audio (any format soundfile reads) → mono (mean of the channels) → resampled with
libsoxr VHQ to the feature extractor's ``sampling_rate`` → cut into windows → each window through
the model's own feature extractor (e.g. wav2vec 2.0's per-input normalisation) and the model with
``output_hidden_states=True`` → ``hidden_states[layer]`` of every window, joined over time, are
``Embedding.frames``; ``Embedding.clip`` is their mean.

Windows and frames (models with a convolutional waveform front-end: wav2vec 2.0, HuBERT, WavLM,
data2vec-audio, MERT, i.e. a config with ``conv_kernel`` and ``conv_stride``). The front-end fixes a
frame grid on the whole signal: frame ``j`` sees samples ``[j*stride, j*stride + receptive_field)``
(320 and 400 samples at 16 kHz for wav2vec 2.0: 50 frames/s), so a signal of ``n`` samples has
``(n - receptive_field) // stride + 1`` frames. Windows of ``window_seconds`` start at multiples of
the hop, rounded down to whole frames; the default hop (``hop_seconds=None``) is the window minus
the ``receptive_field - stride`` samples two neighbouring frames share, so consecutive windows
compute consecutive, non-overlapping blocks of the grid. The last window is whatever is left of
the signal (shorter, never zero-padded). The output has exactly the frames of the whole-signal
grid, each one once: a frame that several (overlapping) windows compute is taken from the window
whose centre is nearest (the earlier one on a tie), i.e. the one giving it the most context on
both sides. ``timestamps`` are the centres of the frames' receptive fields in seconds,
``(j*stride + receptive_field/2) / sampling_rate``. A signal shorter than one receptive field is
refused. See :func:`plan_windows`.

Other models (no convolutional front-end in the config, e.g. spectrogram transformers): windows
are consecutive and non-overlapping (``hop_seconds`` must be left unset), every frame a window
returns is kept, and its timestamp is spread evenly over the window.

Weights: ``model`` is a Hugging Face id (resolved through the Hugging Face cache with
``huggingface_hub``, like CLaMP 2: ``HF_HUB_OFFLINE`` / ``EMBCOMPARE_OFFLINE`` turn downloads off,
and a model that is not cached then gives one error saying how to get it) or a local folder as
``save_pretrained`` writes it. In cache keys the model is named by the resolved snapshot's commit
hash, or, for a local folder, by the fingerprints of its weight and configuration files. Models
whose config asks for their own code (``auto_map``, e.g. MERT's published checkpoints) load only
with ``trust_remote_code=True``: that code runs on this machine.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import register
from .base import (AUDIO, ConfigurationError, Embedder, Embedding, InputError, WeightsError,
                   mean_pool, resolve_device)
from .lib import audio_io, hf_models
from .lib.layers import ALL, LayerSpaces, parse_layers
from .lib.hf_models import conv_frames, conv_geometry, needs_remote_code  # noqa: F401 (API)

DEFAULT_MODEL = "facebook/wav2vec2-base"
#: Window length by ``config.model_type`` when ``window_seconds`` is not given: the length the
#: model was trained on or near it (MERT: 5-s excerpts; wav2vec 2.0 family: crops up to ~15 s).
MODEL_WINDOW_SECONDS = {"mert_model": 5.0}
FALLBACK_WINDOW_SECONDS = 10.0
PRECISIONS = ("float32", "bfloat16")
#: Blocks read from the audio file at a time (seconds) while decoding and resampling.
READ_BLOCK_SECONDS = 30.0


# ---------------------------------------------------------------------------------------------
# windows (numpy only)

@dataclass(frozen=True)
class Window:
    """One window of the signal and the frames kept from it.

    Attributes
    ----------
    start, stop : int
        Sample range ``[start, stop)`` fed to the model.
    first_frame : int
        Index, in the whole-signal frame grid, of the window's first frame.
    n_frames : int
        Frames the model returns for this window.
    keep_start, keep_stop : int
        The window's frames ``[keep_start, keep_stop)`` (window-relative) go to the output, at
        grid positions ``first_frame + keep_start`` onwards.
    """

    start: int
    stop: int
    first_frame: int
    n_frames: int
    keep_start: int
    keep_stop: int


def plan_windows(n_samples: int, *, window: int, hop: int | None, receptive_field: int,
                 stride: int) -> list[Window]:
    """Windows covering the frame grid of a signal, and which frames to keep from each.

    Parameters
    ----------
    n_samples : int
        Length of the signal (at the model's rate).
    window : int
        Samples per window (at least ``receptive_field``).
    hop : int or None
        Samples between window starts, rounded down to whole frames (at least one frame) and
        capped so that no grid frame falls between two windows. ``None``: that cap, i.e.
        consecutive windows compute consecutive blocks of frames.
    receptive_field, stride : int
        The front-end's frame geometry (see :func:`conv_geometry`).

    Returns
    -------
    list of Window
        Empty when the signal is shorter than one receptive field. The kept ranges, in order,
        tile the ``conv_frames(n_samples)`` frames of the grid exactly once; each frame comes
        from the window (among those computing it) whose centre is nearest, the earlier on a tie.
    """
    if window < receptive_field:
        raise ValueError(f"window ({window} samples) is shorter than one frame "
                         f"({receptive_field} samples)")
    n_total = conv_frames(n_samples, receptive_field=receptive_field, stride=stride)
    if n_total == 0:
        return []
    per_window = conv_frames(window, receptive_field=receptive_field, stride=stride)
    hop_frames = per_window if hop is None else max(1, min(int(hop) // stride, per_window))
    n_windows = 1 + max(0, math.ceil((n_total - per_window) / hop_frames))
    firsts = np.arange(n_windows) * hop_frames
    counts = np.minimum(per_window, n_total - firsts)
    centres = firsts + (counts - 1) / 2.0
    # owner of each grid frame: nearest centre among the windows computing it (earlier on ties)
    frame = np.arange(n_total)
    owner = np.zeros(n_total, dtype=np.int64)
    best = np.full(n_total, np.inf)
    for k in range(n_windows):
        lo, hi = firsts[k], firsts[k] + counts[k]
        dist = np.abs(frame[lo:hi] - centres[k])
        closer = dist < best[lo:hi]
        owner[lo:hi][closer] = k
        best[lo:hi][closer] = dist[closer]
    windows = []
    for k in range(n_windows):
        kept = np.flatnonzero(owner == k)
        first = int(firsts[k])
        start = first * stride
        keep = (int(kept[0]) - first, int(kept[-1]) + 1 - first) if kept.size else (0, 0)
        if kept.size and kept.size != keep[1] - keep[0]:  # cannot happen: centres increase
            raise AssertionError("window ownership is not contiguous")
        windows.append(Window(start=start, stop=min(start + window, n_samples), first_frame=first,
                              n_frames=int(counts[k]), keep_start=keep[0], keep_stop=keep[1]))
    return windows


def run_windows(signal: np.ndarray, bounds: list[tuple[int, int]], forward,
                batch_size: int) -> list[np.ndarray]:
    """``forward`` on each window ``signal[a:b]``; windows of equal length go in batches of up to
    ``batch_size`` (``forward`` takes a list of equally long 1-D arrays and returns an array
    ``(n_windows, n_frames, dim)``). Returns one ``(n_frames, dim)`` array per window, in order."""
    out: list[np.ndarray | None] = [None] * len(bounds)
    by_length: dict[int, list[int]] = {}
    for i, (a, b) in enumerate(bounds):
        by_length.setdefault(b - a, []).append(i)
    for idx in by_length.values():
        for s in range(0, len(idx), batch_size):
            group = idx[s:s + batch_size]
            states = forward([signal[bounds[i][0]:bounds[i][1]] for i in group])
            for i, st in zip(group, states):
                out[i] = st
    return out  # type: ignore[return-value]


def frames_on_grid(signal: np.ndarray, forward, *, window: int, hop: int | None,
                   receptive_field: int, stride: int, sample_rate: int, batch_size: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The frames of a convolutional-front-end model over a whole signal, computed in windows
    (:func:`plan_windows`), and their times (centre of each frame's receptive field, seconds).

    ``forward`` is as in :func:`run_windows`. Shared with the ``trained`` embedder (finetune runs).

    Raises
    ------
    ValueError
        The signal is shorter than one frame.
    """
    n = signal.shape[0]
    plan = plan_windows(n, window=window, hop=hop, receptive_field=receptive_field,
                        stride=stride)
    if not plan:
        raise ValueError(f"audio is {n / sample_rate:.4f} s long at {sample_rate} Hz, shorter "
                         f"than one frame of the model ({receptive_field / sample_rate:.4f} s)")
    states = run_windows(signal, [(w.start, w.stop) for w in plan], forward, batch_size)
    kept = []
    for w, st in zip(plan, states):
        if st.shape[0] != w.n_frames:  # the config's conv geometry must describe the model
            raise RuntimeError(f"model returned {st.shape[0]} frames for {w.stop - w.start} "
                               f"samples, expected {w.n_frames}")
        kept.append(st[w.keep_start:w.keep_stop])
    frames = np.concatenate(kept)
    timestamps = (np.arange(frames.shape[0]) * stride + receptive_field / 2) / sample_rate
    return frames, timestamps


# ---------------------------------------------------------------------------------------------
# model resolution (shared with ``train --method finetune``: embedders/lib/hf_models.py)

def resolve_model(model: str, *, revision: str | None = None, name: str = "hf-audio"
                  ) -> tuple[Path, str]:
    """The folder holding a model's files, and its identity for cache keys (see
    :func:`embedders.lib.hf_models.resolve_model`; messages name the embedder ``name``)."""
    return hf_models.resolve_model(model, revision=revision, who=name,
                                   local_option=f"--set {name}.model=PATH")


# ---------------------------------------------------------------------------------------------
# the embedder

@register
class HFAudioEmbedder(LayerSpaces, Embedder):
    """A ``transformers`` audio encoder: one hidden layer's vectors over time, mean as clip.

    Options
    -------
    model : str
        Hugging Face id or local ``save_pretrained`` folder (default ``facebook/wav2vec2-base``).
    revision : str or None
        Branch, tag or commit of a hub model; the resolved commit is what the cache key holds.
    layer : int, list of int or "all"
        Index into ``hidden_states`` (0: the encoder's input, i.e. the projected convolutional
        features; ``-1``: the last layer). ``all`` or a list (``2,4,6``): one space per layer,
        ``hf-audio@LAYER``, from one forward pass per file (:mod:`embedders.lib.layers`).
    window_seconds : float or None
        Window length; ``None``: 5 s for MERT, 10 s for the others.
    hop_seconds : float or None
        Time between window starts (rounded down to whole frames); ``None``: windows follow each
        other without computing any frame twice. See :func:`plan_windows`.
    batch_size : int
        Windows per forward pass (windows of a file have the same length but the last).
    device : str or None
        ``cpu``, ``cuda[:N]``, ``mps``; ``None`` picks the best available.
    precision : str
        ``float32`` (default) or ``bfloat16`` (autocast; changes the numbers, so it enters the
        cache key).
    trust_remote_code : bool
        Allow a model's own Python code (needed by MERT). Off by default: that code runs here.
    """

    name = "hf-audio"
    modality = AUDIO
    version = "1"
    extensions = audio_io.AUDIO_EXTENSIONS
    description = ("Any Hugging Face transformers audio encoder (default wav2vec 2.0 base): one "
                   "hidden layer over time in windows, mean-pooled clip (layer=all: one space per layer)")
    parallel_files = False
    option_defaults = {
        "model": DEFAULT_MODEL,
        "revision": None,
        "layer": -1,
        "window_seconds": None,
        "hop_seconds": None,
        "batch_size": 4,
        "device": None,
        "precision": "float32",
        "trust_remote_code": False,
    }
    option_types = {"revision": str, "window_seconds": float, "hop_seconds": float,
                    "device": str}

    def validate_options(self) -> None:
        o, name = self.options, self.name  # a subclass's messages name the subclass
        if not isinstance(o["model"], (str, os.PathLike)) or not str(o["model"]).strip():
            raise ConfigurationError(f"{name} model must be a Hugging Face id or a folder, "
                                     f"got {o['model']!r}")
        o["model"] = str(o["model"])
        if o["revision"] is not None and not isinstance(o["revision"], str):
            raise ConfigurationError(f"{name} revision must be text, got {o['revision']!r}")
        o["layer"] = layer = parse_layers(o["layer"])
        if layer != ALL and any(isinstance(v, bool) or not isinstance(v, int)
                                for v in (layer if isinstance(layer, tuple) else (layer,))):
            raise ConfigurationError(f"{name} layer must be an integer, a list of integers "
                                     f"(2,4,6) or all, got {o['layer']!r}")
        for key in ("window_seconds", "hop_seconds"):
            v = o[key]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not math.isfinite(v) or v <= 0):
                raise ConfigurationError(f"{name} {key} must be a positive number of seconds, "
                                         f"got {v!r}")
        if (o["window_seconds"] is not None and o["hop_seconds"] is not None
                and o["hop_seconds"] > o["window_seconds"]):
            raise ConfigurationError(f"{name} hop_seconds ({o['hop_seconds']}) is longer than "
                                     f"window_seconds ({o['window_seconds']}): audio would be skipped")
        bs = o["batch_size"]
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ConfigurationError(f"{name} batch_size must be a positive integer, got {bs!r}")
        if o["device"] is not None and not isinstance(o["device"], str):
            raise ConfigurationError(f"{name} device must be a string, got {o['device']!r}")
        if o["precision"] not in PRECISIONS:
            raise ConfigurationError(f"{name} precision must be one of {', '.join(PRECISIONS)}, "
                                     f"got {o['precision']!r}")
        if not isinstance(o["trust_remote_code"], bool):
            raise ConfigurationError(f"{name} trust_remote_code must be true or false, got "
                                     f"{o['trust_remote_code']!r}")

    def cache_options(self) -> dict[str, Any]:
        """Cache key options: the weights identity names the model (commit or file hashes), so
        ``revision`` and a local folder's path are left out; so is ``trust_remote_code`` (it
        decides whether a model loads, not its numbers), and ``precision`` when float32."""
        opts = super().cache_options()
        opts.pop("revision", None)
        opts.pop("trust_remote_code", None)
        if str(opts.get("weights_identity", "")).startswith("local:"):
            opts.pop("model", None)
        if opts.get("precision") == "float32":
            opts.pop("precision")
        return opts

    def weights_identity(self) -> str | None:
        self.load()
        return self._identity

    @property
    def dim(self) -> int | None:
        model = getattr(self, "_model", None)
        return int(model.config.hidden_size) if model is not None else None

    # -- loading ------------------------------------------------------------------------------
    def _load(self) -> None:
        import torch

        o, name = self.options, self.name
        self._device = resolve_device(o["device"])
        if o["precision"] == "bfloat16" and self._device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigurationError(f"{name} precision bfloat16 runs on cpu and cuda only, "
                                     f"not {self._device!r}")
        folder, identity = resolve_model(o["model"], revision=o["revision"], name=name)
        try:
            import transformers
        except ImportError as exc:
            raise WeightsError(f"{name} needs the transformers package (pip install -r "
                               "requirements.txt)") from exc
        if needs_remote_code(folder) and not o["trust_remote_code"]:
            raise ConfigurationError(
                f"{name} model {o['model']!r} needs its own Python code (its config names it "
                f"in auto_map); if you trust it, run with --set {name}.trust_remote_code=true")
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # no per-tensor bar in a run's output
        try:
            extractor = transformers.AutoFeatureExtractor.from_pretrained(
                str(folder), trust_remote_code=o["trust_remote_code"])
            model = transformers.AutoModel.from_pretrained(
                str(folder), trust_remote_code=o["trust_remote_code"], dtype=torch.float32)
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise WeightsError(f"cannot load {name} model {o['model']!r} from {folder}: "
                               f"{str(exc).strip().splitlines()[0][:300]}") from exc
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        self._model = model.to(self._device).eval()
        self._extractor = extractor
        self._identity = identity
        self._sr = int(extractor.sampling_rate)
        cfg = model.config
        self._layers = self._check_layers(int(getattr(cfg, "num_hidden_layers", 0)) + 1)
        kernels, strides = getattr(cfg, "conv_kernel", None), getattr(cfg, "conv_stride", None)
        self._geometry = conv_geometry(kernels, strides) if kernels and strides else None
        seconds = o["window_seconds"] or MODEL_WINDOW_SECONDS.get(cfg.model_type,
                                                                  FALLBACK_WINDOW_SECONDS)
        self._window = int(round(seconds * self._sr))
        self._hop = None if o["hop_seconds"] is None else int(round(o["hop_seconds"] * self._sr))
        if self._geometry is not None and self._window < self._geometry[0]:
            raise ConfigurationError(f"{name} window_seconds {seconds} is shorter than one "
                                     f"frame of the model ({self._geometry[0]} samples)")
        if self._geometry is None and self._hop not in (None, self._window):
            raise ConfigurationError(f"{name} hop_seconds needs a model with a convolutional "
                                     f"front-end; {cfg.model_type} windows do not overlap")
        self._torch = torch

    def _check_layers(self, n_hidden: int) -> list[int]:
        """The selected indexes into ``hidden_states``, checked against the model's count."""
        name, layer = self.name, self.options["layer"]
        if layer == ALL:
            if n_hidden <= 1:
                raise ConfigurationError(f"{name} layer=all: the model's config does not say how "
                                         f"many layers it has (num_hidden_layers); list them")
            return list(range(n_hidden))
        layers = list(layer) if isinstance(layer, tuple) else [layer]
        for v in layers:
            if n_hidden > 1 and not -n_hidden <= v < n_hidden:
                raise ConfigurationError(f"{name} layer {v} is out of range: the model has "
                                         f"{n_hidden} hidden states (0 … {n_hidden - 1}, or -1 "
                                         f"for the last)")
        return layers

    def selected_layers(self) -> list[int]:
        self.load()
        return list(self._layers)

    # -- audio --------------------------------------------------------------------------------
    def read_signal(self, path: str) -> tuple[np.ndarray, int, int]:
        """Mono float32 signal at the model's rate, the file's rate and its channel count."""
        from .lib.resample import make_resampler

        parts, res, sr_in, channels = [], None, None, None
        for block, sr in audio_io.iter_audio_blocks(path, block_seconds=READ_BLOCK_SECONDS):
            sr_in, channels = sr, block.shape[1]
            mono = audio_io.to_mono(block)
            if sr != self._sr:
                res = res or make_resampler("soxr", sr, self._sr)
                mono = res.process(mono)
            parts.append(mono.astype(np.float32))
        if res is not None:
            parts.append(res.flush().astype(np.float32))
        return np.concatenate(parts), int(sr_in), int(channels)

    # -- model --------------------------------------------------------------------------------
    def _forward(self, windows: list[np.ndarray]) -> np.ndarray:
        """``hidden_states[layer]`` of equally long windows; with several layers, every selected
        one from the same forward pass (stacked on a layer axis after the frames).

        Returns
        -------
        np.ndarray [shape=(n_windows, n_frames, dim) or (n_windows, n_frames, n_layers, dim),
        dtype=float32]
        """
        torch = self._torch
        inputs = self._extractor(windows, sampling_rate=self._sr, return_tensors="pt")
        inputs = {k: v.to(self._device) for k, v in inputs.items()}
        with torch.inference_mode():
            if self.options["precision"] == "bfloat16":
                with torch.autocast(torch.device(self._device).type, dtype=torch.bfloat16):
                    out = self._model(**inputs, output_hidden_states=True)
            else:
                out = self._model(**inputs, output_hidden_states=True)
            if not self.several_layers:
                return out.hidden_states[self.options["layer"]].float().cpu().numpy()
            return torch.stack([out.hidden_states[i] for i in self._layers], dim=2) \
                .float().cpu().numpy()

    def _run_windows(self, signal: np.ndarray, bounds: list[tuple[int, int]]) -> list[np.ndarray]:
        """Hidden states of each window ``signal[a:b]``, windows of equal length batched."""
        return run_windows(signal, bounds, self._forward, self.options["batch_size"])

    def embed_signal(self, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frames and their times of a mono signal already at the model's rate.

        Parameters
        ----------
        signal : np.ndarray [shape=(n_samples,)]

        Returns
        -------
        frames : np.ndarray [shape=(n_frames, dim), dtype=float32]
            With several layers ``(n_frames, n_layers, dim)``, layers as :meth:`selected_layers`.
        timestamps : np.ndarray [shape=(n_frames,)]
            Seconds (centre of each frame's receptive field).

        Raises
        ------
        ValueError
            The signal is shorter than one frame.
        """
        self.load()
        signal = np.ascontiguousarray(signal, dtype=np.float32)
        n, sr = signal.shape[0], self._sr
        if self._geometry is None:
            bounds = [(a, min(a + self._window, n)) for a in range(0, n, self._window)]
            if not bounds:
                raise ValueError("audio has 0 samples")
            states = self._run_windows(signal, bounds)
            times = [a / sr + (np.arange(st.shape[0]) + 0.5) * (b - a) / sr / st.shape[0]
                     for (a, b), st in zip(bounds, states)]
            return np.concatenate(states), np.concatenate(times)
        field, stride = self._geometry
        return frames_on_grid(signal, self._forward, window=self._window, hop=self._hop,
                              receptive_field=field, stride=stride, sample_rate=sr,
                              batch_size=self.options["batch_size"])

    def _embed_file(self, path: str) -> Embedding:
        self.refuse_several()
        frames, timestamps, info = self._frames_of_file(path)
        return Embedding(frames=frames, clip=mean_pool(frames), timestamps=timestamps, info=info)

    def _embed_layers(self, path: str) -> dict[int, Embedding]:
        frames, timestamps, info = self._frames_of_file(path)
        out = {}
        for i, layer in enumerate(self._layers):
            # a contiguous copy per layer; the stacked array is dropped right after
            x = np.ascontiguousarray(frames[:, i, :])
            out[layer] = Embedding(frames=x, clip=mean_pool(x), timestamps=timestamps,
                                   info=dict(info, layer=layer))
        return out

    def _frames_of_file(self, path: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """Frames (of every selected layer), timestamps and info of one file."""
        signal, sr_in, channels = self.read_signal(path)
        try:
            frames, timestamps = self.embed_signal(signal)
        except (ValueError, MemoryError) as exc:
            raise InputError(path, f"cannot embed audio: {exc}") from exc
        info = {
            "sample_rate": sr_in,
            "channels": channels,
            "model_rate": self._sr,
            "resampler": "soxr" if sr_in != self._sr else "none",
            "window_samples": self._window,
            "device": self._device,
        }
        return frames, timestamps, info
