"""Two spaces on the same items: checking the aligned arrays and building the alignment.

``X`` [shape=(n, dx)] and ``Y`` [shape=(n, dy)] hold the vectors of the *same* n items (row i of
both is the same piece) in two spaces. :func:`match_items` builds that alignment: by pair id
across modalities (an audio file and its MIDI twin), by item id within one modality.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._common import as_labels, as_matrix

__all__ = ["validate", "match_items"]


def validate(X: ArrayLike, Y: ArrayLike, labels: ArrayLike | None = None) -> tuple:
    """Check X [shape=(n, dx)], Y [shape=(n, dy)] (same n) and labels [shape=(n,)]."""
    X = as_matrix(X, name="X")
    Y = as_matrix(Y, name="Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must hold the same items: {X.shape[0]} vs {Y.shape[0]} rows")
    if labels is not None:
        labels = as_labels(labels, X.shape[0])
    return X, Y, labels


def match_items(keys_a: ArrayLike, keys_b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ia, ib) [shape=(m,)] of items whose non-empty key appears in both sets.

    Keys are pair ids (across modalities) or item ids (same modality). Empty keys never match; a
    key repeated within one set is matched once (its first occurrence). Order: sorted by key.
    """
    def first(keys):
        d = {}
        for i, k in enumerate(np.asarray(keys, dtype=str).tolist()):
            if k != "" and k not in d:
                d[k] = i
        return d
    da, db = first(keys_a), first(keys_b)
    common = sorted(set(da) & set(db))
    return (np.array([da[k] for k in common], dtype=np.int64),
            np.array([db[k] for k in common], dtype=np.int64))
