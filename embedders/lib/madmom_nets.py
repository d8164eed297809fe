"""Run madmom networks (read by :mod:`embedders.lib.madmom_models`) with torch.

madmom's layer semantics (0.17), as reproduced here; data is ``(time, freq, channels)`` there and
``(batch, channels, time, freq)`` here:

* ``FeedForwardLayer``: ``x @ weights + bias``, then the activation.
* ``ConvolutionalLayer``: weights ``(in, out, kt, kf)``; a true 2-D convolution (scipy.ndimage's,
  i.e. the kernel flipped on both axes compared with torch's cross-correlation), ``valid`` only,
  summed over input channels, plus bias, then the activation.
* ``BatchNormLayer``: ``(x - mean) * (gamma * inv_std) + beta`` per channel, then the activation.
* ``MaxPoolLayer`` with size = stride: madmom's ``maximum_filter`` + slicing equals a max-pool
  over non-overlapping windows, a trailing partial window dropped.
* ``PadLayer``: ``width`` zeros (its ``value``) on both sides of the listed axes.
* ``AverageLayer``: the mean over the listed axes.

Anything else (other layers, ``same`` padding, strides) raises :class:`~embedders.lib.
madmom_models.ModelFileError`: the supported files do not use them.
"""
from __future__ import annotations

import numpy as np

from .madmom_models import ModelFileError, NeuralNetwork


def _activation(name):
    import torch
    import torch.nn.functional as F

    table = {None: lambda x: x, "linear": lambda x: x, "relu": torch.relu,
             "sigmoid": torch.sigmoid, "elu": F.elu, "tanh": torch.tanh}
    if name not in table:
        raise ModelFileError(f"unsupported activation {name!r}")
    return table[name]


def _conv_params(layer):
    import torch

    w = np.asarray(layer.weights, dtype=np.float32)
    if w.ndim != 4 or getattr(layer, "pad", "valid") != "valid" or \
            getattr(layer, "stride", 1) not in (None, 1, (1, 1)):
        raise ModelFileError("only 'valid' convolutions with stride 1 are supported")
    # madmom convolves (kernel flipped); torch cross-correlates: flip both kernel axes
    weight = torch.from_numpy(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1].copy(order="C"))
    bias = np.broadcast_to(np.asarray(layer.bias, dtype=np.float32).ravel(), (w.shape[1],))
    return weight, torch.from_numpy(np.ascontiguousarray(bias))


def _bn_params(layer):
    import torch

    scale = np.asarray(layer.gamma, np.float32) * np.asarray(layer.inv_std, np.float32)
    return (torch.from_numpy(scale)[None, :, None, None], torch.from_numpy(np.asarray(
        layer.mean, np.float32))[None, :, None, None], torch.from_numpy(np.asarray(
            layer.beta, np.float32))[None, :, None, None])


def compile_network(net: NeuralNetwork):
    """A function running ``net`` on a torch tensor: ``(n, dim)`` for feed-forward networks,
    ``(1, 1, time, freq)`` for convolutional ones (output as the layers leave it)."""
    import torch
    import torch.nn.functional as F

    steps = []
    for layer in net.layers:
        kind = type(layer).__name__
        act = _activation(getattr(layer, "activation_fn", None))
        if kind == "FeedForwardLayer":
            w = torch.from_numpy(np.asarray(layer.weights, np.float32))
            b = torch.from_numpy(np.asarray(layer.bias, np.float32).ravel())
            steps.append(lambda x, w=w, b=b, act=act: act(x @ w + b))
        elif kind == "ConvolutionalLayer":
            w, b = _conv_params(layer)
            steps.append(lambda x, w=w, b=b, act=act: act(F.conv2d(x, w, b)))
        elif kind == "BatchNormLayer":
            scale, mean, beta = _bn_params(layer)
            steps.append(lambda x, s=scale, m=mean, bt=beta, act=act: act((x - m) * s + bt))
        elif kind == "MaxPoolLayer":
            size, stride = tuple(layer.size), tuple(layer.stride or layer.size)
            if size != stride or getattr(layer, "axis", None) is not None:
                raise ModelFileError(f"unsupported max-pool (size {size}, stride {stride})")
            steps.append(lambda x, s=size: F.max_pool2d(x, s, s))
        elif kind == "PadLayer":
            if tuple(layer.axes) != (0, 1):
                raise ModelFileError(f"unsupported padding axes {layer.axes}")
            wd, val = int(layer.width), float(layer.value)
            steps.append(lambda x, wd=wd, val=val: F.pad(x, (wd, wd, wd, wd), value=val))
        elif kind == "AverageLayer":
            if tuple(layer.axis) != (0, 1):
                raise ModelFileError(f"unsupported average axes {layer.axis}")
            steps.append(lambda x: x.mean(dim=(2, 3)))
        else:
            raise ModelFileError(f"unsupported layer {kind}")

    def run(x):
        for step in steps:
            x = step(x)
        return x

    return run
