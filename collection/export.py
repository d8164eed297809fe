"""The per-run export: every item's vectors of one embedder, as a folder numpy reads alone.

Layout (``EXPORT_FORMAT`` 2), one folder per embedder under the embeddings folder::

    <emb-dir>/export/<embedder>/          the export of the last finished run
        meta.json           {"format": 2, "embedder", "modality", "version", "options", "dataset",
                             "n_items", "n_frames", "dim", "run_id", "written"}
        clip.npy            float32 (n_items, dim)       one vector per item
        frames.npy          float32 (n_frames, dim)      every item's frames, item after item
        frame_offsets.npy   int64   (n_items + 1,)       item i owns frames[off[i]:off[i+1]]
        timestamps.npy      float64 (n_frames,)          seconds; NaN where the model has none
        ids.npy, labels.npy, paths.npy, pair_ids.npy, content_hashes.npy
                            str     (n_items,)           dataset-relative id, class label, path
                                                         as embedded, audio/MIDI pair id ("" if
                                                         unpaired), SHA-256 of the file bytes

Every array is a plain ``.npy`` (no pickle). ``frames.npy`` is meant to be opened with
``np.load(path, mmap_mode="r")``: it is never read into memory to be written or to be loaded,
so a collection whose frames exceed the RAM can still be exported and browsed. An empty run
gives ``n_items = 0`` and ``dim = 0``.

``<embedder>`` is a symbolic link to a hidden, uniquely named folder beside it
(``.<embedder>.<run_id>``). A run builds its export in a temporary folder
(``.<embedder>.<random>.tmp``), fsyncs every file and the folder, renames it to its run name and
then replaces the link with one rename, so a reader never sees a mix of two runs and a kill at
any moment leaves either the previous export or the new one under the real name, plus at most a
stray hidden folder that a later run removes. Where the file system has no symbolic links
(FAT, some network shares) the old folder is renamed aside and the new one renamed in; a kill
between those two renames leaves the export under ``.<embedder>.<id>.old``, which the next run
puts back. A reader that opens several files should resolve the link once
(``os.path.realpath``) and read everything from that folder, as :func:`read_export` does.

Exports of format 1 (one ``<emb-dir>/<embedder>.npz`` holding the same arrays and a JSON
``meta`` string) are still read by :func:`read_export` and :func:`load_export`.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from common.exits import first_line

from .store import StoreError, _store_error

#: Format version of the export folder; 1 was the single ``.npz`` file.
EXPORT_FORMAT = 2
#: Sub-folder of the embeddings folder that holds the exports (never clashes with ``cache/``).
EXPORT_FOLDER = "export"
#: The string arrays of an export, one entry per item.
STRING_FIELDS = ("ids", "labels", "paths", "pair_ids", "content_hashes")
#: Bytes reserved for a ``.npy`` header written before the array's length is known.
_NPY_HEADER_BYTES = 128


def export_dir(emb_dir: str | os.PathLike, embedder_name: str) -> Path:
    """Where the export of ``embedder_name`` lives under the embeddings folder ``emb_dir``."""
    return Path(emb_dir) / EXPORT_FOLDER / embedder_name


# -- writing ---------------------------------------------------------------------------------------

class _NpyAppender:
    """A ``.npy`` file written row block by row block; the header is completed on :meth:`close`.

    The header (shape unknown yet) is padded to a fixed size, so rewriting it with the final
    shape never moves the data.
    """

    def __init__(self, path: Path, dtype):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape: tuple[int, ...] | None = None
        self.rows = 0
        self._fh = open(path, "wb")
        self._fh.write(b"\0" * _NPY_HEADER_BYTES)

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if self.row_shape is None:
            self.row_shape = block.shape[1:]
        elif block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {block.shape[1:]} after "
                             f"{self.row_shape}")
        self._fh.write(block.data)
        self.rows += block.shape[0]

    def truncate(self, rows: int) -> None:
        """Forget every row after the first ``rows`` (an item that failed half-way)."""
        row_bytes = self.dtype.itemsize * int(np.prod(self.row_shape or (), dtype=np.int64))
        self._fh.seek(_NPY_HEADER_BYTES + rows * row_bytes)
        self._fh.truncate()
        self.rows = rows

    def close(self, *, row_shape: tuple[int, ...]) -> None:
        """Write the final header and flush the file to disk."""
        shape = (self.rows, *(self.row_shape if self.row_shape is not None else row_shape))
        header = repr({"descr": np.lib.format.dtype_to_descr(self.dtype),
                       "fortran_order": False, "shape": shape})
        prefix = np.lib.format.magic(1, 0)
        room = _NPY_HEADER_BYTES - len(prefix) - 2  # 2 bytes of header length (format 1.0)
        text = header.ljust(room - 1) + "\n"
        if len(text) != room:
            raise ValueError(f"shape {shape} does not fit a {_NPY_HEADER_BYTES}-byte header")
        self._fh.seek(0)
        self._fh.write(prefix + room.to_bytes(2, "little") + text.encode("latin1"))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def discard(self) -> None:
        self._fh.close()


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the renames are still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ExportWriter:
    """Build one export folder item by item, then swap it into place as a whole.

    Frames are appended to ``frames.npy`` as they arrive, so memory holds only the clip
    vectors and the per-item strings. Use as a context manager: leaving it by an exception
    discards the temporary folder and keeps the previous export.

    Parameters
    ----------
    dest : path
        The export folder to (re)place, e.g. :func:`export_dir(emb_dir, name) <export_dir>`.
    meta : dict
        JSON-serialisable facts recorded in ``meta.json`` (embedder, modality, version,
        options, dataset); counts, dim, format and run id are added.

    Raises
    ------
    StoreError
        A write failed (disk full, no permission); the previous export is untouched.
    """

    def __init__(self, dest: str | os.PathLike, *, meta: dict):
        self.dest = Path(dest)
        self.meta = dict(meta)
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
        self._strings: dict[str, list[str]] = {name: [] for name in STRING_FIELDS}
        self._clips: list[np.ndarray] = []
        self._offsets = [0]
        self.dim: int | None = None
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            _recover_renamed_aside(self.dest)
            clean_stale_exports(self.dest)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.", suffix=".tmp",
                                             dir=self.dest.parent))
            self._frames = _NpyAppender(self.tmp / "frames.npy", np.float32)
            self._timestamps = _NpyAppender(self.tmp / "timestamps.npy", np.float64)
        except OSError as exc:
            raise _store_error(exc, self.dest) from exc

    def __enter__(self) -> "ExportWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()

    @property
    def n_items(self) -> int:
        return len(self._clips)

    def add_item(self, *, id: str, label: str, path: str, pair_id: str = "",
                 content_hash: str = "", clip: np.ndarray,
                 frame_blocks: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> int:
        """Append one item; its frames arrive as blocks of consecutive rows.

        Parameters
        ----------
        clip : np.ndarray [shape=(dim,)]
        frame_blocks : iterable of (np.ndarray [shape=(k, dim)], np.ndarray [shape=(k,)] or None)
            Frames with their timestamps (``None``: the model has none, stored as NaN).
            If the iterable raises, the rows of this item already written are dropped and the
            exception propagates: the export stays as if the item had never been added.

        Returns
        -------
        int
            The item's number of frames.
        """
        clip = np.asarray(clip, dtype=np.float32).reshape(-1)
        self._check_dim(clip.shape[0])
        start = self._frames.rows
        try:
            for frames, timestamps in frame_blocks:
                frames = np.asarray(frames, dtype=np.float32)
                if frames.ndim != 2:
                    raise ValueError(f"frames of {id} must be 2-D, got {frames.shape}")
                self._check_dim(frames.shape[1])
                if timestamps is None:
                    timestamps = np.full(frames.shape[0], np.nan)
                elif np.shape(timestamps) != (frames.shape[0],):
                    raise ValueError(f"timestamps of {id} do not match its frames")
                self._frames.append(frames)
                self._timestamps.append(np.asarray(timestamps, dtype=np.float64))
        except BaseException as exc:
            self._frames.truncate(start)
            self._timestamps.truncate(start)
            if isinstance(exc, OSError) and not isinstance(exc, StoreError):
                raise _store_error(exc, self.dest) from exc  # the blocks' reader reports its own
            raise
        for name, value in zip(STRING_FIELDS, (id, label, path, pair_id, content_hash)):
            self._strings[name].append(str(value))
        self._clips.append(clip)
        self._offsets.append(self._frames.rows)
        return self._frames.rows - start

    def _check_dim(self, dim: int) -> None:
        if self.dim is None:
            self.dim = int(dim)
        elif dim != self.dim:
            raise ValueError(f"dimension {dim} after {self.dim}: one export holds one space")

    def commit(self) -> Path:
        """Finish every file, flush them to disk and swap the folder into place."""
        dim = self.dim if self.dim is not None else 0
        try:
            self._frames.close(row_shape=(dim,))
            self._timestamps.close(row_shape=())
            clip = (np.stack(self._clips) if self._clips else np.zeros((0, dim), np.float32))
            _save_npy(self.tmp / "clip.npy", clip)
            _save_npy(self.tmp / "frame_offsets.npy", np.asarray(self._offsets, dtype=np.int64))
            for name, values in self._strings.items():
                _save_npy(self.tmp / f"{name}.npy", np.asarray(values, dtype=str))
            meta = {**self.meta, "format": EXPORT_FORMAT, "n_items": self.n_items,
                    "n_frames": self._frames.rows, "dim": dim, "run_id": self.run_id,
                    "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
            with open(self.tmp / "meta.json", "w", encoding="utf-8") as fh:
                json.dump(meta, fh, sort_keys=True, indent=1, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(self.tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
            _fsync_dir(self.tmp)
            _swap_into_place(self.tmp, self.dest, self.run_id)
        except OSError as exc:
            self.discard()
            raise _store_error(exc, self.dest) from exc
        return self.dest

    def discard(self) -> None:
        """Drop the temporary folder (the previous export stays)."""
        self._frames.discard()
        self._timestamps.discard()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap_into_place(built: Path, dest: Path, run_id: str) -> None:
    """Make ``dest`` show the folder ``built`` with one atomic rename (see the module docstring)."""
    folder = dest.parent
    version = folder / f".{dest.name}.{run_id}"
    os.rename(built, version)
    link = folder / f".{dest.name}.{run_id}.link"
    try:
        os.symlink(version.name, link, target_is_directory=True)  # relative: the tree can move
    except (OSError, NotImplementedError):
        _swap_by_renames(version, dest)
        return
    previous = None
    if dest.is_symlink():
        previous = folder / os.readlink(dest)
    elif dest.exists():  # a real folder, from a file system without links: set it aside first
        previous = folder / f".{dest.name}.{uuid.uuid4().hex[:8]}.old"
        os.rename(dest, previous)
    os.replace(link, dest)
    _fsync_dir(folder)
    if previous is not None and previous.resolve() != version.resolve():
        shutil.rmtree(previous, ignore_errors=True)  # open readers keep their mapped files


def _swap_by_renames(version: Path, dest: Path) -> None:
    aside = None
    if dest.exists() or dest.is_symlink():
        aside = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.old"
        os.rename(dest, aside)
    os.rename(version, dest)  # a kill just before this leaves `aside`, put back by the next run
    _fsync_dir(dest.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _recover_renamed_aside(dest: Path) -> None:
    """Put back an export a kill left renamed aside (no-symlink swap interrupted)."""
    if dest.exists() or dest.is_symlink():
        return
    for aside in sorted(dest.parent.glob(f".{dest.name}.*.old")):
        if (aside / "meta.json").is_file():
            os.rename(aside, dest)
            return


def clean_stale_exports(dest: str | os.PathLike, *, older_than_s: float = 24 * 3600) -> int:
    """Remove what killed or concurrent runs left beside ``dest`` (temporary folders, links,
    superseded run folders); only old ones: a young one may belong to a live run or reader."""
    dest = Path(dest)
    current = dest.resolve() if dest.is_symlink() else None
    removed = 0
    now = time.time()
    for leftover in dest.parent.glob(f".{dest.name}.*"):
        try:
            if now - leftover.lstat().st_mtime <= older_than_s:
                continue
            if leftover.is_symlink() or not leftover.is_dir():
                leftover.unlink()
            elif leftover.resolve() != current:
                shutil.rmtree(leftover)
            else:
                continue
            removed += 1
        except OSError:
            pass
    return removed


def write_export(dest: str | os.PathLike, *, ids, labels, paths, pair_ids, content_hashes,
                 embeddings, meta: dict) -> Path:
    """Write an export from embeddings already in memory (small collections, notebooks).

    Parameters
    ----------
    embeddings : list of embedders.Embedding
        One per id, in the same order.
    """
    if len(embeddings) != len(ids):
        raise ValueError("one embedding per id is required")
    with ExportWriter(dest, meta=meta) as writer:
        for i, emb in enumerate(embeddings):
            writer.add_item(id=ids[i], label=labels[i], path=paths[i], pair_id=pair_ids[i],
                            content_hash=content_hashes[i], clip=emb.clip,
                            frame_blocks=[(emb.frames, emb.timestamps)])
        return writer.commit()


# -- reading ---------------------------------------------------------------------------------------

@dataclass
class Export:
    """An export read back; ``frames`` and ``timestamps`` are memory-mapped (format 2).

    Attributes
    ----------
    ids, labels, paths, pair_ids, content_hashes : np.ndarray [shape=(n_items,), dtype=str]
    clip : np.ndarray [shape=(n_items, dim), dtype=float32]
    frames : np.ndarray [shape=(n_frames, dim), dtype=float32]
    frame_offsets : np.ndarray [shape=(n_items + 1,), dtype=int64]
    timestamps : np.ndarray [shape=(n_frames,), dtype=float64]
    meta : dict
    """

    ids: np.ndarray
    labels: np.ndarray
    paths: np.ndarray
    pair_ids: np.ndarray
    content_hashes: np.ndarray
    clip: np.ndarray
    frames: np.ndarray
    frame_offsets: np.ndarray
    timestamps: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.ids)

    def item_frames(self, i: int) -> np.ndarray:
        """np.ndarray [shape=(n_frames_i, dim)]: the frames of item ``i`` (a view)."""
        return self.frames[self.frame_offsets[i]:self.frame_offsets[i + 1]]


class ExportError(ValueError):
    """An export folder that cannot be read: a file missing, unreadable or disagreeing with
    ``meta.json``. ``str()`` is one line naming the file and what is wrong."""


def read_export(path: str | os.PathLike, *, mmap_mode: str | None = "r") -> Export:
    """Read an export folder (or a format-1 ``.npz`` file), checked by :func:`validate_export`.

    Parameters
    ----------
    path : path
        ``<emb-dir>/export/<embedder>`` or an old ``<emb-dir>/<embedder>.npz``.
    mmap_mode : {"r", None}
        How ``frames.npy`` and ``timestamps.npy`` are opened (format 1 is always read whole).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ExportError
        The export exists but is damaged (the message names the file).
    """
    path = Path(path)
    if path.suffix == ".npz" and path.is_file():
        return _read_npz_export(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(errno.ENOENT, "no export", str(path))
    for attempt in range(3):
        # Resolve the link once: every file then comes from the same run, even if another
        # run swaps in a new export meanwhile (and if it removes ours first, start again).
        real = Path(os.path.realpath(path))
        try:
            return _read_export_folder(real, mmap_mode)
        except ExportError:
            if attempt == 2 or Path(os.path.realpath(path)) == real:
                raise
    raise AssertionError("unreachable")


def _load_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise ExportError(f"{path}: missing (damaged export)") from None
    except (OSError, ValueError, EOFError) as exc:  # a bad header, pickled data, a short file
        raise ExportError(f"{path}: unreadable ({first_line(exc)}) (damaged export)") from exc


def _read_meta(folder: Path) -> dict:
    path = folder / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path}: missing (damaged export)") from None
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: unreadable ({first_line(exc)}) (damaged export)") from exc
    keys = ("embedder", "n_items", "n_frames", "dim")
    if not isinstance(meta, dict) or any(k not in meta for k in keys) or not all(
            isinstance(meta[k], int) and meta[k] >= 0 for k in keys[1:]):
        raise ExportError(f"{path}: not an export's meta (needs {', '.join(keys)}; counts as "
                          f"non-negative integers) (damaged export)")
    return meta


def _read_export_folder(folder: Path, mmap_mode: str | None) -> Export:
    if not folder.is_dir():
        raise ExportError(f"{folder}: not an export folder (damaged export)")
    meta = _read_meta(folder)
    arrays = {name: _load_npy(folder / f"{name}.npy")
              for name in (*STRING_FIELDS, "clip", "frame_offsets")}
    for name in ("frames", "timestamps"):
        arrays[name] = _load_npy(folder / f"{name}.npy", mmap_mode)
    export = Export(meta=meta, **arrays)
    validate_export(export, folder=folder)
    return export


def validate_export(export: Export, *, folder: str | os.PathLike = "export") -> None:
    """Check that every array of ``export`` has the shape and type ``meta.json`` says.

    Raises
    ------
    ExportError
        Naming the first file that disagrees (``folder/<name>.npy``) and how.
    """
    meta = export.meta
    n, total, dim = meta["n_items"], meta["n_frames"], meta["dim"]
    kinds = {"U": "strings", "f": "floats", "i": "integers"}
    want = {name: ((n,), "U") for name in STRING_FIELDS}
    want.update(clip=((n, dim), "f"), frames=((total, dim), "f"),
                frame_offsets=((n + 1,), "i"), timestamps=((total,), "f"))
    for name, (shape, kind) in want.items():
        array = getattr(export, name)
        if array.shape != shape or array.dtype.kind != kind:
            raise ExportError(f"{Path(folder) / (name + '.npy')}: {array.dtype} {array.shape}, "
                              f"meta.json says {kinds[kind]} {shape} (damaged export)")
    offsets = export.frame_offsets
    if (offsets[0] != 0 or int(offsets[-1]) != total or np.any(np.diff(offsets) < 0)):
        raise ExportError(f"{Path(folder) / 'frame_offsets.npy'}: not increasing from 0 to "
                          f"{total} frames (damaged export)")


def _read_npz_export(path: Path) -> Export:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: np.array(npz[name]) for name in
                  (*STRING_FIELDS, "clip", "frames", "frame_offsets", "timestamps")}
        meta = json.loads(str(npz["meta"][()]))
    return Export(meta=meta, **arrays)


def load_export(path: str | os.PathLike):
    """Read an export's clip vectors as an :class:`~collection.embedding_set.EmbeddingSet`.

    Frames are not read (format 2); ``path`` is an export folder or a format-1 ``.npz``.
    """
    from .embedding_set import EmbeddingSet

    export = read_export(path)
    meta = export.meta
    return EmbeddingSet(name=meta["embedder"], modality=meta["modality"], ids=export.ids,
                        labels=export.labels, pair_ids=export.pair_ids, vectors=export.clip,
                        paths=export.paths, options=meta.get("options", {}))

