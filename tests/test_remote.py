"""``index --qdrant-url`` / ``recommend --qdrant-url`` end to end against a *schema-checked
stand-in* of a Qdrant server, not a live one.

No Qdrant server can run where this suite runs (no binary, no Docker), so a loopback HTTP server
started here implements the endpoints ``search/remote.py`` uses (``GET /``, collection info,
create, delete, upsert, count, query) and:

- validates every request body against ``qdrant_client.http.models``, the pydantic models
  generated from Qdrant's OpenAPI schema (request models forbid unknown fields), and every point
  id as Qdrant does (an unsigned integer or a UUID); an invalid request is answered 400 and
  recorded, and each test asserts there was none;
- answers in Qdrant's documented response shapes, each checked against the same models' response
  types before it is sent;
- searches the pushed points by exact cosine in numpy (Cosine collections store normalised
  vectors, as Qdrant does), applying the request's filter.

What this shows: the requests are well-formed for the schema of the installed qdrant-client
(1.20, Qdrant 1.16+ API), the push copies exactly the local points, and the remote queries
return what the embedded index returns. What it cannot show: how a live server or cluster
behaves (its query planner, HNSW recall, sharding, auth setup, older servers' handling of
collection metadata); that needs ``docker run -p 6333:6333 qdrant/qdrant`` (docs/search.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")
qm = pytest.importorskip(
    "qdrant_client.http.models",
    reason="qdrant-client (requirements.txt) carries the OpenAPI models the stand-in Qdrant "
           "server validates requests against; without it these tests cannot check the API")

import cli
from conftest import indexed_demo_corpus
from search.index import (FILTER_FIELDS, HNSW_EF_CONSTRUCT, HNSW_M, VECTOR_NAME, index_root,
                          open_shard, read_index_meta, shard_path)
from search.remote import collection_name


# -- the stand-in server ---------------------------------------------------------------------

class StandInQdrant:
    """A loopback HTTP server answering the part of Qdrant's REST API that search/remote.py
    uses; see the module docstring. ``version`` below 1.16 drops collection metadata, as those
    servers ignore the field."""

    def __init__(self, *, version: str = "1.16.2", api_key: str | None = None):
        self.version = version
        self.api_key = api_key
        self.collections: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, headers)
        self.invalid: list[str] = []  # requests (or answers) that broke the schema
        self.fail: dict[tuple[str, str], tuple[int, str]] = {}  # (method, path) -> answer
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep stderr for the CLI's own lines
                pass

            def _answer(self, code, obj):
                text = isinstance(obj, str)
                data = obj.encode() if text else json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with owner.lock:
                    owner.requests.append((self.command, parts.path,
                                           {k.lower(): v for k, v in self.headers.items()}))
                    code, obj = owner.handle(self.command, parts.path, parse_qs(parts.query),
                                             raw, self.headers)
                self._answer(code, obj)

            do_GET = do_PUT = do_POST = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- Qdrant's answers ----------------------------------------------------------------------
    @staticmethod
    def _error(code: int, text: str):
        return code, {"status": {"error": text}, "time": 0.0}

    def _ok(self, result, model):
        body = {"result": result, "status": "ok", "time": 0.0001}
        try:
            model.model_validate(body)
        except Exception as exc:  # the stand-in itself must answer in Qdrant's shapes
            self.invalid.append(f"stand-in answer {model.__name__}: {exc}")
        return 200, body

    def _body(self, raw: bytes, model, what: str):
        try:
            body = json.loads(raw)
            model.model_validate(body)
        except Exception as exc:
            self.invalid.append(f"{what}: {exc}")
            return None, self._error(400, f"Format error in JSON body: {exc}")
        return body, None

    def handle(self, method, path, query, raw, headers):
        if (method, path) in self.fail:
            return self._error(*self.fail[(method, path)])
        if self.api_key is not None and path not in ("/", "/healthz"):
            # as Qdrant's auth middleware: "/" is whitelisted; otherwise 403 with a plain-text
            # body (src/actix/auth.rs)
            key = headers.get("api-key")
            if key != self.api_key:
                return 403, ("Must provide an API key or an Authorization bearer token"
                             if key is None else "Invalid API key or JWT")
        if path == "/" and method == "GET":
            body = {"title": "qdrant - vector search engine", "version": self.version,
                    "commit": "0" * 40}
            qm.VersionInfo.model_validate(body)
            return 200, body
        seg = path.strip("/").split("/")
        if len(seg) < 2 or seg[0] != "collections":
            return self._error(404, f"stand-in: no route {method} {path}")
        name, rest = seg[1], "/".join(seg[2:])
        coll = self.collections.get(name)
        if rest == "" and method == "PUT":
            body, err = self._body(raw, qm.CreateCollection, f"PUT {path}")
            if err:
                return err
            if coll is not None:
                return self._error(409, f"Wrong input: Collection `{name}` already exists!")
            if tuple(int(x) for x in self.version.split(".")[:2]) < (1, 16):
                body.pop("metadata", None)  # older servers ignore the field
            self.collections[name] = {"create": body, "points": {}, "indexes": {}}
            return self._ok(True, qm.InlineResponse2001)
        if rest == "" and method == "DELETE":
            return self._ok(self.collections.pop(name, None) is not None, qm.InlineResponse2001)
        if coll is None:
            return self._error(404, f"Not found: Collection `{name}` doesn't exist!")
        if rest == "" and method == "GET":
            return self._ok(self._info(coll), qm.InlineResponse2007)
        if rest == "points" and method == "PUT":
            if query.get("wait") != ["true"]:
                self.invalid.append(f"PUT {path} without wait=true")
            body, err = self._body(raw, qm.PointsList, f"PUT {path}")
            if err:
                return err
            return self._upsert(coll, body)
        if rest == "index" and method == "PUT":
            body, err = self._body(raw, qm.CreateFieldIndex, f"PUT {path}")
            if err:
                return err
            coll["indexes"][body["field_name"]] = body["field_schema"]
            return self._ok({"operation_id": 0, "status": "completed"}, qm.InlineResponse2008)
        if rest == "points/count" and method == "POST":
            body, err = self._body(raw, qm.CountRequest, f"POST {path}")
            if err:
                return err
            return self._ok({"count": len(coll["points"])}, qm.InlineResponse20020)
        if rest == "points/query" and method == "POST":
            body, err = self._body(raw, qm.QueryRequest, f"POST {path}")
            if err:
                return err
            return self._query(coll, body)
        return self._error(404, f"stand-in: no route {method} {path}")

    def _info(self, coll) -> dict:
        create = coll["create"]
        return {"status": "green", "optimizer_status": "ok", "segments_count": 1,
                "points_count": len(coll["points"]), "indexed_vectors_count": 0,
                "payload_schema": {f: {"data_type": t, "points": len(coll["points"])}
                                   for f, t in coll["indexes"].items()},
                "config": {"params": {"vectors": create["vectors"], "shard_number": 1,
                                      "replication_factor": 1, "write_consistency_factor": 1,
                                      "on_disk_payload": True},
                           "hnsw_config": {"m": 16, "ef_construct": 100,
                                           "full_scan_threshold": 10000,
                                           **(create.get("hnsw_config") or {})},
                           "optimizer_config": {"default_segment_number": 0,
                                                "flush_interval_sec": 5},
                           "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
                           "quantization_config": create.get("quantization_config"),
                           "metadata": create.get("metadata")}}

    def _upsert(self, coll, body):
        vectors = coll["create"]["vectors"]
        staged = {}
        for p in body["points"]:
            pid = p["id"]
            if isinstance(pid, str):
                try:
                    pid = str(uuid.UUID(pid))
                except ValueError:
                    self.invalid.append(f"point id {pid!r} is neither an unsigned int nor a UUID")
                    return self._error(400, f"Format error in JSON body: Unable to parse UUID: "
                                            f"{pid}")
            elif not (isinstance(pid, int) and pid >= 0):
                self.invalid.append(f"point id {pid!r} is neither an unsigned int nor a UUID")
                return self._error(400, f"Format error in JSON body: bad point id {pid!r}")
            vec = p.get("vector")
            if not isinstance(vec, dict) or set(vec) != set(vectors):
                return self._error(400, f"Wrong input: vector names {sorted(vec or {})}, "
                                        f"collection has {sorted(vectors)}")
            v = np.asarray(vec[VECTOR_NAME], dtype=np.float32)
            if v.shape != (vectors[VECTOR_NAME]["size"],):
                return self._error(400, f"Wrong input: Vector dimension error: expected dim: "
                                        f"{vectors[VECTOR_NAME]['size']}, got {v.shape[0]}")
            staged[pid] = (v / np.linalg.norm(v), dict(p.get("payload") or {}))  # Cosine
        coll["points"].update(staged)
        return self._ok({"operation_id": len(coll["points"]), "status": "completed"},
                        qm.InlineResponse2008)

    @staticmethod
    def _matches(payload, flt) -> bool:
        def cond(c):
            if set(c) - {"key", "match"} or set(c.get("match") or {}) != {"value"}:
                raise NotImplementedError(f"stand-in: condition {c}")
            return payload.get(c["key"]) == c["match"]["value"]

        def as_list(x):
            return x if isinstance(x, list) else [x]
        if not flt:
            return True
        must = all(cond(c) for c in as_list(flt.get("must") or []))
        must_not = not any(cond(c) for c in as_list(flt.get("must_not") or []))
        should = any(cond(c) for c in as_list(flt["should"])) if flt.get("should") else True
        return must and must_not and should

    def _query(self, coll, body):
        using = body.get("using")
        if using not in coll["create"]["vectors"]:
            return self._error(400, f"Wrong input: Not existing vector name error: {using}")
        q = np.asarray(body["query"], dtype=np.float32)
        q = q / np.linalg.norm(q)
        try:
            hits = [(float(v @ q), pid, v, p) for pid, (v, p) in coll["points"].items()
                    if self._matches(p, body.get("filter"))]
        except NotImplementedError as exc:
            return self._error(400, str(exc))
        hits.sort(key=lambda h: -h[0])
        points = []
        for score, pid, v, p in hits[:body.get("limit", 10)]:
            pt = {"id": pid, "version": 0, "score": score}
            if body.get("with_payload"):
                pt["payload"] = p
            if body.get("with_vector"):
                pt["vector"] = {using: v.tolist()}
            points.append(pt)
        return self._ok({"points": points}, qm.InlineResponse20022)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The small paired demo corpus (5 genres x 2 pieces, audio + MIDI), embedded and indexed."""
    return indexed_demo_corpus(tmp_path_factory.mktemp("remote"))


@pytest.fixture
def standin():
    servers = []

    def start(**kwargs):
        servers.append(StandInQdrant(**kwargs))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


@pytest.fixture(scope="module")
def pushed(corpus):
    """A stand-in server holding the corpus's indexes, pushed by ``index --qdrant-url``."""
    server = StandInQdrant()
    _, emb = corpus
    assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url", server.url]) == 0
    yield server
    server.close()


def _local_points(folder):
    import qdrant_edge as q
    shard = open_shard(shard_path(folder))
    try:
        recs, _ = shard.scroll(q.ScrollRequest(limit=10_000, with_payload=True,
                                               with_vector=True))
    finally:
        shard.close()
    # the server's key for a point: an unsigned int as it is, a UUID as its canonical string
    return {r.id if isinstance(r.id, int) else str(r.id):
            (np.asarray(r.vector[VECTOR_NAME]), dict(r.payload)) for r in recs}


def _snapshot(folder):
    """Every file and link under ``folder``: size, mtime and content hash / link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if os.path.islink(p):
                out[p] = ("link", os.readlink(p), st.st_mtime_ns)
            elif os.path.isfile(p):
                with open(p, "rb") as fh:
                    out[p] = (st.st_size, st.st_mtime_ns, hashlib.sha256(fh.read()).hexdigest())
            else:
                out[p] = ("dir", st.st_mtime_ns)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _recommend(capsys, emb, args, url=None):
    extra = ["--qdrant-url", url] if url else []
    code = cli.main(["recommend", *map(str, args), "--emb-dir", str(emb), "--json", *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def _assert_same(remote, local):
    """The same items in the same order (every field), scores within 1e-5."""
    assert [r["path"] for r in remote] == [r["path"] for r in local]
    np.testing.assert_allclose([r["score"] for r in remote], [r["score"] for r in local],
                               atol=1e-5)
    assert [{k: v for k, v in r.items() if k != "score"} for r in remote] == \
        [{k: v for k, v in r.items() if k != "score"} for r in local]


# -- the tests -------------------------------------------------------------------------------

def test_push_copies_every_index_exactly(corpus, pushed):
    _, emb = corpus
    assert pushed.invalid == []
    names = sorted(p.name for p in index_root(emb).iterdir() if (p / "index.json").exists())
    assert "audio-stats__to__midi-stats" in names and len(names) == 4
    assert sorted(pushed.collections) == sorted(collection_name(n) for n in names)
    for name in names:
        folder = index_root(emb) / name
        meta = read_index_meta(folder)
        coll = pushed.collections[collection_name(name)]
        assert coll["create"]["vectors"] == {VECTOR_NAME: {"size": meta["dim"],
                                                           "distance": "Cosine"}}
        assert coll["create"]["hnsw_config"] == {"m": HNSW_M, "ef_construct": HNSW_EF_CONSTRUCT}
        assert coll["indexes"] == {f: "keyword" for f in FILTER_FIELDS}
        stamp = coll["create"]["metadata"]["embcompare"]
        assert stamp["generation"] == meta["generation"] and stamp["n_items"] == meta["n_items"]
        local = _local_points(folder)
        assert len(local) == meta["n_items"] and set(coll["points"]) == set(local)
        for pid, (vec, payload) in local.items():
            assert coll["points"][pid][1] == payload
            np.testing.assert_allclose(coll["points"][pid][0], vec, atol=1e-6)


def test_push_again_is_skipped_while_the_copy_is_current(corpus, pushed, capsys):
    _, emb = corpus
    before = len(pushed.requests)
    assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url", pushed.url]) == 0
    assert "is up to date (10 points)" in capsys.readouterr().err
    assert not [r for r in pushed.requests[before:] if r[0] in ("PUT", "DELETE")]


def test_older_server_without_collection_metadata(corpus, standin, capsys):
    """Qdrant 1.10-1.15 ignore ``metadata``: the push works and each push recreates the
    collection (the count is then the only check of the copy)."""
    _, emb = corpus
    server = standin(version="1.12.4")
    for _ in range(2):
        assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url", server.url,
                         "--embedders", "audio-stats"]) == 0
        assert "pushed audio-stats: 10 points" in capsys.readouterr().err
    assert "metadata" not in server.collections[collection_name("audio-stats")]["create"]
    query = sorted(corpus[0].rglob("*.wav"))[0]
    args = [query, "--embedder", "audio-stats", "-k", "4"]
    _assert_same(_recommend(capsys, emb, args, server.url), _recommend(capsys, emb, args))
    assert server.invalid == []


CASES = {
    "audio same-modal": ("wav", ["--embedder", "audio-stats", "-k", "5"]),
    "midi same-modal": ("mid", ["--embedder", "midi-stats", "-k", "9"]),
    "audio to midi": ("wav", ["--embedder", "audio-stats", "--cross-modal", "-k", "10"]),
    "midi to audio, same piece excluded": ("mid", ["--embedder", "midi-stats", "--cross-modal",
                                                   "--exclude-same-piece", "-k", "10"]),
    "label filter": ("wav", ["--embedder", "audio-stats", "--label", "rock", "-k", "5"]),
    "label filter cross-modal": ("mid", ["--embedder", "midi-stats", "--cross-modal",
                                         "--label", "jazz", "-k", "5"]),
    "mutual proximity": ("wav", ["--embedder", "audio-stats", "--hubness-reduction", "mp",
                                 "-k", "5"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_remote_recommend_equals_the_embedded_index(corpus, pushed, capsys, case):
    root, emb = corpus
    suffix, args = CASES[case]
    query = sorted(root.rglob(f"*.{suffix}"))[1]
    local = _recommend(capsys, emb, [query, *args])
    remote = _recommend(capsys, emb, [query, *args], pushed.url)
    assert local, "the case should return results"
    _assert_same(remote, local)
    if "--exclude-same-piece" in args:
        assert str(query.with_suffix(".wav")) not in [r["path"] for r in remote]
    if "--label" in args:
        assert {r["label"] for r in remote} == {args[args.index("--label") + 1]}
    assert pushed.invalid == []


def test_api_key_is_sent_as_the_api_key_header(corpus, standin, monkeypatch, capsys):
    root, emb = corpus
    server = standin(api_key="s3cret")
    monkeypatch.delenv("QDRANT_API_KEY", raising=False)
    assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url", server.url,
                     "--embedders", "midi-stats", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "403" in err[0] and "set QDRANT_API_KEY" in err[0], err
    monkeypatch.setenv("QDRANT_API_KEY", "wrong")
    assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url", server.url,
                     "--embedders", "midi-stats", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "403" in err[0] and "QDRANT_API_KEY is not accepted" in err[0], err
    monkeypatch.setenv("QDRANT_API_KEY", "s3cret")
    n = len(server.requests)
    assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url", server.url,
                     "--embedders", "midi-stats"]) == 0
    query = sorted(root.rglob("*.mid"))[0]
    assert _recommend(capsys, emb, [query, "--embedder", "midi-stats", "-k", "3"], server.url)
    assert all(h.get("api-key") == "s3cret" for _, _, h in server.requests[n:])
    assert server.invalid == []


def test_a_url_that_does_not_answer_changes_nothing_locally(corpus, capsys):
    root, emb = corpus
    url = f"http://127.0.0.1:{_free_port()}"
    before = _snapshot(emb)
    assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and url in err[0] and "does not answer" in err[0], err
    query = sorted(root.rglob("*.wav"))[0]
    assert cli.main(["recommend", str(query), "--emb-dir", str(emb), "--embedder",
                     "audio-stats", "--qdrant-url", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and url in err[0], err
    assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url", "localhost:6333"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an http" in err[0], err
    assert _snapshot(emb) == before


def test_a_server_answering_4xx_is_one_line(corpus, standin, capsys):
    _, emb = corpus
    server = standin()
    path = "/collections/" + collection_name("audio-stats")
    server.fail[("PUT", path)] = (400, "Wrong input: Bad request:\nsomething the server refused")
    assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url", server.url,
                     "--embedders", "audio-stats", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "400" in err[0] and path in err[0], err
    assert "something the server refused" in err[0]


def test_too_old_a_server_is_refused(corpus, standin, capsys):
    _, emb = corpus
    server = standin(version="1.9.7")
    before = _snapshot(emb)
    assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url", server.url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1.9.7" in err[0] and "1.10" in err[0], err
    assert _snapshot(emb) == before


def test_a_missing_or_partial_copy_is_refused_with_the_push_command(corpus, standin, capsys):
    root, emb = corpus
    server = standin()
    query = sorted(root.rglob("*.wav"))[0]
    args = ["recommend", str(query), "--emb-dir", str(emb), "--embedder", "audio-stats",
            "--qdrant-url", server.url]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--qdrant-url" in err[0] and "main.py index" in err[0], err
    assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url", server.url,
                     "--embedders", "audio-stats"]) == 0
    capsys.readouterr()
    points = server.collections[collection_name("audio-stats")]["points"]
    points.pop(next(iter(points)))  # as a push killed part-way would leave it
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "9 points" in err[0] and "10 points" in err[0], err
    assert cli.main(["index", "--emb-dir", str(emb), "--qdrant-url", server.url,
                     "--embedders", "audio-stats"]) == 0  # the next push repairs it
    assert "pushed audio-stats: 10 points" in capsys.readouterr().err
    assert cli.main(args) == 0
    assert server.invalid == []
