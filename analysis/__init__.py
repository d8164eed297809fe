"""Everything that consumes vectors: metrics as pure functions on arrays, maps, tables, report.

>>> from analysis import evaluate_embedder, evaluate_pair, run_analysis   # doctest: +SKIP

``evaluate_embedder(X, labels)`` and ``evaluate_pair(X, Y, labels)`` take plain arrays and return
every metric in an ordered dict; ``run_analysis(sets, out, ...)`` writes the whole comparison.
"""
from .compare import evaluate_embedder, evaluate_pair, run_analysis

__all__ = ["evaluate_embedder", "evaluate_pair", "run_analysis"]
