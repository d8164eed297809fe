"""Where weight files live, how they are fetched and how they are named in cache keys: a user
cache folder, verified downloads, one fingerprint per weight file.

Weights never go into the user's data folder. The cache folder is ``$EMBCOMPARE_CACHE_DIR`` if
set, else ``$XDG_CACHE_HOME/embcompare``, else ``~/.cache/embcompare``.
"""
from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

from ..base import WeightsError
from common.fsutil import atomic_path, sha256_file
from common.progress import progress_bar

CACHE_ENV = "EMBCOMPARE_CACHE_DIR"
OFFLINE_ENV = "EMBCOMPARE_OFFLINE"


def cache_dir(subdir: str | None = None) -> Path:
    """The user cache folder (not created here)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "embcompare"
    return base / subdir if subdir else base


def offline() -> bool:
    """True when downloads are forbidden (``EMBCOMPARE_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in (OFFLINE_ENV, "HF_HUB_OFFLINE"))


#: Name of the file (in the cache folder) remembering the SHA-256 of weight files by
#: (real path, size, mtime), so a 1.3 GB checkpoint is hashed once, not at every run.
FINGERPRINT_MEMO = "weights_sha256.json"

_digests: dict[str, str] = {}
_digests_lock = threading.Lock()


def weights_fingerprint(path: str | os.PathLike) -> str:
    """The identity of a weight file in cache keys: ``"name:size:sha256[:16]"``.

    ``name`` is the file name as given (a link keeps its own name). The SHA-256 is memoised per
    (real path, size, mtime) in this process and in ``FINGERPRINT_MEMO`` in the cache folder,
    so repeats are free; a changed file (new size or mtime) is hashed again.
    """
    path = Path(path)
    st = path.stat()
    key = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns])
    with _digests_lock:
        digest = _digests.get(key)
    if digest is None:
        memo_file = cache_dir() / FINGERPRINT_MEMO
        memo = _read_memo(memo_file)
        digest = memo.get(key)
        if not isinstance(digest, str):
            digest = sha256_file(path)
            memo[key] = digest
            _write_memo(memo_file, memo)
        with _digests_lock:
            _digests[key] = digest
    return f"{path.name}:{st.st_size}:{digest[:16]}"


def _read_memo(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_memo(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".part") as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
    except OSError:  # a read-only cache only costs a re-hash next time
        pass


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None,
             min_size: int = 1, decompress_gzip: bool = False, how_to_provide: str = "",
             timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` with a progress bar, verify it, and move it in atomically.

    The file is written to a temporary name beside ``dest`` and renamed only after the size
    (and, when given, the SHA-256 of the final file) checks out, so an interrupted or corrupt
    download is never mistaken for a good file.

    Raises
    ------
    WeightsError
        Offline, network failure, or a failed check; the message names the file, the URL and
        ``how_to_provide``.
    """
    dest = Path(dest)
    hint = f" {how_to_provide}" if how_to_provide else ""
    if offline():
        raise WeightsError(f"{dest.name} is not cached and downloads are off ({OFFLINE_ENV} or "
                           f"HF_HUB_OFFLINE is set). Get it from {url}{hint}")
    with atomic_path(dest, suffix=".part") as tmp:
        with open(tmp, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    with progress_bar(total, unit="B", unit_scale=True,
                                      desc=f"downloading {dest.name}") as bar:
                        src = resp
                        if decompress_gzip:
                            import gzip
                            src = gzip.GzipFile(fileobj=_Counting(resp, bar))
                        for block in iter(lambda: src.read(1 << 20), b""):
                            out.write(block)
                            if not decompress_gzip:
                                bar.update(len(block))
            except (urllib.error.URLError, OSError, EOFError) as exc:
                raise WeightsError(f"could not download {dest.name} from {url}: {exc}.{hint}") from exc
        size = os.path.getsize(tmp)
        if size < min_size:
            raise WeightsError(f"download of {dest.name} from {url} is too small ({size} bytes); "
                               f"expected at least {min_size}.{hint}")
        if sha256 is not None:
            got = sha256_file(tmp)
            if got != sha256:
                raise WeightsError(f"download of {dest.name} from {url} has SHA-256 {got}, "
                                   f"expected {sha256}.{hint}")
    return dest


class _Counting:
    """File wrapper that advances a progress bar by the compressed bytes read."""

    def __init__(self, raw, bar):
        self.raw, self.bar = raw, bar

    def read(self, n=-1):
        block = self.raw.read(n)
        self.bar.update(len(block))
        return block


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"
