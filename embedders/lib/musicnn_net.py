"""PyTorch networks of musicnn 0.1.0 (``musicnn`` and ``vgg`` architectures), built from the
tensors of the published TF1 checkpoints (see ``embedders/musicnn.py`` and the spec cited there).

Imported only inside ``MusicnnEmbedder._load`` (torch is heavy). Two implementations of the
musicnn architecture live here:

* :class:`PlainMusicnn`: the layer table written out literally (TF layout translated to NCHW
  2-D convolutions, explicit ReLU then BatchNorm on every full-size map). It is the yardstick of
  ``bench/bench_musicnn.py`` and an independent cross-check in the tests.
* :class:`Musicnn`: the same function, faster (see its docstring). Used by the embedder.

Both take a batch of log-mel patches ``(B, T, 96)`` (time, mel) and return a dict of the
reference's outputs with a leading batch axis.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

BN_EPS = 1e-3
#: (name, kernel height) of the three temporal ('same'-padded) convolutions.
TEMPORAL = (("conv2d_2", 128), ("conv2d_3", 64), ("conv2d_4", 32))
#: Output names of the musicnn network, in computation order.
MUSICNN_OUTPUTS = ("timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool",
                   "penultimate", "taggram")
VGG_OUTPUTS = ("pool1", "pool2", "pool3", "pool4", "pool5", "taggram")


def _t(a) -> torch.Tensor:
    """A float32 tensor owning a copy of ``a`` (buffers are modified in place at build time)."""
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True, order="C"))


def bn_affine(tensors: dict, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference BatchNorm ``name`` as ``x * scale + shift`` (epsilon 1e-3, as TF's default)."""
    g, b = tensors[f"{name}/gamma"], tensors[f"{name}/beta"]
    m, v = tensors[f"{name}/moving_mean"], tensors[f"{name}/moving_variance"]
    scale = g.astype(np.float64) / np.sqrt(v.astype(np.float64) + BN_EPS)
    shift = b.astype(np.float64) - m.astype(np.float64) * scale
    return _t(scale), _t(shift)


def conv_weight(tensors: dict, name: str) -> torch.Tensor:
    """TF kernel ``[kh, kw, in, out]`` -> PyTorch ``[out, in, kh, kw]`` (both cross-correlate)."""
    return _t(np.transpose(tensors[f"{name}/kernel"], (3, 2, 0, 1)))


def _same_pad_time(k: int) -> tuple[int, int]:
    """TF 'same' padding along an axis for kernel size ``k`` at stride 1: (before, after)."""
    return (k - 1) // 2, k // 2


class _BN(torch.nn.Module):
    """Explicit inference BatchNorm on a given axis (the plain network's)."""

    def __init__(self, tensors: dict, name: str, axis: int):
        super().__init__()
        self.axis = axis
        for key in ("gamma", "beta", "moving_mean", "moving_variance"):
            self.register_buffer(key.replace("moving_", ""), _t(tensors[f"{name}/{key}"]))

    def forward(self, x):
        shape = [1] * x.dim()
        shape[self.axis] = -1
        return ((x - self.mean.view(shape)) / torch.sqrt(self.variance.view(shape) + BN_EPS)
                * self.gamma.view(shape) + self.beta.view(shape))


# ------------------------------------------------------------------------------------------------
class PlainMusicnn(torch.nn.Module):
    """The musicnn layer table, literally: NCHW 2-D convs, ReLU then BN on every map."""

    def __init__(self, tensors: dict):
        super().__init__()
        self.names = ["conv2d", "conv2d_1", "conv2d_2", "conv2d_3", "conv2d_4", "conv2d_5",
                      "conv2d_6", "conv2d_7"]
        for n in self.names:
            self.register_buffer(n.replace("conv2d", "w"), conv_weight(tensors, n))
            self.register_buffer(n.replace("conv2d", "b"), _t(tensors[f"{n}/bias"]))
        self.bn = torch.nn.ModuleList(
            [_BN(tensors, "batch_normalization", 1)]
            + [_BN(tensors, f"batch_normalization_{i}", 1) for i in range(1, 9)]
            + [_BN(tensors, "batch_normalization_9", 1), _BN(tensors, "batch_normalization_10", 1)])
        self.register_buffer("dense_w", _t(tensors["dense/kernel"]))
        self.register_buffer("dense_b", _t(tensors["dense/bias"]))
        self.register_buffer("dense1_w", _t(tensors["dense_1/kernel"]))
        self.register_buffer("dense1_b", _t(tensors["dense_1/bias"]))

    def _w(self, i):
        suffix = "" if i == 0 else f"_{i}"
        return getattr(self, "w" + suffix), getattr(self, "b" + suffix)

    def forward(self, x: torch.Tensor) -> dict:
        out = {}
        x = self.bn[0](x.unsqueeze(1))                        # (B, 1, T, 96)
        padded = F.pad(x, (0, 0, 3, 3))
        front = []
        for i in (0, 1):                                      # timbral f74, f77
            w, b = self._w(i)
            y = self.bn[i + 1](F.relu(F.conv2d(padded, w, b)))
            front.append(y.amax(dim=3))                       # (B, 204, T)
        for j, (_, k) in enumerate(TEMPORAL):                 # temporal s1..s3
            w, b = self._w(2 + j)
            y = F.conv2d(F.pad(x, (0, 0) + _same_pad_time(k)), w, b)
            front.append(self.bn[3 + j](F.relu(y)).amax(dim=3))
        fe = torch.cat(front, dim=1)                          # (B, 561, T)
        out["timbral"] = fe[:, :408].transpose(1, 2)
        out["temporal"] = fe[:, 408:].transpose(1, 2)
        # mid-end: (B, 1, T, C) convs of width C
        h = fe.transpose(1, 2).unsqueeze(1)
        mids = []
        for i in range(3):
            w, b = self._w(5 + i)
            y = F.conv2d(F.pad(h, (0, 0, 3, 3)), w, b)        # (B, 64, T, 1)
            y = self.bn[6 + i](F.relu(y)).squeeze(3)          # (B, 64, T)
            if i > 0:
                y = y + mids[-1]
            mids.append(y)
            h = y.transpose(1, 2).unsqueeze(1)
        for i, y in enumerate(mids):
            out[f"cnn{i + 1}"] = y.transpose(1, 2)
        feats = torch.cat([fe] + mids, dim=1)                 # (B, 753, T)
        mx, mean = feats.amax(dim=2), feats.mean(dim=2)
        out["max_pool"], out["mean_pool"] = mx, mean
        flat = torch.stack([mx, mean], dim=2).reshape(mx.shape[0], -1)
        flat = self.bn[9](flat)
        pen = self.bn[10](F.relu(flat @ self.dense_w + self.dense_b))
        out["penultimate"] = pen
        out["taggram"] = torch.sigmoid(pen @ self.dense1_w + self.dense1_b)
        return out


# ------------------------------------------------------------------------------------------------
class Musicnn(torch.nn.Module):
    """musicnn, computed faster than :class:`PlainMusicnn` with the same arithmetic result.

    * Max over frequency before ReLU/BN: ReLU is monotone and BN is a per-channel affine map, so
      ``max_f BN(ReLU(z))`` is ``BN(ReLU(max_f z))`` for channels whose BN scale is >= 0 and
      ``BN(ReLU(min_f z))`` for the others (263 of the 561 front-end channels of MTT_musicnn).
      Those channels' kernels and biases are negated once at load time, so that one ``amax``
      gives ``-min_f z`` exactly; ReLU and BN then run on the (B, C, T) reductions only, never on
      the (B, C, T, F) maps (the same elements are selected: exact up to the convs' round-off).
    * The three temporal convs have one input channel and a width-1 kernel: they are ``conv1d``
      over time on the 96 mel columns folded into the batch (2-D convs with a width-1 kernel are
      slower; one merged, zero-padded 128-tap kernel costs 1.7x the multiplications).
    * The mid-end convs are 1-D over time: ``conv1d`` for the 561-channel one, one GEMM on the
      time-unfolded input for the 64-channel ones (PyTorch routes those to a slow non-oneDNN conv).
    * Paddings are conv arguments where symmetric (no padded copies of the input), and on CPU the
      front-end runs ``micro_batch`` patches at a time (see there).
    * ``outputs`` limits the work to what is asked for (the back-end is skipped for ``timbral``).
    """

    def __init__(self, tensors: dict):
        super().__init__()
        s, t = bn_affine(tensors, "batch_normalization")
        self.register_buffer("in_scale", s)
        self.register_buffer("in_shift", t)
        for i, n in enumerate(("conv2d", "conv2d_1")):
            self.register_buffer(f"tw{i}", conv_weight(tensors, n))
            self.register_buffer(f"tb{i}", _t(tensors[f"{n}/bias"]))
        for j, (n, k) in enumerate(TEMPORAL):                 # s1, s2, s3 as 1-D kernels
            self.register_buffer(f"sw{j}", _t(np.transpose(tensors[f"{n}/kernel"][:, 0, 0, :])
                                              [:, None, :]))  # (51, 1, k)
            self.register_buffer(f"sb{j}", _t(tensors[f"{n}/bias"]))
        fs, ft = zip(*(bn_affine(tensors, f"batch_normalization_{i}") for i in range(1, 6)))
        self.register_buffer("fe_scale", torch.cat(fs))      # (561,)
        self.register_buffer("fe_shift", torch.cat(ft))
        sign = torch.where(self.fe_scale < 0, -1.0, 1.0)      # see the class docstring
        self.register_buffer("fe_sign", sign)
        for i in (0, 1):
            part = sign[204 * i:204 * (i + 1)]
            getattr(self, f"tw{i}").mul_(part.view(-1, 1, 1, 1))
            getattr(self, f"tb{i}").mul_(part)
        for j in range(3):
            part = sign[408 + 51 * j:408 + 51 * (j + 1)]
            getattr(self, f"sw{j}").mul_(part.view(-1, 1, 1))
            getattr(self, f"sb{j}").mul_(part)
        for i, n in enumerate(("conv2d_5", "conv2d_6", "conv2d_7")):
            w = tensors[f"{n}/kernel"][:, :, 0, :]            # (7, C, 64)
            self.register_buffer(f"mw{i}", _t(np.transpose(w, (2, 1, 0))))  # (64, C, 7)
            self.register_buffer(f"mg{i}", _t(np.transpose(w, (1, 0, 2)).reshape(-1, 64)))  # (C*7, 64)
            self.register_buffer(f"mb{i}", _t(tensors[f"{n}/bias"]))
            s, t = bn_affine(tensors, f"batch_normalization_{6 + i}")
            self.register_buffer(f"ms{i}", s)
            self.register_buffer(f"mt{i}", t)
        s, t = bn_affine(tensors, "batch_normalization_9")
        self.register_buffer("bs9", s)
        self.register_buffer("bt9", t)
        self.register_buffer("dense_w", _t(tensors["dense/kernel"]))
        self.register_buffer("dense_b", _t(tensors["dense/bias"]))
        s, t = bn_affine(tensors, "batch_normalization_10")
        self.register_buffer("bs10", s)
        self.register_buffer("bt10", t)
        self.register_buffer("dense1_w", _t(tensors["dense_1/kernel"]))
        self.register_buffer("dense1_b", _t(tensors["dense_1/bias"]))

    #: Patches per front-end call (None: all). On CPU the timbral convs' (B, 204, T, 59) maps
    #: (9 MB per patch) then stay in the cache: measured 1.4x faster per patch with 1-2 patches
    #: than with 8 (2 cores); the embedder sets None on GPUs.
    micro_batch: int | None = 1

    @staticmethod
    def _time_conv_gemm(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Conv over time, kernel 7, zero padding 3+3: (B, C, T) -> (B, 64, T) as one GEMM."""
        B, C, T = h.shape
        u = F.pad(h, (3, 3)).unfold(2, 7, 1)                  # (B, C, T, 7)
        u = u.permute(0, 2, 1, 3).reshape(B * T, C * 7)
        return torch.addmm(b, u, w).view(B, T, -1).transpose(1, 2)

    def frontend(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, 96) -> front-end features (B, 561, T)."""
        B, T, M = x.shape
        if self.micro_batch and B > self.micro_batch:
            return torch.cat([self.frontend(x[i:i + self.micro_batch])
                              for i in range(0, B, self.micro_batch)])
        x = x * self.in_scale + self.in_shift                 # input BN (1 channel)
        x1 = x.unsqueeze(1)                                   # (B, 1, T, 96), time padded 3+3:
        peaks = [F.conv2d(x1, getattr(self, f"tw{i}"), getattr(self, f"tb{i}"),
                          padding=(3, 0)).amax(dim=3) for i in (0, 1)]  # (B, 204, T) each
        cols = x.transpose(1, 2).reshape(B * M, 1, T)         # every mel column a sequence
        for j, (_, k) in enumerate(TEMPORAL):                 # TF 'same': (k-1)//2 before
            z = F.conv1d(F.pad(cols, _same_pad_time(k)), getattr(self, f"sw{j}"),
                         getattr(self, f"sb{j}"))             # (B*96, 51, T)
            peaks.append(z.view(B, M, 51, T).amax(dim=1))
        m = torch.cat(peaks, dim=1) * self.fe_sign.view(-1, 1)  # max_f z, or min_f z if flipped
        return F.relu(m) * self.fe_scale.view(-1, 1) + self.fe_shift.view(-1, 1)

    def forward(self, x: torch.Tensor, outputs=MUSICNN_OUTPUTS) -> dict:
        want = set(outputs)
        fe = self.frontend(x)
        out = {}
        if "timbral" in want:
            out["timbral"] = fe[:, :408].transpose(1, 2)
        if "temporal" in want:
            out["temporal"] = fe[:, 408:].transpose(1, 2)
        if not want - {"timbral", "temporal"}:
            return out
        h = fe
        mids = []
        for i in range(3):
            if i == 0:  # 561 channels: oneDNN's conv is fastest
                y = F.conv1d(h, self.mw0, self.mb0, padding=3)
            else:       # 64 channels: PyTorch picks a slow conv; one GEMM on unfolded time
                y = self._time_conv_gemm(h, getattr(self, f"mg{i}"), getattr(self, f"mb{i}"))
            y = F.relu(y) * getattr(self, f"ms{i}").view(-1, 1) + getattr(self, f"mt{i}").view(-1, 1)
            if i > 0:
                y = y + mids[-1]
            mids.append(y)
            h = y
        for i, y in enumerate(mids):
            if f"cnn{i + 1}" in want:
                out[f"cnn{i + 1}"] = y.transpose(1, 2)
        feats = torch.cat([fe] + mids, dim=1)                 # (B, 753, T)
        mx, mean = feats.amax(dim=2), feats.mean(dim=2)
        out["max_pool"], out["mean_pool"] = mx, mean
        flat = torch.stack([mx, mean], dim=2).reshape(mx.shape[0], -1) * self.bs9 + self.bt9
        pen = F.relu(flat @ self.dense_w + self.dense_b) * self.bs10 + self.bt10
        out["penultimate"] = pen
        out["taggram"] = torch.sigmoid(pen @ self.dense1_w + self.dense1_b)
        return {k: v for k, v in out.items() if k in want}


# ------------------------------------------------------------------------------------------------
class Vgg(torch.nn.Module):
    """musicnn's VGG tagger: input BN, 5 x (3x3 conv, ReLU, BN, max-pool), dense, sigmoid.

    Input ``(B, 187, 96)``. Pool outputs are returned in the reference's NHWC layout
    ``(B, time, freq, 128)``. ``fast=True`` runs the convs in channels-last memory format.
    """

    POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)),
             ((4, 4), (4, 4)))

    def __init__(self, tensors: dict, fast: bool = True):
        super().__init__()
        self.fast = fast
        s, t = bn_affine(tensors, "batch_normalization")
        self.register_buffer("in_scale", s)
        self.register_buffer("in_shift", t)
        for i in range(5):
            self.register_buffer(f"w{i}", conv_weight(tensors, f"{i + 1}CNN"))
            self.register_buffer(f"b{i}", _t(tensors[f"{i + 1}CNN/bias"]))
            s, t = bn_affine(tensors, f"batch_normalization_{i + 1}")
            self.register_buffer(f"s{i}", s.view(1, -1, 1, 1))
            self.register_buffer(f"t{i}", t.view(1, -1, 1, 1))
        self.register_buffer("dense_w", _t(tensors["dense/kernel"]))
        self.register_buffer("dense_b", _t(tensors["dense/bias"]))

    def forward(self, x: torch.Tensor, outputs=VGG_OUTPUTS) -> dict:
        want = set(outputs)
        h = (x * self.in_scale + self.in_shift).unsqueeze(1)  # (B, 1, 187, 96)
        if self.fast:
            h = h.contiguous(memory_format=torch.channels_last)
        out = {}
        for i, (k, s) in enumerate(self.POOLS):
            h = F.relu(F.conv2d(h, getattr(self, f"w{i}"), getattr(self, f"b{i}"), padding=1))
            h = h * getattr(self, f"s{i}") + getattr(self, f"t{i}")
            h = F.max_pool2d(h, k, s)
            name = f"pool{i + 1}"
            if name in want or (i == 4 and "taggram" in want):
                out[name] = h.permute(0, 2, 3, 1)             # NHWC
        flat = out["pool5"].reshape(h.shape[0], -1) if "pool5" in out else None
        if "taggram" in want:
            out["taggram"] = torch.sigmoid(flat @ self.dense_w + self.dense_b)
        if "pool5" in out:
            out["pool5"] = out["pool5"][:, :, 0, :]           # (B, 2, 128): freq axis of 1 dropped
        return {k: v for k, v in out.items() if k in want}


def load_tensors(prefix: str) -> dict[str, np.ndarray]:
    """Every model tensor of a musicnn checkpoint (optimizer state skipped), float32."""
    from .tf_checkpoint import CheckpointReader

    reader = CheckpointReader(prefix)
    out = {}
    for name in reader.entries:
        if name.endswith(("/Adam", "/Adam_1")) or name in ("beta1_power", "beta2_power"):
            continue
        out[name] = reader.get(name, verify=reader.entries[name]["size"] <= 1 << 16)
    return out
