"""Comparing two embedding spaces on the same items: the names of the five families, kept
importable here (issue 21 split them into kernel modules, one per family).

``X`` [shape=(n, dx)] and ``Y`` [shape=(n, dy)] hold the vectors of the *same* n items (row i of
both is the same piece) in two spaces (:mod:`analysis.aligned`: :func:`validate`,
:func:`match_items`). The families: :mod:`analysis.cka`, :mod:`analysis.rsa`,
:mod:`analysis.neighbourhood`, :mod:`analysis.centroids`, :mod:`analysis.retrieval`; their
registered metrics are in :mod:`analysis.metrics`.
"""
from __future__ import annotations

from ._common import cosine_distance_matrix  # noqa: F401  (exported here before)
from .aligned import match_items, validate  # noqa: F401
from .centroids import *  # noqa: F401,F403
from .cka import *  # noqa: F401,F403
from .neighbourhood import *  # noqa: F401,F403
from .retrieval import *  # noqa: F401,F403
from .rsa import *  # noqa: F401,F403
from .retrieval import fit_pca_procrustes  # noqa: F401

__all__ = ["validate", "match_items", "linear_cka", "cka_debiased", "linear_cka_resampler",
           "cka_permutation_test", "rsa", "rsa_from_distances", "cosine_distance_matrix",
           "knn_jaccard_per_item", "knn_jaccard", "knn_jaccard_chance",
           "centroid_matrix_correlation", "centroid_matrix_correlation_resampler",
           "split_pairs", "stratified_split", "procrustes_retrieval",
           "repeated_procrustes_retrieval", "retrieval_scores", "retrieval_chance",
           "fit_pca_procrustes"]
