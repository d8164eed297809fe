"""The embedding store: a content-addressed cache of per-file embeddings.

Layout under the embeddings folder (``--emb-dir``)::

    cache/<embedder>/<key[:2]>/<key>.npz     one entry per (embedder, version, options, file bytes)
    export/<embedder>/                       export of the last run (see :mod:`collection.export`)

``key`` is the SHA-256 of the embedder name, its version, the options that change the numbers
(:meth:`~embedders.base.Embedder.cache_options`) and the file's content hash — never its path or
modification time, so renaming or touching a file does not recompute it.

A cache entry is a plain uncompressed ``.npz`` readable with ``numpy.load(path)`` (no pickle):
``frames`` float32 (n_frames, dim), ``clip`` float32 (dim,), ``timestamps`` float64 (n_frames,)
or (0,), ``meta`` (a JSON string: key, embedder, version, options, content hash, info).

Writes go to a temporary file in the same folder, are flushed to disk, and are renamed into place,
so a crash or kill never leaves a half-written entry under a real name. A damaged entry (bad zip,
CRC error, wrong key, wrong shapes, non-finite values) is reported, removed and recomputed, never
trusted. A run reads entries in two steps so that frames never pile up in memory:
:meth:`EmbeddingStore.peek` checks the cheap parts (key, clip, shapes, sizes) and returns the clip
vector and frame count; :meth:`EmbeddingStore.iter_frames` later streams the frames block by block
(checking values and the CRC) into the export.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from embedders import Embedding
from common.fsutil import atomic_path, remove_stale_files

#: Format version of cache entries; bump when the layout changes.
STORE_FORMAT = 1


#: Bytes of frames read at a time when streaming an entry.
FRAME_BLOCK_BYTES = 4 << 20

#: What reading an entry may raise when it is damaged or gone.
_DAMAGE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


class StoreError(OSError):
    """Writing to the embedding store failed (disk full, no permission). The cache stays valid."""


class DamagedEntryError(ValueError):
    """A cache entry turned out damaged while its frames were streamed; it has been removed."""


@dataclass(frozen=True)
class EntrySummary:
    """What a run keeps of a cached entry: no frames.

    Attributes
    ----------
    clip : np.ndarray [shape=(dim,), dtype=float32]
    n_frames : int
    notes : tuple of str
        What the embedder noted about this file (``info["notes"]``: e.g. an unusual MIDI
        header it accepted), for the manifest.
    """

    clip: np.ndarray
    n_frames: int
    notes: tuple = ()


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

    def _report_damaged(self, path: Path, exc: BaseException) -> None:
        self.damaged.append((str(path), f"{type(exc).__name__}: {exc}"))
        try:
            path.unlink()
        except OSError:
            pass

    def get(self, embedder_name: str, key: str) -> Embedding | None:
        """The stored embedding, or ``None`` when absent or damaged (damaged ones are removed).

        Loads the frames whole: a run uses :meth:`peek` and :meth:`iter_frames` instead.
        """
        path = self.entry_path(embedder_name, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta = _checked_meta(npz, key)
                frames = np.array(npz["frames"])
                clip = np.array(npz["clip"])
                ts = np.array(npz["timestamps"])
            if not (np.all(np.isfinite(frames)) and np.all(np.isfinite(clip))):
                raise ValueError("non-finite values")
            emb = Embedding(frames=frames, clip=clip,
                            timestamps=ts if ts.size else None, info=meta.get("info", {}))
        except _DAMAGE as exc:
            self._report_damaged(path, exc)
            return None
        return emb

    def peek(self, embedder_name: str, key: str) -> EntrySummary | None:
        """Clip vector and frame count of an entry, without reading its frames.

        Checks what is cheap: the zip directory, the key, the clip's values, that the frames
        header agrees with the clip and the stored size, the timestamps' shape. Returns ``None``
        when absent or damaged (damaged ones are reported and removed).
        """
        path = self.entry_path(embedder_name, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta = _checked_meta(npz, key)
                clip = np.array(npz["clip"], dtype=np.float32)
                ts = npz["timestamps"]
                info = npz.zip.getinfo("frames.npy")
                with npz.zip.open(info) as fh:
                    n_frames, _ = _frames_header(fh, clip, data_bytes=info.file_size)
            if not np.all(np.isfinite(clip)):
                raise ValueError("non-finite values")
            if ts.shape not in ((n_frames,), (0,)):
                raise ValueError(f"timestamps of shape {ts.shape} for {n_frames} frames")
        except _DAMAGE as exc:
            self._report_damaged(path, exc)
            return None
        return EntrySummary(clip=clip, n_frames=n_frames,
                            notes=tuple(meta.get("info", {}).get("notes", ())))

    def iter_frames(self, embedder_name: str, key: str, *, block_bytes: int = FRAME_BLOCK_BYTES
                    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Stream an entry's frames as blocks of consecutive rows, checking them on the way.

        Yields
        ------
        frames : np.ndarray [shape=(k, dim), dtype=float32]
        timestamps : np.ndarray [shape=(k,), dtype=float64] or None

        Raises
        ------
        DamagedEntryError
            The entry is gone or damaged (non-finite values, truncated, CRC error); it has been
            reported and removed. Blocks already yielded must be discarded by the caller.
        """
        path = self.entry_path(embedder_name, key)
        try:
            with np.load(path, allow_pickle=False) as npz:
                _checked_meta(npz, key)
                clip = np.array(npz["clip"], dtype=np.float32)
                ts = np.array(npz["timestamps"], dtype=np.float64)
                with npz.zip.open("frames.npy") as fh:
                    n_frames, dtype = _frames_header(fh, clip)
                    dim = clip.shape[0]
                    rows = max(1, block_bytes // max(1, dim * dtype.itemsize))
                    for start in range(0, n_frames, rows):
                        k = min(rows, n_frames - start)
                        data = fh.read(k * dim * dtype.itemsize)
                        if len(data) != k * dim * dtype.itemsize:
                            raise ValueError("frames are truncated")
                        block = np.frombuffer(data, dtype=dtype).reshape(k, dim)
                        if not np.all(np.isfinite(block)):
                            raise ValueError("non-finite values")
                        yield block, (ts[start:start + k] if ts.size else None)
                    if fh.read(1):  # reading to the end also makes zipfile check the CRC
                        raise ValueError("frames hold more data than their header says")
        except _DAMAGE as exc:
            self._report_damaged(path, exc)
            raise DamagedEntryError(f"{path}: {type(exc).__name__}: {exc}") from exc

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
        return remove_stale_files(self.cache_root, ".*.tmp", older_than_s=older_than_s)


def _checked_meta(npz, key: str) -> dict:
    meta = read_meta(npz)
    if meta.get("key") != key:
        raise ValueError("entry holds another key")
    return meta


def _frames_header(fh, clip: np.ndarray, *, data_bytes: int | None = None
                   ) -> tuple[int, np.dtype]:
    """Read the ``.npy`` header of an entry's frames; check it against the clip (and size)."""
    version = np.lib.format.read_magic(fh)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran_order, dtype = read_header(fh)
    if len(shape) != 2 or shape[1] != clip.shape[0] or fortran_order or dtype.kind != "f":
        raise ValueError(f"frames of shape {shape} ({dtype}) do not match a clip of {clip.shape}")
    if data_bytes is not None and data_bytes != fh.tell() + shape[0] * shape[1] * dtype.itemsize:
        raise ValueError("frames do not have the size their header says")
    return int(shape[0]), dtype
