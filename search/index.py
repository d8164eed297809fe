"""Vector indexes of the embedding store: one Qdrant Edge shard per embedder, under the emb-dir.

Layout of ``<emb-dir>/index/<name>/`` (``<name>`` an embedder, or ``<src>__to__<tgt>`` for the
cross-modal index of ``tgt``'s items in the space aligned to ``src``):

- ``index.json``: what the shard holds: embedder, version, options (with the weights identity),
  modality, dim, the export run it was built from, ``state`` (``building`` until every point is
  in, then ``complete``), ``generation`` (bumped by every change) and ``hnsw``.
- ``shard`` -> ``.shard-<generation>``: a link to the Qdrant Edge shard folder (storage, WAL).
  The HNSW graph is built on a copy by a background process and swapped in by one rename of the
  link, so building it never blocks a run or a query (until then queries are exact full scans).
- ``alignment.npz`` (cross-modal only): the PCA + orthogonal Procrustes map fitted on all pairs.

Every point is one export item: id = 63-bit hash of (item id, content hash); vector = clip vector
(cosine); payload = path, item id, label, pair id, modality, content hash, duration. Qdrant's
write-ahead log makes each batch all-or-nothing, so a killed build leaves whole points only;
the next build compares point ids with the export and adds/removes only the difference.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from common.exits import first_line
from common.fsutil import atomic_write_text

#: Bumped when the on-disk layout or point scheme changes: an index of another format is rebuilt
#: (2: integer point ids; HNSW m 32, ef_construct 400; keyword indexes of the filter fields).
INDEX_FORMAT = 2
VECTOR_NAME = "clip"
UPSERT_BATCH = 1024
#: Below this many points the HNSW graph is built in the foreground (it takes well under a
#: second); above it, by a background process on a copy of the shard.
FOREGROUND_HNSW_MAX = 2000
CROSS_SEPARATOR = "__to__"
#: The graph: links per node and candidate list while building it. Random 512-d vectors, the
#: hard case, need a dense graph: at 100k, m 16 / ef_construct 100 found half the true top-10
#: even at hnsw_ef 512 (see README, Benchmarks: the grid).
HNSW_M = 32
HNSW_EF_CONSTRUCT = 400
#: Candidate list size of an HNSW query: recall over latency (README, Benchmarks: at 100k random
#: 512-d vectors 1024 gave recall 0.950-0.958, 1152 0.957-0.963 at ~4.7-5 ms).
HNSW_EF = 1152
#: int8 candidates rescored in float32 per result wanted (recall did not change from 2 to 8:
#: the graph walk, not the quantization, decides what is found).
QUERY_OVERSAMPLING = 2.0


class SearchError(Exception):
    """Base of the errors of the search package; ``str()`` is the one-line message."""


class IndexMissingError(SearchError):
    """No index for this embedder yet."""


class IndexMismatchError(SearchError):
    """The index was built for another configuration than the query's."""


class IndexBusyError(SearchError):
    """Another process holds the shard open (Qdrant Edge allows one process per shard)."""


class DamagedIndexError(SearchError):
    """The shard cannot be opened or read, or disagrees with index.json."""


class LinkedIndexError(DamagedIndexError):
    """An index folder (or the index root) is a symbolic link: refused, never followed."""


class DamagedExportError(SearchError):
    """An embedder's export (what an index is built from) cannot be read."""


def rebuild_hint(folder: str | os.PathLike) -> str:
    """The command that rebuilds the index in ``folder`` (``<emb-dir>/index/<name>``)."""
    return f"rebuild it with 'python main.py index --emb-dir {Path(folder).parent.parent}'"


def index_root(emb_dir: str | os.PathLike) -> Path:
    """``<emb-dir>/index``: where every index of this embeddings folder lives."""
    return Path(emb_dir) / "index"


def index_folder(emb_dir: str | os.PathLike, name: str) -> Path:
    """``<emb-dir>/index/<name>``, the folder of one index.

    Raises
    ------
    DamagedIndexError
        It, or ``<emb-dir>/index``, is a symbolic link: a planted link would make queries read
        and ``index`` write somewhere else, so it is refused, never followed.
    """
    root = index_root(emb_dir)
    for path in (root, root / name):
        if path.is_symlink():
            raise LinkedIndexError(
                f"{path}: is a symbolic link, not followed (an index lives in a real folder of "
                f"the emb-dir); remove the link and {rebuild_hint(root / name)}")
    return root / name


def point_id(item_id: str, content_hash: str) -> int:
    """The Qdrant point id of an item: 63 bits of a BLAKE2b hash of its id and content, stable
    across runs.

    An integer rather than a UUID string: the bindings convert it faster, which saved ~25 % of
    the insert time (README, Benchmarks). Two of a million items
    share an id with probability ~5e-8; the point count check after every update would then
    report the index as damaged rather than answer from it.
    """
    digest = hashlib.blake2b(f"embcompare:{item_id}\0{content_hash}".encode(), digest_size=8,
                             person=b"embcmp-point").digest()
    return int.from_bytes(digest, "big") >> 1


def config_identity(meta: dict) -> dict:
    """The part of an export's / index's meta that must match for a query to be meaningful."""
    return {"embedder": meta.get("embedder"), "version": meta.get("version"),
            "options": meta.get("options") or {}}


def read_index_meta(folder: str | os.PathLike) -> dict | None:
    path = Path(folder) / "index.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DamagedIndexError(f"{path}: unreadable ({exc})") from exc


def write_index_meta(folder: Path, meta: dict) -> None:
    atomic_write_text(folder / "index.json", json.dumps(meta, indent=1, sort_keys=True))


@contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """One writer per index folder at a time (builds and the HNSW swap); blocks until free."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = _open_in_folder(folder / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_in_folder(path: Path, flags: int) -> int:
    """Open (creating) a bookkeeping file of the index folder, never through a link planted in
    its place: the link is removed (not what it points at) and a file of our own created."""
    for _ in range(3):
        try:
            return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            path.unlink()
    raise OSError(errno.ELOOP, "keeps being replaced by a link", str(path))


# -- the engine ------------------------------------------------------------------------------------

def _edge():
    import qdrant_edge  # imported here: only the search commands need it
    return qdrant_edge


def edge_config(dim: int):
    q = _edge()
    # indexing_threshold is set high: the graph is built explicitly (optimize), never as a side
    # effect of an insert, so inserts stay fast and predictable.
    # int8 scalar quantization: the graph is built and walked on 4x smaller vectors (3x faster
    # to build here), and the top candidates are rescored with the float32 originals.
    return q.EdgeConfig(
        vectors={VECTOR_NAME: q.EdgeVectorParams(
            size=int(dim), distance=q.Distance.Cosine,
            quantization_config=q.ScalarQuantizationConfig(type=q.ScalarType.Int8,
                                                           always_ram=True))},
        hnsw_config=q.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT,
                                      full_scan_threshold=1000),
        optimizers=q.EdgeOptimizersConfig(indexing_threshold=1000,
                                          default_segment_number=1))


def open_shard(path: Path, *, dim: int | None = None, create: bool = False):
    """Open (or create) the Qdrant Edge shard at ``path``.

    Raises IndexBusyError when another process has it open, DamagedIndexError when it cannot be
    read.
    """
    q = _edge()
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
            return q.EdgeShard.create(str(path), edge_config(dim))
        return q.EdgeShard.load(str(path))
    except Exception as exc:  # the bindings raise a plain Exception with the engine's message
        text = str(exc)
        if "WouldBlock" in text:
            raise IndexBusyError(f"{path}: the index is open in another process (e.g. "
                                 f"'main.py serve'); stop it and run again") from exc
        raise DamagedIndexError(f"{path}: cannot open the index ({text.splitlines()[0]})") from exc


def search_params():
    """How queries walk the graph: a wide candidate list, quantized scores rescored."""
    q = _edge()
    return q.SearchParams(hnsw_ef=HNSW_EF, quantization=q.QuantizationSearchParams(
        rescore=True, oversampling=QUERY_OVERSAMPLING))


#: Payload fields `recommend` filters on, each with a keyword index in the engine. Without one,
#: a query excluding its own content hash scanned every point's payload (86 ms at 20k items vs
#: 1.4 ms unfiltered); with it 1.1-1.4 ms. No filtered graph links (enable_hnsw=False): they doubled
#: the graph's build time and these filters exclude a handful of points or keep a whole class.
FILTER_FIELDS = ("content_hash", "pair_id", "label")


def _ensure_field_indexes(shard) -> None:
    """Create the keyword index of each :data:`FILTER_FIELDS` the shard lacks (after a fresh
    shard's points are in: one pass, cheaper than maintaining it point by point)."""
    q = _edge()
    have = set(shard.info().payload_schema)
    for field in FILTER_FIELDS:
        if field not in have:
            shard.update(q.UpdateOperation.create_field_index(
                field, q.KeywordIndexParams(enable_hnsw=False)))


def shard_path(folder: Path) -> Path:
    """The current shard folder (the link resolved once, so a swap cannot split a read).

    Raises DamagedIndexError when the link leads anywhere but a ``.shard-*`` folder inside
    ``folder``: nothing outside the index folder is ever opened, written or removed.
    """
    folder = Path(folder)
    link = folder / "shard"
    real = Path(os.path.realpath(link))
    if real.parent != Path(os.path.realpath(folder)) or not real.name.startswith(".shard-"):
        raise DamagedIndexError(f"{link}: points outside the index folder (to {real}); "
                                f"{rebuild_hint(folder)}")
    return real


def check_shard(shard, folder: Path, dim: int) -> dict[int, str]:
    """Read every point of an open shard: every payload (a scroll) and every vector (one exact
    scan, which scores each stored vector); point id -> content hash.

    The engine opens a shard whose files are truncated or overwritten and fails only when a
    damaged page is read; reading everything once turns that into DamagedIndexError here (before
    ``index`` declares the index ready, and before it decides what to update).
    """
    q = _edge()
    try:
        out = _point_ids(shard)
        if out:
            shard.query(q.QueryRequest(
                limit=1, query=q.Query.Nearest([1.0] * dim, using=VECTOR_NAME),
                with_payload=False, with_vector=False,
                params=q.SearchParams(exact=True,
                                      quantization=q.QuantizationSearchParams(ignore=True))))
    except Exception as exc:  # the bindings raise a plain Exception with the engine's message
        raise DamagedIndexError(f"{folder}: the index is damaged ({first_line(exc)}); "
                                f"{rebuild_hint(folder)}") from exc
    return out


def _point_ids(shard) -> dict[int, str]:
    """Every point of a shard: point id -> content hash (every payload is read whole, so a
    damaged payload page raises here)."""
    q = _edge()
    out: dict[int, str] = {}
    offset = None
    while True:
        records, offset = shard.scroll(q.ScrollRequest(
            offset=offset, limit=4096, with_payload=True, with_vector=False))
        for r in records:
            out[r.id] = (r.payload or {}).get("content_hash", "")
        if offset is None:
            return out


def _set_link(folder: Path, target_name: str) -> None:
    """Point ``folder/shard`` at ``target_name`` with one rename (atomic for readers)."""
    tmp = folder / f".shard-link.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target_name, tmp)
    os.replace(tmp, folder / "shard")


def _remove_stale_shards(folder: Path) -> None:
    keep = os.path.basename(os.path.realpath(folder / "shard"))
    for p in folder.glob(".shard-*"):
        if p.name != keep and p.is_dir() and not p.name.endswith(".building"):
            shutil.rmtree(p, ignore_errors=True)
    for p in folder.glob(".shard-*.building"):  # a killed HNSW build
        if time.time() - p.stat().st_mtime > 24 * 3600:
            shutil.rmtree(p, ignore_errors=True)


# -- building --------------------------------------------------------------------------------------

def _payloads(export, modality: str) -> list[dict]:
    ts = export.timestamps
    off = export.frame_offsets
    out = []
    for i in range(len(export)):
        duration = None
        if off[i + 1] > off[i]:
            last = float(ts[off[i + 1] - 1])
            if np.isfinite(last):
                duration = round(last, 3)
        out.append({"path": str(export.paths[i]), "item_id": str(export.ids[i]),
                    "label": str(export.labels[i]), "pair_id": str(export.pair_ids[i]),
                    "modality": modality, "content_hash": str(export.content_hashes[i]),
                    "duration": duration})
    return out


def sync_shard(folder: Path, meta: dict, vectors: np.ndarray, payloads: list[dict], *,
               hnsw: str = "auto", log=None) -> dict:
    """Make the index in ``folder`` hold exactly ``vectors``/``payloads``, incrementally.

    Parameters
    ----------
    folder : Path
        The index folder (``index.json``, ``shard`` link).
    meta : dict
        Configuration identity plus ``modality``; stored in ``index.json``.
    vectors : np.ndarray [shape=(n, dim)]
    payloads : list of dict [len=n]
        Each with ``item_id`` and ``content_hash``.
    hnsw : {"auto", "now", "background", "off"}
        When to build the HNSW graph: ``auto`` = now for small indexes, else in the background.

    Returns
    -------
    dict: ``added``, ``removed``, ``kept``, ``rebuilt`` (bool), ``hnsw`` (state).
    """
    log = log or (lambda msg: None)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(payloads):
        raise ValueError(f"vectors {vectors.shape} and {len(payloads)} payloads disagree")
    dim = int(vectors.shape[1])
    with writer_lock(folder):
        old = _reusable_meta(folder, meta, dim, log)
        # generations only grow, so a background HNSW build can tell its shard is outdated
        generation = int((old or {}).get("generation", 0)) + 1
        shard, have, rebuilt = _open_shard_for_update(folder, old, dim, generation, log)
        want = {point_id(p["item_id"], p["content_hash"]): i for i, p in enumerate(payloads)}
        gone = [pid for pid in have if pid not in want]
        todo = [i for pid, i in want.items() if pid not in have]
        if old is not None and not gone and not todo:
            unchanged = _keep_unchanged(folder, old, shard, hnsw=hnsw, n_items=len(want))
            if unchanged is not None:
                return unchanged
        state = dict(meta, format=INDEX_FORMAT, dim=dim, generation=generation,
                     state="building", hnsw="none", n_items=None)
        write_index_meta(folder, state)  # from here on a kill leaves state=building: resumable
        try:
            hnsw_state = _write_points(folder, shard, vectors, payloads, want=want, gone=gone,
                                       todo=todo, hnsw=hnsw)
        finally:
            shard.close()
        _verify_written(folder, dim, len(want))
        state.update(state="complete", n_items=len(want), hnsw=hnsw_state)
        write_index_meta(folder, state)
        _remove_stale_shards(folder)
    if hnsw_state == "building":
        with writer_lock(folder):
            state = read_index_meta(folder)
            if state.get("generation") == generation:
                state["hnsw_pid"] = start_background_hnsw(folder).pid
                write_index_meta(folder, state)
    return {"added": len(todo), "removed": len(gone), "kept": len(want) - len(todo),
            "rebuilt": rebuilt, "hnsw": hnsw_state, "n_items": len(want)}


def _verify_written(folder: Path, dim: int, n_items: int) -> None:
    """Open the shard just written as a query will and read it all: ``index`` never declares
    an index it cannot read complete. The first open also settles the engine's bookkeeping
    files, so the queries that follow change no byte of the index."""
    shard = open_shard(shard_path(folder))
    try:
        n_read = len(check_shard(shard, folder, dim))
    finally:
        shard.close()
    if n_read != n_items:
        raise DamagedIndexError(f"{folder}: {n_read} points readable after the update, "
                                f"{n_items} expected; {rebuild_hint(folder)}")


def _reusable_meta(folder: Path, meta: dict, dim: int, log) -> dict | None:
    """The index's ``index.json`` if the index can be updated in place (same configuration,
    dimension and format), else None (it is rebuilt)."""
    old = None
    try:
        old = read_index_meta(folder)
    except DamagedIndexError as exc:
        log(f"{exc}; rebuilding it from the store")
    if old is not None and (config_identity(old) != config_identity(meta)
                            or old.get("dim") != dim or old.get("format") != INDEX_FORMAT):
        log(f"index {folder.name}: built for another configuration; rebuilding it")
        old = None
    return old


def _open_shard_for_update(folder: Path, old: dict | None, dim: int, generation: int, log):
    """``(shard, point id -> payload of the points it holds, rebuilt)``: the current shard when
    it can be updated, else a new, empty one of this generation (the ``shard`` link moved)."""
    if old is not None and (folder / "shard").exists():
        shard = None
        try:
            shard = open_shard(shard_path(folder))
            return shard, check_shard(shard, folder, dim), False
        except DamagedIndexError as exc:
            reason = str(exc).split("; rebuild it with")[0]  # this is the rebuild
            log(f"{reason}: rebuilding the index from the store")
            if shard is not None:
                shard.close()
    rebuilt = old is not None or (folder / "shard").exists()
    name = f".shard-{generation}"
    if (folder / name).exists():
        shutil.rmtree(folder / name)
    shard = open_shard(folder / name, dim=dim, create=True)
    _set_link(folder, name)
    return shard, {}, rebuilt


def _keep_unchanged(folder: Path, old: dict, shard, *, hnsw: str, n_items: int) -> dict | None:
    """A complete index whose points are already right: keep its generation (and a graph built
    or being built), starting the background build it still lacks; the result of
    :func:`sync_shard`. None when the graph must be built now instead."""
    if not (old.get("state") == "complete"
            and (old.get("hnsw") == "ready" or hnsw in ("auto", "background", "off"))
            and not (hnsw == "auto" and old.get("hnsw") != "ready"
                     and n_items <= FOREGROUND_HNSW_MAX)):
        return None
    shard.close()
    hnsw_state = old.get("hnsw", "none")
    if hnsw_state == "none" and hnsw in ("auto", "background") and n_items:
        old["hnsw"] = hnsw_state = "building"
        write_index_meta(folder, old)
    if hnsw_state == "building" and hnsw != "off" and not _alive(old.get("hnsw_pid")):
        # (re)start it: a killed background build leaves 'building' behind
        old["hnsw_pid"] = start_background_hnsw(folder).pid
        write_index_meta(folder, old)
    return {"added": 0, "removed": 0, "kept": n_items, "rebuilt": False, "hnsw": hnsw_state,
            "n_items": n_items}


def _write_points(folder: Path, shard, vectors: np.ndarray, payloads: list[dict], *,
                  want: dict, gone: list, todo: list[int], hnsw: str) -> str:
    """Delete the ``gone`` points, upsert the ``todo`` rows, check the count and (``now``, or
    ``auto`` on a small index) build the graph; the HNSW state to record."""
    q = _edge()
    if gone:
        shard.update(q.UpdateOperation.delete_points(gone))
    pids = list(want)
    for start in range(0, len(todo), UPSERT_BATCH):
        rows = todo[start:start + UPSERT_BATCH]
        shard.update(q.UpdateOperation.upsert_points(
            # a memoryview of the row: the bindings read its floats directly (about
            # 3x faster than building a Python list per vector)
            [q.Point(pids[i], {VECTOR_NAME: memoryview(vectors[i])}, payloads[i])
             for i in rows]))
    _ensure_field_indexes(shard)
    shard.flush()
    count = shard.count(q.CountRequest(exact=True))
    if count != len(want):
        raise DamagedIndexError(f"{folder}: the index holds {count} points after the "
                                f"update, {len(want)} expected")
    if count and (hnsw == "now" or (hnsw == "auto" and count <= FOREGROUND_HNSW_MAX)):
        shard.optimize()
        shard.flush()
        return "ready"
    if count and hnsw in ("auto", "background"):
        return "building"
    return "none"


def _alive(pid) -> bool:
    """Whether process ``pid`` still runs (a background HNSW build)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    try:  # a finished child of this process stays a zombie until reaped
        done, _ = os.waitpid(int(pid), os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True  # not our child: it exists


def start_background_hnsw(folder: Path) -> subprocess.Popen:
    """Build the HNSW graph of ``folder``'s shard in a detached process (see :func:`build_hnsw`)."""
    root = Path(__file__).resolve().parent.parent
    log = os.fdopen(_open_in_folder(folder / "hnsw.log", os.O_WRONLY | os.O_APPEND), "ab")
    return subprocess.Popen([sys.executable, "-m", "search.index", str(folder)], cwd=root,
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _copy_shard(src: Path, dst: Path, attempts: int = 5) -> None:
    """Copy a shard folder that a reader may hold open: the engine writes some files through a
    temporary ``.atomicwrite*`` file renamed into place, which can vanish mid-copy. Those are
    skipped, and a copy that still met a vanished file is redone."""
    ignore = shutil.ignore_patterns("*.lock", ".atomicwrite*")
    for attempt in range(attempts):
        try:
            shutil.copytree(src, dst, ignore=ignore)
            return
        except shutil.Error:
            shutil.rmtree(dst, ignore_errors=True)
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def build_hnsw(folder: str | os.PathLike) -> bool:
    """Build the HNSW graph on a copy of the shard and swap it in if nothing changed meanwhile.

    Queries keep using the current shard (exact search) until the swap. Returns whether the
    graph was swapped in.
    """
    folder = Path(folder)
    with writer_lock(folder):
        meta = read_index_meta(folder)
        if meta is None or meta.get("state") != "complete" or meta.get("hnsw") == "ready":
            return False
        generation = meta["generation"]
        work = folder / f".shard-{generation}h.building"
        if work.exists():
            shutil.rmtree(work)
        _copy_shard(shard_path(folder), work)
    shard = open_shard(work)
    try:
        shard.optimize()  # the long part, outside the lock: a run may update the index meanwhile
        shard.flush()
    finally:
        shard.close()
    shard = open_shard(work)  # read it all before swapping it in (and settle its bookkeeping)
    try:
        check_shard(shard, folder, int(meta["dim"]))
    finally:
        shard.close()
    with writer_lock(folder):
        meta = read_index_meta(folder)
        if meta is None or meta.get("generation") != generation:
            shutil.rmtree(work, ignore_errors=True)  # changed meanwhile: its own build follows
            return False
        final = folder / f".shard-{generation}h"
        if final.exists():
            shutil.rmtree(final)
        os.rename(work, final)
        _set_link(folder, final.name)
        meta["hnsw"] = "ready"
        write_index_meta(folder, meta)
        _remove_stale_shards(folder)
    return True


def wait_for_hnsw(folder: str | os.PathLike, *, timeout_s: float = 600.0) -> bool:
    """Wait until the index's HNSW graph is swapped in (for tests and benchmarks)."""
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        meta = read_index_meta(folder) or {}
        if meta.get("hnsw") == "ready":
            return True
        time.sleep(0.2)
    return False


# -- from the embedding store ----------------------------------------------------------------------

def load_export(emb_dir: str | os.PathLike, name: str):
    """The export of embedder ``name`` (checked by :func:`collection.export.validate_export`).

    Raises IndexMissingError when there is none, DamagedExportError when it cannot be read.
    """
    from collection import ExportError, export_dir, read_export

    emb_dir = Path(emb_dir)
    folder = export_dir(emb_dir, name)
    run = f"'python main.py --dataset DATA --embedders {name} --emb-dir {emb_dir}'"
    try:
        return read_export(folder)
    except FileNotFoundError:
        raise IndexMissingError(f"{folder}: no export for embedder {name!r}; run {run} "
                                f"first") from None
    except ExportError as exc:
        raise DamagedExportError(f"{exc}; write it again with {run} (cached embeddings are "
                                 f"reused)") from exc


#: The arrays of ``alignment.npz`` and the dimensions each must have.
ALIGNMENT_ARRAYS = {"source_mean": 1, "source_basis": 2, "rotation": 2, "target_mean": 1,
                    "target_basis": 2}


def read_alignment(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """The cross-modal map of index ``folder`` (``alignment.npz``), checked.

    Raises DamagedIndexError (naming the file and the command that rebuilds it) when the file
    is missing, unreadable or its arrays do not chain (source_basis @ rotation).
    """
    path = Path(folder) / "alignment.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            fit = {name: np.asarray(npz[name], dtype=np.float64) for name in ALIGNMENT_ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DamagedIndexError(f"{path}: unreadable ({first_line(exc) or type(exc).__name__}); "
                                f"{rebuild_hint(folder)}") from exc
    shapes_ok = all(fit[k].ndim == d for k, d in ALIGNMENT_ARRAYS.items()) and (
        fit["source_mean"].shape[0] == fit["source_basis"].shape[0]
        and fit["source_basis"].shape[1] == fit["rotation"].shape[0]
        and fit["target_mean"].shape[0] == fit["target_basis"].shape[0])
    if not shapes_ok or not all(np.all(np.isfinite(a)) for a in fit.values()):
        raise DamagedIndexError(f"{path}: arrays of the wrong shape or not finite; "
                                f"{rebuild_hint(folder)}")
    return fit


def export_modality(export) -> str:
    from embedders import get_embedder_class

    modality = export.meta.get("modality")
    if not modality:
        modality = get_embedder_class(export.meta["embedder"]).modality
    return modality


def build_index(emb_dir: str | os.PathLike, name: str, *, hnsw: str = "auto", log=None) -> dict:
    """Index (or update the index of) one embedder's export. Returns :func:`sync_shard`'s dict,
    or None when the export holds no item (a run that embedded nothing: nothing to index)."""
    emb_dir = Path(emb_dir)
    export = load_export(emb_dir, name)
    if len(export) == 0:
        return None
    modality = export_modality(export)
    meta = dict(config_identity(export.meta), modality=modality,
                export_run=export.meta.get("run_id"), space=name)
    return sync_shard(index_folder(emb_dir, name), meta, np.asarray(export.clip),
                      _payloads(export, modality), hnsw=hnsw, log=log)


def build_cross_index(emb_dir: str | os.PathLike, source: str, target: str, *,
                      max_components: int = 64, hnsw: str = "auto", log=None) -> dict | None:
    """Index ``target``'s items in the space aligned to ``source`` (fitted on all pairs).

    Returns None when the two exports share fewer than 5 pairs (nothing to fit).
    """
    from analysis.crossspace import match_items
    from analysis.recommendation import fit_procrustes_alignment

    emb_dir = Path(emb_dir)
    src, tgt = load_export(emb_dir, source), load_export(emb_dir, target)
    ia, ib = match_items(src.pair_ids, tgt.pair_ids)
    if len(ia) < 5:
        return None
    fit = fit_procrustes_alignment(np.asarray(src.clip)[ia], np.asarray(tgt.clip)[ib],
                                   max_components=max_components)
    folder = index_folder(emb_dir, f"{source}{CROSS_SEPARATOR}{target}")
    folder.mkdir(parents=True, exist_ok=True)
    from common.fsutil import atomic_path
    with atomic_path(folder / "alignment.npz", suffix=".npz") as tmp:
        np.savez(tmp, n_pairs=len(ia), **fit)
    modality = export_modality(tgt)
    meta = {"embedder": f"{source}{CROSS_SEPARATOR}{target}", "version": None,
            "options": {"source": config_identity(src.meta), "target": config_identity(tgt.meta),
                        "n_pairs": int(len(ia)), "max_components": max_components},
            "modality": modality, "space": source, "source": source, "target": target}
    aligned = (np.asarray(tgt.clip, dtype=np.float64) - fit["target_mean"]) @ fit["target_basis"]
    return sync_shard(folder, meta, aligned, _payloads(tgt, modality), hnsw=hnsw, log=log)


def available_exports(emb_dir: str | os.PathLike) -> list[str]:
    root = Path(emb_dir) / "export"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def build_indexes(emb_dir: str | os.PathLike, names: list[str] | None = None, *,
                  hnsw: str = "auto", log=None, on_error=None) -> dict[str, dict]:
    """Index every named embedder (default: every export) and every audio/symbolic pair of them.

    ``on_error(name, exc)``, when given, is called for an export that cannot be read
    (:class:`DamagedExportError`) or an index folder that is a link (:class:`LinkedIndexError`)
    and the other embedders are indexed; without it the error is raised.
    """
    names = list(names) if names else available_exports(emb_dir)
    results, modality = {}, {}
    for name in names:
        try:
            index_folder(emb_dir, name)  # before the export is even read
            result = build_index(emb_dir, name, hnsw=hnsw, log=log)
        except (DamagedExportError, LinkedIndexError) as exc:
            if on_error is None:
                raise
            on_error(name, exc)
            continue
        if result is None:
            (log or (lambda msg: None))(f"index {name}: its export holds no item; not indexed")
            continue
        results[name] = result
        modality[name] = read_index_meta(index_folder(emb_dir, name))["modality"]
    for a in modality:
        for b in modality:
            if modality[a] != modality[b]:
                res = build_cross_index(emb_dir, a, b, hnsw=hnsw, log=log)
                if res is not None:
                    results[f"{a}{CROSS_SEPARATOR}{b}"] = res
    return results


if __name__ == "__main__":  # the background HNSW build: python -m search.index FOLDER
    build_hnsw(sys.argv[1])
