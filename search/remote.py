"""A Qdrant server or cluster instead of the embedded index, over Qdrant's HTTP API (stdlib only).

The embedded index stays the source: ``index --qdrant-url URL`` builds/updates it, then pushes
each index to the server as collection ``embcompare_<name>`` (recreated, so the server holds
exactly the local points, with the same ids and payloads; skipped when the server's copy is
already that of the local index's generation). ``recommend --qdrant-url URL`` embeds the query
locally and searches the server, after checking that the server's copy is the local index's. A
server shards and replicates collections across nodes (Qdrant's distributed mode): the path
beyond one machine. Start one with ``docker run -p 6333:6333 qdrant/qdrant``. The API key, if
any, comes from ``QDRANT_API_KEY`` (sent as Qdrant's ``api-key`` header).

Requests used (Qdrant's REST API, https://api.qdrant.tech; checked against the OpenAPI models of
``qdrant_client.http.models`` by ``tests/test_remote.py``, not against a live server):
``GET /`` (greeting: title, version), ``GET /collections/{c}`` (collection info, its
``config.metadata``), ``DELETE /collections/{c}``, ``PUT /collections/{c}`` (CreateCollection),
``PUT /collections/{c}/points?wait=true`` (PointsList), ``POST /collections/{c}/points/count``
(CountRequest) and ``POST /collections/{c}/points/query`` (QueryRequest, Qdrant >= 1.10).
Collection metadata needs Qdrant >= 1.16; an older server ignores the field (it does not reject
unknown fields), and then the copy is checked by its exact point count alone.
"""
from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from .index import (FILTER_FIELDS, HNSW_EF, HNSW_EF_CONSTRUCT, HNSW_M, QUERY_OVERSAMPLING,
                    VECTOR_NAME, IndexMissingError, SearchError, _edge, index_folder, open_shard,
                    read_index_meta, shard_path)
from .recommend import Recommender

TIMEOUT_S = 30.0
PUSH_BATCH = 256
#: The Query API (``POST /collections/{c}/points/query``) arrived in Qdrant 1.10.
MIN_SERVER_VERSION = (1, 10)
#: What the server's copy records of the local index (in the collection's metadata).
STAMP_KEYS = ("embedder", "version", "options", "generation", "n_items", "dim")


class RemoteError(SearchError):
    """The Qdrant server did not answer or refused a request."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class RemoteIndexMissingError(RemoteError, IndexMissingError):
    """The server has no copy of an index, or an outdated one (the message says how to push)."""


def collection_name(index_name: str) -> str:
    return "embcompare_" + index_name.replace("__to__", "--to--")


def _qdrant_error(raw: bytes) -> str:
    """Qdrant's error text (``{"status": {"error": "..."}}``) or the start of the body."""
    try:
        status = json.loads(raw).get("status")
        if isinstance(status, dict) and status.get("error"):
            return str(status["error"])
    except (ValueError, AttributeError):
        pass
    return raw[:300].decode(errors="replace")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _request(url: str, method: str = "GET", body=None) -> dict:
    data = None if body is None else json.dumps(body, allow_nan=False).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          "Accept": "application/json"})
    key = os.environ.get("QDRANT_API_KEY")
    if key:
        req.add_header("api-key", key)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = _one_line(_qdrant_error(exc.read()))
        hint = ""
        if exc.code in (401, 403):
            hint = (" (set QDRANT_API_KEY to the server's API key)" if not key else
                    " (QDRANT_API_KEY is not accepted)")
        raise RemoteError(f"{method} {url}: Qdrant answered {exc.code}: {detail}{hint}",
                          status=exc.code) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = _one_line(getattr(exc, "reason", exc))
        raise RemoteError(f"{url}: the Qdrant server does not answer ({reason})") from exc


def _version_tuple(version: str) -> tuple[int, ...] | None:
    m = re.match(r"v?(\d+)\.(\d+)", str(version))
    return (int(m.group(1)), int(m.group(2))) if m else None


def server_info(url: str) -> dict:
    """The server's greeting (title, version); RemoteError when it does not answer, is not a
    Qdrant server, or is older than the Query API."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RemoteError(f"{url}: not an http:// or https:// URL (e.g. http://localhost:6333)")
    info = _request(url.rstrip("/") + "/")
    if not isinstance(info, dict) or "version" not in info:
        raise RemoteError(f"{url}: does not look like a Qdrant server (answer: {str(info)[:80]})")
    have = _version_tuple(info["version"])
    if have is not None and have < MIN_SERVER_VERSION:
        need = ".".join(map(str, MIN_SERVER_VERSION))
        raise RemoteError(f"{url}: Qdrant {info['version']} is too old: the query API used here "
                          f"needs {need} or later")
    return info


def _stamp(meta: dict) -> dict:
    """What identifies the content of a local index (its generation bumps on every change)."""
    return {k: meta.get(k) for k in STAMP_KEYS}


def collection_state(url: str, name: str) -> dict | None:
    """The server's copy of index ``name``: None when absent, else ``count`` (exact point count)
    and ``stamp`` (the local index's :func:`_stamp` at the push; None on a server that keeps no
    collection metadata, Qdrant < 1.16)."""
    base = f"{url.rstrip('/')}/collections/{collection_name(name)}"
    try:
        info = _request(base)
    except RemoteError as exc:
        if exc.status == 404:
            return None
        raise
    config = (info.get("result") or {}).get("config") or {}
    stamp = (config.get("metadata") or {}).get("embcompare")
    count = _request(base + "/points/count", "POST", {"exact": True})
    return {"count": int(count["result"]["count"]), "stamp": stamp}


def _create_body(meta: dict) -> dict:
    """The server collection: the embedded index's vector, graph and quantization settings."""
    return {"vectors": {VECTOR_NAME: {"size": int(meta["dim"]), "distance": "Cosine"}},
            "hnsw_config": {"m": HNSW_M, "ef_construct": HNSW_EF_CONSTRUCT},
            "quantization_config": {"scalar": {"type": "int8", "always_ram": True}},
            "metadata": {"embcompare": _stamp(meta)}}


def push_index(emb_dir, name: str, url: str) -> dict:
    """Copy one embedded index to the server (collection recreated) unless the server's copy is
    already this one. Returns ``points`` (the server's count) and ``pushed`` (bool)."""
    q = _edge()
    folder = index_folder(emb_dir, name)
    meta = read_index_meta(folder)
    if meta is None or meta.get("state") != "complete":
        raise IndexMissingError(f"{folder}: no finished index to push; build it with 'python "
                                f"main.py index --emb-dir {emb_dir}'")
    state = collection_state(url, name)
    if state is not None and state["stamp"] == _stamp(meta) and state["count"] == meta["n_items"]:
        return {"points": state["count"], "pushed": False}
    base = f"{url.rstrip('/')}/collections/{collection_name(name)}"
    if state is not None:
        _request(base, "DELETE")
    _request(base, "PUT", _create_body(meta))
    for field in FILTER_FIELDS:  # as in the embedded index: filtered queries stay fast
        _request(base + "/index?wait=true", "PUT",
                 {"field_name": field, "field_schema": "keyword"})
    shard = open_shard(shard_path(folder))
    offset = None
    try:
        while True:
            records, offset = shard.scroll(q.ScrollRequest(offset=offset, limit=PUSH_BATCH,
                                                           with_payload=True, with_vector=True))
            if records:
                # ids: integers (search.index.point_id, < 2**63) go as they are; an index of
                # UUID ids would go as the canonical hyphenated string the server takes
                _request(base + "/points?wait=true", "PUT", {"points": [
                    {"id": r.id if isinstance(r.id, int) else str(r.id),
                     "vector": {VECTOR_NAME: [float(x) for x in r.vector[VECTOR_NAME]]},
                     "payload": dict(r.payload or {})} for r in records]})
            if offset is None:
                break
    finally:
        shard.close()
    count = _request(base + "/points/count", "POST", {"exact": True})["result"]["count"]
    if count != meta["n_items"]:
        raise RemoteError(f"{url}: collection {collection_name(name)} holds {count} points "
                          f"after the push, {meta['n_items']} expected; run the push again")
    return {"points": int(count), "pushed": True}


class RemoteRecommender(Recommender):
    """:class:`Recommender` searching a Qdrant server's copy of the indexes (see
    :func:`push_index`); configuration and alignment come from the local index folder, and a
    server copy that is not the local index's (other generation or point count) is refused."""

    def __init__(self, emb_dir, *, url: str, **kwargs):
        super().__init__(emb_dir, **kwargs)
        self.url = url.rstrip("/")
        server_info(self.url)
        self._checked: set[str] = set()

    def _check_copy(self, name: str) -> None:
        if name in self._checked:
            return
        meta = self._meta(name)
        state = collection_state(self.url, name)
        push = (f"push it with 'python main.py index --emb-dir {self.emb_dir} --qdrant-url "
                f"{self.url}'")
        if state is None:
            raise RemoteIndexMissingError(f"{self.url}: no collection {collection_name(name)} "
                                          f"(index {name!r}) on the server; {push}")
        if (state["stamp"] is not None and state["stamp"] != _stamp(meta)) \
                or state["count"] != meta["n_items"]:
            raise RemoteIndexMissingError(
                f"{self.url}: collection {collection_name(name)} is not the local index {name!r} "
                f"({state['count']} points, generation "
                f"{(state['stamp'] or {}).get('generation', '?')}; local: {meta['n_items']} "
                f"points, generation {meta.get('generation')}); {push}")
        self._checked.add(name)

    def _search(self, name, vector, *, limit, label, exclude_hash, exclude_pair, with_vector):
        self._check_copy(name)
        must_not = [{"key": "content_hash", "match": {"value": v}} for v in [exclude_hash] if v]
        must_not += [{"key": "pair_id", "match": {"value": v}} for v in [exclude_pair] if v]
        flt = {}
        if must_not:
            flt["must_not"] = must_not
        if label:
            flt["must"] = [{"key": "label", "match": {"value": label}}]
        body = {"query": [float(x) for x in np.asarray(vector, dtype=np.float32)],
                "using": VECTOR_NAME, "limit": int(limit), "with_payload": True,
                "with_vector": bool(with_vector),
                # as the embedded index's queries: a wide candidate list, quantized scores
                # rescored with the float32 vectors
                "params": {"hnsw_ef": HNSW_EF, "quantization": {
                    "rescore": True, "oversampling": QUERY_OVERSAMPLING}}}
        if flt:
            body["filter"] = flt
        res = _request(f"{self.url}/collections/{collection_name(name)}/points/query", "POST",
                       body)
        points = (res.get("result") or {}).get("points", [])
        return [(float(p["score"]), dict(p.get("payload") or {}),
                 np.asarray(p["vector"][VECTOR_NAME]) if with_vector else None)
                for p in points]


__all__ = ["RemoteError", "RemoteIndexMissingError", "RemoteRecommender", "collection_name",
           "collection_state", "push_index", "server_info"]
