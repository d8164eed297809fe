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

from typing import Any

from common.registry import Registry
from .base import (AUDIO, OPTION_TYPES, SYMBOLIC, ConfigurationError, Embedder, EmbedderError,
                   Embedding, InputError, WeightsError)

__all__ = ["AUDIO", "SYMBOLIC", "ConfigurationError", "Embedder", "EmbedderError", "Embedding",
           "InputError", "WeightsError", "available_embedders", "get_embedder",
           "get_embedder_class", "parse_option_setting", "register"]

#: Model modules only: the contract (``base``) and the helpers in ``lib/`` register nothing.
_REGISTRY: Registry[type[Embedder]] = Registry(__name__, __path__, kind="embedder")


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
    return _REGISTRY.add(cls)


def available_embedders() -> dict[str, type[Embedder]]:
    """All registered embedders, by name (sorted)."""
    return _REGISTRY.classes()


def get_embedder_class(name: str) -> type[Embedder]:
    """The class registered under ``name``; :class:`ConfigurationError` if there is none."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigurationError(
            f"unknown embedder {name!r}; available: {', '.join(available_embedders())}")
    return cls


def get_embedder(name: str, **options: Any) -> Embedder:
    """Construct the embedder ``name`` with ``options`` (cheap: nothing is loaded yet)."""
    return get_embedder_class(name)(**options)


def parse_option_setting(item: str, selected) -> tuple[str, str, Any]:
    """One ``--set NAME.OPTION=VALUE`` as ``(NAME, OPTION, value)``, the value read as the
    option's type (:meth:`Embedder.coerce_option`); ``selected``: the embedder names it may set.

    Raises
    ------
    ConfigurationError
        Not of that form, a NAME not selected, an unknown option or a bad value (one line).
    """
    target, sep, value = item.partition("=")
    name, dot, key = target.rpartition(".")
    if not (sep and dot and name and key):
        raise ConfigurationError(f"--set expects NAME.OPTION=VALUE, got {item!r}")
    selected = list(selected)
    if name not in selected:
        raise ConfigurationError(f"--set {item!r}: embedder {name!r} is not selected "
                                 f"(selected: {', '.join(selected)})")
    try:
        return name, key, get_embedder_class(name).coerce_option(key, value)
    except ConfigurationError as exc:
        raise ConfigurationError(f"--set {item}: {exc}") from None
