"""The embedding store: a content-addressed cache of per-file embeddings, plus per-run exports.

Layout under the embeddings folder (``--emb-dir``)::

    cache/<embedder>/<key[:2]>/<key>.npz     one entry per (embedder, version, options, file bytes)
    <embedder>.npz                           export of the last run: every item's vectors + ids

``key`` is the SHA-256 of the embedder name, its version, the options that change the numbers
(:meth:`~embedders.base.Embedder.cache_options`) and the file's content hash — never its path or
modification time, so renaming or touching a file does not recompute it.

Every file is a plain ``.npz`` readable with ``numpy.load(path)`` (no pickle):

* cache entry: ``frames`` float32 (n_frames, dim), ``clip`` float32 (dim,), ``timestamps``
  float64 (n_frames,) or (0,), ``meta`` (a JSON string: key, embedder, version, options,
  content hash, info).
* export: ``ids``, ``labels``, ``paths``, ``pair_ids``, ``content_hashes`` (str, (n,)),
  ``clip`` float32 (n, dim), ``frames`` float32 (total_frames, dim), ``frame_offsets`` int64
  (n+1,) — item i's frames are ``frames[frame_offsets[i]:frame_offsets[i+1]]`` —,
  ``timestamps`` float64 (total_frames,) (NaN where the model has none), ``meta`` (JSON string).

Writes go to a temporary file in the same folder, are flushed to disk, and are renamed into place,
so a crash or kill never leaves a half-written entry under a real name. A damaged entry (bad zip,
CRC error, wrong key, non-finite values) is reported, removed and recomputed, never trusted.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np

from embedders import Embedding
from common.fsutil import atomic_path

#: Format version of cache entries; bump when the layout changes.
STORE_FORMAT = 1


class StoreError(OSError):
    """Writing to the embedding store failed (disk full, no permission). The cache stays valid."""


def cache_key(embedder_name: str, version: str, options: dict, content_hash: str) -> str:
    """The content-addressed key of one entry (hex SHA-256).

    Options are serialised as canonical JSON (sorted keys), so their order never matters.
    """
    payload = json.dumps({"format": STORE_FORMAT, "embedder": embedder_name, "version": version,
                          "options": options, "content": content_hash},
                         sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def atomic_save_npz(path: str | os.PathLike, **arrays) -> None:
    """Write an uncompressed ``.npz`` atomically (temp file, fsync, rename).

    Raises
    ------
    StoreError
        The write failed; no file exists under ``path`` that was not there before.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
    except OSError as exc:
        raise _store_error(exc, path) from exc


def _store_error(exc: OSError, path: Path) -> StoreError:
    if exc.errno == errno.ENOSPC:
        why = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "no permission to write there"
    else:
        why = exc.strerror or str(exc)
    return StoreError(exc.errno, f"cannot write {path}: {why}; entries already written stay valid")


def _json_array(obj) -> np.ndarray:
    return np.array(json.dumps(obj, sort_keys=True, default=str))


def read_meta(npz) -> dict:
    """Decode the ``meta`` JSON of an opened store or export file."""
    return json.loads(str(npz["meta"][()]))


class EmbeddingStore:
    """Content-addressed cache of embeddings under one folder.

    Parameters
    ----------
    root : str or Path
        The embeddings folder (created on first write).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.cache_root = self.root / "cache"
        #: Problems found with cached entries during this session: (path, reason).
        self.damaged: list[tuple[str, str]] = []

    def entry_path(self, embedder_name: str, key: str) -> Path:
        return self.cache_root / embedder_name / key[:2] / f"{key}.npz"

    def get(self, embedder_name: str, key: str) -> Embedding | None:
        """The stored embedding, or ``None`` when absent or damaged (damaged ones are removed)."""
        path = self.entry_path(embedder_name, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta = read_meta(npz)
                if meta.get("key") != key:
                    raise ValueError("entry holds another key")
                frames = np.array(npz["frames"])
                clip = np.array(npz["clip"])
                ts = np.array(npz["timestamps"])
            if not (np.all(np.isfinite(frames)) and np.all(np.isfinite(clip))):
                raise ValueError("non-finite values")
            emb = Embedding(frames=frames, clip=clip,
                            timestamps=ts if ts.size else None, info=meta.get("info", {}))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            self.damaged.append((str(path), f"{type(exc).__name__}: {exc}"))
            try:
                path.unlink()
            except OSError:
                pass
            return None
        return emb

    def put(self, embedder_name: str, key: str, emb: Embedding, *, meta: dict) -> Path:
        """Store one embedding atomically. ``meta`` is recorded with the key."""
        path = self.entry_path(embedder_name, key)
        ts = emb.timestamps if emb.timestamps is not None else np.zeros(0)
        atomic_save_npz(path, frames=emb.frames, clip=emb.clip, timestamps=ts,
                        meta=_json_array({**meta, "key": key, "info": emb.info,
                                          "written": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        return path

    def clean_stale_temp(self, older_than_s: float = 24 * 3600) -> int:
        """Remove temporary files left by killed runs (only old ones: others may be live)."""
        removed = 0
        if not self.cache_root.is_dir():
            return 0
        now = time.time()
        for tmp in self.cache_root.rglob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime > older_than_s:
                    tmp.unlink()
                    removed += 1
            except OSError:
                pass
        return removed

    def export_path(self, embedder_name: str) -> Path:
        return self.root / f"{embedder_name}.npz"

    def write_export(self, embedder_name: str, *, ids, labels, paths, pair_ids, content_hashes,
                     embeddings: list[Embedding], meta: dict) -> Path:
        """Write the per-run export of one embedder (see the module docstring for the layout)."""
        n = len(ids)
        if len(embeddings) != n:
            raise ValueError("one embedding per id is required")
        dim = embeddings[0].clip.shape[0] if embeddings else 0
        offsets = np.zeros(n + 1, dtype=np.int64)
        for i, emb in enumerate(embeddings):
            offsets[i + 1] = offsets[i] + emb.frames.shape[0]
        frames = (np.concatenate([e.frames for e in embeddings]) if embeddings
                  else np.zeros((0, dim), np.float32))
        ts = (np.concatenate([e.timestamps if e.timestamps is not None
                              else np.full(e.frames.shape[0], np.nan) for e in embeddings])
              if embeddings else np.zeros(0))
        clip = np.stack([e.clip for e in embeddings]) if embeddings else np.zeros((0, dim), np.float32)
        path = self.export_path(embedder_name)
        atomic_save_npz(path, ids=np.asarray(ids, dtype=str), labels=np.asarray(labels, dtype=str),
                        paths=np.asarray(paths, dtype=str), pair_ids=np.asarray(pair_ids, dtype=str),
                        content_hashes=np.asarray(content_hashes, dtype=str),
                        clip=clip.astype(np.float32), frames=frames.astype(np.float32),
                        frame_offsets=offsets, timestamps=ts.astype(np.float64),
                        meta=_json_array(meta))
        return path


def load_export(path: str | os.PathLike):
    """Read an export file back as an :class:`analysis.data.EmbeddingSet` (clip vectors)."""
    from .embedding_set import EmbeddingSet

    with np.load(path, allow_pickle=False) as npz:
        meta = read_meta(npz)
        return EmbeddingSet(name=meta["embedder"], modality=meta["modality"], ids=npz["ids"],
                            labels=npz["labels"], pair_ids=npz["pair_ids"], vectors=npz["clip"],
                            paths=npz["paths"], options=meta.get("options", {}))
