"""Classes found by name: each registers itself with a decorator in its own module, and the
modules of its package are imported (discovered) on the first lookup, so nothing is listed by
hand. The embedders and the training methods are two such registries.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, Iterable, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """The classes of one package, by their ``name`` attribute.

    Parameters
    ----------
    package : str
        The package whose modules are discovered (``__name__`` of its ``__init__``).
    path : iterable of str
        Its ``__path__``.
    kind : str
        What a class is, for messages (``"embedder"``).
    skip : tuple of str
        Modules that register nothing (the contract); private modules and subpackages are
        never imported either.
    """

    def __init__(self, package: str, path: Iterable[str], *, kind: str,
                 skip: tuple[str, ...] = ("base",)):
        self.package, self.path, self.kind, self.skip = package, list(path), kind, skip
        self._classes: dict[str, T] = {}
        self._discovered = False

    def add(self, cls: T) -> T:
        """Register ``cls`` under ``cls.name`` (a module imported twice may register it again).

        Raises
        ------
        TypeError
            No name, or a name another class already holds.
        """
        if not getattr(cls, "name", ""):
            raise TypeError(f"{cls.__name__} needs a name")
        other = self._classes.get(cls.name)
        if other is not None and other.__qualname__ != cls.__qualname__:
            raise TypeError(f"{self.kind} name {cls.name!r} already used by {other.__qualname__}")
        self._classes[cls.name] = cls
        return cls

    def _discover(self) -> None:
        if self._discovered:
            return
        for info in pkgutil.iter_modules(self.path):
            if not (info.ispkg or info.name.startswith("_") or info.name in self.skip):
                importlib.import_module(f"{self.package}.{info.name}")
        self._discovered = True

    def classes(self) -> dict[str, T]:
        """Every registered class, by name (sorted)."""
        self._discover()
        return dict(sorted(self._classes.items()))

    def get(self, name: str) -> T | None:
        """The class registered under ``name``, or None."""
        return self.classes().get(name)
