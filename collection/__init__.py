"""The collection and its embedding store: folder tree → manifest → embedder → store → export.

``scan``: the folder tree as a manifest of items (labels, pairs, content hashes, skip reasons);
``store``: the content-addressed cache of per-file embeddings; ``pipeline``: items through an
embedder into the store, resumably; ``embedding_set``: the clip vectors of one embedder, the type
the analysis consumes; ``demo_corpus``: the synthetic offline corpus.

>>> from collection import embed_dataset, EmbeddingSet       # doctest: +SKIP
"""
from .embedding_set import EmbeddingSet
from .pipeline import DatasetEmbeddings, EmbedderRun, embed_dataset
from .scan import Item, ScanResult, scan_dataset
from .store import EmbeddingStore, StoreError, load_export

__all__ = ["DatasetEmbeddings", "EmbedderRun", "EmbeddingSet", "EmbeddingStore", "Item",
           "ScanResult", "StoreError", "embed_dataset", "load_export", "scan_dataset"]
