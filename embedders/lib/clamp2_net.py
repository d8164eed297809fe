"""The music side of CLaMP 2 in PyTorch: the M3 patch encoder plus the music projection, and
the mapping from the official checkpoint's tensors onto it.

Imported by :meth:`embedders.clamp2.CLaMP2Embedder._load` (and by tests), never by discovery: it
imports torch at the top.

Per segment of at most 512 patches: patch embedding (a gather of weight columns, equal to the
reference's one-hot ``Linear``), positions restarting at 0 plus token-type row 0, LayerNorm, a
BERT encoder (post-LN, exact GELU, LayerNorm eps 1e-12, fused scaled-dot-product attention),
mean over the real (unmasked) patches, ``music_proj``. Padding is masked out of attention and
pooling, so a batch padded to its longest segment equals the reference's padding to 512.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import WeightsError
from .mtf import CHAR_VOCAB

#: Not recoverable from tensor shapes; 12 in the official model (and the test checkpoint).
NUM_HEADS = 12
LAYER_NORM_EPS = 1e-12


def infer_config(state: dict) -> dict:
    """Model sizes from tensor shapes (keys as in the checkpoint, ``music_model.`` prefix)."""
    p = "music_model."
    try:
        hidden, in_features = state[p + "patch_embedding.weight"].shape
        layers = sorted({int(k[len(p + "base.encoder.layer."):].split(".")[0])
                         for k in state if k.startswith(p + "base.encoder.layer.")})
        cfg = {
            "hidden_size": int(hidden),
            "patch_size": int(in_features) // CHAR_VOCAB,
            "num_layers": len(layers),
            "intermediate_size": int(state[p + "base.encoder.layer.0.intermediate.dense.weight"].shape[0]),
            "max_positions": int(state[p + "base.embeddings.position_embeddings.weight"].shape[0]),
            "type_vocab_size": int(state[p + "base.embeddings.token_type_embeddings.weight"].shape[0]),
            "output_size": int(state["music_proj.weight"].shape[0]),
            "num_heads": NUM_HEADS,
        }
    except (KeyError, ValueError, IndexError) as exc:
        raise WeightsError(f"checkpoint lacks a music-side tensor ({exc}); not a CLaMP 2 checkpoint") from exc
    if in_features % CHAR_VOCAB or layers != list(range(len(layers))) or not layers:
        raise WeightsError(f"unexpected CLaMP 2 music model shapes (patch embedding input "
                           f"{in_features}, layers {layers})")
    if cfg["hidden_size"] % NUM_HEADS:
        raise WeightsError(f"hidden size {cfg['hidden_size']} is not divisible by {NUM_HEADS} heads")
    return cfg



class EncoderLayer(nn.Module):
    """One post-LN BERT layer: (B, L, h) hidden states, (B, 1, 1, L) bool mask -> (B, L, h)."""

    def __init__(self, h: int, inter: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.ln1 = nn.LayerNorm(h, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(h, inter)
        self.fc2 = nn.Linear(inter, h)
        self.ln2 = nn.LayerNorm(h, eps=LAYER_NORM_EPS)

    def forward(self, x, attn_mask):
        b, n, h = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        a = a.transpose(1, 2).reshape(b, n, h)
        x = self.ln1(self.attn_out(a) + x)
        return self.ln2(self.fc2(F.gelu(self.fc1(x))) + x)


class M3MusicEncoder(nn.Module):
    """Patch embedding (as a gather table) + BERT encoder + masked mean + projection.

    Parameters
    ----------
    cfg : dict
        Sizes, as :func:`infer_config` returns them. The parameters start at zero; use
        :func:`model_from_state` for a model with the checkpoint's weights.
    """

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = dict(cfg)
        h, ps = cfg["hidden_size"], cfg["patch_size"]
        # row p*128 + id holds column p*128 + id of the reference Linear(ps*128 -> h)
        self.patch_table = nn.Parameter(torch.zeros(ps * CHAR_VOCAB, h))
        self.patch_bias = nn.Parameter(torch.zeros(h))
        self.pos = nn.Parameter(torch.zeros(cfg["max_positions"], h))
        self.type0 = nn.Parameter(torch.zeros(h))
        self.emb_ln = nn.LayerNorm(h, eps=LAYER_NORM_EPS)
        self.layers = nn.ModuleList(EncoderLayer(h, cfg["intermediate_size"], cfg["num_heads"])
                                    for _ in range(cfg["num_layers"]))
        self.proj = nn.Linear(h, cfg["output_size"])
        self.register_buffer("offsets", torch.arange(ps) * CHAR_VOCAB, persistent=False)

    def patch_embed(self, ids):
        """ids [B, L, ps] int64 → [B, L, h]; equals one_hot(ids, 128).flatten(-2) @ W.T + b."""
        b, n, ps = ids.shape
        flat = (ids + self.offsets).reshape(b * n, ps)
        out = F.embedding_bag(flat, self.patch_table, mode="sum")
        return (out + self.patch_bias).view(b, n, -1)

    def hidden_states(self, ids, mask, *, every_layer: bool = False):
        """Encoder output [B, L, h] for ids [B, L, ps] and a 0/1 mask [B, L]; with
        ``every_layer`` the list [embeddings, after layer 1, ..., after layer N] of such."""
        n = ids.shape[1]
        x = self.patch_embed(ids) + self.pos[:n] + self.type0
        x = self.emb_ln(x)
        states = [x] if every_layer else None
        attn = mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, attn)
            if every_layer:
                states.append(x)
        return states if every_layer else x

    def forward(self, ids, mask):
        """Segment vectors [B, output_size]: ``proj(masked mean of the encoder output)``."""
        x = self.hidden_states(ids, mask)
        m = mask.to(x.dtype).unsqueeze(-1)
        pooled = (x * m).sum(1) / m.sum(1)
        return self.proj(pooled)


def convert_state(state: dict, cfg: dict) -> dict:
    """Checkpoint tensors (official key names) → the parameter names of :class:`M3MusicEncoder`."""
    p, b = "music_model.", "music_model.base."
    try:
        w = state[p + "patch_embedding.weight"]
        out = {
            "patch_table": w.t().contiguous(),
            "patch_bias": state[p + "patch_embedding.bias"],
            "pos": state[b + "embeddings.position_embeddings.weight"],
            "type0": state[b + "embeddings.token_type_embeddings.weight"][0],
            "emb_ln.weight": state[b + "embeddings.LayerNorm.weight"],
            "emb_ln.bias": state[b + "embeddings.LayerNorm.bias"],
            "proj.weight": state["music_proj.weight"],
            "proj.bias": state["music_proj.bias"],
        }
        for i in range(cfg["num_layers"]):
            L = f"{b}encoder.layer.{i}."
            o = f"layers.{i}."
            out[o + "qkv.weight"] = torch.cat([state[L + f"attention.self.{n}.weight"]
                                               for n in ("query", "key", "value")], 0)
            out[o + "qkv.bias"] = torch.cat([state[L + f"attention.self.{n}.bias"]
                                             for n in ("query", "key", "value")], 0)
            out[o + "attn_out.weight"] = state[L + "attention.output.dense.weight"]
            out[o + "attn_out.bias"] = state[L + "attention.output.dense.bias"]
            out[o + "ln1.weight"] = state[L + "attention.output.LayerNorm.weight"]
            out[o + "ln1.bias"] = state[L + "attention.output.LayerNorm.bias"]
            out[o + "fc1.weight"] = state[L + "intermediate.dense.weight"]
            out[o + "fc1.bias"] = state[L + "intermediate.dense.bias"]
            out[o + "fc2.weight"] = state[L + "output.dense.weight"]
            out[o + "fc2.bias"] = state[L + "output.dense.bias"]
            out[o + "ln2.weight"] = state[L + "output.LayerNorm.weight"]
            out[o + "ln2.bias"] = state[L + "output.LayerNorm.bias"]
    except KeyError as exc:
        raise WeightsError(f"CLaMP 2 checkpoint lacks tensor {exc.args[0]}") from exc
    return out



def model_from_state(state: dict):
    """Build the encoder from checkpoint tensors; shapes are checked."""
    cfg = infer_config(state)
    with torch.device("meta"):  # no random init, no memory: the tensors below are assigned
        model = M3MusicEncoder(cfg)
    params = convert_state(state, cfg)
    own = model.state_dict()
    for k, v in params.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise WeightsError(f"CLaMP 2 tensor for {k} has shape {tuple(v.shape)}, "
                               f"expected {tuple(own[k].shape)}")
    with torch.no_grad():
        model.load_state_dict(params, strict=True, assign=True)
    model.register_buffer("offsets", torch.arange(cfg["patch_size"]) * CHAR_VOCAB, persistent=False)
    model.eval()
    return model

