"""The registry: one :class:`Metric` record per reported metric, in report order.

Everything that lists metrics -- the schema's name tuples, the CSV columns, the report's tables
and help texts, the README's metrics table, ``parameters`` of metrics.json -- reads this list,
so a metric's name is typed once, in its :func:`register` call.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping

__all__ = ["Metric", "register", "metrics", "get", "names", "KINDS", "SECTIONS",
           "context_default", "markdown_table"]

KINDS = ("embedder", "pair", "set")
#: where a metric is shown: the report's tables and the CSV column groups, in this order
SECTIONS = ("separability", "recommendation", "frechet", "between", "reference")

_REGISTRY: dict[str, "Metric"] = {}


@dataclass(frozen=True)
class Metric:
    """One reported metric.

    Attributes
    ----------
    name : str
        The key in metrics.json (``embedders.<name>.<metric>`` or ``pairs.<key>.<metric>``).
    kind : {"embedder", "pair", "set"}
        What it measures: one space (:class:`EmbedderContext`), two spaces on the same items
        (:class:`PairContext`) or a set against a reference set (:class:`SetContext`).
    fn : callable
        ``fn(ctx) -> Measured``; everything it reads comes from the context.
    family : str
        The module that defines it (``analysis.metrics.<family>``).
    read : str
        One sentence (or a few) on how to read it: the report's and README's help text.
    interval : str or None
        How its 95% interval is obtained; None = no interval (``ci95`` is null; a p-value's
        entry has no ``ci95`` at all).
    cost : str
        Big-O of computing it in n (items) and dim (dimension), shared work included.
    higher_is_better : bool or None
        None where neither direction is better (p-values, skewness, distances between classes
        that are not a quality).
    params : mapping
        Fixed parameters, recorded in every entry's ``params``.
    context_params : mapping
        Entry param name -> context attribute recorded from the run (``{"seed": "seed"}``).
    chance : float, str or None
        The chance level: a number, or ``"params.<key>"`` where each entry records its own.
    section : str
        Report table / CSV group (:data:`SECTIONS`).
    p_value : bool
        A test's p-value: reported without an interval, listed in ``P_VALUES``.
    when : tuple or None
        ``(context attribute, value)``: computed only in runs where it holds (the ``_mp``
        variants need ``hubness_reduction="mp"``).
    compared : bool
        Also compared between every two embedders on their shared items, with a paired test
        (``metrics.json["comparisons"]``, :mod:`analysis.comparisons`).
    """
    name: str
    kind: str
    fn: Callable
    family: str
    read: str
    interval: str | None
    cost: str
    higher_is_better: bool | None
    params: Mapping = field(default_factory=dict)
    context_params: Mapping = field(default_factory=dict)
    chance: float | str | None = None
    section: str = "separability"
    p_value: bool = False
    when: tuple | None = None
    compared: bool = False

    @property
    def with_ci(self) -> bool:
        """Whether its entries carry ``ci95`` (None when it has no interval); p-values don't."""
        return not self.p_value

    @property
    def cosine_based(self) -> bool:
        """Whether the entry records ``params.centered`` (every cosine-based metric does)."""
        return "centered" in self.params

    def fixed_params(self, ctx) -> dict:
        """The parameters recorded in the entry before the metric adds its own."""
        p = dict(self.params)
        p.update({k: getattr(ctx, attr) for k, attr in self.context_params.items()})
        return p

    def applies(self, ctx) -> bool:
        return self.when is None or getattr(ctx, self.when[0], None) == self.when[1]

    def chance_level(self, entry: dict | None = None):
        """The chance level: the constant, or read from ``entry['params']``."""
        if isinstance(self.chance, str) and self.chance.startswith("params."):
            return ((entry or {}).get("params") or {}).get(self.chance[len("params."):])
        return self.chance


def register(name: str, *, kind: str, fn: Callable, read: str, interval: str | None, cost: str,
             higher_is_better: bool | None, family: str | None = None, **extra) -> Metric:
    """Add one metric to the registry (at the end of its kind's order); returns the record.

    Raises ValueError for a second metric of the same name, an unknown kind or section, or a
    missing help sentence: the registry is the one place a name is written down.
    """
    if name in _REGISTRY:
        raise ValueError(f"metric {name!r} is registered twice")
    if kind not in KINDS:
        raise ValueError(f"metric {name!r}: kind must be one of {KINDS}, got {kind!r}")
    if extra.get("section", "separability") not in SECTIONS:
        raise ValueError(f"metric {name!r}: unknown section {extra['section']!r}")
    if not read or not cost:
        raise ValueError(f"metric {name!r}: say how to read it and what it costs")
    if family is None:
        module = getattr(fn, "__module__", None) or getattr(getattr(fn, "func", None),
                                                            "__module__", "")
        family = module.rsplit(".", 1)[-1]
    m = Metric(name=name, kind=kind, fn=fn, family=family, read=read, interval=interval,
               cost=cost, higher_is_better=higher_is_better, **extra)
    _REGISTRY[name] = m
    return m


def metrics(kind: str | None = None, *, section: str | None = None) -> list[Metric]:
    """The registered metrics of one kind and/or section, in registration order."""
    return [m for m in _REGISTRY.values()
            if (kind is None or m.kind == kind) and (section is None or m.section == section)]


def names(kind: str | None = None, *, section: str | None = None, when=False) -> tuple:
    """Names of :func:`metrics`; ``when=False`` leaves out the conditional ones."""
    return tuple(m.name for m in metrics(kind, section=section) if when or m.when is None)


def get(name: str) -> Metric:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no metric {name!r} is registered") from None


def context_default(cls, argument: str):
    """The default of one keyword of a context's constructor (what ``parameters`` records)."""
    return inspect.signature(cls.__init__).parameters[argument].default


def markdown_table() -> str:
    """The metrics table of docs/analysis.md, generated from the registry (``python -m analysis.metrics``)."""
    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")
    better = {True: "higher", False: "lower", None: "—"}
    lines = ["| metric | kind | interval | chance | better | cost | how to read |",
             "|---|---|---|---|---|---|---|"]
    for m in _REGISTRY.values():
        chance = "—" if m.chance is None else (f"`{m.chance}`" if isinstance(m.chance, str)
                                               else f"{m.chance:g}")
        name = f"`{m.name}`" + (f" (with `{m.when[0]}={m.when[1]}`)" if m.when else "")
        lines.append("| " + " | ".join(cell(c) for c in (
            name, m.kind, "p-value, none" if m.p_value else (m.interval or "none"), chance,
            better[m.higher_is_better], m.cost,
            m.read + (" Compared between every two embedders on their shared items (paired "
                      "test, Holm-corrected: metrics.json `comparisons`)." if m.compared
                      else ""))) + " |")
    return "\n".join(lines)
