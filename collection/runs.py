"""What a run keeps of each embedded file, and the one way an engine caches a file it embedded.

Both engines (the in-process one, :mod:`collection.pipeline`, and the Ray actors,
:mod:`collection.ray_engine`) import these; neither imports the other's internals.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from embedders import Embedder, Embedding, InputError
from .scan import Item
from .store import EmbeddingStore

#: How many files are handed to ``embed_many`` at once (bounds memory; results stream back).
CHUNK_FILES = 64


@dataclass
class RunEntry:
    """One embedded item, as a run keeps it: never its frames.

    Attributes
    ----------
    item : Item
    key : str
        Its cache key: the frames are read back from the store when the export is written.
    clip : np.ndarray [shape=(dim,), dtype=float32]
    n_frames : int
    computed : bool
        Computed in this run (``False``: found in the cache).
    notes : tuple of str
        The embedder's notes on this file (``Embedding.info["notes"]``), for the manifest.
    """

    item: Item
    key: str
    clip: np.ndarray
    n_frames: int
    computed: bool
    notes: tuple = ()


def skip_reason(exc: Exception) -> str:
    if isinstance(exc, InputError):
        return exc.reason
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:300]


def unchanged_since_hashed(item: Item) -> bool:
    """Whether a file still has the size and mtime it had when it was hashed."""
    try:
        st = os.stat(item.path)
    except OSError:
        return False
    return st.st_size == item.size and st.st_mtime_ns == item.mtime_ns


def store_result(it: Item, out: Embedding | Exception, embedder: Embedder,
                 store: EmbeddingStore, *, key: str, options: dict) -> RunEntry | str:
    """Cache one computed embedding; the run entry, or the reason the item is skipped.

    Every engine calls this where the embedding was computed (a Ray actor calls it on its
    node), so the changed-file check and the atomic write are the same everywhere.
    """
    if isinstance(out, Exception):
        return skip_reason(out)
    if not unchanged_since_hashed(it):
        return "file changed while it was being embedded; run again"
    store.put(embedder.name, key, out,
              meta={"embedder": embedder.name, "version": embedder.version, "options": options,
                    "content_hash": it.content_hash, "source_path": it.path})
    # a copy, so that a clip that is a view into the frames does not keep them alive
    return RunEntry(item=it, key=key, clip=out.clip.copy(), n_frames=out.frames.shape[0],
                    computed=True, notes=tuple(out.info.get("notes", ())))


def store_spaces(it: Item, out: dict[str, Embedding] | Exception, embedder: Embedder,
                 store: EmbeddingStore, *, keys: dict[str, str], options: dict[str, dict]
                 ) -> dict[str, RunEntry] | str:
    """Cache every space of one computed file (:meth:`Embedder.compute_spaces`); the run entry
    of each space, or the reason the item is skipped.

    Each space goes under the embedder's cache folder with its own key and options (a layer's
    space is keyed like the single-layer embedder computing it alone, so they share entries).
    """
    if isinstance(out, Exception):
        return skip_reason(out)
    missing = sorted(set(keys) - set(out))
    if missing:
        return f"{embedder.name} gave no {', '.join(missing)}"
    entries: dict[str, RunEntry] = {}
    for space, key in keys.items():
        entry = store_result(it, out[space], embedder, store, key=key, options=options[space])
        if isinstance(entry, str):
            return entry
        entries[space] = entry
    return entries

