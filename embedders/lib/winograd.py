"""Winograd F(m x m, 3 x 3) convolution ('same' padding, stride 1) in plain PyTorch.

Used by :mod:`embedders.openl3` for the 3x3 layers with many channels on CPU. The layout is
channels-last throughout: the input is an NHWC-contiguous tensor, the tiles' transformed
values are ``[alpha*alpha, tiles, C]`` so the 16 (F(2,3)) or 36 (F(4,3)) products are one
batched GEMM against weights transformed once at load time (``G g G^T``), and the output
transform writes straight into the NHWC output (no stitching copy). The work is done in chunks
of tile rows so that the transformed tiles stay in the cache.

Numerics: F(2,3) only uses coefficients 0, +-1, +-1/2 and is as accurate as a direct fp32
convolution (relative error ~1e-6); F(4,3) amplifies round-off by ~10-100x (still ~1e-5
relative in fp32).
"""
from __future__ import annotations

import numpy as np

_MATS = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float64)),
}

#: Target size (bytes) of the transformed input tiles of one chunk (fits the L2/L3 caches).
CHUNK_BYTES = 8 << 20


def transform_weights(weight: np.ndarray, m: int = 2):
    """(Cout, Cin, 3, 3) kernel -> (alpha*alpha, Cin, Cout) float32 torch tensor ``G g G^T``."""
    import torch

    _, G, _ = _MATS[m]
    w = np.asarray(weight, np.float64)
    u = np.einsum("ak,oikl,bl->abio", G, w, G)
    a = G.shape[0]
    return torch.from_numpy(np.ascontiguousarray(u.reshape(a * a, w.shape[1], w.shape[0]),
                                                 dtype=np.float32))


def _combine(coefs, srcs, out):
    """out = sum_k coefs[k] * srcs[k] (zero coefficients skipped; a +1 term goes first so the
    first two terms are one ``torch.add(a, b, alpha=c, out=out)``)."""
    import torch

    terms = sorted(((float(c), s) for c, s in zip(coefs, srcs) if c != 0),
                   key=lambda t: t[0] != 1.0)
    if not terms:
        out.zero_()
        return
    c0, s0 = terms[0]
    if c0 == 1.0 and len(terms) > 1:
        torch.add(s0, terms[1][1], alpha=terms[1][0], out=out)
        rest = terms[2:]
    else:
        if c0 == 1.0:
            out.copy_(s0)
        else:
            torch.mul(s0, c0, out=out)
        rest = terms[1:]
    for c, s in rest:
        if c == 1.0:
            out.add_(s)
        elif c == -1.0:
            out.sub_(s)
        else:
            out.add_(s, alpha=c)


def _input_f43(x, t):
    """t[i] = sum_k BT[i, k] x[k] for F(4x4,3x3) with shared sub-expressions: 12 passes over
    the data instead of 16 (the transforms are memory-bound; out= may alias an input only
    exactly, which PyTorch allows)."""
    import torch

    torch.add(x[4], x[2], alpha=-4, out=t[1])        # a = x4 - 4 x2
    torch.add(x[3], x[1], alpha=-4, out=t[2])        # b = x3 - 4 x1
    t[1].add_(t[2])                                  # a + b
    torch.add(t[1], t[2], alpha=-2, out=t[2])        # a - b
    torch.sub(x[4], x[2], out=t[3])                  # c = x4 - x2
    torch.sub(x[3], x[1], out=t[4])                  # d = x3 - x1
    t[3].add_(t[4], alpha=2)                         # c + 2d
    torch.add(t[3], t[4], alpha=-4, out=t[4])        # c - 2d
    torch.add(x[4], x[2], alpha=-5, out=t[0])
    t[0].add_(x[0], alpha=4)                         # 4 x0 - 5 x2 + x4
    torch.add(x[5], x[3], alpha=-5, out=t[5])
    t[5].add_(x[1], alpha=4)                         # 4 x1 - 5 x3 + x5


def _output_f43(m, o):
    """o[i] = sum_k AT[i, k] m[k] for F(4x4,3x3) with shared sub-expressions: 11 passes
    instead of 14."""
    import torch

    torch.add(m[1], m[2], out=o[2])                  # s12
    torch.sub(m[1], m[2], out=o[3])                  # d12
    torch.add(m[3], m[4], out=o[0])                  # s34
    torch.sub(m[3], m[4], out=o[1])                  # d34
    o[0].add_(o[2])                                  # s12 + s34
    o[2].mul_(-3).add_(o[0], alpha=4)                # s12 + 4 s34
    o[0].add_(m[0])                                  # m0 + s12 + s34
    o[3].add_(o[1], alpha=8)                         # d12 + 8 d34
    torch.add(o[3], o[1], alpha=-6, out=o[1])        # d12 + 2 d34
    o[3].add_(m[5])                                  # d12 + 8 d34 + m5


def conv3x3_nhwc(x, wt, bias=None, relu: bool = False, m: int = 2):
    """'same' 3x3 convolution of an NHWC-contiguous tensor with transformed weights ``wt``.

    Returns an NHWC-contiguous (N, H, W, Cout) tensor (bias added, ReLU applied if asked).
    """
    import torch

    BT, _, AT = _MATS[m]
    a = m + 2
    n, h, w, cin = x.shape
    cout = wt.shape[2]
    th, tw = -(-h // m), -(-w // m)
    hp, wp = th * m + 2, tw * m + 2
    # zero padding without filling the whole buffer first
    xp = torch.empty((n, hp, wp, cin), dtype=x.dtype, device=x.device)
    xp[:, 0].zero_()
    xp[:, h + 1:].zero_()
    xp[:, 1:h + 1, 0].zero_()
    xp[:, 1:h + 1, w + 1:].zero_()
    xp[:, 1:h + 1, 1:w + 1].copy_(x)
    out = torch.empty((n, th * m, tw * m, cout), dtype=x.dtype, device=x.device)
    out6 = out.view(n, th, m, tw, m, cout)
    # tile rows per chunk
    per_row = n * tw * a * a * max(cin, cout) * x.element_size()
    rows = max(1, min(th, CHUNK_BYTES // max(per_row, 1)))
    for r0 in range(0, th, rows):
        r1 = min(th, r0 + rows)
        nr = r1 - r0
        xs = xp[:, r0 * m: r1 * m + 2]
        # input transform along H: t1[i] = sum_k BT[i, k] * rows k::m
        t1 = torch.empty((a, n, nr, wp, cin), dtype=x.dtype, device=x.device)
        srcs = [xs[:, k: k + m * (nr - 1) + 1: m] for k in range(a)]
        if m == 4:
            _input_f43(srcs, [t1[i] for i in range(a)])
        else:
            for i in range(a):
                _combine(BT[i], srcs, t1[i])
        # along W
        u = torch.empty((a, a, n, nr, tw, cin), dtype=x.dtype, device=x.device)
        srcs = [t1[:, :, :, k: k + m * (tw - 1) + 1: m] for k in range(a)]
        if m == 4:
            _input_f43(srcs, [u[:, j] for j in range(a)])
        else:
            for j in range(a):
                _combine(BT[j], srcs, u[:, j])
        uu = u.view(a * a, n * nr * tw, cin)
        mm = torch.empty((a * a, n * nr * tw, cout), dtype=x.dtype, device=x.device)
        torch.bmm(uu, wt, out=mm)  # one batched GEMM (measured faster than a*a torch.mm calls)
        mm = mm.view(a, a, n, nr, tw, cout)
        # output transform along the first axis, then the second straight into the output
        y1 = torch.empty((m, a, n, nr, tw, cout), dtype=x.dtype, device=x.device)
        srcs = [mm[k] for k in range(a)]
        if m == 4:
            _output_f43(srcs, [y1[i] for i in range(m)])
        else:
            for i in range(m):
                _combine(AT[i], srcs, y1[i])
        o = out6[:, r0:r1]  # (n, nr, m_i, tw, m_j, cout)
        srcs = [y1[:, k].permute(1, 2, 0, 3, 4) for k in range(a)]  # (n, nr, m_i, tw, cout)
        if m == 4:
            _output_f43(srcs, [o[:, :, :, :, j] for j in range(m)])
        else:
            for j in range(m):
                _combine(AT[j], srcs, o[:, :, :, :, j])
    if th * m != h or tw * m != w:
        out = out[:, :h, :w]
    if bias is not None:
        out.add_(bias)
    if relu:
        out.relu_()
    return out
