"""``trained``: a network fitted with ``python main.py train``, used like any other embedder.

``--embedders trained --set trained.checkpoint=RUN`` (the run folder: its ``best.pt``, else
``last.pt``; or one checkpoint file). The file's fingerprint (name, size, SHA-256) is part of
the cache key, so retraining into the same folder never reuses old vectors.

Each file is cut into the run's training clip length (non-overlapping windows, the last one
aligned to the end; a shorter file is repeated to one clip): one frame per window, the clip
vector is their mean. The vector is the method's embedding: SimSiam's encoder output, the
CRNN's penultimate layer, CPC's context pooled over time.

``finetune`` runs are embedded as ``hf-audio`` embeds a transformers encoder (the same window
plan, :func:`embedders.hf_audio.frames_on_grid`, with windows of the training clip length):
the frames are the fine-tuned encoder's hidden states at the run's layer, one per model frame
(50 per second for wav2vec 2.0) over the whole file, each window normalised as in training;
the clip vector is their mean over time. A file no longer than one clip is one forward pass,
so its clip vector is exactly that layer mean-pooled over the whole file.

Leakage: every :class:`Embedding` carries ``info["seen_in_training"]`` (the file's bytes were
on the training or validation side of the run); :func:`seen_content_hashes` gives the whole set
for an analysis that must leave those items out.
"""
from __future__ import annotations

import os

import numpy as np

from . import register
from .base import AUDIO, ConfigurationError, Embedder, Embedding, WeightsError, resolve_device
from .lib.audio_io import AUDIO_EXTENSIONS


def seen_content_hashes(checkpoint: str | os.PathLike) -> frozenset[str]:
    """SHA-256 of every file on the training or validation side of a run (audio and the MIDI
    twins of its pieces). An analysis on the training collection must exclude these items."""
    from .lib import trained_nets as tn

    try:
        return frozenset(tn.read_checkpoint(checkpoint)["seen_content_hashes"])
    except tn.CheckpointError as exc:
        raise WeightsError(str(exc)) from None


@register
class Trained(Embedder):
    name = "trained"
    modality = AUDIO
    version = "1"
    extensions = AUDIO_EXTENSIONS
    description = ("an encoder trained with 'main.py train' (simsiam, cpc, crnn, finetune); set "
                   "checkpoint")
    option_defaults = {"checkpoint": None, "device": None, "batch_size": 16}
    option_types = {"checkpoint": str, "device": str}

    def validate_options(self) -> None:
        if not isinstance(self.options["batch_size"], int) or self.options["batch_size"] < 1:
            raise ConfigurationError("trained: batch_size must be a positive integer")

    def _load(self) -> None:
        import torch
        from .lib import trained_nets as tn

        if not self.options["checkpoint"]:
            raise ConfigurationError("trained: set the run to use with "
                                     "--set trained.checkpoint=RUN (folder or .pt file)")
        try:
            self._path = tn.resolve_checkpoint(self.options["checkpoint"])
            ckpt = tn.read_checkpoint(self._path)
            self._net = tn.network_from_checkpoint(ckpt)
        except tn.CheckpointError as exc:
            raise WeightsError(str(exc)) from None
        if ckpt["frontend"] != tn.FRONTEND:
            raise WeightsError(f"{self._path}: trained with another front end "
                               f"({ckpt['frontend']}); this version computes {tn.FRONTEND}")
        self._ckpt_meta = {k: ckpt[k] for k in ("method", "epoch", "crop_length", "classes")}
        if ckpt["method"] == "finetune":
            from .lib.hf_models import conv_geometry

            cfg = self._net.encoder.config
            self._geometry = conv_geometry(cfg.conv_kernel, cfg.conv_stride)
        self._seen = frozenset(ckpt["seen_content_hashes"])
        self.device = resolve_device(self.options["device"])
        self._net.to(self.device)
        self._torch = torch

    def seen_in_training(self) -> frozenset[str]:
        return self._seen

    def weights_identity(self) -> str | None:
        from .lib.weights import weights_fingerprint
        path = getattr(self, "_path", None)
        if path is None and self.options["checkpoint"]:  # not loaded: find the file only
            from .lib import trained_nets as tn
            try:
                path = self._path = tn.resolve_checkpoint(self.options["checkpoint"])
            except tn.CheckpointError as exc:
                raise WeightsError(str(exc)) from None
        return weights_fingerprint(path) if path else None

    def _embed_file(self, path: str) -> Embedding:
        from common.fsutil import sha256_file
        from .lib import trained_nets as tn

        torch, meta = self._torch, self._ckpt_meta
        y = tn.load_audio_16k(path)
        if meta["method"] == "finetune":
            return self._embed_hf(path, y)
        feats = y if meta["method"] == "cpc" else tn.log_mel(y)
        length = meta["crop_length"]
        n = feats.shape[-1]
        reps = -(-length // n) if n < length else 1
        if reps > 1:
            feats = np.concatenate([feats] * reps, axis=-1)
            n = feats.shape[-1]
        starts = list(range(0, n - length + 1, length))
        if starts[-1] + length < n:
            starts.append(n - length)
        out = []
        bs = self.options["batch_size"]
        with torch.inference_mode():
            for i in range(0, len(starts), bs):
                w = np.stack([feats[..., s:s + length] for s in starts[i:i + bs]])
                x = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).to(self.device)
                out.append(self._net.embed(x).float().cpu().numpy())
        frames = np.concatenate(out)
        step = tn.FRONTEND["hop_length"] / tn.SR if meta["method"] != "cpc" else 1 / tn.SR
        return Embedding(frames=frames, clip=frames.mean(axis=0),
                         timestamps=np.asarray(starts) * step,
                         info={"method": meta["method"], "epoch": int(meta["epoch"]),
                               "n_windows": len(starts),
                               "seen_in_training": sha256_file(path) in self._seen})

    def _embed_hf(self, path: str, y: np.ndarray) -> Embedding:
        """A finetune run: the chosen layer's frames over the whole file, mean as clip."""
        from common.fsutil import sha256_file
        from .base import InputError, mean_pool
        from .hf_audio import frames_on_grid
        from .lib import trained_nets as tn

        torch, meta = self._torch, self._ckpt_meta

        def forward(windows: list[np.ndarray]) -> np.ndarray:
            x = torch.from_numpy(np.stack(windows).astype(np.float32, copy=False)).to(self.device)
            with torch.inference_mode():
                return self._net.hidden(x).float().cpu().numpy()

        field, stride = self._geometry
        try:
            frames, timestamps = frames_on_grid(
                y, forward, window=max(int(meta["crop_length"]), field), hop=None,
                receptive_field=field, stride=stride, sample_rate=tn.SR,
                batch_size=self.options["batch_size"])
        except ValueError as exc:
            raise InputError(path, f"cannot embed audio: {exc}") from exc
        return Embedding(frames=frames, clip=mean_pool(frames), timestamps=timestamps,
                         info={"method": meta["method"], "epoch": int(meta["epoch"]),
                               "layer": int(self._net.layer), "n_frames": int(frames.shape[0]),
                               "seen_in_training": sha256_file(path) in self._seen})
