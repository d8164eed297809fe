"""The collection and its embedding store: folder tree → manifest → embedder → store → export.

``scan``: the folder tree as a manifest of items (labels, pairs, content hashes, skip reasons);
``store``: the content-addressed cache of per-file embeddings; ``export``: the per-run export
folder (every item's clip vectors and frames, numpy-readable, swapped in atomically);
``pipeline``: items through an embedder into the store and the export, resumably, in memory that
does not grow with the collection; ``manifest``: the CSV of what happened to every file;
``embedding_set``: the clip vectors of one embedder, the type the analysis consumes;
``demo_corpus``: the synthetic offline corpus.

>>> from collection import embed_dataset, EmbeddingSet       # doctest: +SKIP
"""
from .embedding_set import EmbeddingSet
from .pipeline import DatasetEmbeddings, EmbedderRun, embed_dataset
from .scan import Item, ScanResult, scan_dataset
from .export import Export, ExportError, export_dir, load_export, read_export
from .store import EmbeddingStore, StoreError

__all__ = ["DatasetEmbeddings", "EmbedderRun", "EmbeddingSet", "EmbeddingStore", "Export",
           "ExportError", "Item", "ScanResult", "StoreError", "embed_dataset", "export_dir",
           "load_export", "read_export", "scan_dataset"]
