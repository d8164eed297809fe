"""A Qdrant server or cluster instead of the embedded index, over Qdrant's HTTP API (stdlib only).

The embedded index stays the source: ``index --qdrant-url URL`` builds/updates it, then pushes
each index to the server as collection ``embcompare_<name>`` (recreated, so the server holds
exactly the local points, with the same ids and payloads). ``recommend --qdrant-url URL`` embeds
the query locally and searches the server. A server shards and replicates collections across
nodes (Qdrant's distributed mode): the path beyond one machine. Start one with
``docker run -p 6333:6333 qdrant/qdrant``. The API key, if any, comes from ``QDRANT_API_KEY``.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import numpy as np

from .index import (VECTOR_NAME, SearchError, _edge, index_root, open_shard, read_index_meta,
                    shard_path)
from .recommend import Recommender

TIMEOUT_S = 10.0
PUSH_BATCH = 256


class RemoteError(SearchError):
    """The Qdrant server did not answer or refused a request."""


def collection_name(index_name: str) -> str:
    return "embcompare_" + index_name.replace("__to__", "--to--")


def _request(url: str, method: str = "GET", body=None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    key = os.environ.get("QDRANT_API_KEY")
    if key:
        req.add_header("api-key", key)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        raise RemoteError(f"{url}: Qdrant answered {exc.code} ({detail})") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteError(f"{url}: the Qdrant server does not answer ({reason})") from exc


def server_info(url: str) -> dict:
    """The server's greeting (title, version); RemoteError when it does not answer."""
    info = _request(url.rstrip("/") + "/")
    if "version" not in info:
        raise RemoteError(f"{url}: does not look like a Qdrant server (answer: {str(info)[:80]})")
    return info


def push_index(emb_dir, name: str, url: str) -> int:
    """Copy one embedded index to the server (collection recreated). Returns the point count."""
    q = _edge()
    folder = index_root(emb_dir) / name
    meta = read_index_meta(folder)
    base = f"{url.rstrip('/')}/collections/{collection_name(name)}"
    try:
        _request(base, "DELETE")
    except RemoteError:
        pass  # not there yet
    _request(base, "PUT", {"vectors": {VECTOR_NAME: {"size": meta["dim"], "distance": "Cosine"}},
                           "metadata": {"embcompare": {k: meta.get(k) for k in
                                                       ("embedder", "version", "options")}}})
    shard = open_shard(shard_path(folder))
    n, offset = 0, None
    try:
        while True:
            records, offset = shard.scroll(q.ScrollRequest(offset=offset, limit=PUSH_BATCH,
                                                           with_payload=True, with_vector=True))
            if records:
                _request(base + "/points?wait=true", "PUT", {"points": [
                    {"id": r.id if isinstance(r.id, int) else str(r.id),
                     "vector": {VECTOR_NAME: list(r.vector[VECTOR_NAME])},
                     "payload": dict(r.payload or {})} for r in records]})
                n += len(records)
            if offset is None:
                return n
    finally:
        shard.close()


def push_indexes(emb_dir, url: str, names: list[str]) -> dict[str, int]:
    return {name: push_index(emb_dir, name, url) for name in names}


class RemoteRecommender(Recommender):
    """:class:`Recommender` searching a Qdrant server's copy of the indexes (see
    :func:`push_index`); configuration and alignment come from the local index folder."""

    def __init__(self, emb_dir, *, url: str, **kwargs):
        super().__init__(emb_dir, **kwargs)
        self.url = url.rstrip("/")
        server_info(self.url)

    def _search(self, name, vector, *, limit, label, exclude_hash, exclude_pair, with_vector):
        must_not = [{"key": "content_hash", "match": {"value": v}} for v in [exclude_hash] if v]
        must_not += [{"key": "pair_id", "match": {"value": v}} for v in [exclude_pair] if v]
        flt = {"must_not": must_not}
        if label:
            flt["must"] = [{"key": "label", "match": {"value": label}}]
        body = {"query": np.asarray(vector, dtype=np.float32).tolist(), "using": VECTOR_NAME,
                "limit": int(limit), "filter": flt, "with_payload": True,
                "with_vector": bool(with_vector)}
        res = _request(f"{self.url}/collections/{collection_name(name)}/points/query", "POST",
                       body)
        points = res.get("result", {}).get("points", [])
        return [(float(p["score"]), dict(p.get("payload") or {}),
                 np.asarray(p["vector"][VECTOR_NAME]) if with_vector else None)
                for p in points]


__all__ = ["RemoteError", "RemoteRecommender", "collection_name", "push_index", "push_indexes",
           "server_info"]
