"""The vectors analysis consumes: one :class:`EmbeddingSet` per embedder.

An embedding set is read from the per-run export (``<emb-dir>/export/<name>/``, readable with numpy
alone; see :mod:`collection.export`) or built in memory. Every analysis function takes plain
arrays; this class only keeps the arrays of one embedder together and checks they agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EmbeddingSet:
    """Clip-level vectors of one embedder over a collection.

    Attributes
    ----------
    name : str
        Embedder name (e.g. ``"openl3"``).
    modality : str
        ``"audio"`` or ``"symbolic"``.
    ids : np.ndarray [shape=(n,), dtype=str]
        Item ids (unique; the dataset-relative path).
    labels : np.ndarray [shape=(n,), dtype=str]
        Class label of each item.
    pair_ids : np.ndarray [shape=(n,), dtype=str]
        Shared id of an audio/MIDI pair (same stem, same folder), ``""`` for unpaired items.
    vectors : np.ndarray [shape=(n, dim), dtype=float32]
        Clip vectors.
    paths : np.ndarray [shape=(n,), dtype=str]
        File paths as given to the embedder.
    options : dict
        The embedder's options, for the record.
    """

    name: str
    modality: str
    ids: np.ndarray
    labels: np.ndarray
    pair_ids: np.ndarray
    vectors: np.ndarray
    paths: np.ndarray = None
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=str)
        self.labels = np.asarray(self.labels, dtype=str)
        self.pair_ids = np.asarray(self.pair_ids, dtype=str)
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        self.paths = self.ids.copy() if self.paths is None else np.asarray(self.paths, dtype=str)
        n = len(self.ids)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != n:
            raise ValueError(f"{self.name}: vectors shape {self.vectors.shape} does not match "
                             f"{n} ids")
        for attr in ("labels", "pair_ids", "paths"):
            if len(getattr(self, attr)) != n:
                raise ValueError(f"{self.name}: {attr} has {len(getattr(self, attr))} entries, "
                                 f"expected {n}")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def classes(self) -> list[str]:
        """Sorted class labels present."""
        return sorted(set(self.labels.tolist()))
