"""The earlier home of the analysis (before the metric registry, issue 21), kept importable:
every name it exported now lives in :mod:`analysis.metrics` (definitions, contexts, entries),
:mod:`analysis.evaluate` (per embedder / pair) or :mod:`analysis.run` (the run)."""
from __future__ import annotations

from .evaluate import evaluate_embedder, evaluate_pair, evaluate_set  # noqa: F401
from .metrics.cka import cka_debiased, cka_linear, cka_permutation_p  # noqa: F401
from .metrics.centroids import centroid_matrix_correlation  # noqa: F401
from .metrics.context import (DEFAULT_N_BOOTSTRAP, DEFAULT_N_PERMUTATIONS,  # noqa: F401
                              DEFAULT_RETRIEVAL_SPLITS, EmbedderContext, Measured,
                              PairContext)
from .metrics.neighbourhood import knn_jaccard  # noqa: F401
from .metrics.recommendation import recommend_metric  # noqa: F401
from .metrics.retrieval import retrieval  # noqa: F401
from .metrics.rsa import rsa_mantel_p, rsa_spearman  # noqa: F401
from .metrics.separability import (adjusted_rand, knn_accuracy,  # noqa: F401
                                   knn_balanced_accuracy, probe_accuracy,
                                   probe_balanced_accuracy, probe_macro_f1, silhouette_cosine,
                                   v_measure, within_total_variance_ratio)
from .run import run_analysis, software_versions  # noqa: F401

__all__ = ["evaluate_embedder", "evaluate_pair", "evaluate_set", "run_analysis",
           "EmbedderContext", "PairContext", "Measured", "software_versions",
           "DEFAULT_N_BOOTSTRAP", "DEFAULT_N_PERMUTATIONS", "DEFAULT_RETRIEVAL_SPLITS"]
