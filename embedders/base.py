"""The one contract every embedder follows.

An embedder turns one file into vectors. Construction only validates and stores options; the
heavy work (weights, models) happens in :meth:`Embedder.load`, which ``embed`` calls on first use.

Subclasses set the class attributes ``name``, ``modality``, ``version``, ``extensions`` and
``option_defaults`` (plus ``option_types`` for options whose default is ``None``), and implement
:meth:`Embedder._embed_file` (and, if they batch across files, :meth:`Embedder.embed_many`).
Registering is one decorator, :func:`embedders.register`.

Several spaces from one computation: an embedder asked for several layers (``layer=all``)
gives one *space* per layer, named ``NAME@LAYER`` (:meth:`Embedder.spaces`), all from one
forward pass per file (:meth:`Embedder.compute_spaces`, :meth:`Embedder.embed_many_spaces`,
which subclasses implement through :meth:`Embedder._embed_file_spaces`). The pipeline stores,
exports and analyses each space as it does an ordinary embedder. An ordinary embedder has one
space, named after itself, and needs none of this.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator

import numpy as np

AUDIO = "audio"
SYMBOLIC = "symbolic"
MODALITIES = (AUDIO, SYMBOLIC)

#: Options that change how fast, not what, an embedder computes: never part of a cache key.
RUNTIME_OPTIONS = frozenset({"device", "batch_size", "workers", "weights", "verbose"})

#: Joins an embedder's name and a layer into the name of that layer's space: ``hf-audio@6``.
SPACE_SEPARATOR = "@"

#: The value types an option may declare; text (``--set NAME.OPTION=VALUE``) is read as one.
OPTION_TYPES = (bool, int, float, str)
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})
#: Words meaning "no value" (the default) for an option whose default is ``None``.
_NONE_WORDS = frozenset({"none", "null"})


class EmbedderError(Exception):
    """Base class of every error raised by an embedder."""


class ConfigurationError(EmbedderError, ValueError):
    """An option or setting is wrong (bad value, unknown name). The run cannot start."""


class WeightsError(EmbedderError):
    """Weights cannot be found, downloaded or read. The run cannot start."""


class InputError(EmbedderError):
    """One input file cannot be embedded (corrupt, empty, unsupported). The run skips it.

    Parameters
    ----------
    path : str
        The file that failed.
    reason : str
        One line saying why, for the manifest and the report.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def input_file_size(path: str) -> int:
    """Size in bytes of an input file; :class:`InputError` if it is a folder,
    cannot be read or is empty."""
    if os.path.isdir(path):
        raise InputError(path, "is a folder, not a file")
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    return size


@dataclass
class Embedding:
    """What an embedder returns for one file.

    Attributes
    ----------
    frames : np.ndarray [shape=(n_frames, dim), dtype=float32]
        Frame- (or segment-) level vectors.
    clip : np.ndarray [shape=(dim,), dtype=float32]
        One vector for the whole file (the model's own pooling, or the mean of ``frames``).
    timestamps : np.ndarray [shape=(n_frames,), dtype=float64] or None
        Time of each frame in seconds, where the model defines one.
    info : dict
        Small JSON-serialisable facts about this computation (e.g. resampler used, n_patches).
    """

    frames: np.ndarray
    clip: np.ndarray
    timestamps: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.frames = np.ascontiguousarray(self.frames, dtype=np.float32)
        self.clip = np.ascontiguousarray(self.clip, dtype=np.float32)
        if self.frames.ndim != 2:
            raise ValueError(f"frames must be 2-D (n_frames, dim), got shape {self.frames.shape}")
        if self.clip.shape != (self.frames.shape[1],):
            raise ValueError(f"clip shape {self.clip.shape} does not match frames {self.frames.shape}")
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
            if self.timestamps.shape != (self.frames.shape[0],):
                raise ValueError("timestamps must have one entry per frame")


def resolve_device(device: str | None) -> str:
    """Turn ``None``/``'auto'`` into the best available torch device name; check the others."""
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    dev = str(device)
    kind = dev.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {dev!r} requested but CUDA is not available")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigurationError(f"device {dev!r} requested but MPS is not available")
    if kind not in ("cpu", "cuda", "mps"):
        raise ConfigurationError(f"unknown device {dev!r}: use cpu, cuda, cuda:N or mps")
    return dev


class Embedder:
    """Base class: a named model that maps a file to vectors.

    Parameters
    ----------
    **options
        Model options; names and defaults in ``option_defaults``. Unknown names raise
        :class:`ConfigurationError`. Nothing heavy happens here.
    """

    #: Registered name, e.g. ``"openl3"``.
    name: ClassVar[str] = ""
    #: ``"audio"`` or ``"symbolic"``.
    modality: ClassVar[str] = ""
    #: Bump whenever the numbers an embedder produces change: it is part of every cache key.
    version: ClassVar[str] = "0"
    #: Lower-case file extensions (with dot) this embedder reads.
    extensions: ClassVar[tuple[str, ...]] = ()
    #: Every option with its default. Runtime options (device, batch size, weights) included.
    option_defaults: ClassVar[dict[str, Any]] = {}
    #: Value type (bool, int, float or str) of the options whose type the default does not
    #: show, i.e. those whose default is ``None``; the others default to ``type(default)``.
    #: Used to read option values given as text (see :meth:`coerce_option`).
    option_types: ClassVar[dict[str, type]] = {}
    #: One-line description for ``--help`` and the report.
    description: ClassVar[str] = ""
    #: True when files can be embedded in separate worker processes (``--workers``); models
    #: that batch across files or hold large weights keep this False.
    parallel_files: ClassVar[bool] = False

    def __init__(self, **options: Any):
        self._check_option_names(options)
        self.options: dict[str, Any] = {**self.option_defaults, **options}
        self._loaded = False
        self.validate_options()

    # -- option types -------------------------------------------------------------------------
    @classmethod
    def _check_option_names(cls, names: Iterable[str]) -> None:
        unknown = sorted(set(names) - set(cls.option_defaults))
        if unknown:
            raise ConfigurationError(
                f"embedder {cls.name!r} has no option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(cls.option_defaults)) or 'none'}")

    @classmethod
    def declared_option_types(cls) -> dict[str, type]:
        """The value type of every option: ``option_types``, else the type of the default.

        Options whose default is ``None`` and that ``option_types`` does not name are left out
        (:func:`embedders.register` refuses such a class).
        """
        types = {k: type(v) for k, v in cls.option_defaults.items() if v is not None}
        types.update({k: t for k, t in cls.option_types.items() if k in cls.option_defaults})
        return types

    @classmethod
    def coerce_option(cls, name: str, text: str) -> Any:
        """Read an option value given as text (``--set NAME.OPTION=VALUE``) as its declared type.

        bool: true/false, yes/no, on/off, 1/0 (any case); int and float: Python's literals;
        str: the text as it is (a folder named ``2024`` stays ``"2024"``). For an option whose
        default is ``None``, ``none`` or ``null`` (any case) gives ``None``. Allowed values
        (choices, ranges) are then checked by :meth:`validate_options`, as for any value.

        Raises
        ------
        ConfigurationError
            Unknown option, or text that is not a value of the declared type (one line).
        """
        cls._check_option_names([name])
        kind = cls.declared_option_types().get(name, str)
        word = text.strip().lower()
        if cls.option_defaults[name] is None and word in _NONE_WORDS:
            return None
        if kind is bool:
            if word in _TRUE_WORDS:
                return True
            if word in _FALSE_WORDS:
                return False
            expected = "true or false (yes/no, on/off, 1/0)"
        elif kind is int:
            try:
                return int(text)
            except ValueError:
                expected = "an integer"
        elif kind is float:
            try:
                return float(text)
            except ValueError:
                expected = "a number"
        else:
            return text
        raise ConfigurationError(f"{cls.name}.{name} must be {expected}, got {text!r}")

    # -- to override -------------------------------------------------------------------------
    def validate_options(self) -> None:
        """Check ``self.options``; raise :class:`ConfigurationError` on a bad value."""

    def _load(self) -> None:
        """Load weights / build the model. Called once, lazily."""

    def _embed_file(self, path: str) -> Embedding:
        """Embed one file. Raise :class:`InputError` for a file that cannot be embedded."""
        raise NotImplementedError

    @property
    def dim(self) -> int | None:
        """Output dimension if known without loading, else ``None``."""
        return None

    def weights_identity(self) -> str | None:
        """A short string naming the weights in use (file name, size, checksum), for cache keys.

        Must give the same answer before and after :meth:`load`: an embedder with weights
        resolves (finds, and fingerprints) them here when not loaded yet, without building the
        model, so that :meth:`cache_options` of a fresh embedder matches the options recorded
        with its outputs (a search index checks a query embedder that way). Embedders without
        weights return ``None``.
        """
        return None

    def seen_in_training(self) -> frozenset[str]:
        """Content hashes (SHA-256) of the files this model was trained on, where known.

        Called after :meth:`load`. An analysis of a collection must leave these items out of
        separability, probes and retrieval (they would leak the training labels). Models
        trained elsewhere return an empty set.
        """
        return frozenset()

    # -- the public contract ------------------------------------------------------------------
    def load(self) -> "Embedder":
        """Load weights and build the model (once). Returns ``self`` for chaining."""
        if not self._loaded:
            self._load()
            self._loaded = True
        return self

    def accepts(self, path: str | os.PathLike) -> bool:
        """Whether this embedder reads files with this extension."""
        return os.path.splitext(str(path))[1].lower() in self.extensions

    def compute(self, path: str | os.PathLike) -> Embedding:
        """Frames, clip vector and timestamps of one file."""
        self.load()
        return self._embed_file(str(path))

    def embed(self, path: str | os.PathLike) -> np.ndarray:
        """Frame-level vectors.

        Returns
        -------
        np.ndarray [shape=(n_frames, dim), dtype=float32]
        """
        return self.compute(path).frames

    def embed_clip(self, path: str | os.PathLike) -> np.ndarray:
        """One vector for the whole file.

        Returns
        -------
        np.ndarray [shape=(dim,), dtype=float32]
        """
        return self.compute(path).clip

    def embed_many(self, paths: Iterable[str]) -> Iterator[tuple[str, Embedding | Exception]]:
        """Embed many files, yielding ``(path, Embedding)`` or ``(path, exception)`` per file.

        Order of the results may differ from the input order (batching embedders sort by
        length). A failing file never stops the others. Override to batch across files.
        """
        self.load()
        for path in paths:
            try:
                yield path, self._embed_file(str(path))
            except Exception as exc:  # one bad file must not end the run
                yield path, exc

    def cache_options(self) -> dict[str, Any]:
        """The options that change the numbers: what goes into a cache key."""
        opts = {k: v for k, v in sorted(self.options.items()) if k not in RUNTIME_OPTIONS}
        wid = self.weights_identity()
        if wid is not None:
            opts["weights_identity"] = wid
        return opts

    # -- several spaces from one computation -------------------------------------------------
    def spaces(self) -> dict[str, dict[str, Any]]:
        """The embedding spaces one computation of a file gives, in order: name -> cache options.

        One space named after the embedder, keyed by :meth:`cache_options`, unless the embedder
        was asked for several (e.g. ``layer=all``): then one per layer, ``NAME@LAYER``, each
        keyed by the cache options of the single-layer embedder that would compute it alone
        (so both find the same cache entries). May load the model (the number of layers).
        """
        return {self.name: self.cache_options()}

    def space_layers(self) -> dict[str, Any]:
        """Space name -> its layer, for an embedder giving one space per layer; else ``{}``."""
        return {}

    def _embed_file_spaces(self, path: str) -> dict[str, Embedding]:
        """Every space's embedding of one file from one computation (keys as :meth:`spaces`).
        Raise :class:`InputError` for a file that cannot be embedded."""
        return {self.name: self._embed_file(path)}

    def compute_spaces(self, path: str | os.PathLike) -> dict[str, Embedding]:
        """Every space's embedding of one file, from one computation."""
        self.load()
        return self._embed_file_spaces(str(path))

    def embed_many_spaces(self, paths: Iterable[str]
                          ) -> Iterator[tuple[str, dict[str, Embedding] | Exception]]:
        """:meth:`embed_many` for every space: ``(path, {space: Embedding})`` or
        ``(path, exception)`` per file. An embedder with one space batches as its
        :meth:`embed_many` does; override to batch several spaces across files."""
        if list(self.spaces()) == [self.name]:
            for path, out in self.embed_many(paths):
                yield path, out if isinstance(out, Exception) else {self.name: out}
            return
        self.load()
        for path in paths:
            try:
                yield path, self._embed_file_spaces(str(path))
            except Exception as exc:  # one bad file must not end the run
                yield path, exc

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


def mean_pool(frames: np.ndarray) -> np.ndarray:
    """Mean of frame vectors.

    Parameters
    ----------
    frames : np.ndarray [shape=(n_frames, dim)]

    Returns
    -------
    np.ndarray [shape=(dim,), dtype=float32]
    """
    frames = np.asarray(frames)
    if frames.shape[0] == 0:
        raise ValueError("cannot pool zero frames")
    return frames.astype(np.float64).mean(axis=0).astype(np.float32)
