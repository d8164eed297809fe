"""OpenL3 audio embeddings: an independent PyTorch port of openl3 0.4.x (kapre front-end).

What is reproduced (see the fixtures in ``tests/fixtures/openl3`` for the parity checks):

* Audio: soundfile samples (float64), mono = mean over channels, resampled to 48 kHz with a
  re-implementation of resampy 0.2.2 ``kaiser_best`` (:mod:`embedders.lib.resample`), the resampler
  openl3 0.4.x uses. ``resampler="soxr"`` (libsoxr VHQ) is a faster alternative that is *not*
  bit-compatible: on the fixtures' resampled files it moves embeddings by a few percent.
* Framing: 1-s frames (48000 samples), hop ``int(hop_size*48000)``; ``center=True`` adds 24000
  zeros at the start only; the end is zero-padded so the last frame ends at the padded end;
  ``n_frames = 1 + ceil((L-48000)/hop)`` (1 frame when L <= 48000); timestamps
  ``arange(n_frames) * hop_size``.
* Front-end (kapre 0.3.x as patched by openl3 0.4.x): periodic Hann STFT without centring,
  hop 242; linear: n_fft 512, |X| (257 x 197); mel128/mel256: n_fft 2048 with 1964 zeros
  appended (``pad_end``), Slaney mel filterbank (librosa ``htk=False, norm='slaney'``) applied to
  |X| (n_mels x 199); then ``10*log10(max(x, 1e-10))`` minus the per-frame max, floored at -80.
* Network: input BatchNorm, 4 VGG blocks of Conv3x3('same')->BN(eps=1e-3)->ReLU (x2, x2, x2,
  then one 512 conv+BN+ReLU), 2x2 max-pools, the ``audio_embedding_layer`` conv (no BN, no ReLU),
  max-pool to 4x3 (6144, flattened channels-last) or the whole map (512).
* Weights: the official Keras HDF5 files ``openl3_audio_{repr}_{content}.h5`` loaded by order
  (groups with non-empty ``weight_names`` in ``layer_names`` order), shapes checked.

Speed (2-core AMD EPYC Zen3 VM, AVX2, torch 2.13 CPU, random weights, batch 32, front-end
included; ``bench/bench_openl3.py`` prints the ratios side by side in one run): BatchNorm is
folded into the convolutions, the network runs in channels-last memory format under
``torch.inference_mode``, and front-end, network and pooling run together on micro-batches of
1-2 frames (``CPU_MICRO_BATCH_BYTES``; cache-friendly and no batch-sized intermediates). The cost
is the 3x3 convolutions (10.2 GMAC per frame for mel256/linear, 5.1 for mel128), where oneDNN
reaches about half of the cores' FMA peak, so ``conv_algorithm="auto"`` (default) computes
convs 2-7 (>= 64 in, >= 128 out channels) on CPU as Winograd F(4x4,3x3) convolutions
(:mod:`embedders.lib.winograd`: 36 batched GEMMs on transformed tiles, 4x fewer multiplications);
convs 0-1 stay oneDNN (faster there, measured). ``"direct"`` keeps every conv on oneDNN,
``"winograd"`` forces the Winograd layers on any device. Two runs of the bench on this shared VM
(absolute speeds move by ~30 % with the load; the ratios much less): mel256/6144 6.8-10.2
frames/s, mel128/512 16.1-19.7, linear/6144 8.8-11.8; 2.3-3.1x a plain eager float32 run of the
same network (explicit BN, NCHW) and 1.2-1.7x the direct path. It is a run-time option (not in
the cache key): vs the plain run max |diff| ~3-4e-4, mean ~2e-5 on embeddings of mean |e| ~13-16,
the same as the direct path's, i.e. float32 round-off. The Winograd buffers add ~100 MB to the
peak RSS; with ``precision="bfloat16"`` all convs are direct.

``precision="bfloat16"`` runs the network under autocast (opt-in; it changes the numbers: mean
|diff| ~0.09, max ~1.1-1.4 on embeddings of mean |e| ~15, cosine > 0.9999). On CPUs without
native bf16 instructions (AVX512-BF16/AMX; e.g. this Zen3, AVX2 only) it is *slower*: measured
0.20-0.24x the plain float32 run, ~10x slower than the default path; it is meant
for GPUs and recent Xeons. ``tf32=True`` allows TF32 on CUDA (off by default: it breaks parity).

Memory: audio is *streamed*: the file is read in 10-s blocks (``iter_audio_blocks``), downmixed,
resampled block by block (both resamplers are streaming-exact), and frames are cut from a small
rolling buffer of the 48 kHz signal and embedded ``batch_size`` at a time. Neither the whole
signal nor all frames are ever held in memory; only the (n_frames, dim) output grows
(6144 float32 = 24 kB per frame, ~0.9 GB for one hour at hop 0.1 with 6144 dims; 512 dims ~74 MB),
filled in place from the frame count in the file's header rather than concatenated at the end.
On an accelerator the next batch is decoded, resampled and framed in a background thread
(:func:`prefetch`) while the current one is embedded, with pinned host memory for the copy.
Measured (44.1 kHz stereo, mel128/512, hop 5 so that the output is negligible): RSS ~310-400 MB
after loading (torch itself is most of it), peak ~480-590 MB for a 10-minute file and 598 MB for
a 1-hour file (flat over the hour; the reference needs 1.9 GB for a 30-s file).
"""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from .lib import audio_io, weights as wts
from .base import (AUDIO, ConfigurationError, Embedder, Embedding, InputError, WeightsError,
                   mean_pool, resolve_device)
from . import register

SR = 48000
FRAME_LEN = 48000
STFT_HOP = 242
INPUT_REPRS = ("linear", "mel128", "mel256")
CONTENT_TYPES = ("music", "env")
EMBEDDING_SIZES = (512, 6144)
PRECISIONS = ("float32", "bfloat16")
RESAMPLERS = ("kaiser_best", "soxr")
CONV_ALGORITHMS = ("auto", "direct", "winograd")
#: Winograd output tile (F(m x m, 3 x 3)); F(4,3) measured faster than F(2,3) on every layer
#: (2 Zen3 cores); its round-off stays ~1e-5 relative per layer.
WINOGRAD_TILE = 4
BN_EPS = 1e-3
#: On CPU the network runs on micro-batches whose first-layer activations (64 channels at the
#: full spectrogram size: 13 MB per frame for mel256/linear, 6.5 MB for mel128) stay within this
#: many bytes, i.e. 1 frame for mel256/linear and 2 for mel128: measured 5-15 % faster than 4
#: frames (2 Zen3 cores). ``batch_size`` frames are still framed, transformed and returned together.
CPU_MICRO_BATCH_BYTES = 16 << 20
WEIGHTS_URL = "https://github.com/marl/openl3/raw/models/openl3_audio_{input_repr}_{content_type}-v0_4_0.h5.gz"
WEIGHTS_NAME = "openl3_audio_{input_repr}_{content_type}.h5"
#: Largest output array allocated up front from a file header's length (4 GB: ~4.5 h at hop 0.1
#: with 6144 dims); beyond that the output is concatenated from the batches.
MAX_PREALLOC_BYTES = 4 << 30
#: Learned parameters are ~18.8 MB of float32; anything much smaller is not a weight file.
MIN_WEIGHTS_SIZE = 18_000_000

#: Channels of the 8 convolutions; a BatchNorm precedes every conv (input BN, then after each
#: conv except the last).
CONV_CHANNELS = ((1, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512),
                 (512, 512))
#: Max-pool applied after conv index k (0-based).
POOL_AFTER = (1, 3, 5)
#: Final pooling (freq, time) per (input_repr, embedding_size).
FINAL_POOL = {
    ("linear", 6144): (8, 8), ("linear", 512): (32, 24),
    ("mel128", 6144): (4, 8), ("mel128", 512): (16, 24),
    ("mel256", 6144): (8, 8), ("mel256", 512): (32, 24),
}
#: Expected shapes of the 16 weighted layers, in file order: BN(1), conv(1->64), BN(64),
#: conv(64->64), ..., conv(256->512), BN(512), conv(512->512) (the audio_embedding_layer).
LAYER_SHAPES: list[tuple[str, tuple]] = []
for _cin, _cout in CONV_CHANNELS:
    LAYER_SHAPES.append(("bn", (_cin,)))
    LAYER_SHAPES.append(("conv", (3, 3, _cin, _cout)))
del _cin, _cout

_HASH_CACHE: dict[tuple, str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = wts.sha256_file(path)
    return _HASH_CACHE[key]


# ------------------------------------------------------------------------------------------------
# weights
def read_weights(path: str | os.PathLike) -> list[dict[str, np.ndarray]]:
    """Read the 16 weighted layers of an OpenL3 audio HDF5 file, by order, shapes checked.

    Returns
    -------
    list of dict
        ``{"kernel", "bias"}`` for a conv, ``{"gamma", "beta", "mean", "var"}`` for a BN.

    Raises
    ------
    WeightsError
        Not HDF5, truncated, wrong layer count or wrong shapes.
    """
    import h5py

    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable HDF5 weight file ({exc})") from exc
    try:
        with fh:
            root = fh["model_weights"] if "model_weights" in fh else fh
            if "layer_names" not in root.attrs:
                raise WeightsError(f"{path}: no 'layer_names' attribute; not a Keras weight file")
            groups = []
            for raw in root.attrs["layer_names"]:
                name = raw.decode("utf8") if isinstance(raw, bytes) else str(raw)
                g = root[name]
                wnames = [w.decode("utf8") if isinstance(w, bytes) else str(w)
                          for w in g.attrs.get("weight_names", [])]
                if wnames:
                    groups.append((name, [np.asarray(g[w], dtype=np.float32) for w in wnames]))
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"{path}: cannot read the weights (truncated or corrupt file?): "
                           f"{exc}") from exc
    if len(groups) == len(LAYER_SHAPES) + 1:
        groups = groups[1:]  # v0_2_0 files: a leading kapre-0.1.4 spectrogram layer
    if len(groups) != len(LAYER_SHAPES):
        raise WeightsError(f"{path}: expected {len(LAYER_SHAPES)} weighted layers (8 BatchNorm, "
                           f"8 Conv2D), found {len(groups)}; not an OpenL3 audio weight file")
    layers = []
    for k, ((kind, shape), (name, arrays)) in enumerate(zip(LAYER_SHAPES, groups)):
        if kind == "conv":
            want = [shape, (shape[-1],)]
            keys = ("kernel", "bias")
        else:
            want = [shape] * 4
            keys = ("gamma", "beta", "mean", "var")
        got = [a.shape for a in arrays]
        if got != [tuple(w) for w in want]:
            raise WeightsError(f"{path}: weighted layer {k} ({name!r}) has shapes {got}, expected "
                               f"{want} for {'Conv2D' if kind == 'conv' else 'BatchNormalization'}")
        layers.append(dict(zip(keys, arrays)))
    return layers


# ------------------------------------------------------------------------------------------------
# front-end helpers (numpy, cheap)
def _hz_to_mel_slaney(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-30) / min_log_hz) / logstep,
                    mels)


def _mel_to_hz_slaney(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(n_mels: int, sr: int = SR, n_fft: int = 2048) -> np.ndarray:
    """Slaney-scale, Slaney-normalised mel filterbank (librosa ``filters.mel`` defaults), float32.

    Returns
    -------
    np.ndarray [shape=(n_mels, 1 + n_fft // 2), dtype=float32]
    """
    fftfreqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_pts = np.linspace(_hz_to_mel_slaney(0.0), _hz_to_mel_slaney(sr / 2.0), n_mels + 2)
    mel_f = _mel_to_hz_slaney(mel_pts)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, fftfreqs.shape[0]), dtype=np.float64)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, None]
    return weights.astype(np.float32)


def n_frames_for(n_samples_48k: int, hop_len: int, center: bool) -> int:
    """Number of 1-s frames openl3 makes from a 48 kHz signal of this length."""
    total = n_samples_48k + (FRAME_LEN // 2 if center else 0)
    if total <= FRAME_LEN:
        return 1
    return 1 + int(math.ceil((total - FRAME_LEN) / hop_len))


# ------------------------------------------------------------------------------------------------
# torch modules (built lazily; torch is imported only inside these functions)
def build_frontend(input_repr: str):
    """The kapre-0.3/openl3-0.4 spectrogram as a torch module: (B, 48000) -> (B, 1, F, T) in dB."""
    import torch

    class Frontend(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.n_fft = 512 if input_repr == "linear" else 2048
            self.pad_end = 0 if input_repr == "linear" else (
                (math.ceil(FRAME_LEN / STFT_HOP) - 1) * STFT_HOP + self.n_fft - FRAME_LEN)
            n = torch.arange(self.n_fft, dtype=torch.float64)
            win = (0.5 - 0.5 * torch.cos(2 * math.pi * n / self.n_fft)).float()
            self.register_buffer("window", win, persistent=False)
            if input_repr == "linear":
                self.mel = None
            else:
                fb = torch.from_numpy(mel_filterbank(int(input_repr[3:]), SR, self.n_fft))
                self.register_buffer("mel", fb, persistent=False)

        def forward(self, x):
            if self.pad_end:
                x = torch.nn.functional.pad(x, (0, self.pad_end))
            spec = torch.stft(x, n_fft=self.n_fft, hop_length=STFT_HOP, win_length=self.n_fft,
                              window=self.window, center=False, return_complex=True).abs()
            if self.mel is not None:
                spec = torch.matmul(self.mel, spec)
            db = 10.0 * torch.log10(torch.clamp(spec, min=1e-10))
            db = db - db.amax(dim=(1, 2), keepdim=True)
            return torch.clamp(db, min=-80.0).unsqueeze(1)

    return Frontend()


def winograd_layers(conv_algorithm: str, device_type: str = "cpu") -> tuple[int, ...]:
    """Conv indices run as Winograd convolutions: a fixed rule, no timing at run time.

    ``auto``: on CPU, every conv with >= 64 input and >= 128 output channels (convs 2-7, after
    the first max-pool); the first two (1 -> 64, 64 -> 64 at full resolution: the transformed
    tiles of a 64-channel full-size map do not stay in the cache, measured ~20 % slower than
    oneDNN) and every conv on other devices (GPUs have fast cuDNN kernels) stay direct.
    ``winograd``: the same layers on any device. ``direct``: none.
    """
    if conv_algorithm == "direct" or (conv_algorithm == "auto" and device_type != "cpu"):
        return ()
    return tuple(k for k, (cin, cout) in enumerate(CONV_CHANNELS) if cin >= 64 and cout >= 128)


def build_network(layers: list[dict[str, np.ndarray]], input_repr: str, embedding_size: int | None,
                  fold_bn: bool = True, winograd: tuple[int, ...] = ()):
    """The OpenL3 audio network after the front-end: (B, 1, F, T) dB -> (B, dim).

    ``embedding_size=None`` returns the 512-channel map before the final pooling.
    ``fold_bn=False`` keeps explicit BatchNorm layers (the plain reference-style graph).
    ``winograd``: indices of the convs computed with :func:`embedders.lib.winograd.conv3x3_nhwc`
    (requires ``fold_bn``; the input must then be channels-last).
    """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fold = fold_bn
            self.winograd = tuple(winograd) if fold_bn else ()
            convs, bns = [], []
            bn_in = layers[0]
            if fold_bn:
                scale = bn_in["gamma"] / np.sqrt(bn_in["var"] + BN_EPS)
                # input BN on the single channel: an affine map x*a+b (cannot be folded into the
                # zero-padded first conv without changing the border)
                self.register_buffer("in_scale", torch.tensor(float(scale[0])), persistent=False)
                self.register_buffer("in_shift", torch.tensor(float(bn_in["beta"][0] -
                                                                    bn_in["mean"][0] * scale[0])),
                                     persistent=False)
            for k in range(8):
                conv_w = layers[2 * k + 1]
                cin, cout = conv_w["kernel"].shape[2:]
                conv = nn.Conv2d(cin, cout, 3, padding=1)
                kernel = conv_w["kernel"].transpose(3, 2, 0, 1).astype(np.float64)
                bias = conv_w["bias"].astype(np.float64)
                bn = layers[2 * k + 2] if k < 7 else None
                if fold_bn and bn is not None:
                    s = bn["gamma"].astype(np.float64) / np.sqrt(bn["var"].astype(np.float64) + BN_EPS)
                    kernel = kernel * s[:, None, None, None]
                    bias = (bias - bn["mean"]) * s + bn["beta"]
                conv.weight.data = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32))
                conv.bias.data = torch.from_numpy(bias.astype(np.float32))
                convs.append(conv)
                if fold_bn and k in winograd:
                    from .lib.winograd import transform_weights
                    self.register_buffer(f"wino{k}", transform_weights(kernel, WINOGRAD_TILE),
                                         persistent=False)
                if not fold_bn:
                    b = layers[2 * k]
                    m = nn.BatchNorm2d(b["gamma"].shape[0], eps=BN_EPS)
                    m.weight.data = torch.from_numpy(b["gamma"].copy())
                    m.bias.data = torch.from_numpy(b["beta"].copy())
                    m.running_mean.data = torch.from_numpy(b["mean"].copy())
                    m.running_var.data = torch.from_numpy(b["var"].copy())
                    bns.append(m)
            self.convs = nn.ModuleList(convs)
            self.bns = nn.ModuleList(bns)  # unfolded: bns[k] precedes convs[k]
            self.pool = (FINAL_POOL[(input_repr, embedding_size)]
                         if embedding_size is not None else None)

        def forward(self, x):
            F = nn.functional
            if self.fold:
                x = x * self.in_scale + self.in_shift
                for k, conv in enumerate(self.convs):
                    if k in self.winograd:
                        from .lib.winograd import conv3x3_nhwc
                        y = conv3x3_nhwc(x.permute(0, 2, 3, 1), getattr(self, f"wino{k}"),
                                         conv.bias, relu=k < 7, m=WINOGRAD_TILE)
                        x = y.permute(0, 3, 1, 2)
                    else:
                        x = conv(x)
                        if k < 7:
                            x = F.relu(x, inplace=True)
                    if k in POOL_AFTER:
                        x = F.max_pool2d(x, 2)
            else:
                x = self.bns[0](x)
                for k, conv in enumerate(self.convs):
                    x = conv(x)
                    if k < 7:
                        x = F.relu(self.bns[k + 1](x))
                    if k in POOL_AFTER:
                        x = F.max_pool2d(x, 2)
            if self.pool is None:
                return x
            return pool_map(x, self.pool)

    return Net()


def prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
    """Run ``iterator`` in a background thread, ``depth`` items ahead; its exceptions are
    re-raised in the consumer, and a consumer that stops early stops the thread."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterator:
                if not put((True, item)):
                    return
            put((True, done))
        except BaseException as exc:  # handed to the consumer
            put((False, exc))

    thread = threading.Thread(target=work, name="openl3-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def pool_map(x, pool):
    """Final max-pool of the 512-channel map and channels-last flatten -> (B, dim)."""
    import torch

    x = torch.nn.functional.max_pool2d(x, pool)
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


# ------------------------------------------------------------------------------------------------
@register
class OpenL3(Embedder):
    """OpenL3 audio embeddings (openl3 0.4.x, kapre front-end), PyTorch port."""

    name = "openl3"
    modality = AUDIO
    version = "1"
    extensions = audio_io.AUDIO_EXTENSIONS
    description = ("OpenL3 audio embedding (Cramer et al. 2019), PyTorch port of openl3 0.4.x: "
                   "1-s frames at 48 kHz, kapre mel/linear front-end, 512 or 6144 dims")
    parallel_files = False
    option_defaults = {
        "input_repr": "mel256",
        "content_type": "music",
        "embedding_size": 6144,
        "hop_size": 0.1,
        "center": True,
        "batch_size": 32,
        "device": None,
        "weights": None,
        "precision": "float32",
        "resampler": "kaiser_best",
        "tf32": False,
        "conv_algorithm": "auto",
    }

    # -- options ---------------------------------------------------------------------------------
    def validate_options(self) -> None:
        o = self.options
        for name, allowed in (("input_repr", INPUT_REPRS), ("content_type", CONTENT_TYPES),
                              ("precision", PRECISIONS), ("resampler", RESAMPLERS),
                              ("conv_algorithm", CONV_ALGORITHMS)):
            if o[name] not in allowed:
                raise ConfigurationError(f"openl3: {name} must be one of {', '.join(allowed)}, "
                                         f"got {o[name]!r}")
        try:
            size = int(o["embedding_size"])
        except (TypeError, ValueError):
            size = None
        if size not in EMBEDDING_SIZES or isinstance(o["embedding_size"], bool) or \
                float(o["embedding_size"]) != size:
            raise ConfigurationError(f"openl3: embedding_size must be 512 or 6144, got "
                                     f"{o['embedding_size']!r}")
        o["embedding_size"] = size
        hop = o["hop_size"]
        if isinstance(hop, bool) or not isinstance(hop, (int, float)) or not math.isfinite(hop) \
                or hop <= 0 or int(hop * SR) < 1:
            raise ConfigurationError(f"openl3: hop_size must be a positive number of seconds "
                                     f"(at least 1/48000), got {hop!r}")
        if not isinstance(o["center"], bool):
            raise ConfigurationError(f"openl3: center must be true or false, got {o['center']!r}")
        bs = o["batch_size"]
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ConfigurationError(f"openl3: batch_size must be a positive integer, got {bs!r}")
        if not isinstance(o["tf32"], bool):
            raise ConfigurationError(f"openl3: tf32 must be true or false, got {o['tf32']!r}")
        if o["weights"] is not None and not isinstance(o["weights"], (str, os.PathLike)):
            raise ConfigurationError(f"openl3: weights must be a file or folder path, got "
                                     f"{o['weights']!r}")
        if o["device"] is not None and not isinstance(o["device"], str):
            raise ConfigurationError(f"openl3: device must be a string such as 'cpu' or 'cuda', "
                                     f"got {o['device']!r}")

    def cache_options(self) -> dict:
        """Cache key options: ``conv_algorithm`` is a run-time choice (float32 round-off only)."""
        opts = super().cache_options()
        opts.pop("conv_algorithm", None)
        return opts

    @property
    def dim(self) -> int:
        return int(self.options["embedding_size"])

    @property
    def hop_len(self) -> int:
        return int(self.options["hop_size"] * SR)

    # -- weights ---------------------------------------------------------------------------------
    def weights_file_name(self) -> str:
        return WEIGHTS_NAME.format(**self.options)

    def weights_url(self) -> str:
        return WEIGHTS_URL.format(**self.options)

    def resolve_weights(self) -> Path:
        """Find the weight file: explicit option, user cache, installed openl3 package, download."""
        fname = self.weights_file_name()
        how = (f"Provide it with --openl3-weights PATH (the .h5 file or a folder holding {fname}), "
               f"or put it in {wts.cache_dir('openl3')}.")
        explicit = self.options["weights"]
        if explicit is not None:
            p = Path(explicit).expanduser()
            if p.is_dir():
                cand = p / fname
                if cand.is_file():
                    return cand
                raise WeightsError(f"openl3 weights folder {p} has no {fname}. {how}")
            if p.is_file():
                return p
            raise WeightsError(f"openl3 weights {p} does not exist. {how}")
        cached = wts.cache_dir("openl3") / fname
        if cached.is_file():
            return cached
        try:
            spec = importlib.util.find_spec("openl3")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                cand = Path(loc) / fname
                if cand.is_file():
                    return cand
        url = self.weights_url()
        try:
            return wts.download(url, cached, min_size=MIN_WEIGHTS_SIZE, decompress_gzip=True,
                                how_to_provide=how)
        except WeightsError as exc:
            raise WeightsError(f"openl3 weights {fname} not found (looked in the cache "
                               f"{cached.parent} and the openl3 package) and could not be "
                               f"downloaded from {url}: {exc}") from exc

    def weights_identity(self) -> str | None:
        path = getattr(self, "_weights_path", None)
        if path is None:
            return None
        return f"{path.name}:{path.stat().st_size}:{_file_sha256(path)[:16]}"

    # -- model -----------------------------------------------------------------------------------
    def _load(self) -> None:
        import torch

        o = self.options
        self.device = resolve_device(o["device"])
        self._weights_path = self.resolve_weights()
        layers = read_weights(self._weights_path)
        dev = torch.device(self.device)
        if dev.type == "cuda":
            torch.backends.cudnn.allow_tf32 = bool(o["tf32"])
            torch.backends.cuda.matmul.allow_tf32 = bool(o["tf32"])
        self._frontend = build_frontend(o["input_repr"]).to(dev).eval()
        with torch.inference_mode():
            self._spec_shape = tuple(self._frontend(torch.zeros(1, FRAME_LEN, device=dev)).shape[2:])
        # bfloat16 autocast: Winograd's transforms lose too much in bf16; direct convs only
        self._winograd = (winograd_layers(o["conv_algorithm"], dev.type)
                          if o["precision"] == "float32" else ())
        net = build_network(layers, o["input_repr"], None, fold_bn=True,
                            winograd=self._winograd).to(dev).eval()
        self._channels_last = dev.type in ("cpu", "cuda") or bool(self._winograd)
        if self._channels_last:
            net = net.to(memory_format=torch.channels_last)
        self._net = net
        self._pool = FINAL_POOL[(o["input_repr"], o["embedding_size"])]
        self._torch_device = dev
        # on an accelerator, decode/resample/frame the next batch while this one is embedded;
        # on CPU both would compete for the same cores
        self._prefetch = dev.type != "cpu"
        _weights_sha = _file_sha256(self._weights_path)  # warm the identity cache once
        del _weights_sha

    def _micro_batch(self) -> int:
        """Frames per network call: all of them on GPUs; on CPU, see CPU_MICRO_BATCH_BYTES."""
        if self._torch_device.type != "cpu":
            return int(self.options["batch_size"])
        n_bins, n_stft = self._spec_shape
        per_frame = n_bins * n_stft * CONV_CHANNELS[0][1] * 4
        return max(1, CPU_MICRO_BATCH_BYTES // per_frame)

    def _embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """(B, 48000) float32 frames -> (B, dim) float32 embeddings.

        Front-end, network and final pooling run together on micro-batches, so the batch's
        spectrograms (the STFT of 32 mel256 frames is ~50 MB) and 512-channel maps (~50 MB) are
        never all alive at once; on CPU the early layers' activations also stay in the cache
        (mel256 before Winograd: 154 ms/frame with 4 frames per call, 194 with 32; with Winograd
        ~110 with 1 frame, ~125 with 4).
        """
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        if self._torch_device.type == "cuda":  # one pinned host->device copy per batch
            x = x.pin_memory().to(self._torch_device, non_blocking=True)
        out = np.empty((x.shape[0], self.dim), dtype=np.float32)
        step = self._micro_batch()
        bf16 = self.options["precision"] == "bfloat16"
        with torch.inference_mode():
            for i in range(0, x.shape[0], step):
                spec = self._frontend(x[i:i + step].to(self._torch_device))
                if self._channels_last:
                    spec = spec.contiguous(memory_format=torch.channels_last)
                if bf16:
                    with torch.autocast(self._torch_device.type, dtype=torch.bfloat16):
                        maps = self._net(spec)
                    maps = maps.float()
                else:
                    maps = self._net(spec)
                out[i:i + step] = pool_map(maps, self._pool).cpu().numpy()
        return out

    # -- audio -----------------------------------------------------------------------------------
    def _iter_48k(self, path: str, block_seconds: float = 10.0) -> Iterator[np.ndarray]:
        """Stream the mono 48 kHz float64 signal of a file, block by block."""
        from .lib.resample import make_resampler

        res = None
        for block, sr in audio_io.iter_audio_blocks(path, block_seconds=block_seconds):
            mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
            if sr == SR:
                yield mono
                continue
            if res is None:
                res = make_resampler(self.options["resampler"], sr, SR)
            out = res.process(mono)
            if out.size:
                yield out
        if res is not None:
            out = res.flush()
            if out.size:
                yield out

    def _iter_frame_batches(self, signal_blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """Cut openl3's frames from a stream of 48 kHz blocks; yield (<=batch_size, 48000) float32."""
        hop = self.hop_len
        bs = int(self.options["batch_size"])
        buf = np.zeros(FRAME_LEN // 2 if self.options["center"] else 0, dtype=np.float32)
        buf_start = 0  # position (in the padded signal) of buf[0]
        next_start = 0
        total = buf.shape[0]
        pending: list[np.ndarray] = []
        for block in signal_blocks:
            block = np.asarray(block, dtype=np.float32)
            total += block.shape[0]
            buf = np.concatenate([buf[next_start - buf_start:], block])
            buf_start = next_start
            while next_start + FRAME_LEN <= total:
                off = next_start - buf_start
                pending.append(buf[off:off + FRAME_LEN])
                next_start += hop
                if len(pending) == bs:
                    yield np.stack(pending)
                    pending = []
            # drop consumed samples
            if next_start > buf_start:
                buf = buf[next_start - buf_start:] if next_start - buf_start < buf.shape[0] \
                    else np.zeros(0, dtype=np.float32)
                buf_start = next_start
        self._n_signal = total - (FRAME_LEN // 2 if self.options["center"] else 0)
        if self._n_signal <= 0:
            raise ValueError("empty signal")
        n_total = n_frames_for(self._n_signal, hop, self.options["center"])
        made = (next_start // hop)
        # remaining frames run past the end: zero-padded
        while made < n_total:
            off = next_start - buf_start
            frame = np.zeros(FRAME_LEN, dtype=np.float32)
            part = buf[max(off, 0):off + FRAME_LEN] if off < buf.shape[0] else buf[:0]
            frame[:part.shape[0]] = part
            pending.append(frame)
            next_start += hop
            made += 1
            if len(pending) == bs:
                yield np.stack(pending)
                pending = []
        if pending:
            yield np.stack(pending)

    def embed_signal(self, blocks: Iterator[np.ndarray], *,
                     n_frames_hint: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Embed a mono 48 kHz signal given as an iterable of blocks -> (frames, timestamps).

        ``n_frames_hint``: the expected number of frames (from the file's header). The output is
        then filled in place instead of concatenated at the end, which would briefly hold it
        twice (an hour at hop 0.1 and 6144 dims is ~0.9 GB). A wrong hint only costs that copy.
        """
        self.load()
        batches = self._iter_frame_batches(iter(blocks))
        if self._prefetch:
            batches = prefetch(batches)
        if n_frames_hint is None or n_frames_hint <= 0:
            emb = np.concatenate([self._embed_frames(b) for b in batches], axis=0)
        else:
            emb = np.empty((int(n_frames_hint), self.dim), dtype=np.float32)
            done, extra = 0, []
            for b in batches:
                e = self._embed_frames(b)
                if extra or done + e.shape[0] > emb.shape[0]:
                    extra.append(e)
                else:
                    emb[done:done + e.shape[0]] = e
                    done += e.shape[0]
            if extra:
                emb = np.concatenate([emb[:done], *extra], axis=0)
            elif done < emb.shape[0]:
                emb = emb[:done].copy()
        ts = np.arange(emb.shape[0]) * float(self.options["hop_size"])
        return emb, ts

    def embed_array(self, audio: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """Embed an in-memory array (n,) or (n, channels), like ``openl3.get_audio_embedding``."""
        from .lib.resample import resample

        audio = np.asarray(audio, dtype=np.float64)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        if audio.ndim != 1 or audio.shape[0] == 0:
            raise ValueError("audio must be a non-empty (n,) or (n, channels) array")
        if sr != SR:
            audio = resample(audio, sr, SR, self.options["resampler"])
        return self.embed_signal([audio])

    def _embed_file(self, path: str) -> Embedding:
        from .lib.resample import output_length

        sr, channels, n = audio_io.audio_info(path)
        n_48k = n if sr == SR else output_length(n, sr, SR)
        hint = n_frames_for(n_48k, self.hop_len, self.options["center"]) if n_48k > 0 else None
        if hint is not None and hint * self.dim * 4 > MAX_PREALLOC_BYTES:
            hint = None  # an implausible header is not trusted with a huge allocation
        try:
            frames, ts = self.embed_signal(self._iter_48k(path), n_frames_hint=hint)
        except InputError:
            raise
        except (ValueError, MemoryError) as exc:
            raise InputError(path, f"cannot embed audio: {exc}") from exc
        info = {
            "sample_rate": sr,
            "channels": channels,
            "resampler": (self.options["resampler"] if sr != SR else "none"),
            "n_samples_48k": int(self._n_signal),
            "hop_len": self.hop_len,
            "precision": self.options["precision"],
            "device": self.device,
        }
        return Embedding(frames=frames, clip=mean_pool(frames), timestamps=ts, info=info)
