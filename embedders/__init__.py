"""Embedders: models that turn files into vectors, found by name through a registry.

>>> from embedders import get_embedder
>>> vec = get_embedder("midi-stats").embed_clip("song.mid")      # doctest: +SKIP

Adding a model is one new module in this package holding an :class:`Embedder` subclass decorated
with :func:`register`; modules are discovered on first lookup, so nothing is listed by hand.
Importing a module must stay cheap: heavy imports (torch) and weights belong in ``_load``.
Helpers the models share (audio reading, resampling, weight files, networks) live in ``lib/``,
which discovery does not import.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from .base import (AUDIO, OPTION_TYPES, SYMBOLIC, ConfigurationError, Embedder, EmbedderError,
                   Embedding, InputError, WeightsError)

__all__ = ["AUDIO", "SYMBOLIC", "ConfigurationError", "Embedder", "EmbedderError", "Embedding",
           "InputError", "WeightsError", "available_embedders", "get_embedder",
           "get_embedder_class", "register"]

_REGISTRY: dict[str, type[Embedder]] = {}
_discovered = False


def register(cls: type[Embedder]) -> type[Embedder]:
    """Class decorator adding an embedder to the registry under ``cls.name``.

    Raises
    ------
    TypeError
        No name or modality, a name already taken, or an option without a value type
        (a ``None`` default not named in ``option_types``, or a type other than bool, int,
        float, str).
    """
    if not cls.name or cls.modality not in (AUDIO, SYMBOLIC):
        raise TypeError(f"{cls.__name__} needs a name and a modality ('audio' or 'symbolic')")
    extra = sorted(set(cls.option_types) - set(cls.option_defaults))
    types = cls.declared_option_types()
    untyped = sorted(k for k in cls.option_defaults if types.get(k) not in OPTION_TYPES)
    if extra or untyped:
        raise TypeError(f"{cls.__name__}: option_types names unknown option(s) {extra}" if extra
                        else f"{cls.__name__}: option(s) {untyped} need a type in option_types "
                             f"(bool, int, float or str)")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"embedder name {cls.name!r} already used by {other.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    for info in pkgutil.iter_modules(__path__):
        # Model modules only: the contract and the helpers in ``lib/`` register nothing.
        if not (info.ispkg or info.name.startswith("_") or info.name == "base"):
            importlib.import_module(f"{__name__}.{info.name}")
    _discovered = True


def available_embedders() -> dict[str, type[Embedder]]:
    """All registered embedders, by name (sorted)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_embedder_class(name: str) -> type[Embedder]:
    """The class registered under ``name``; :class:`ConfigurationError` if there is none."""
    registry = available_embedders()
    try:
        return registry[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown embedder {name!r}; available: {', '.join(registry)}") from None


def get_embedder(name: str, **options: Any) -> Embedder:
    """Construct the embedder ``name`` with ``options`` (cheap: nothing is loaded yet)."""
    return get_embedder_class(name)(**options)
