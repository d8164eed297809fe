"""Everything that consumes vectors: metrics as pure functions on arrays, maps, tables, report.

>>> from analysis import evaluate_embedder, evaluate_pair, run_analysis   # doctest: +SKIP

``evaluate_embedder(X, labels)`` and ``evaluate_pair(X, Y, labels)`` take plain arrays and return
every registered metric (:mod:`analysis.metrics`) in an ordered dict; ``run_analysis(sets, out,
...)`` writes the whole comparison; ``frechet_distance(X, Y)`` is the Fréchet distance of two
sets of vectors.
"""
from .evaluate import evaluate_embedder, evaluate_pair, evaluate_set
from .frechet import frechet_distance, frechet_distance_inf
from .run import run_analysis

__all__ = ["evaluate_embedder", "evaluate_pair", "evaluate_set", "frechet_distance",
           "frechet_distance_inf", "run_analysis"]
