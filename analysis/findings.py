"""The findings paragraph that opens the report, generated from ``metrics.json`` alone.

It states only what the numbers support: differences between embedders whose paired test rejects
at 5 % after Holm's correction across every comparison made (with values, difference, interval
and sample size), ceiling effects (every embedder at or above 0.95 on an accuracy metric: the
collection is too easy to rank them), how many items each embedder was scored on, and, when
nothing differs significantly, that. Deterministic: same dict, same text.
"""
from __future__ import annotations

from ._common import finite_or_none
from .paired import holm

__all__ = ["findings", "findings_paragraph", "side_by_side_rows", "CEILING"]

#: accuracy at or above which every embedder is "at the ceiling"
CEILING = 0.95


def _num(x: float) -> str:
    return f"{x:.3f}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _accuracy_metrics(embedders: dict) -> list[str]:
    """Accuracy-type metric names present in any embedder entry, in first-seen order."""
    names: list[str] = []
    for entry in embedders.values():
        for key, e in entry.items():
            if "accuracy" in key and isinstance(e, dict) and "value" in e and key not in names:
                names.append(key)
    return names


def _value(entry: dict, metric: str) -> float | None:
    e = entry.get(metric)
    return finite_or_none(e.get("value")) if isinstance(e, dict) else None


def _sample_sentence(embedders: dict) -> str:
    sizes = {name: e.get("n_items") for name, e in embedders.items()}
    known = {k: v for k, v in sizes.items() if isinstance(v, int)}
    if not known:
        return ""
    if len(set(known.values())) == 1 and len(known) == len(sizes):
        n = next(iter(known.values()))
        if len(sizes) == 1:
            return f"{next(iter(sizes))} was scored on {n} items."
        return f"Each of the {len(sizes)} embedders was scored on {n} items."
    parts = [f"{k} on {v}" for k, v in known.items()]
    return ("The embedders were scored on different items (" + ", ".join(parts) + "); the "
            "paired comparisons below use only the items each two of them share.")


def _ceiling_sentence(embedders: dict, ceiling: float) -> str:
    at_ceiling, lowest = [], []
    for m in _accuracy_metrics(embedders):
        vals = [v for v in (_value(e, m) for e in embedders.values()) if v is not None]
        if vals and min(vals) >= ceiling:
            at_ceiling.append(m)
            lowest.append(min(vals))
    if not at_ceiling:
        return ""
    names = ", ".join(at_ceiling)
    several = len(at_ceiling) > 1
    these = "these metrics" if several else "this metric"
    if len(embedders) == 1:
        return (f"{next(iter(embedders))} scores at least {ceiling:.2f} on {names} (lowest "
                f"{_num(min(lowest))}): at the ceiling, {these} cannot show how it would rank "
                "against other embedders.")
    return (f"Every embedder scores at least {ceiling:.2f} on {names} (lowest "
            f"{_num(min(lowest))}): the collection is too easy to rank them on {these}.")


def _difference_sentence(c: dict, p_adj: float) -> str:
    d = float(c["difference"])
    hi_name, lo_name = (c["a"], c["b"]) if d >= 0 else (c["b"], c["a"])
    hi_val, lo_val = (c["value_a"], c["value_b"]) if d >= 0 else (c["value_b"], c["value_a"])
    lo, hi = (c["ci95"] if d >= 0 else [-c["ci95"][1], -c["ci95"][0]]) if c.get("ci95") \
        else (None, None)
    ci = f"95 % CI {_num(lo)} to {_num(hi)}; " if lo is not None else ""
    units = c.get("n_units")
    size = f"{c['n_items']} shared items" + (
        f", {units} independent pieces" if units is not None and units != c["n_items"] else "")
    test = str(c.get("test") or "paired test").split(" (")[0]
    return (f"On {c['metric']}, {hi_name} scores higher than {lo_name}: {_num(hi_val)} vs "
            f"{_num(lo_val)}, a difference of {_num(abs(d))} ({ci}{test}, Holm-adjusted "
            f"{_p(p_adj)}; {size}).")


def _comparison_sentences(comparisons: list, alpha: float) -> list[str]:
    testable = [c for c in comparisons if c.get("metric") and finite_or_none(c.get("p_value"))
                is not None and finite_or_none(c.get("difference")) is not None]
    out = []
    for c in comparisons:
        if not c.get("metric"):
            out.append(f"{c.get('a')} and {c.get('b')} were not compared: "
                       f"{c.get('note') or 'no shared items'}.")
    if not testable:
        out.append("No paired comparison between embedders could be tested.")
        return out
    # the stored p_holm when every testable entry has one, else Holm over the testable ones
    stored = [finite_or_none(c.get("p_holm")) for c in testable]
    adjusted = stored if all(p is not None for p in stored) else holm(
        [c["p_value"] for c in testable])
    significant = [(c, p) for c, p in zip(testable, adjusted) if p < alpha]
    out += [_difference_sentence(c, p) for c, p in significant]
    m = len(testable)
    if not significant:
        out.append(f"No difference between embedders is significant at {alpha:.0%} after Holm "
                   f"correction across the {m} comparison{'s' if m > 1 else ''} made "
                   f"(smallest adjusted {_p(min(adjusted))}).")
    else:
        out.append(f"{len(significant)} of {m} comparisons differ at {alpha:.0%} after Holm "
                   "correction; the others show no significant difference.")
    untested = len([c for c in comparisons if c.get("metric")]) - m
    if untested:
        out.append(f"{untested} comparison{'s' if untested > 1 else ''} had no defined value "
                   "and could not be tested.")
    return out


def findings(metrics: dict, *, alpha: float = 0.05, ceiling: float = CEILING) -> list[str]:
    """Sentences of the findings paragraph, from ``metrics["embedders"]`` (name -> entry with
    ``n_items`` and metric entries ``{"value", ...}``) and ``metrics["comparisons"]`` (entries
    of :func:`analysis.comparisons.compare_embedders`: ``metric``, ``a``, ``b``, ``value_a``,
    ``value_b``, ``difference``, ``ci95``, ``p_value``, ``p_holm``, ``test``, ``n_items``,
    ``n_units``).

    Only differences with Holm-adjusted p < ``alpha`` are stated (``p_holm`` as stored, or Holm
    over the testable comparisons when it is missing); undefined values are skipped.
    """
    embedders = metrics.get("embedders") or {}
    comparisons = metrics.get("comparisons") or []
    if not embedders:
        return ["No embedder was analysed."]
    out = [s for s in (_sample_sentence(embedders),) if s]
    if len(embedders) == 1:
        out.append(f"Only one embedder ({next(iter(embedders))}): nothing to compare.")
    else:
        out += _comparison_sentences(comparisons, alpha)
    ceiling_text = _ceiling_sentence(embedders, ceiling)
    if ceiling_text:
        out.append(ceiling_text)
    return out


def findings_paragraph(metrics: dict, **kwargs) -> str:
    """:func:`findings` joined into one paragraph."""
    return " ".join(findings(metrics, **kwargs))


def side_by_side_rows(metrics: dict) -> list[dict]:
    """Rows of a side-by-side table that keeps the two item sets apart: one row per comparison
    entry with a metric, ``{"metric", "a", "b", "a_all", "n_a_all", "b_all", "n_b_all",
    "a_shared", "b_shared", "n_shared", "difference", "ci95", "p_holm", "test", "n_units"}`` --
    ``*_all`` from ``metrics["embedders"]`` (each embedder's own items), ``*_shared`` from the
    comparison (the items both were scored on). Undefined values are None."""
    embedders = metrics.get("embedders") or {}
    rows = []
    for c in metrics.get("comparisons") or []:
        if not c.get("metric"):
            continue
        ea, eb = embedders.get(c["a"], {}), embedders.get(c["b"], {})
        rows.append({"metric": c["metric"], "a": c["a"], "b": c["b"],
                     "a_all": _value(ea, c["metric"]), "n_a_all": ea.get("n_items"),
                     "b_all": _value(eb, c["metric"]), "n_b_all": eb.get("n_items"),
                     "a_shared": finite_or_none(c.get("value_a")),
                     "b_shared": finite_or_none(c.get("value_b")), "n_shared": c.get("n_items"),
                     "difference": finite_or_none(c.get("difference")), "ci95": c.get("ci95"),
                     "p_holm": finite_or_none(c.get("p_holm")), "test": c.get("test"),
                     "n_units": c.get("n_units")})
    return rows
