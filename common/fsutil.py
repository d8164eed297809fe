"""File helpers: atomic writes (a file either keeps its old content or has the complete new one)
and the SHA-256 of a file's bytes.

Everything this tool writes (cache entries, exports, manifests, tables, weights, the demo corpus)
goes through :func:`atomic_path`: the data is written to a hidden temporary file in the same
folder, flushed to disk, given the permissions a normal file would get, and renamed over the
destination. A crash, ``kill -9`` or full disk leaves at most a stray ``.*.tmp`` file, never a
half-written file under the real name.
"""
from __future__ import annotations

import hashlib
import os
import time
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(dest: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on normal exit, move it to ``dest``.

    The caller writes the temporary file completely (by name). On an exception the temporary
    file is removed and ``dest`` is untouched. ``suffix`` lets writers that infer the format
    from the name (e.g. soundfile) see the right extension.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # the data must be on disk before the rename
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                pass


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def atomic_write_text(dest: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``dest`` atomically."""
    return atomic_write_bytes(dest, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks of ``chunk_size`` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_writable_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove it can be written (a probe file, removed again).

    Raises
    ------
    OSError
        It cannot be created or written; callers turn this into their own one-line message.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-probe-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
    return folder


def remove_stale_files(root: str | os.PathLike, pattern: str, *,
                       older_than_s: float = 24 * 3600) -> int:
    """Remove files under ``root`` matching ``pattern`` (rglob) not modified for
    ``older_than_s`` seconds: temporaries left by killed runs (young ones may belong to a run
    still going). Returns how many were removed; unreadable entries are skipped."""
    root = Path(root)
    if not root.is_dir():
        return 0
    removed, now = 0, time.time()
    for tmp in root.rglob(pattern):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed += 1
        except OSError:
            pass
    return removed
