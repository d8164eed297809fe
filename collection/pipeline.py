"""Manifest → embedder → embedding store: embed a whole dataset, resumably.

>>> from embedders import get_embedder
>>> from collection.pipeline import embed_dataset
>>> result = embed_dataset("dataset/songs", [get_embedder("audio-stats")],      # doctest: +SKIP
...                        emb_dir="results/embeddings", out_dir="results/songs")
>>> result.sets["audio-stats"].vectors.shape                                      # doctest: +SKIP

Each finished file is stored at once, so an interrupted run loses at most the files in flight;
running again computes only what is missing.

Memory stays flat in the size of the collection: during a run only clip vectors, frame counts
and item metadata are kept (:class:`RunEntry`); frames go from the embedder to the cache, and
later from the cache to the export folder, one file (or block) at a time.

An embedder may give several spaces from one computation (``layer=all``: one per layer, named
``hf-audio@6``; :meth:`~embedders.base.Embedder.spaces`). Each file is then computed once, each
space cached under its own key and exported under its own name, and the rest of the tool sees
one ordinary run per space (:func:`embed_spaces`; ``DatasetEmbeddings.layers`` lists them).
"""
from __future__ import annotations

import itertools
import os
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from embedders import Embedder, Embedding
from .crashes import InFlight, embed_alone
from .export import ExportWriter, export_dir
from .manifest import manifest_rows, write_manifest
from .runs import CHUNK_FILES, RunEntry, store_result, store_spaces
from .scan import EMBEDDED, SKIPPED, HashIndex, Item, ScanResult, hash_items, scan_dataset
from .store import DamagedEntryError, EmbeddingStore, StoreError, cache_key  # noqa: F401
from common.progress import progress_bar

#: Where files are embedded: ``"local"`` (this process, or ``workers`` processes) or ``"ray"``.
ENGINES = ("local", "ray")


@dataclass
class EmbedderRun:
    """What one embedder did over a dataset: one space of it (usually its only one)."""

    name: str
    modality: str
    options: dict
    entries: list[RunEntry] = field(default_factory=list)   # embedded, in scan order
    n_found: int = 0
    skipped: list[tuple[Item, str]] = field(default_factory=list)
    seconds: float = 0.0
    export_path: str = ""
    #: Content hashes the model was trained on (:meth:`Embedder.seen_in_training`).
    seen_in_training: frozenset = frozenset()
    #: The embedder that computed it, whose cache folder holds its entries ("": ``name``).
    embedder: str = ""
    #: Its layer, when it is one of several layers of ``embedder`` (``hf-audio@6``: 6).
    layer: Any = None

    @property
    def cache_name(self) -> str:
        """The store folder of this run's entries (:meth:`EmbeddingStore.entry_path`)."""
        return self.embedder or self.name

    @property
    def items(self) -> list[Item]:
        return [e.item for e in self.entries]

    def record(self, items: list[Item], entries: dict[str, RunEntry],
               reasons: dict[str, str]) -> None:
        """Add each of ``items`` in order: embedded (its entry), or skipped with its reason."""
        for it in items:
            if it.id in entries:
                self.entries.append(entries[it.id])
            else:
                self.skipped.append((it, reasons.get(it.id, "not embedded")))

    @property
    def n_embedded(self) -> int:
        return len(self.entries)

    @property
    def n_computed(self) -> int:
        return sum(e.computed for e in self.entries)

    @property
    def n_cached(self) -> int:
        return self.n_embedded - self.n_computed

    def embedding_set(self, *, unseen_only: bool = False):
        """The clip vectors as an :class:`~collection.embedding_set.EmbeddingSet`.

        ``unseen_only`` leaves out the items the model was trained on (``seen_in_training``):
        the set an honest analysis uses.
        """
        from .embedding_set import EmbeddingSet

        entries = [e for e in self.entries
                   if not (unseen_only and e.item.content_hash in self.seen_in_training)]
        dim = self.entries[0].clip.shape[0] if self.entries else 0
        vectors = (np.stack([e.clip for e in entries]) if entries
                   else np.zeros((0, dim), np.float32))
        items = [e.item for e in entries]
        return EmbeddingSet(name=self.name, modality=self.modality,
                            ids=[it.id for it in items], labels=[it.label for it in items],
                            pair_ids=[it.pair_id for it in items], vectors=vectors,
                            paths=[it.path for it in items], options=self.options)


@dataclass
class DatasetEmbeddings:
    """Result of :func:`embed_dataset`."""

    scan: ScanResult
    runs: dict[str, EmbedderRun]
    manifest_path: str = ""
    damaged_cache_entries: list[tuple[str, str]] = field(default_factory=list)

    @property
    def sets(self):
        """Every embedded item's clip vectors, per embedder."""
        return {name: run.embedding_set() for name, run in self.runs.items()}

    def analysis_sets(self) -> dict:
        """The sets to analyse: as :attr:`sets`, less the items each model was trained on."""
        return {name: run.embedding_set(unseen_only=True) for name, run in self.runs.items()}

    @property
    def layers(self) -> dict[str, list[str]]:
        """Per embedder asked for several layers, its layers' space names in the network's
        order (``{"hf-audio": ["hf-audio@0", ...]}``); empty when there are none."""
        out: dict[str, list[str]] = {}
        for name, run in self.runs.items():
            if run.layer is not None:
                out.setdefault(run.cache_name, []).append(name)
        return out

    def n_seen_in_training(self) -> dict[str, int]:
        """Per embedder, how many embedded items it was trained on (only those with any)."""
        counts = {name: sum(e.item.content_hash in r.seen_in_training for e in r.entries)
                  for name, r in self.runs.items()}
        return {name: n for name, n in counts.items() if n}

    def summary(self) -> dict:
        """Dataset summary for the report: counts, pairs, skipped files with reasons."""
        out = self.scan.summary()
        out["skipped"] = [(it.id, reason) for it, reason in _all_skips(self)]
        out["embedders"] = {
            name: {"found": r.n_found, "embedded": r.n_embedded, "computed": r.n_computed,
                   "cached": r.n_cached, "skipped": len(r.skipped), "seconds": round(r.seconds, 3)}
            for name, r in self.runs.items()}
        out["damaged_cache_entries"] = list(self.damaged_cache_entries)
        out["noted"] = [(e.item.id, f"{name}: {'; '.join(e.notes)}")
                        for name, r in self.runs.items() for e in r.entries if e.notes]
        out["seen_in_training"] = self.n_seen_in_training()
        out["layers"] = self.layers
        out["note_counts"] = {name: dict(Counter(n for e in r.entries for n in e.notes))
                              for name, r in self.runs.items()}
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
        return path, _worker_embedder.compute_spaces(path)
    except Exception as exc:  # returned, not raised: one bad file must not end the pool
        return path, exc


def _embed_stream(embedder: Embedder, paths: list[str], workers: int, inflight: InFlight
                  ) -> Iterator[tuple[str, dict[str, Embedding] | Exception]]:
    """``embedder.embed_many_spaces`` in chunks, or a process pool for per-file embedders;
    ``inflight`` records the files being embedded (a chunk, or the pool's window)."""
    try:
        if workers > 1 and embedder.parallel_files and len(paths) > 1:
            yield from _pool_stream(embedder, paths, workers, inflight)
            return
        for start in range(0, len(paths), CHUNK_FILES):
            chunk = paths[start:start + CHUNK_FILES]
            inflight.begin(chunk)
            yield from embedder.embed_many_spaces(chunk)
    finally:  # any Python-level end (done, Ctrl-C, an error): only a native crash leaves it
        inflight.end()


def _pool_stream(embedder: Embedder, paths: list[str], workers: int, inflight: InFlight
                 ) -> Iterator[tuple[str, dict[str, Embedding] | Exception]]:
    """Per-file embedding in ``workers`` processes, results in input order. A worker killed by
    a signal breaks the pool: the files it had in flight are then embedded one at a time in
    child processes (:func:`collection.crashes.embed_alone`) and a new pool takes the rest."""
    todo = iter(paths)
    while True:
        with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init,
                                 initargs=(embedder.name, dict(embedder.options))) as pool:
            # A bounded window of files in flight (``pool.map`` would submit them all, and
            # finished results would pile up in memory while the store writes lag behind).
            window = deque((p, pool.submit(_worker_embed, p)) for p in _take(todo, 2 * workers))
            try:
                while window:
                    inflight.begin(p for p, _ in window)
                    out = window[0][1].result()
                    window.popleft()
                    yield out
                    window.extend((p, pool.submit(_worker_embed, p)) for p in _take(todo, 1))
                return
            except BrokenProcessPool:
                broken = [p for p, _ in window]
        for path in broken:  # outside the broken pool
            yield inflight.settle(path, embed_alone(embedder, path))


def _then(action: Callable[[], None], iterator: Iterator) -> Iterator:
    """``iterator``, with ``action()`` run before its first item is asked for."""
    action()
    yield from iterator


def _take(iterator: Iterator[str], n: int) -> list[str]:
    return [p for _, p in zip(range(n), iterator)]


def local_results(todo: list[Item], embedder: Embedder, store: EmbeddingStore, *,
                  keys: dict[str, dict[str, str]], options: dict[str, dict], workers: int = 1
                  ) -> Iterator[tuple[Item, dict[str, RunEntry] | str]]:
    """The in-process engine: embed ``todo`` here (or in ``workers`` processes) and cache it.

    Parameters
    ----------
    keys : dict
        Item id -> {space: cache key}.
    options : dict
        Space -> its cache options (:meth:`Embedder.spaces`).

    Yields
    ------
    (Item, dict or str)
        Per item, as it finishes: its run entry per space, or the reason it is skipped.
    """
    by_path = {it.path: it for it in todo}
    inflight = InFlight(store.root, embedder.name)
    suspects = inflight.suspects() & set(by_path)
    # files being embedded when an earlier run died: each alone in a child process first
    first = (inflight.settle(path, embed_alone(embedder, path)) for path in sorted(suspects))
    rest = _embed_stream(embedder, [it.path for it in todo if it.path not in suspects], workers,
                         inflight)
    for path, out in itertools.chain(first, _then(inflight.forget_dead, rest)):
        it = by_path[path]
        entry = store_spaces(it, out, embedder, store, keys=keys[it.id], options=options)
        del out  # this file's frames are in the cache now; keep only its clip vectors
        yield it, entry


def embed_items(items: Iterable[Item], embedder: Embedder, store: EmbeddingStore, *,
                workers: int = 1, progress: bool = True,
                on_result: Callable[[Item, str], None] | None = None,
                engine: str = "local", engine_options: dict | None = None) -> EmbedderRun:
    """Embed every item of the embedder's modality, using and filling the store.

    Parameters
    ----------
    items : iterable of Item
        Usable, hashed items (other modalities are ignored).
    embedder : Embedder
        Loaded or not; it is loaded here. One space only (for several, :func:`embed_spaces`).
    store : EmbeddingStore
    workers : int
        Processes for embedders that embed file by file (``parallel_files``).
    on_result : callable, optional
        Called as ``on_result(item, status)`` after each file (for tests and progress hooks).
    engine : {"local", "ray"}
        Where files are embedded: this process and its ``workers`` processes, or the actors
        of a Ray cluster (:mod:`collection.ray_engine`; ``workers`` actors, 0: one per CPU, or
        per ``gpus_per_worker`` GPUs). Both cache entries the same way and give the same run.
    engine_options : dict, optional
        Keyword arguments of :func:`collection.ray_engine.ray_results` (``address``,
        ``gpus_per_worker``).

    Returns
    -------
    EmbedderRun
        One :class:`RunEntry` per embedded item (clip vector, frame count, cache key): the
        frames themselves are only in the store, for :func:`export_run` to stream.

    Raises
    ------
    StoreError
        The store cannot be written (e.g. the disk is full); finished entries stay valid.
    ValueError
        The embedder gives several spaces (``layer=all``).
    """
    embedder.load()
    spaces = list(embedder.spaces())
    if len(spaces) != 1:
        raise ValueError(f"{embedder.name} gives {len(spaces)} spaces ({', '.join(spaces)}): "
                         f"use embed_spaces")
    runs = embed_spaces(items, embedder, store, workers=workers, progress=progress,
                        on_result=on_result, engine=engine, engine_options=engine_options)
    return runs[spaces[0]]


def embed_spaces(items: Iterable[Item], embedder: Embedder, store: EmbeddingStore, *,
                 workers: int = 1, progress: bool = True,
                 on_result: Callable[[Item, str], None] | None = None,
                 engine: str = "local", engine_options: dict | None = None
                 ) -> dict[str, EmbedderRun]:
    """:func:`embed_items` for an embedder with one or several spaces (``layer=all``).

    Each file is computed once (one forward pass gives every space); each space is looked up
    and cached under its own key. A file is computed again when any of its spaces is missing.

    Returns
    -------
    dict
        Space name -> its :class:`EmbedderRun`, in the embedder's order. ``seconds`` of each is
        the time of the one computation they share.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    t0 = time.perf_counter()
    embedder.load()
    spaces = embedder.spaces()
    layers = embedder.space_layers()
    seen = frozenset(embedder.seen_in_training())
    runs = {space: EmbedderRun(name=space, modality=embedder.modality, options=options,
                               seen_in_training=seen, embedder=embedder.name,
                               layer=layers.get(space))
            for space, options in spaces.items()}
    mine = [it for it in items if not it.skip_reason and it.modality == embedder.modality]
    entries, reasons, keys, todo = _look_up(mine, embedder, store, spaces)
    if engine == "ray":
        from .ray_engine import ray_results as engine_results  # Ray only when asked for
        extra = dict(engine_options or {})
    else:
        engine_results, extra = local_results, {}
    results = engine_results(todo, embedder, store, keys=keys, options=spaces,
                             workers=workers, **extra)
    bar = progress_bar(len(todo), desc=f"embedding with {embedder.name}", unit="file",
                       enabled=progress and bool(todo))
    _collect(results, entries, reasons, bar=bar, on_result=on_result)
    seconds = time.perf_counter() - t0
    for space, run in runs.items():
        run.n_found = len(mine)
        run.record(mine, entries[space], reasons)
        run.seconds = seconds
    return runs


def _look_up(mine: list[Item], embedder: Embedder, store: EmbeddingStore,
             spaces: dict[str, dict]
             ) -> tuple[dict[str, dict[str, RunEntry]], dict[str, str], dict[str, dict[str, str]],
                        list[Item]]:
    """The store's answer for each item: ``entries`` (space -> id -> cached run entry: clip
    and frame count, the frames stay on disk), ``reasons`` (id -> why the embedder cannot take
    it), ``keys`` (id -> space -> cache key) and ``todo`` (the items with a space to compute)."""
    entries: dict[str, dict[str, RunEntry]] = {space: {} for space in spaces}
    reasons: dict[str, str] = {}
    keys: dict[str, dict[str, str]] = {}
    todo: list[Item] = []
    for it in mine:
        if not embedder.accepts(it.path):
            reasons[it.id] = f"{embedder.name} does not read {os.path.splitext(it.path)[1]} files"
            continue
        keys[it.id] = {space: cache_key(embedder.name, embedder.version, options, it.content_hash)
                       for space, options in spaces.items()}
        found = {}
        for space, key in keys[it.id].items():
            cached = store.peek(embedder.name, key)
            if cached is None:
                break  # one forward pass computes every space again
            found[space] = RunEntry(item=it, key=key, clip=cached.clip, n_frames=cached.n_frames,
                                    computed=False, notes=cached.notes)
        else:
            for space, entry in found.items():
                entries[space][it.id] = entry
            continue
        todo.append(it)
    return entries, reasons, keys, todo


def _collect(results: Iterator[tuple[Item, dict[str, RunEntry] | str]],
             entries: dict[str, dict[str, RunEntry]], reasons: dict[str, str], *, bar,
             on_result: Callable[[Item, str], None] | None) -> None:
    """Take an engine's results into ``entries`` / ``reasons`` as they come, ticking ``bar``."""
    try:
        with bar:
            for it, entry in results:
                if isinstance(entry, str):
                    reasons[it.id] = entry
                    status = SKIPPED
                else:
                    for space, space_entry in entry.items():
                        entries[space][it.id] = space_entry
                    status = EMBEDDED
                bar.update(1)
                if on_result is not None:
                    on_result(it, status)
    finally:
        results.close()  # at once, also when interrupted: the Ray engine then frees its actors


def export_run(run: EmbedderRun, embedder: Embedder, store: EmbeddingStore, *, meta: dict,
               progress: bool = True) -> Path:
    """Write the export folder of one run, streaming every item's frames from the cache.

    An entry found damaged only now (its frames are checked as they are copied) is removed
    from the cache and computed again; if that fails the item moves to ``run.skipped``.

    Returns
    -------
    Path
        The export folder, ``<emb-dir>/export/<embedder>`` (``run.name``: one layer's space
        is exported under its own name, e.g. ``export/hf-audio@6``).
    """
    kept: list[RunEntry] = []
    bar = progress_bar(len(run.entries), desc=f"exporting {run.name}", unit="file",
                       enabled=progress and bool(run.entries))
    with bar, ExportWriter(export_dir(store.root, run.name), meta=meta) as writer:
        for entry in run.entries:
            bar.update(1)
            it = entry.item
            fields = dict(id=it.id, label=it.label, path=it.path, pair_id=it.pair_id,
                          content_hash=it.content_hash)
            try:
                blocks = store.iter_frames(run.cache_name, entry.key)  # checked as copied
                entry.n_frames = writer.add_item(**fields, clip=entry.clip, frame_blocks=blocks)
            except DamagedEntryError:
                try:
                    out = embedder.compute_spaces(it.path)[run.name]
                except Exception as exc:  # any model error skips this file, as in the run
                    out = exc
                fresh = store_result(it, out, embedder, store, key=entry.key,
                                     options=run.options)
                if isinstance(fresh, str):
                    run.skipped.append((it, fresh))
                    continue
                writer.add_item(**fields, clip=fresh.clip,
                                frame_blocks=[(out.frames, out.timestamps)])
                entry = fresh
                del out
            kept.append(entry)
        path = writer.commit()
    run.entries = kept
    return path


def embed_dataset(root: str | os.PathLike, embedders: list[Embedder], *,
                  emb_dir: str | os.PathLike, out_dir: str | os.PathLike, workers: int = 1,
                  progress: bool = True, scan: ScanResult | None = None,
                  engine: str = "local", engine_options: dict | None = None
                  ) -> DatasetEmbeddings:
    """Scan ``root``, embed it with every embedder (cached), write the manifest and exports.

    Parameters
    ----------
    root : path
        Dataset folder (``ROOT/<label>/.../<file>``).
    embedders : list of Embedder
        Distinct names. They are loaded before any file is touched, so a weights problem
        (or a layer the model lacks) stops the run early. An embedder with several spaces
        (``layer=all``) gives one run and one export per space, keyed by the space's name.
    emb_dir : path
        The embeddings folder: content-addressed cache and per-embedder export folders.
    out_dir : path
        Where ``manifest.csv`` goes.
    engine, engine_options
        As for :func:`embed_items`: ``"ray"`` embeds on a Ray cluster whose every node mounts
        ``emb_dir`` and the dataset at the same paths; the manifest and export are written here.

    Returns
    -------
    DatasetEmbeddings
    """
    names = [e.name for e in embedders]
    if len(set(names)) != len(names):
        raise ValueError(f"embedder names must be distinct, got {names}")
    for emb in embedders:
        emb.load()
    spaces = [space for emb in embedders for space in emb.spaces()]
    if len(set(spaces)) != len(spaces):
        raise ValueError(f"space names must be distinct, got {spaces}")
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
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.csv"
    for emb in embedders:
        for space, run in embed_spaces(scan.usable, emb, store, workers=workers,
                                       progress=progress, engine=engine,
                                       engine_options=engine_options).items():
            runs[space] = run
            meta = {"embedder": space, "modality": emb.modality, "version": emb.version,
                    "options": run.options, "dataset": scan.root}
            if run.layer is not None:  # one layer of several: which model, which layer
                meta.update(layer_of=emb.name, layer=run.layer)
            run.export_path = str(export_run(run, emb, store, meta=meta, progress=progress))
    write_manifest(manifest_path, manifest_rows(scan, runs))
    return DatasetEmbeddings(scan=scan, runs=runs, manifest_path=str(manifest_path),
                             damaged_cache_entries=list(store.damaged))
