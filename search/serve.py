"""``python main.py serve``: the collection's map, a player and its nearest neighbours, on a
Starlette app run by uvicorn (README, "The page": why this framework).

Endpoints (GET unless said):

- ``/``: the page (``search/page/``: static HTML, CSS and JS; every name reaches the DOM through
  ``textContent`` or a property, never as HTML);
- ``/api/spaces``: the indexed embedders (name, modality, items, cross-modal targets);
- ``/api/items?embedder=NAME``: every item of a space with its label and 2-D map position;
- ``/api/audio?embedder=NAME&item=ID``: an item to listen to (MIDI rendered to WAV through the
  demo corpus's synthesizer, once, then cached);
- ``POST /api/recommend`` (JSON ``{embedder, item, k, cross_modal, target, exclude_same_piece,
  label}``): the item's nearest neighbours, as ``recommend`` gives them;
- ``POST /api/upload`` (multipart: ``file`` and the same fields): a file as the query;
- ``GET /api/text``: whether text queries are available (the model, or the one-line reason);
- ``POST /api/text`` (JSON: the fields of ``/api/recommend`` less ``item``, plus ``text``,
  ``seconds``, ``steps``, ``seed``): a query tune generated from the text (``text_query``), then
  queried as an upload is; ``GET /api/text-audio?key=KEY``: a tune this server answered with.

What keeps the page safe (issue 25): the embedder and the item are looked up in the index's own
lists (no path is ever built from a request) and anything unknown is one neutral ``404 not
found``; the Host header must name this server (DNS rebinding), a write must come from this
origin and carry JSON or multipart; bodies are counted as they arrive (``Content-Length`` is a
hint, never trusted) with a read timeout; an upload is written under a name of ours in the
server's work folder, checked for duration and embedded in a child process with a time limit,
so neither a long nor a crashing file holds up other queries; items whose file resolves outside
the collection are neither listed nor served; the server queries private copies of the shards
(a file truncated under it cannot fault the process) and cleans the work folders of dead
servers at start. A text query is generated in a child process too (one at a time, with a
time limit), from a model resolved once at start and never downloaded by the server; only the
tunes of requests it answered are served back. Every bad request is a 4xx JSON answer.
"""
from __future__ import annotations

import asyncio
import json
import socket
import mimetypes
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .index import CROSS_SEPARATOR, SearchError, index_folder, index_root, read_index_meta, shard_path
from .recommend import Recommender
from .text_query import DEFAULT_SEED, DEFAULT_SECONDS, DEFAULT_STEPS, DEFAULT_TEXT_MODEL

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: Longest upload embedded (a 30-minute silent FLAC is 300 KB: bytes alone do not bound work).
MAX_UPLOAD_SECONDS = 600.0
#: Wall-clock limit of one upload's embedding (the child process is killed after it).
UPLOAD_TIMEOUT_S = 120.0
#: Uploads embedded at once; more get 503 (each is a process with a model in memory).
MAX_PARALLEL_UPLOADS = 2
#: Seconds a request body may stall between two chunks before the request is answered 408.
READ_TIMEOUT_S = 15.0
#: Seconds a connection may take to send a request's head (uvicorn has no such limit: a client
#: trickling header bytes would hold its connection, and limit_concurrency of them lock all out).
HEAD_TIMEOUT_S = 10.0
MAX_K = 1000
#: Text queries: the longest description, generated length and step count a page may ask for.
MAX_TEXT_CHARS = 500
MAX_TEXT_SECONDS = 30.0
MAX_TEXT_STEPS = 200
#: Largest JSON body of a text query.
MAX_TEXT_BODY = 16 * 1024
#: Wall-clock limit of one generation: AudioLDM-S on a CPU takes about a minute per second of
#: audio at 10 steps, loading included (docs/search.md); a GPU takes seconds.
TEXT_TIMEOUT_S = 900.0
#: Text queries generated at once; more get 503 (each is a process with the model in memory).
MAX_PARALLEL_TEXT = 1
#: Generated tunes a server remembers as its own (older ones are no longer served back).
_TEXT_AUDIO_KEPT = 256
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
NOT_FOUND = "not found"
PAGE_DIR = Path(__file__).with_name("page")
WORK_PARENT = Path(tempfile.gettempdir()) / "embcompare-serve"
_RENDER_CACHE_ITEMS = 64


class RequestError(Exception):
    """A request answered with ``status`` and a one-line JSON error."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# -- the work folder ----------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_work_dir(parent: Path = WORK_PARENT) -> Path:
    """A fresh work folder ``<parent>/<pid>-<random>`` after removing those of servers that are
    gone (a crash mid-upload leaves its temporary file there, never in the collection)."""
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.iterdir():
        pid = old.name.split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    work = parent / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    (work / "uploads").mkdir(parents=True)
    return work


def _mirror_indexes(emb_dir: Path, mirror: Path, names: list[str]) -> None:
    """Private copies of the indexes (index.json, alignment, the shard the link points at): the
    server maps its own files, so another process rebuilding or truncating the originals cannot
    crash it with a bus error, and a query never writes into the real index."""
    for name in names:
        src = index_folder(emb_dir, name)
        dst = index_folder(mirror, name)
        dst.mkdir(parents=True)
        for f in ("index.json", "alignment.npz"):
            if (src / f).is_file():
                shutil.copyfile(src / f, dst / f)
        real = shard_path(src).resolve()
        shutil.copytree(real, dst / real.name, copy_function=_copy_sparse)
        (dst / "shard").symlink_to(real.name)


def _copy_sparse(src, dst) -> None:
    """Copy a file's data regions only: Qdrant's preallocated pages are holes (a 10-item shard
    is 300 KB on disk and 150 MB apparent); a plain copy would write every zero."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fd, size, pos = fi.fileno(), os.fstat(fi.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            fi.seek(start)
            fo.seek(start)
            left = end - start
            while left > 0:
                chunk = fi.read(min(1 << 20, left))
                if not chunk:
                    break
                fo.write(chunk)
                left -= len(chunk)
            pos = end
        fo.truncate(size)
    shutil.copystat(src, dst)


# -- the spaces -----------------------------------------------------------------------------------
class _Spaces:
    """What the page needs, per indexed space, computed once: item lists and 2-D PCA maps."""

    def __init__(self, emb_dir: Path, work: Path):
        self.emb_dir = emb_dir
        self.mirror = work / "emb"
        self.lock = threading.Lock()  # Qdrant Edge: one handle per shard, one query at a time
        self.metas = {}
        root = index_root(emb_dir)
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            meta = read_index_meta(folder)
            if meta and meta.get("state") == "complete":
                self.metas[folder.name] = meta
        if not any(CROSS_SEPARATOR not in n for n in self.metas):
            raise SearchError(f"{root}: no index yet; build it with 'python main.py index "
                              f"--emb-dir {emb_dir}'")
        _mirror_indexes(emb_dir, self.mirror, list(self.metas))
        self._maps: dict[str, dict] = {}
        self._recommenders: dict[str, Recommender] = {}
        self._rendered: OrderedDict[str, bytes] = OrderedDict()

    def close(self) -> None:
        with self.lock:
            for rec in self._recommenders.values():
                rec.close()
            self._recommenders.clear()

    def spaces(self) -> list[dict]:
        out = []
        for name, meta in self.metas.items():
            if CROSS_SEPARATOR in name:
                continue
            out.append({"name": name, "modality": meta["modality"],
                        "n_items": len(self.map(name)["ids"]),
                        "cross_targets": self.targets(name)})
        return out

    def targets(self, name: str) -> list[str]:
        return [n.split(CROSS_SEPARATOR)[1] for n in self.metas
                if n.startswith(name + CROSS_SEPARATOR)]

    def known(self, name) -> str:
        """``name`` if it is an indexed embedder (compared, never joined to a path)."""
        if not isinstance(name, str) or name not in self.metas or CROSS_SEPARATOR in name:
            raise RequestError(404, NOT_FOUND)
        return name

    def recommender(self, name: str) -> Recommender:
        if name not in self._recommenders:
            # shards stay open between queries: opening one costs seconds at 100k items
            self._recommenders[name] = Recommender(self.mirror, embedder=name, keep_open=True)
        return self._recommenders[name]

    def map(self, name: str) -> dict:
        """2-D PCA map of a space's items (a cross-modal space: the target items as aligned).
        Items whose file resolves outside the collection are left out."""
        with self.lock:
            if name not in self._maps:
                self._maps[name] = _space_map(self.emb_dir, self.mirror, name)
            return self._maps[name]

    def item(self, name: str, item_id) -> int:
        m = self.map(name)
        i = m["index"].get(item_id) if isinstance(item_id, str) else None
        if i is None:
            raise RequestError(404, NOT_FOUND)
        return i

    def project(self, name: str, vector: np.ndarray) -> list[float]:
        m = self.map(name)
        v = vector / max(np.linalg.norm(vector), 1e-12)
        return [round(float(c), 5) for c in (v - m["mean"]) @ m["basis"]]

    def audio(self, name: str, item_id) -> tuple[bytes, str]:
        m = self.map(name)
        i = self.item(name, item_id)
        path = m["paths"][i]
        if path.lower().endswith((".mid", ".midi")):
            key = m["hashes"][i]
            with self.lock:
                wav = self._rendered.get(key)
            if wav is None:
                wav = _render_midi(path)
                with self.lock:
                    self._rendered[key] = wav
                    while len(self._rendered) > _RENDER_CACHE_ITEMS:
                        self._rendered.popitem(last=False)
            return wav, "audio/wav"
        return Path(path).read_bytes(), mimetypes.guess_type(path)[0] or "application/octet-stream"


def _inside(path: str, root: Path | None) -> bool:
    if root is None:
        return True
    try:
        return Path(path).resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _space_map(emb_dir: Path, mirror: Path, name: str) -> dict:
    from collection import export_dir, read_export

    source = name.split(CROSS_SEPARATOR)
    export = read_export(export_dir(emb_dir, source[-1]))
    X = np.array(export.clip, dtype=np.float64)
    if len(source) == 2:
        with np.load(index_folder(mirror, name) / "alignment.npz") as fit:
            X = (X - fit["target_mean"]) @ fit["target_basis"]
    dataset = export.meta.get("dataset")
    root = Path(dataset).resolve() if dataset and Path(dataset).is_dir() else None
    keep = np.array([_inside(str(p), root) for p in export.paths], dtype=bool)
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    mean = Xn.mean(axis=0)
    _, _, Vt = np.linalg.svd(Xn - mean, full_matrices=False)
    basis = Vt[:2].T if Vt.shape[0] >= 2 else np.eye(Xn.shape[1], 2)
    ids = [str(i) for i in export.ids]
    return {"mean": mean, "basis": basis, "xy": (Xn - mean) @ basis, "ids": ids,
            "index": {ids[i]: i for i in np.flatnonzero(keep)}, "keep": keep,
            "labels": [str(x) for x in export.labels], "paths": [str(p) for p in export.paths],
            "hashes": [str(h) for h in export.content_hashes],
            "pairs": [str(p) for p in export.pair_ids], "clip": np.array(export.clip)}


def _render_midi(path: str) -> bytes:
    import io

    import pretty_midi
    import soundfile as sf

    from collection.demo_corpus import synthesize

    sr = 22050
    audio = synthesize(pretty_midi.PrettyMIDI(path), sr)
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# -- queries --------------------------------------------------------------------------------------
def query_options(spaces: _Spaces, req) -> dict:
    """The checked options of a query (JSON body or form fields): 4xx for anything malformed."""
    if not isinstance(req, dict):
        raise RequestError(400, "the request must be a JSON object")
    name = spaces.known(req.get("embedder"))
    k = req.get("k", 10)
    if isinstance(k, str) and k.strip().isdigit():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise RequestError(400, f"k must be an integer from 1 to {MAX_K}")
    flags = {}
    for key in ("cross_modal", "exclude_same_piece"):
        v = req.get(key, False)
        if isinstance(v, str) and v in ("true", "false", "1", "0", ""):
            v = v in ("true", "1")
        if not isinstance(v, bool):
            raise RequestError(400, f"{key} must be true or false")
        flags[key] = v
    target = req.get("target") or None
    if target is not None and target not in spaces.targets(name):
        raise RequestError(404, NOT_FOUND)
    if flags["cross_modal"] and target is None:
        targets = spaces.targets(name)
        if not targets:
            raise RequestError(400, f"no cross-modal index from {name}")
        target = targets[0] if len(targets) == 1 else None
        if target is None:
            raise RequestError(400, f"several cross-modal targets for {name}: choose one")
    label = req.get("label") or None
    if label is not None and (not isinstance(label, str) or len(label) > 500):
        raise RequestError(400, "label must be a string")
    return {"embedder": name, "k": k, "target": target, "label": label, **flags}


def recommend(spaces: _Spaces, opts: dict, vector: np.ndarray, *, content_hash: str = "",
              pair_id: str = "", query_name: str) -> dict:
    """The answer to a query: results with their map positions, the query's position."""
    name, cross = opts["embedder"], opts["cross_modal"]
    rec = spaces.recommender(name)
    space = f"{name}{CROSS_SEPARATOR}{opts['target']}" if cross else name
    m = spaces.map(space)
    with spaces.lock:
        rec.target_embedder = opts["target"]
        results = rec.recommend_vector(
            vector, opts["k"], content_hash=content_hash, pair_id=pair_id, cross_modal=cross,
            exclude_same_piece=opts["exclude_same_piece"], label=opts["label"])
    if cross:
        with np.load(index_folder(spaces.mirror, space) / "alignment.npz") as fit:
            qv = (vector - fit["source_mean"]) @ fit["source_basis"] @ fit["rotation"]
    else:
        qv = np.asarray(vector, dtype=np.float64)
    out = []
    for r in results:
        d = r.to_dict()
        i = m["index"].get(r.item_id)
        d["playable"] = i is not None
        if i is not None:
            d["xy"] = [round(float(a), 5) for a in m["xy"][i]]
        out.append(d)
    return {"query": {"name": query_name, "xy": spaces.project(space, qv)}, "results": out,
            "space": space, "map_embedder": space.split(CROSS_SEPARATOR)[-1]}


def item_query(spaces: _Spaces, req) -> dict:
    """``POST /api/recommend``: an indexed item as the query (its vector from the export, as
    ``recommend`` reads a collection file)."""
    opts = query_options(spaces, req)
    name = opts["embedder"]
    i = spaces.item(name, req.get("item"))
    m = spaces.map(name)
    return recommend(spaces, opts, np.asarray(m["clip"][i], dtype=np.float64),
                     content_hash=m["hashes"][i], pair_id=m["pairs"][i], query_name=m["ids"][i])


def _duration(path: Path) -> float | None:
    """Seconds of audio or MIDI in ``path`` from its header / events, None if unknown."""
    if path.suffix.lower() in (".mid", ".midi"):
        import pretty_midi

        return float(pretty_midi.PrettyMIDI(str(path)).get_end_time())
    import soundfile as sf

    try:
        return float(sf.info(str(path)).duration)
    except Exception:  # a format soundfile does not read: the embedder's decoder decides
        return None


def embed_upload(emb_dir: str, name: str, path: str, max_seconds: float) -> tuple:
    """In a child process: ``("ok", vector list, content hash)`` or ``("error", status,
    message)``. The message never names the server's temporary path."""
    from .recommend import QueryError

    p = Path(path)
    try:
        seconds = _duration(p)
        if seconds is not None and seconds > max_seconds:
            return ("error", 413, f"the upload lasts {seconds:.0f} s; at most "
                                  f"{max_seconds:.0f} s are embedded")
        vector, content_hash, _ = Recommender(emb_dir, embedder=name).query_vector(p)
    except QueryError as exc:
        return ("error", 422, str(exc).replace(str(p), p.name))
    except Exception as exc:  # a decoder's error on a hostile file: one line, no path
        return ("error", 422, f"{p.name}: cannot read the upload ({type(exc).__name__})")
    return ("ok", np.asarray(vector, dtype=np.float32).tolist(), content_hash)


def _child(conn, fn, args, what: str) -> None:
    try:
        conn.send(fn(*args))
    except BaseException as exc:  # noqa: BLE001 - whatever it is, the parent gets one line
        conn.send(("error", 422, f"{what} failed ({type(exc).__name__})"))
    finally:
        conn.close()


_MP = multiprocessing.get_context("forkserver")


def run_with_time_limit(fn, args: tuple, timeout_s: float, *,
                        what: str = "embedding the upload"):
    """``fn(*args)`` in a child process (forked from a clean fork server, not from this
    threaded one); the child is killed after ``timeout_s`` (RequestError 504) or answers
    nothing because it crashed (RequestError 422). ``what`` names the work in those messages."""
    parent, child = _MP.Pipe(duplex=False)
    proc = _MP.Process(target=_child, args=(child, fn, args, what), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise RequestError(504, f"{what} took over {timeout_s:.0f} s")
        try:
            return parent.recv()
        except EOFError:
            raise RequestError(422, f"{what} crashed its worker") from None
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)


# -- text queries -------------------------------------------------------------------------------
def generate_text_query(folder: str, dest: str, text: str, model: str, identity: str,
                        seconds: float, steps: int, seed: int, device: str | None) -> tuple:
    """In a child process: generate ``text`` into ``dest``; ``("ok",)`` or ``("error", status,
    message)``. The message names neither the model folder nor ``dest`` (the pipeline's own
    error goes to the server's stderr)."""
    from .text_query import TextQueryError, generate_query_file

    try:
        generate_query_file(Path(dest), Path(folder), text, model=model, identity=identity,
                            seconds=seconds, steps=steps, seed=seed, device=device)
    except TextQueryError as exc:  # a device that is not there
        return ("error", 409, str(exc))
    except Exception as exc:  # noqa: BLE001 - out of memory, a broken model file: one line
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"serve: text query: {type(exc).__name__}: {first}", file=sys.stderr, flush=True)
        return ("error", 422, f"the text model failed to generate the query "
                              f"({type(exc).__name__})")
    return ("ok",)


def _number(req: dict, key: str, default, *, kind, low, high) -> float | int:
    """``req[key]`` (or ``default``) as ``kind`` within ``[low, high]``: RequestError 400."""
    v = req.get(key, default)
    ok = not isinstance(v, bool) and isinstance(v, (int, float) if kind is float else int)
    if ok and kind is float:
        ok = np.isfinite(v)
    if not ok or not low <= v <= high:
        raise RequestError(400, f"{key} must be {'a number' if kind is float else 'an integer'} "
                                f"from {low:g} to {high:g}")
    return kind(v)


def text_request(req: dict) -> dict:
    """The checked text, seconds, steps and seed of a text query (RequestError 400)."""
    text = req.get("text")
    if not isinstance(text, str) or not text.strip():
        raise RequestError(400, "text must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise RequestError(400, f"text is over {MAX_TEXT_CHARS} characters")
    return {"text": text,
            "seconds": _number(req, "seconds", DEFAULT_SECONDS, kind=float, low=0.1,
                               high=MAX_TEXT_SECONDS),
            "steps": _number(req, "steps", DEFAULT_STEPS, kind=int, low=1, high=MAX_TEXT_STEPS),
            "seed": _number(req, "seed", DEFAULT_SEED, kind=int, low=0, high=2 ** 63 - 1)}


class _TextQueries:
    """A server's text queries: the model resolved once at start (never downloaded: a page
    must not start a 1 GB download) or the one-line reason they are unavailable; the folder
    of generated tunes fixed at start; the tunes this server answered with, by key."""

    def __init__(self, model: str | None, *, device: str | None):
        from .text_query import (TextModelError, TextQueryError, query_cache_dir,
                                 resolve_text_model)

        self.model, self.device = model, device
        self.folder = self.identity = None
        self.message = ""
        self.cache = query_cache_dir()
        self.slots = threading.BoundedSemaphore(MAX_PARALLEL_TEXT)
        self._served: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()
        if device not in (None, "", "auto") and str(device).split(":")[0] not in (
                "cpu", "cuda", "mps"):
            raise TextQueryError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
        if not model:
            self.message = "text queries are off (serve --text-model ID_OR_PATH turns them on)"
            return
        try:
            import importlib.util

            if importlib.util.find_spec("diffusers") is None:
                raise TextModelError("text queries need diffusers: pip install -r "
                                     "requirements.txt")
            self.folder, self.identity = resolve_text_model(model, download=False)
        except TextModelError as exc:
            self.message = str(exc)

    def info(self) -> dict:
        """What ``GET /api/text`` answers: availability, the model or the reason, the limits."""
        return {"available": self.folder is not None, "model": self.model or "",
                "message": self.message, "max_chars": MAX_TEXT_CHARS,
                "max_seconds": MAX_TEXT_SECONDS, "max_steps": MAX_TEXT_STEPS,
                "defaults": {"seconds": DEFAULT_SECONDS, "steps": DEFAULT_STEPS,
                             "seed": DEFAULT_SEED}}

    def tune(self, request: dict, *, generate, timeout_s: float) -> tuple[str, Path, bool]:
        """``(key, WAV path, generated now)`` of a checked request: read from the cache, or
        generated by ``generate`` in a child process (RequestError 409 when no model, 503 when
        the generation slots are taken, 504 past ``timeout_s``)."""
        from .text_query import cached_query_path, request_key

        if self.folder is None:
            raise RequestError(409, self.message)
        key = request_key(self.identity, request["text"], seconds=request["seconds"],
                          steps=request["steps"], seed=request["seed"])
        dest = cached_query_path(key, folder=self.cache)
        generated = not dest.is_file()
        if generated:
            if not self.slots.acquire(blocking=False):
                raise RequestError(503, "a text query is being generated; try again")
            try:
                got = run_with_time_limit(generate, (
                    str(self.folder), str(dest), request["text"], self.model, self.identity,
                    request["seconds"], request["steps"], request["seed"], self.device),
                    timeout_s, what="generating the text query")
            finally:
                self.slots.release()
            if got[0] != "ok":
                raise RequestError(got[1], got[2])
        with self._lock:
            self._served[key] = dest
            self._served.move_to_end(key)
            while len(self._served) > _TEXT_AUDIO_KEPT:
                self._served.popitem(last=False)
        return key, dest, generated

    def audio(self, key) -> Path:
        """The tune of ``key`` if this server answered with it (compared, never joined)."""
        with self._lock:
            path = self._served.get(key) if isinstance(key, str) else None
        if path is None or not path.is_file():
            raise RequestError(404, NOT_FOUND)
        return path


def _json_body(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "the body is not JSON") from None


# -- the app --------------------------------------------------------------------------------------
def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=_HEADERS)


_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'")


class BodyGuard:
    """Outermost ASGI layer: Host and Origin checks, and a request body counted (and timed)
    as it is read, whatever ``Content-Length`` says. Exceptions end as a JSON 500 and one
    line on stderr, never a traceback."""

    def __init__(self, app, *, hosts: set[str], max_bytes: int, read_timeout_s: float):
        self.app, self.hosts = app, {h.lower() for h in hosts}
        self.max_bytes, self.read_timeout_s = max_bytes, read_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        refusal = self.refuse(scope)
        if refusal is not None:
            return await refusal(scope, receive, send)
        got = 0

        async def counted_receive():
            nonlocal got
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout_s)
            except asyncio.TimeoutError:
                raise RequestError(408, "the request body stalled") from None
            got += len(message.get("body", b""))
            if got > self.max_bytes:
                raise RequestError(413, f"the body is over {self.max_bytes} bytes")
            return message
        try:
            await self.app(scope, counted_receive, tracked_send)
        except Exception as exc:  # noqa: BLE001 - the one place a request's failure ends
            status = exc.status if isinstance(exc, RequestError) else 500
            if status == 500:
                print(f"serve: {scope.get('path')}: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
            if not started:
                await _error(status, str(exc) if status != 500 else "internal error")(
                    scope, receive, send)

    def refuse(self, scope):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.strip("[]").lower() not in self.hosts:
            return _error(400, "unknown host")
        if scope["method"] in ("GET", "HEAD"):
            return None
        origin = headers.get("origin")
        if origin is not None and origin != f"http://{host}":
            return _error(403, "cross-origin request refused")
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return _error(403, "cross-origin request refused")
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "multipart/form-data"):
            return _error(415, "send application/json or multipart/form-data")
        length = headers.get("content-length")
        if length is not None and not length.strip().isdigit():
            return _error(400, "bad Content-Length")
        if length is not None and int(length) > self.max_bytes:
            return _error(413, f"the body is over {self.max_bytes} bytes")
        return None


def make_app(emb_dir, *, host: str = "127.0.0.1", allow_hosts=(), work: Path | None = None,
             max_upload_bytes: int = MAX_UPLOAD_BYTES, max_upload_seconds: float =
             MAX_UPLOAD_SECONDS, upload_timeout_s: float = UPLOAD_TIMEOUT_S,
             read_timeout_s: float = READ_TIMEOUT_S, embed=embed_upload,
             text_model: str | None = DEFAULT_TEXT_MODEL, device: str | None = None,
             text_timeout_s: float = TEXT_TIMEOUT_S, generate=generate_text_query):
    """The ASGI app; ``app.state`` holds ``spaces`` (close it when done), ``work`` and ``text``
    (the text queries: ``text_model`` None turns them off).

    Long on purpose: the routes are closures over one server's state, kept together so the
    whole surface a browser can reach is read in one place."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    work = work or make_work_dir()
    # upload workers are forked from a server that has these imported (each would otherwise
    # import them again: seconds per upload); no torch: an embedder imports it when it computes
    _MP.set_forkserver_preload(["search.serve", "collection", "collection.store", "embedders",
                                "soundfile", "pretty_midi", "librosa"])
    from multiprocessing import forkserver

    forkserver.ensure_running()  # started now, not by the first upload
    try:
        spaces = _Spaces(Path(emb_dir), work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    uploads = threading.BoundedSemaphore(MAX_PARALLEL_UPLOADS)
    texts = _TextQueries(text_model, device=device)

    def answer(obj):
        return JSONResponse(obj, headers=_HEADERS)

    def page(request):
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers={**_HEADERS, "Content-Security-Policy": _CSP})

    def static(request):
        files = {"page.js": "text/javascript", "page.css": "text/css"}
        name = request.path_params["name"]
        if name not in files:
            raise RequestError(404, NOT_FOUND)
        return FileResponse(PAGE_DIR / name, media_type=files[name], headers=_HEADERS)

    def api_spaces(request):
        return answer(spaces.spaces())

    def api_items(request):
        name = spaces.known(request.query_params.get("embedder"))
        target = request.query_params.get("target")
        if target is not None:  # the target's items in the space aligned to this one
            if target not in spaces.targets(name):
                raise RequestError(404, NOT_FOUND)
            name = f"{name}{CROSS_SEPARATOR}{target}"
        m = spaces.map(name)
        return answer([{"item_id": m["ids"][i], "label": m["labels"][i],
                        "xy": [round(float(a), 5) for a in m["xy"][i]]}
                       for i in m["index"].values()])

    def api_audio(request):
        name = spaces.known(request.query_params.get("embedder"))
        try:
            body, ctype = spaces.audio(name, request.query_params.get("item"))
        except OSError:  # gone since it was indexed: the same answer as never there
            raise RequestError(404, NOT_FOUND) from None
        return Response(body, media_type=ctype, headers=_HEADERS)

    async def api_recommend(request):
        req = _json_body(await request.body())
        from starlette.concurrency import run_in_threadpool

        return answer(await run_in_threadpool(item_query, spaces, req))

    async def api_upload(request):
        form = await request.form(max_files=1, max_fields=20, max_part_size=64 * 1024)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise RequestError(400, "no file in the upload")
        opts = query_options(spaces, {k: v for k, v in form.items() if k != "file"})
        from starlette.concurrency import run_in_threadpool

        return answer(await run_in_threadpool(_upload_query, opts, upload.file,
                                              str(upload.filename or "upload")))

    def _upload_query(opts: dict, fileobj, shown_name: str) -> dict:
        # the client's name is shown, never used: ours keeps only a safe suffix
        suffix = Path(shown_name.replace("\\", "/")).suffix.lower()
        suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 8 else ""
        if not uploads.acquire(blocking=False):
            raise RequestError(503, "too many uploads at once; try again")
        path = work / "uploads" / f"{uuid.uuid4().hex}{suffix}"
        try:
            with open(path, "wb") as out:
                fileobj.seek(0)
                shutil.copyfileobj(fileobj, out)
            vector, content_hash = embedded(opts, path, shown_name)
        finally:
            uploads.release()
            path.unlink(missing_ok=True)
        return recommend(spaces, opts, vector, content_hash=content_hash, query_name=shown_name)

    def embedded(opts: dict, path: Path, shown_name: str) -> tuple[np.ndarray, str]:
        """A query file's vector [shape=(dim,)] and content hash, embedded in a child process
        (the caller holds an upload slot); its errors name ``shown_name``, never ``path``."""
        got = run_with_time_limit(embed, (str(spaces.emb_dir), opts["embedder"], str(path),
                                          max_upload_seconds), upload_timeout_s)
        if got[0] != "ok":
            raise RequestError(got[1], got[2].replace(path.name, shown_name))
        return np.asarray(got[1], dtype=np.float64), got[2]

    def api_text_info(request):
        return answer(texts.info())

    async def api_text(request):
        body = await request.body()
        if len(body) > MAX_TEXT_BODY:
            raise RequestError(413, f"a text query's body is over {MAX_TEXT_BODY} bytes")
        req = _json_body(body)
        from starlette.concurrency import run_in_threadpool

        return answer(await run_in_threadpool(_text_query, req))

    def _text_query(req) -> dict:
        opts = query_options(spaces, req)
        request = text_request(req)
        if spaces.metas[opts["embedder"]].get("modality") != "audio":
            raise RequestError(400, f"{opts['embedder']} embeds MIDI: a text query (generated "
                                    f"audio) needs an audio space")
        key, path, generated = texts.tune(request, generate=generate, timeout_s=text_timeout_s)
        if not uploads.acquire(blocking=False):
            raise RequestError(503, "too many uploads at once; try again")
        try:
            vector, content_hash = embedded(opts, path, "the generated query")
        finally:
            uploads.release()
        res = recommend(spaces, opts, vector, content_hash=content_hash,
                        query_name=request["text"])
        res["query"].update(request, audio=f"/api/text-audio?key={key}", generated=generated)
        return res

    def api_text_audio(request):
        path = texts.audio(request.query_params.get("key"))
        return FileResponse(path, media_type="audio/wav", headers=_HEADERS)

    async def http_error(request, exc):
        return _error(exc.status_code, NOT_FOUND if exc.status_code == 404 else
                      str(exc.detail))

    async def request_error(request, exc):
        return _error(exc.status, str(exc))

    async def search_error(request, exc):
        return _error(409, str(exc).replace(str(spaces.mirror), "index").splitlines()[0])

    app = Starlette(routes=[
        Route("/", page), Route("/static/{name}", static),
        Route("/api/spaces", api_spaces), Route("/api/items", api_items),
        Route("/api/audio", api_audio),
        Route("/api/recommend", api_recommend, methods=["POST"]),
        Route("/api/upload", api_upload, methods=["POST"]),
        Route("/api/text", api_text_info), Route("/api/text", api_text, methods=["POST"]),
        Route("/api/text-audio", api_text_audio),
    ], exception_handlers={HTTPException: http_error, RequestError: request_error,
                           SearchError: search_error})
    hosts = {*LOOPBACK_HOSTS, host, *allow_hosts}
    guarded = BodyGuard(app, hosts=hosts, max_bytes=max_upload_bytes,
                        read_timeout_s=read_timeout_s)
    guarded.state = app.state
    app.state.spaces, app.state.work, app.state.text = spaces, work, texts
    return guarded


def _head_timed_protocol(head_timeout_s: float):
    """uvicorn's h11 protocol with a deadline for each request's head: armed when the
    connection opens and after every response, it closes a connection with no request under
    way (a stalled body is :class:`BodyGuard`'s read timeout)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimedH11(H11Protocol):
        _deadline = None

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(head_timeout_s, self._late)

        def _late(self) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

    return HeadTimedH11


def make_server(emb_dir, *, host: str = "127.0.0.1", port: int = 8501, allow_hosts=(),
                head_timeout_s: float = HEAD_TIMEOUT_S, **app_options):
    """A uvicorn server for the app (``run()`` serves; ``should_exit = True`` stops it)."""
    import uvicorn

    app = make_app(emb_dir, host=host, allow_hosts=allow_hosts, **app_options)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            http=_head_timed_protocol(head_timeout_s), timeout_keep_alive=5,
                            limit_concurrency=200, timeout_graceful_shutdown=5, lifespan="off")
    server = uvicorn.Server(config)
    server.app = app
    return server


def close(app) -> None:
    """Free the shards an app holds and remove its work folder."""
    app.state.spaces.close()
    shutil.rmtree(app.state.work, ignore_errors=True)


def serve(emb_dir, *, host: str = "127.0.0.1", port: int = 8501, allow_hosts=(),
          text_model: str | None = DEFAULT_TEXT_MODEL, device: str | None = None) -> int:
    sock = _bound_socket(host, port)  # bound here: a taken port is an OSError, not exit(1)
    try:
        server = make_server(emb_dir, host=host, port=sock.getsockname()[1],
                             allow_hosts=allow_hosts, text_model=text_model, device=device)
    except BaseException:
        sock.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    text = server.app.state.text
    print(f"text queries: {text.model}" if text.folder is not None else
          f"text queries unavailable: {text.message}", flush=True)
    print(f"serving {emb_dir} on http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C to stop)",
          flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        close(server.app)
    return 0


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock

