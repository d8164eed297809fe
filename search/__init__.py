"""Similar-item search over the embedding store: vector indexes, recommendations, a web page.

``index``: one Qdrant Edge shard per embedder (and per cross-modal pair of embedders), built from
the export under ``<emb-dir>/index/``, updated incrementally, resumable, rebuilt when damaged;
``recommend``: :class:`Recommender`, the nearest items of a query file; ``serve``: a local web
page over the same API; ``cli``: the ``index``, ``recommend`` and ``serve`` subcommands.

>>> from search import Recommender                                       # doctest: +SKIP
>>> Recommender("results/embeddings", embedder="audio-stats").recommend("song.wav", k=10)
"""
from .index import (DamagedIndexError, IndexMismatchError, IndexMissingError, IndexBusyError,
                    SearchError, build_index, build_indexes, index_root)
from .recommend import Recommendation, Recommender, QueryError

__all__ = ["DamagedIndexError", "IndexBusyError", "IndexMismatchError", "IndexMissingError",
           "QueryError", "Recommendation", "Recommender", "SearchError", "build_index",
           "build_indexes", "index_root"]
