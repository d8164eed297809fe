"""Manifest → embedder → embedding store: embed a whole dataset, resumably.

>>> from embedders import get_embedder
>>> from collection.pipeline import embed_dataset
>>> result = embed_dataset("dataset/songs", [get_embedder("audio-stats")],      # doctest: +SKIP
...                        emb_dir="results/embeddings", out_dir="results/songs")
>>> result.sets["audio-stats"].vectors.shape                                      # doctest: +SKIP

Each finished file is stored at once, so an interrupted run loses at most the files in flight;
running again computes only what is missing.
"""
from __future__ import annotations

import csv
import io
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from embedders import Embedder, Embedding, InputError
from .scan import (EMBEDDED, MANIFEST_FIELDS, SKIPPED, HashIndex, Item, ScanResult,
                      hash_items, scan_dataset)
from .store import EmbeddingStore, StoreError, cache_key
from common.fsutil import atomic_write_text
from common.progress import progress_bar

#: How many files are handed to ``embed_many`` at once (bounds memory; results stream back).
CHUNK_FILES = 64


@dataclass
class EmbedderRun:
    """What one embedder did over a dataset."""

    name: str
    modality: str
    options: dict
    items: list[Item] = field(default_factory=list)          # embedded, in scan order
    embeddings: list[Embedding] = field(default_factory=list)
    n_found: int = 0
    n_computed: int = 0
    n_cached: int = 0
    skipped: list[tuple[Item, str]] = field(default_factory=list)
    seconds: float = 0.0
    export_path: str = ""

    @property
    def n_embedded(self) -> int:
        return len(self.items)

    def embedding_set(self):
        """The clip vectors as an :class:`analysis.data.EmbeddingSet`."""
        import numpy as np
        from .embedding_set import EmbeddingSet

        dim = self.embeddings[0].clip.shape[0] if self.embeddings else 0
        vectors = (np.stack([e.clip for e in self.embeddings]) if self.embeddings
                   else np.zeros((0, dim), np.float32))
        return EmbeddingSet(name=self.name, modality=self.modality,
                            ids=[it.id for it in self.items], labels=[it.label for it in self.items],
                            pair_ids=[it.pair_id for it in self.items], vectors=vectors,
                            paths=[it.path for it in self.items], options=self.options)


@dataclass
class DatasetEmbeddings:
    """Result of :func:`embed_dataset`."""

    scan: ScanResult
    runs: dict[str, EmbedderRun]
    manifest_path: str = ""
    damaged_cache_entries: list[tuple[str, str]] = field(default_factory=list)

    @property
    def sets(self):
        return {name: run.embedding_set() for name, run in self.runs.items()}

    def summary(self) -> dict:
        """Dataset summary for the report: counts, pairs, skipped files with reasons."""
        out = self.scan.summary()
        out["skipped"] = [(it.id, reason) for it, reason in _all_skips(self)]
        out["embedders"] = {
            name: {"found": r.n_found, "embedded": r.n_embedded, "computed": r.n_computed,
                   "cached": r.n_cached, "skipped": len(r.skipped), "seconds": round(r.seconds, 3)}
            for name, r in self.runs.items()}
        out["damaged_cache_entries"] = list(self.damaged_cache_entries)
        return out


def _all_skips(result: DatasetEmbeddings) -> Iterator[tuple[Item, str]]:
    for it in result.scan.items:
        if it.skip_reason:
            yield it, it.skip_reason
    for run in result.runs.values():
        for it, reason in run.skipped:
            yield it, f"{run.name}: {reason}"


# -- parallel per-file embedding -------------------------------------------------------------------

_worker_embedder: Embedder | None = None


def _worker_init(name: str, options: dict) -> None:
    global _worker_embedder
    from embedders import get_embedder
    _worker_embedder = get_embedder(name, **options).load()


def _worker_embed(path: str):
    try:
        return path, _worker_embedder.compute(path)
    except Exception as exc:  # returned, not raised: one bad file must not end the pool
        return path, exc


def _embed_stream(embedder: Embedder, paths: list[str], workers: int
                  ) -> Iterator[tuple[str, Embedding | Exception]]:
    """``embedder.embed_many`` in chunks, or a process pool for per-file embedders."""
    if workers > 1 and embedder.parallel_files and len(paths) > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init,
                                 initargs=(embedder.name, dict(embedder.options))) as pool:
            yield from pool.map(_worker_embed, paths, chunksize=1)
        return
    for start in range(0, len(paths), CHUNK_FILES):
        yield from embedder.embed_many(paths[start:start + CHUNK_FILES])


def _reason(exc: Exception) -> str:
    if isinstance(exc, InputError):
        return exc.reason
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:300]


def _unchanged(item: Item) -> bool:
    """Whether a file still has the size and mtime it had when it was hashed."""
    try:
        st = os.stat(item.path)
    except OSError:
        return False
    return st.st_size == item.size and st.st_mtime_ns == item.mtime_ns


def embed_items(items: Iterable[Item], embedder: Embedder, store: EmbeddingStore, *,
                workers: int = 1, progress: bool = True,
                on_result: Callable[[Item, str], None] | None = None) -> EmbedderRun:
    """Embed every item of the embedder's modality, using and filling the store.

    Parameters
    ----------
    items : iterable of Item
        Usable, hashed items (other modalities are ignored).
    embedder : Embedder
        Loaded or not; it is loaded here.
    store : EmbeddingStore
    workers : int
        Processes for embedders that embed file by file (``parallel_files``).
    on_result : callable, optional
        Called as ``on_result(item, status)`` after each file (for tests and progress hooks).

    Raises
    ------
    StoreError
        The store cannot be written (e.g. the disk is full); finished entries stay valid.
    """
    t0 = time.perf_counter()
    embedder.load()
    options = embedder.cache_options()
    run = EmbedderRun(name=embedder.name, modality=embedder.modality, options=options)
    mine = [it for it in items if not it.skip_reason and it.modality == embedder.modality]
    run.n_found = len(mine)
    results: dict[str, Embedding] = {}
    reasons: dict[str, str] = {}
    keys: dict[str, str] = {}
    todo: list[Item] = []
    for it in mine:
        if not embedder.accepts(it.path):
            reasons[it.id] = f"{embedder.name} does not read {os.path.splitext(it.path)[1]} files"
            continue
        keys[it.id] = cache_key(embedder.name, embedder.version, options, it.content_hash)
        cached = store.get(embedder.name, keys[it.id])
        if cached is not None:
            results[it.id] = cached
            run.n_cached += 1
        else:
            todo.append(it)

    by_path = {it.path: it for it in todo}
    bar = None
    if todo:
        bar = progress_bar(len(todo), desc=f"embedding with {embedder.name}", unit="file",
                           enabled=progress)
    try:
        for path, out in _embed_stream(embedder, [it.path for it in todo], workers):
            it = by_path[path]
            if isinstance(out, Exception):
                reasons[it.id] = _reason(out)
                status = SKIPPED
            elif not _unchanged(it):
                reasons[it.id] = "file changed while it was being embedded; run again"
                status = SKIPPED
            else:
                store.put(embedder.name, keys[it.id], out,
                          meta={"embedder": embedder.name, "version": embedder.version,
                                "options": options, "content_hash": it.content_hash,
                                "source_path": it.path})
                results[it.id] = out
                run.n_computed += 1
                status = EMBEDDED
            if bar is not None:
                bar.update(1)
            if on_result is not None:
                on_result(it, status)
    finally:
        if bar is not None:
            bar.close()

    for it in mine:
        if it.id in results:
            run.items.append(it)
            run.embeddings.append(results[it.id])
        else:
            run.skipped.append((it, reasons.get(it.id, "not embedded")))
    run.seconds = time.perf_counter() - t0
    return run


def manifest_rows(scan: ScanResult, runs: dict[str, EmbedderRun],
                  computed_ids: dict[str, set[str]] | None = None) -> list[dict]:
    """One row per (file, embedder) that handled it; one row for files no embedder used."""
    rows = []
    by_item: dict[str, list[dict]] = {}
    for run in runs.values():
        computed = (computed_ids or {}).get(run.name, set())
        for it in run.items:
            by_item.setdefault(it.id, []).append(
                {"embedder": run.name, "status": EMBEDDED,
                 "cached": "no" if it.id in computed else "yes", "reason": ""})
        for it, reason in run.skipped:
            by_item.setdefault(it.id, []).append(
                {"embedder": run.name, "status": SKIPPED, "cached": "", "reason": reason})
    modalities = {run.modality for run in runs.values()}
    for it in scan.items:
        base = {"path": it.id, "label": it.label, "modality": it.modality, "pair_id": it.pair_id,
                "content_hash": it.content_hash}
        if it.skip_reason:
            rows.append({**base, "embedder": "", "status": SKIPPED, "cached": "",
                         "reason": it.skip_reason})
        elif it.id in by_item:
            rows.extend({**base, **r} for r in by_item[it.id])
        else:
            reason = (f"no selected embedder reads {it.modality} files"
                      if it.modality not in modalities else "not embedded")
            rows.append({**base, "embedder": "", "status": SKIPPED, "cached": "", "reason": reason})
    return rows


def write_csv_atomic(path: str | os.PathLike, rows: list[dict], fields: Iterable[str]) -> Path:
    """Write rows as CSV through a temporary file and a rename."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    try:
        atomic_write_text(path, buf.getvalue())
    except OSError as exc:
        raise StoreError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def embed_dataset(root: str | os.PathLike, embedders: list[Embedder], *,
                  emb_dir: str | os.PathLike, out_dir: str | os.PathLike, workers: int = 1,
                  progress: bool = True, scan: ScanResult | None = None) -> DatasetEmbeddings:
    """Scan ``root``, embed it with every embedder (cached), write the manifest and exports.

    Parameters
    ----------
    root : path
        Dataset folder (``ROOT/<label>/.../<file>``).
    embedders : list of Embedder
        Distinct names. They are loaded before any file is touched, so a weights problem
        stops the run early.
    emb_dir : path
        The embeddings folder: content-addressed cache and per-embedder exports.
    out_dir : path
        Where ``manifest.csv`` goes.

    Returns
    -------
    DatasetEmbeddings
    """
    names = [e.name for e in embedders]
    if len(set(names)) != len(names):
        raise ValueError(f"embedder names must be distinct, got {names}")
    for emb in embedders:
        emb.load()
    scan = scan if scan is not None else scan_dataset(root)
    store = EmbeddingStore(emb_dir)
    store.clean_stale_temp()
    index = HashIndex(Path(emb_dir) / "hash_index.json")
    hash_items(scan.items, index=index, progress=progress)
    try:
        index.save()
    except OSError:
        pass  # only a shortcut for the next run
    runs: dict[str, EmbedderRun] = {}
    computed: dict[str, set[str]] = {}
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.csv"
    for emb in embedders:
        done: set[str] = set()
        run = embed_items(scan.usable, emb, store, workers=workers, progress=progress,
                          on_result=lambda it, status, done=done:
                          done.add(it.id) if status == EMBEDDED else None)
        computed[emb.name] = done
        runs[emb.name] = run
        export = store.write_export(
            emb.name, ids=[it.id for it in run.items], labels=[it.label for it in run.items],
            paths=[it.path for it in run.items], pair_ids=[it.pair_id for it in run.items],
            content_hashes=[it.content_hash for it in run.items], embeddings=run.embeddings,
            meta={"embedder": emb.name, "modality": emb.modality, "version": emb.version,
                  "options": run.options, "dataset": scan.root})
        run.export_path = str(export)
    write_csv_atomic(manifest_path, manifest_rows(scan, runs, computed), MANIFEST_FIELDS)
    return DatasetEmbeddings(scan=scan, runs=runs, manifest_path=str(manifest_path),
                             damaged_cache_entries=list(store.damaged))
