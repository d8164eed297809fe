"""Training methods, found by name through a registry (as the embedders are).

>>> from training.methods import get_method
>>> get_method("simsiam").supervised
False

Adding a method is one new module in this package holding a :class:`TrainingMethod` subclass
decorated with :func:`register` (and its network in ``embedders/lib/trained_nets.py``, so the
``trained`` embedder can rebuild it); modules are discovered on first lookup, nothing is listed
by hand. Importing a method module stays cheap: torch is imported inside its functions.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..data import TrainingUsageError
from .base import ClassifierMethod, TrainingMethod

__all__ = ["ClassifierMethod", "TrainingMethod", "available_methods", "get_method", "register"]

_REGISTRY: dict[str, type[TrainingMethod]] = {}
_discovered = False


def register(cls: type[TrainingMethod]) -> type[TrainingMethod]:
    """Class decorator adding a method to the registry under ``cls.name``.

    Raises
    ------
    TypeError
        No name, or a name another class already holds.
    """
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a name")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"training method name {cls.name!r} already used by {other.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    for info in pkgutil.iter_modules(__path__):
        if not (info.ispkg or info.name.startswith("_") or info.name == "base"):
            importlib.import_module(f"{__name__}.{info.name}")
    _discovered = True


def available_methods() -> dict[str, type[TrainingMethod]]:
    """Every registered method, by name (sorted)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> TrainingMethod:
    """The method registered under ``name``; :class:`TrainingUsageError` if there is none."""
    registry = available_methods()
    if name not in registry:
        raise TrainingUsageError(f"--method must be one of {', '.join(registry)}, got {name!r}")
    return registry[name]()
