"""Names of the reported metrics and one sentence each on how to read them -- all derived from
the registry (:mod:`analysis.metrics`), kept here under their earlier names."""
from __future__ import annotations

from . import metrics as _registry
from .io import RENAMED_KEYS  # noqa: F401  (old -> new metrics.json keys)
from .metrics.recommendation import MP_SUFFIX

__all__ = ["EMBEDDER_METRICS", "PAIR_METRICS", "RECOMMEND_METRICS", "FRECHET_METRICS",
           "SET_METRICS", "P_VALUES", "METRIC_HELP", "MP_SUFFIX", "recommend_metric_names",
           "embedder_metric_names", "RENAMED_KEYS"]

#: The separability metrics of one space (summary table, bar chart).
EMBEDDER_METRICS = _registry.names("embedder", section="separability")
#: Between two spaces on the same items.
PAIR_METRICS = _registry.names("pair")
#: Recommendation quality (leave-one-out top-k as recommendations; analysis/recommendation.py).
#: Not in the separability bars: hubness skewness is unbounded.
RECOMMEND_METRICS = _registry.names("embedder", section="recommendation")
#: Fréchet distances between the classes of one space (analysis/frechet.py).
FRECHET_METRICS = _registry.names("embedder", section="frechet")
#: A set against a reference set (not part of run_analysis; analysis.evaluate_set).
SET_METRICS = _registry.names("set")
#: p-values: reported without an interval
P_VALUES = tuple(m.name for m in _registry.metrics() if m.p_value)
#: name -> how to read it, for every registered metric
METRIC_HELP = {m.name: m.read for m in _registry.metrics()}


def recommend_metric_names(entries) -> list:
    """The recommendation metrics present in an embedder entry, or in any entry of a dict of
    them: the plain ones, then their mutual-proximity twins when computed."""
    entries = [entries] if "n_items" in entries else list(entries.values())
    mp = any(f"{m}{MP_SUFFIX}" in e for e in entries for m in RECOMMEND_METRICS)
    names = list(RECOMMEND_METRICS)
    if mp:
        names = [n for m in RECOMMEND_METRICS for n in (m, f"{m}{MP_SUFFIX}")]
    return names


def embedder_metric_names(entries) -> list:
    """Every per-embedder metric present (separability, recommendation, Fréchet), in order."""
    return list(EMBEDDER_METRICS) + recommend_metric_names(entries) + list(FRECHET_METRICS)
