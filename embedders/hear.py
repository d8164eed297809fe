"""``hear``: any model that implements the HEAR 2021 API (Turian et al. 2022) as an embedder.

``--embedders hear --set hear.module=NAME [--set hear.model_path=PATH]`` imports the Python
module ``NAME`` (an installed HEAR package such as ``hearbaseline``, or any importable module) and
uses its API:

* ``load_model(model_file_path)`` (called without an argument when no ``model_path`` is given)
  returns a model with ``sample_rate``, ``scene_embedding_size`` and
  ``timestamp_embedding_size``;
* ``get_timestamp_embeddings(audio, model)`` on a ``(1, n_samples)`` float32 torch tensor at the
  model's ``sample_rate`` gives ``frames`` and their timestamps (the API's milliseconds, stored
  as seconds);
* ``get_scene_embeddings(audio, model)`` gives ``clip`` (``clip=scene``, the default), or ``clip``
  is the mean of the frames (``clip=mean``; needed when the two sizes differ).

Audio is mixed to mono (channel mean) and resampled to the model's rate with ``resampler``
(soxr VHQ by default, or resampy's ``kaiser_best`` re-implemented). The cache key holds the
module's name, its version (its distribution's, else its ``__version__``, else a checksum of its
source file) and the fingerprint of the model file. An unknown module, a module without one of
the API's functions or attributes, or an unreadable model file stop the run before any audio is
read (exit 2).
"""
from __future__ import annotations

import importlib
import re

import numpy as np

from . import register
from .base import AUDIO, ConfigurationError, Embedder, Embedding, InputError, WeightsError
from .lib.audio_io import AUDIO_EXTENSIONS, read_audio, to_mono

API_FUNCTIONS = ("load_model", "get_scene_embeddings", "get_timestamp_embeddings")
MODEL_ATTRIBUTES = ("sample_rate", "scene_embedding_size", "timestamp_embedding_size")
CLIP_MODES = ("scene", "mean")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def module_version(name: str, module=None) -> str:
    """``DIST==VERSION`` of the distribution providing top-level package of ``name``, else
    ``__version__``, else ``sha256:...`` of the module's source file, else ``unknown``."""
    from importlib import metadata

    top = name.split(".")[0]
    dists = metadata.packages_distributions().get(top) or []
    if dists:
        try:
            return f"{dists[0]}=={metadata.version(dists[0])}"
        except metadata.PackageNotFoundError:
            pass
    module = module if module is not None else importlib.import_module(name)
    version = getattr(module, "__version__", None)
    if isinstance(version, str) and version:
        return version
    source = getattr(module, "__file__", None)
    if source:
        from common.fsutil import sha256_file

        return "sha256:" + sha256_file(source)[:16]
    return "unknown"


@register
class Hear(Embedder):
    name = "hear"
    modality = AUDIO
    version = "1"
    extensions = AUDIO_EXTENSIONS
    description = ("any HEAR-API model (--set hear.module=NAME [--set hear.model_path=PATH]): "
                   "frames = timestamp embeddings, clip = scene embedding")
    option_defaults = {"module": None, "model_path": None, "clip": "scene",
                       "resampler": "soxr"}
    option_types = {"module": str, "model_path": str}

    def validate_options(self) -> None:
        o = self.options
        if o["module"] is not None and not _MODULE_NAME.match(str(o["module"])):
            raise ConfigurationError(f"hear: module must be a Python module name (e.g. "
                                     f"hearbaseline), got {o['module']!r}")
        if o["clip"] not in CLIP_MODES:
            raise ConfigurationError(f"hear: clip must be one of {', '.join(CLIP_MODES)}, "
                                     f"got {o['clip']!r}")
        from .lib.resample import RESAMPLERS
        if o["resampler"] not in RESAMPLERS:
            raise ConfigurationError(f"hear: resampler must be one of {', '.join(RESAMPLERS)}, "
                                     f"got {o['resampler']!r}")

    # -- the module -----------------------------------------------------------------------------
    def api_module(self):
        """The HEAR module, imported and checked for the API's three functions."""
        name = self.options["module"]
        if name is None:
            raise ConfigurationError("hear: set the HEAR module with --set hear.module=NAME "
                                     "(e.g. hearbaseline)")
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"hear: cannot import HEAR module {name!r} ({exc}); "
                                     f"install its package first") from None
        missing = [f for f in API_FUNCTIONS if not callable(getattr(module, f, None))]
        if missing:
            raise ConfigurationError(f"hear: module {name!r} is not a HEAR-API module: no "
                                     f"{', '.join(missing)}")
        return module

    def cache_options(self) -> dict:
        """Cache key options: the model file counts by its fingerprint, not its path."""
        opts = super().cache_options()
        opts.pop("model_path", None)
        return opts

    def weights_identity(self) -> str | None:
        ident = getattr(self, "_identity", None)
        if ident is None:  # not loaded: import the module only (no model built)
            ident = self._identity = self._make_identity(self.api_module())
        return ident

    def _make_identity(self, module) -> str:
        ident = f"{self.options['module']}:{module_version(self.options['module'], module)}"
        path = self.options["model_path"]
        if path is not None:
            from pathlib import Path

            from .lib.weights import weights_fingerprint
            if not Path(path).expanduser().is_file():
                raise WeightsError(f"hear: model file {path} does not exist")
            ident += "|" + weights_fingerprint(Path(path).expanduser())
        return ident

    def _load(self) -> None:
        module = self.api_module()
        self._identity = self._make_identity(module)
        path = self.options["model_path"]
        try:
            model = module.load_model(str(path)) if path is not None else module.load_model()
        except Exception as exc:  # a third-party loader: any failure is a weights problem
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise WeightsError(f"hear: {self.options['module']}.load_model({path or ''}) "
                               f"failed: {reason}") from exc
        missing = [a for a in MODEL_ATTRIBUTES if not hasattr(model, a)]
        if missing:
            raise ConfigurationError(f"hear: the model of {self.options['module']!r} has no "
                                     f"{', '.join(missing)}")
        if self.options["clip"] == "scene" and \
                int(model.scene_embedding_size) != int(model.timestamp_embedding_size):
            raise ConfigurationError(
                f"hear: {self.options['module']} has scene embeddings of "
                f"{model.scene_embedding_size} and timestamp embeddings of "
                f"{model.timestamp_embedding_size} dimensions; use --set hear.clip=mean")
        self._module, self._model = module, model

    @property
    def dim(self) -> int | None:
        model = getattr(self, "_model", None)
        return int(model.timestamp_embedding_size) if model is not None else None

    # -- computation ------------------------------------------------------------------------------
    def signal(self, path: str) -> np.ndarray:
        """The file as mono float32 samples at the model's sample rate."""
        from .lib.resample import resample

        audio, sr = read_audio(path)
        y = to_mono(audio)
        rate = int(self._model.sample_rate)
        if sr != rate:
            y = resample(y, sr, rate, self.options["resampler"])
        return np.asarray(y, dtype=np.float32)

    def _embed_file(self, path: str) -> Embedding:
        import torch

        audio = torch.from_numpy(self.signal(path))[None, :]
        with torch.no_grad():
            frames, stamps = self._module.get_timestamp_embeddings(audio, self._model)
            frames = _numpy(frames)[0]
            stamps = _numpy(stamps)[0].astype(np.float64) / 1000.0  # the API's milliseconds
            if frames.shape[0] == 0:
                raise InputError(path, "the HEAR model returned no timestamp embeddings")
            if self.options["clip"] == "scene":
                clip = _numpy(self._module.get_scene_embeddings(audio, self._model))[0]
            else:
                clip = frames.astype(np.float64).mean(axis=0)
        return Embedding(frames=frames, clip=clip, timestamps=stamps,
                         info={"module": self.options["module"],
                               "sample_rate": int(self._model.sample_rate)})


def _numpy(x) -> np.ndarray:
    """A torch tensor (any device) or array-like as a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)
