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

from common.registry import Registry
from ..data import TrainingUsageError
from .base import ClassifierMethod, TrainingMethod

__all__ = ["ClassifierMethod", "TrainingMethod", "available_methods", "get_method", "register"]

_REGISTRY: Registry[type[TrainingMethod]] = Registry(__name__, __path__, kind="training method")


def register(cls: type[TrainingMethod]) -> type[TrainingMethod]:
    """Class decorator adding a method to the registry under ``cls.name``.

    Raises
    ------
    TypeError
        No name, or a name another class already holds.
    """
    return _REGISTRY.add(cls)


def available_methods() -> dict[str, type[TrainingMethod]]:
    """Every registered method, by name (sorted)."""
    return _REGISTRY.classes()


def get_method(name: str) -> TrainingMethod:
    """The method registered under ``name``; :class:`TrainingUsageError` if there is none."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise TrainingUsageError(f"--method must be one of {', '.join(available_methods())}, "
                                 f"got {name!r}")
    return cls()
