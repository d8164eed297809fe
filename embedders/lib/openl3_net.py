"""The OpenL3 audio network in PyTorch: the kapre spectrogram front-end, the VGG-style network
with its BatchNorms folded into the convolutions, and the reader of the official Keras weights.

Imported by :meth:`embedders.openl3.OpenL3._load` (and by tests and ``bench/``), never by
discovery: it imports torch at the top.

* Front-end (kapre 0.3.x as patched by openl3 0.4.x): periodic Hann STFT without centring,
  hop 242; linear: n_fft 512, |X| (257 x 197); mel128/mel256: n_fft 2048 with 1964 zeros
  appended (``pad_end``), Slaney mel filterbank (librosa ``htk=False, norm='slaney'``) applied to
  |X| (n_mels x 199); then ``10*log10(max(x, 1e-10))`` minus the per-frame max, floored at -80.
* Network: input BatchNorm, 4 VGG blocks of Conv3x3('same')->BN(eps=1e-3)->ReLU (x2, x2, x2,
  then one 512 conv+BN+ReLU), 2x2 max-pools, the ``audio_embedding_layer`` conv (no BN, no ReLU),
  max-pool to 4x3 (6144, flattened channels-last) or the whole map (512). Every BN after a conv
  is folded into that conv; the input BN is an affine map of the single input channel.
* Weights: the official Keras HDF5 files ``openl3_audio_{repr}_{content}.h5`` loaded by order
  (groups with non-empty ``weight_names`` in ``layer_names`` order), shapes checked.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..base import WeightsError
from .winograd import conv3x3_nhwc, transform_weights

SR = 48000
FRAME_LEN = 48000
STFT_HOP = 242
BN_EPS = 1e-3
#: Winograd output tile (F(m x m, 3 x 3)); F(4,3) measured faster than F(2,3) on every layer
#: (2 Zen3 cores); its round-off stays ~1e-5 relative per layer.
WINOGRAD_TILE = 4

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
LAYER_SHAPES: list[tuple[str, tuple]] = [
    layer for cin, cout in CONV_CHANNELS for layer in (("bn", (cin,)), ("conv", (3, 3, cin, cout)))]


# ------------------------------------------------------------------------------------------------
# weights
def read_weights(path: str | os.PathLike) -> list[dict[str, np.ndarray]]:
    """Read the 16 weighted layers of an OpenL3 audio HDF5 file, by order, shapes checked.

    Returns
    -------
    list of dict
        ``{"kernel", "bias"}`` for a conv (kernel [shape=(3, 3, c_in, c_out)]),
        ``{"gamma", "beta", "mean", "var"}`` for a BN (each [shape=(channels,)]); float32.

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
# front-end
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


class Frontend(nn.Module):
    """The kapre-0.3/openl3-0.4 spectrogram in dB: frames (B, 48000) -> (B, 1, n_bins, n_stft).

    Parameters
    ----------
    input_repr : str
        ``"linear"`` (257 x 197), ``"mel128"`` (128 x 199) or ``"mel256"`` (256 x 199).
    """

    def __init__(self, input_repr: str):
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


# ------------------------------------------------------------------------------------------------
# network
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


class AudioNetwork(nn.Module):
    """The OpenL3 audio network after the front-end: dB spectrograms (B, 1, F, T) -> (B, dim).

    Every BatchNorm after a conv is folded into that conv's kernel and bias (in float64, then
    stored as float32); the input BatchNorm is an affine map ``x * a + b`` of the single input
    channel (it cannot be folded into the zero-padded first conv without changing the border).

    Parameters
    ----------
    layers : list of dict
        The 16 weighted layers, as :func:`read_weights` returns them.
    input_repr : str
        ``"linear"``, ``"mel128"`` or ``"mel256"`` (selects the final pooling).
    embedding_size : int or None
        512 or 6144; ``None`` returns the 512-channel map (B, 512, f, t) before the final
        pooling (see :func:`pool_map`).
    winograd : tuple of int
        Indices of the convs computed with :func:`embedders.lib.winograd.conv3x3_nhwc`
        (see :func:`winograd_layers`); the input must then be channels-last.
    """

    def __init__(self, layers: list[dict[str, np.ndarray]], *, input_repr: str,
                 embedding_size: int | None = None, winograd: tuple[int, ...] = ()):
        super().__init__()
        self.winograd = tuple(winograd)
        bn_in = layers[0]
        scale = bn_in["gamma"] / np.sqrt(bn_in["var"] + BN_EPS)
        self.register_buffer("in_scale", torch.tensor(float(scale[0])), persistent=False)
        self.register_buffer("in_shift", torch.tensor(float(bn_in["beta"][0] -
                                                            bn_in["mean"][0] * scale[0])),
                             persistent=False)
        convs = []
        for k in range(8):
            conv_w = layers[2 * k + 1]
            cin, cout = conv_w["kernel"].shape[2:]
            conv = nn.Conv2d(cin, cout, 3, padding=1)
            kernel = conv_w["kernel"].transpose(3, 2, 0, 1).astype(np.float64)
            bias = conv_w["bias"].astype(np.float64)
            bn = layers[2 * k + 2] if k < 7 else None
            if bn is not None:
                s = bn["gamma"].astype(np.float64) / np.sqrt(bn["var"].astype(np.float64) + BN_EPS)
                kernel = kernel * s[:, None, None, None]
                bias = (bias - bn["mean"]) * s + bn["beta"]
            conv.weight.data = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32))
            conv.bias.data = torch.from_numpy(bias.astype(np.float32))
            convs.append(conv)
            if k in self.winograd:
                self.register_buffer(f"wino{k}", transform_weights(kernel, WINOGRAD_TILE),
                                     persistent=False)
        self.convs = nn.ModuleList(convs)
        self.pool = FINAL_POOL[(input_repr, embedding_size)] if embedding_size is not None else None

    def forward(self, x):
        F = nn.functional
        x = x * self.in_scale + self.in_shift
        for k, conv in enumerate(self.convs):
            if k in self.winograd:
                y = conv3x3_nhwc(x.permute(0, 2, 3, 1), getattr(self, f"wino{k}"),
                                 conv.bias, relu=k < 7, m=WINOGRAD_TILE)
                x = y.permute(0, 3, 1, 2)
            else:
                x = conv(x)
                if k < 7:
                    x = F.relu(x, inplace=True)
            if k in POOL_AFTER:
                x = F.max_pool2d(x, 2)
        if self.pool is None:
            return x
        return pool_map(x, self.pool)


def pool_map(x, pool: tuple[int, int]):
    """Final max-pool of the 512-channel map and channels-last flatten: (B, 512, f, t) -> (B, dim)."""
    x = torch.nn.functional.max_pool2d(x, pool)
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
