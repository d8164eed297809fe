"""Recommendations: the nearest collection items of any query file, in one embedding space or
across modalities.

>>> rec = Recommender("results/embeddings", embedder="audio-stats")     # doctest: +SKIP
>>> for r in rec.recommend("song.wav", k=5): print(r.rank, r.score, r.label, r.path)
"""
from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.exits import first_line

from .index import (CROSS_SEPARATOR, VECTOR_NAME, DamagedIndexError, IndexMismatchError,
                    IndexMissingError, SearchError, config_identity, index_folder, index_root,
                    load_export, open_shard, read_alignment, read_index_meta, rebuild_hint,
                    search_params, shard_path)

#: Candidates fetched from the index before mutual proximity re-ranks them.
MP_CANDIDATES = 200
#: Up to this many excluded points (own content, pair partner) are dropped from a longer result
#: list rather than filtered in the graph walk.
POST_FILTER_MAX = 64


class QueryError(SearchError):
    """The query file cannot be read or embedded."""


@dataclass
class Recommendation:
    """One recommended item: 1-based ``rank``, cosine ``score`` (or mutual proximity)."""

    rank: int
    score: float
    label: str
    path: str
    pair_id: str
    modality: str
    content_hash: str
    item_id: str
    duration: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class Recommender:
    """Nearest-neighbour recommendations from the index of one embedder.

    Parameters
    ----------
    emb_dir : path
        The embeddings folder (``--emb-dir``) holding ``export/`` and ``index/``.
    embedder : str
        The space to search (and to embed query files with).
    options : dict, optional
        Embedder options overriding those the index was built with (a local model folder, which
        the index does not record); together they must give the configuration it was built for.
    target_embedder : str, optional
        For cross-modal queries: the other space (default: the only indexed one of the other
        modality).
    hubness_reduction : {None, "mp"}
        ``"mp"`` re-ranks the top candidates by mutual proximity (Schnitzer et al. 2012).
    """

    def __init__(self, emb_dir: str | os.PathLike, *, embedder: str, options: dict | None = None,
                 target_embedder: str | None = None, hubness_reduction: str | None = None,
                 keep_open: bool = False):
        if hubness_reduction not in (None, "none", "mp"):
            raise ValueError(f"hubness_reduction must be None or 'mp', got {hubness_reduction!r}")
        self.emb_dir = Path(emb_dir)
        self.name = embedder
        self.options = dict(options or {})
        self.target_embedder = target_embedder
        self.hubness_reduction = None if hubness_reduction == "none" else hubness_reduction
        self.meta = self._meta(embedder)
        # keep_open: hold shards open between queries (opening one costs ~2 s at 100k items;
        # meanwhile no other process can update the index). Call close() when done.
        self.keep_open = keep_open
        self._open: dict[str, tuple[Path, object]] = {}
        self._embedder = None
        self._export = None

    def close(self) -> None:
        """Close the shards held open (``keep_open``)."""
        for _, shard in self._open.values():
            shard.close()
        self._open.clear()

    def _shard(self, name: str):
        """The shard of index ``name``: the held one while its link still points at it."""
        path = shard_path(index_folder(self.emb_dir, name))
        held = self._open.get(name)
        if held is not None and held[0] == path:
            return held[1]
        if held is not None:  # the HNSW graph was swapped in, or the index rebuilt
            held[1].close()
            del self._open[name]
        shard = open_shard(path)
        if self.keep_open:
            self._open[name] = (path, shard)
        return shard

    # -- the indexes ----------------------------------------------------------------------------
    def _meta(self, name: str) -> dict:
        folder = index_folder(self.emb_dir, name)
        meta = read_index_meta(folder)
        if meta is None or meta.get("state") != "complete":
            raise IndexMissingError(
                f"{folder}: no {'finished ' if meta else ''}index for {name!r}; build it with "
                f"'python main.py index --emb-dir {self.emb_dir} --embedders {name}'")
        return meta

    def _cross_name(self) -> str:
        if self.target_embedder:
            return f"{self.name}{CROSS_SEPARATOR}{self.target_embedder}"
        found = sorted(p.name for p in index_root(self.emb_dir).glob(
            f"{self.name}{CROSS_SEPARATOR}*") if (p / "index.json").exists())
        if not found:
            raise IndexMissingError(
                f"no cross-modal index from {self.name!r}: index an embedder of the other "
                f"modality with pairs in the collection ('python main.py index --emb-dir "
                f"{self.emb_dir}')")
        if len(found) > 1:
            raise SearchError(f"several cross-modal targets for {self.name!r} "
                              f"({', '.join(f.split(CROSS_SEPARATOR)[1] for f in found)}): "
                              f"choose one with --target-embedder")
        return found[0]

    def embedder(self):
        """The query embedder, checked against the configuration the index was built for
        (constructed without loading its model; :meth:`query_vector` loads it when needed).

        A layer space ``NAME@LAYER`` (``layer=all`` or a list) is queried with the embedder
        ``NAME`` at that one layer: the single-layer embedder whose cache options that space
        was built with."""
        if self._embedder is None:
            from embedders import EmbedderError, get_embedder
            from embedders.base import SPACE_SEPARATOR

            # the options the index was built with, those given overriding them (the weights
            # identity is not an option: it is checked below, from whatever weight file the
            # options resolve to; a local model folder is not recorded, so it must be given)
            options = {**{k: v for k, v in config_identity(self.meta)["options"].items()
                          if k != "weights_identity"}, **self.options}
            base, layered, _ = self.name.partition(SPACE_SEPARATOR)
            try:
                emb = get_embedder(base, **options)
                # resolves (not loads) the weights, so the identity compares like the index's
                mine = {"embedder": emb.name + (f"{SPACE_SEPARATOR}{emb.options.get('layer')}"
                                                if layered else ""),
                        "version": emb.version, "options": emb.cache_options()}
            except EmbedderError as exc:  # weights not found, an option the index's build lacks
                raise SearchError(f"cannot set up the query embedder {self.name!r}: "
                                  f"{str(exc).splitlines()[0]}") from exc
            built = config_identity(self.meta)
            if mine != built:
                raise IndexMismatchError(
                    f"the index of {self.name!r} was built for version {built['version']} with "
                    f"options {built['options']}, the query embedder is version {mine['version']} "
                    f"with {mine['options']}: re-run the embedding and 'main.py index', or query "
                    f"with the index's options")
            self._embedder = emb
        return self._embedder

    def export(self):
        if self._export is None:
            self._export = load_export(self.emb_dir, self.name)
        return self._export

    # -- queries --------------------------------------------------------------------------------
    def query_vector(self, path: str | os.PathLike) -> tuple[np.ndarray, str, str]:
        """The clip vector of a query file, its content hash and its pair id ("" outside the
        collection). A collection item is read from the export; any other file is embedded
        through the embeddings cache (and cached)."""
        from collection.store import EmbeddingStore, cache_key
        from common.fsutil import sha256_file

        path = Path(path)
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device would never end
                raise QueryError(f"{path}: not a regular file (a folder, FIFO or device)")
            content_hash = sha256_file(path)
        except OSError as exc:
            raise QueryError(f"{path}: cannot read the query file ({exc.strerror or exc})") from exc
        emb = self.embedder()  # refuses a query embedder configured unlike the index
        export = self.export()
        hits = np.flatnonzero(export.content_hashes == content_hash)
        if hits.size and config_identity(export.meta) == config_identity(self.meta):
            i = int(hits[0])
            return np.asarray(export.clip[i], dtype=np.float32), content_hash, str(
                export.pair_ids[i])
        if not emb.accepts(path):
            raise QueryError(f"{path}: {self.name} does not read {path.suffix or 'this'} files "
                             f"(it reads {', '.join(sorted(emb.extensions))})")
        store = EmbeddingStore(self.emb_dir)
        key = cache_key(emb.name, emb.version, emb.cache_options(), content_hash)
        cached = store.get(emb.name, key)
        if cached is not None:
            return np.asarray(cached.clip, dtype=np.float32), content_hash, ""
        try:
            out = emb.compute(path)
        except Exception as exc:  # an embedder's InputError or a decoder's error: one line
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            reason = reason.removeprefix(f"{path}: ")
            raise QueryError(f"{path}: cannot embed the query with {self.name} ({reason})") \
                from exc
        store.put(emb.name, key, out, meta={"embedder": emb.name, "version": emb.version,
                                            "options": emb.cache_options(),
                                            "content_hash": content_hash,
                                            "source_path": str(path)})
        return np.asarray(out.clip, dtype=np.float32), content_hash, ""

    def recommend(self, path: str | os.PathLike, k: int = 10, *, cross_modal: bool = False,
                  exclude_same_piece: bool = False, label: str | None = None
                  ) -> list[Recommendation]:
        """The k nearest items of the file at ``path``.

        The query's own content (same content hash) is never returned. ``cross_modal`` returns
        items of the other modality through the alignment fitted on the collection's pairs;
        ``exclude_same_piece`` drops the query's pair partner; ``label`` keeps one class.
        """
        vector, content_hash, pair_id = self.query_vector(path)
        return self.recommend_vector(vector, k, content_hash=content_hash, pair_id=pair_id,
                                     cross_modal=cross_modal,
                                     exclude_same_piece=exclude_same_piece, label=label)

    def recommend_vector(self, vector, k: int = 10, *, content_hash: str = "",
                         pair_id: str = "", cross_modal: bool = False,
                         exclude_same_piece: bool = False, label: str | None = None
                         ) -> list[Recommendation]:
        """As :meth:`recommend`, for a clip vector [shape=(dim,)] of this embedder's space."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        vector = np.asarray(vector, dtype=np.float64).ravel()
        name = self.name
        if cross_modal:
            name = self._cross_name()
            fit = read_alignment(index_folder(self.emb_dir, name))
            if vector.shape[0] != fit["source_mean"].shape[0]:
                raise IndexMismatchError(f"query vector has {vector.shape[0]} dimensions, the "
                                         f"alignment of {name!r} {fit['source_mean'].shape[0]}")
            vector = (vector - fit["source_mean"]) @ fit["source_basis"] @ fit["rotation"]
        meta = self._meta(name)
        if vector.shape[0] != meta["dim"]:
            raise IndexMismatchError(f"query vector has {vector.shape[0]} dimensions, the index "
                                     f"of {name!r} {meta['dim']}")
        # never ask the engine for more points than the index holds (a huge k overflowed it)
        k = min(k, max(1, int(meta.get("n_items") or 1)))
        limit = max(k, MP_CANDIDATES) if self.hubness_reduction == "mp" else k
        hits = self._search(name, vector, limit=limit, label=label,
                            exclude_hash=content_hash,
                            exclude_pair=pair_id if exclude_same_piece else "",
                            with_vector=self.hubness_reduction == "mp")
        scores = [s for s, _, _ in hits]
        if self.hubness_reduction == "mp" and hits:
            scores = self._mutual_proximity(vector, [v for _, _, v in hits])
            order = np.argsort(-np.asarray(scores), kind="stable")[:k]
            hits, scores = [hits[i] for i in order], [scores[i] for i in order]
        out = []
        for rank, ((_, p, _), s) in enumerate(zip(hits[:k], scores[:k]), start=1):
            out.append(Recommendation(rank=rank, score=round(s, 6), label=p.get("label", ""),
                                      path=p.get("path", ""), pair_id=p.get("pair_id", ""),
                                      modality=p.get("modality", ""),
                                      content_hash=p.get("content_hash", ""),
                                      item_id=p.get("item_id", ""), duration=p.get("duration")))
        return out

    def _search(self, name: str, vector: np.ndarray, *, limit: int, label: str | None,
                exclude_hash: str, exclude_pair: str, with_vector: bool
                ) -> list[tuple[float, dict, np.ndarray | None]]:
        """The ``limit`` nearest points of index ``name``: (cosine score, payload, vector)."""
        import qdrant_edge as q

        exclude = [(f, v) for f, v in (("content_hash", exclude_hash), ("pair_id", exclude_pair))
                   if v]
        must_not = [q.FieldCondition(f, match=q.MatchValue(v)) for f, v in exclude]
        must = [q.FieldCondition("label", match=q.MatchValue(label))] if label else None
        folder = index_folder(self.emb_dir, name)
        shard = self._shard(name)
        try:
            count = shard.count(q.CountRequest(exact=True))
            expected = self._meta(name).get("n_items")
            if count != expected:  # never answer from a shard that lost or gained points
                raise DamagedIndexError(f"{folder}: the index holds {count} points, index.json "
                                        f"says {expected}; rebuild it with 'python main.py "
                                        f"index --emb-dir {self.emb_dir}'")
            # The exclusions match a handful of points (the query's own content, its pair
            # partner): counted through their keyword indexes, asked for that many more and
            # dropped here. A graph walk checking a must_not filter at every visited point
            # cost ~3 ms more at 100k items (README, Benchmarks); the items are the same.
            n_excluded = shard.count(q.CountRequest(exact=True, filter=q.Filter(
                must=must, should=must_not))) if must_not else 0
            post = n_excluded <= POST_FILTER_MAX
            hits = shard.query(q.QueryRequest(
                limit=limit + n_excluded if post else limit,
                query=q.Query.Nearest(vector.astype(np.float32).tolist(), using=VECTOR_NAME),
                filter=q.Filter(must=must, must_not=None if post else must_not)
                if must or not post else None,
                with_payload=True, with_vector=with_vector, params=search_params()))
            if post and exclude:
                hits = [h for h in hits if not any((h.payload or {}).get(f) == v
                                                   for f, v in exclude)][:limit]
        except SearchError:
            raise
        except Exception as exc:  # the engine met a page it cannot read: plain Exception
            raise DamagedIndexError(f"{folder}: the index is damaged ({first_line(exc)}); "
                                    f"{rebuild_hint(folder)}") from exc
        finally:
            if not self.keep_open:
                shard.close()
        return [(float(h.score), dict(h.payload or {}),
                 np.asarray(h.vector[VECTOR_NAME]) if with_vector else None) for h in hits]

    def _mutual_proximity(self, vector, vectors) -> list[float]:
        """Gaussian mutual proximity of the query to each candidate, each distance distribution
        estimated against the candidate set (the query's neighbourhood, not the collection)."""
        from analysis.recommendation import mutual_proximity_gaussian

        V = np.asarray(vectors, dtype=np.float64)
        X = np.vstack([vector[None, :], V])
        S = mutual_proximity_gaussian(X)
        return [float(s) for s in S[0, 1:]]
