"""Files that kill the process: remembered across runs, retried alone in a child process.

A native library can end the interpreter (a segmentation fault in compiled or JIT code) with no
Python exception, so no ``except`` can skip the file; and since the same file is the first to
embed on every re-run, the run could never finish. So the in-process engine records what it is
about to embed: before each batch, :class:`InFlight` writes the batch's paths to
``<store>/inflight/<embedder>.<host>.<pid>.json``, and removes the file once the batch is stored.
A later run that finds such a record of a process that is no longer alive treats those paths as
suspects (:meth:`InFlight.suspects`): each is embedded alone in a child process first
(:func:`embed_alone`); a child killed by a signal makes the file skipped with the signal as the
reason, any other outcome counts as usual, and the run goes on. A file that crashed its child is
remembered in ``<store>/inflight/crashed/<embedder>.json`` and embedded only in a child on every
later run (until it no longer crashes), so no run dies of it again.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
from pathlib import Path
from typing import Iterable

from common.fsutil import atomic_write_text
from embedders import Embedder, Embedding, InputError

__all__ = ["CrashedError", "InFlight", "embed_alone"]


class CrashedError(InputError):
    """The file killed the child process that embedded it alone (a native crash)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class InFlight:
    """The record of the files one process is embedding with one embedder.

    Parameters
    ----------
    store_root : Path
        The embeddings folder (:attr:`collection.store.EmbeddingStore.root`).
    embedder_name : str
    """

    def __init__(self, store_root: str | os.PathLike, embedder_name: str):
        self.folder = Path(store_root) / "inflight"
        self.embedder_name = embedder_name
        self.host = socket.gethostname()
        self.path = self.folder / f"{embedder_name}.{self.host}.{os.getpid()}.json"

    def begin(self, paths: Iterable[str]) -> None:
        """Record ``paths`` as being embedded now (replacing the previous batch)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(sorted(map(str, paths))))

    def end(self) -> None:
        """The batch is stored: nothing of this process is in flight."""
        self.path.unlink(missing_ok=True)

    def _dead_records(self) -> list[Path]:
        """Records of this embedder left by processes of this host that are no longer alive
        (another host's processes cannot be checked from here: left alone)."""
        out = []
        for p in sorted(self.folder.glob(f"{self.embedder_name}.{self.host}.*.json")):
            pid = p.name[:-len(".json")].rsplit(".", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                out.append(p)
        return out

    @property
    def crashed_file(self) -> Path:
        return self.folder / "crashed" / f"{self.embedder_name}.json"

    def _crashed(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.crashed_file.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return {}

    def settle(self, path: str, out):
        """Remember ``path`` as crashing when ``out`` (from :func:`embed_alone`) says it
        crashed, forget it otherwise; returns ``(path, out)``."""
        crashed = self._crashed()
        if isinstance(out, CrashedError):
            crashed[str(path)] = out.reason
        elif crashed.pop(str(path), None) is None:
            return path, out
        self.crashed_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.crashed_file, json.dumps(crashed, indent=1, sort_keys=True))
        return path, out

    def suspects(self) -> set[str]:
        """Paths that were being embedded when a process died, and those known to crash."""
        found: set[str] = set(self._crashed())
        for p in self._dead_records():
            try:
                found.update(json.loads(p.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # a record cut short: nothing to learn from it
        return found

    def forget_dead(self) -> None:
        """Remove the records of dead processes (their suspects have been dealt with)."""
        for p in self._dead_records():
            p.unlink(missing_ok=True)


def _embed_in_child(conn, cls: type[Embedder], options: dict, path: str) -> None:
    try:
        out: dict[str, Embedding] | Exception = cls(**options).load().compute_spaces(path)
    except Exception as exc:  # returned, as the in-process engine returns it
        out = exc
    conn.send(out)
    conn.close()


def embed_alone(embedder: Embedder, path: str) -> dict[str, Embedding] | Exception:
    """Every space's embedding of ``path``, computed in a fresh child process (spawned: no
    state of this one, JIT caches included, is shared); or the exception it raised; or an
    :class:`~embedders.InputError` naming the signal when the child was killed by one."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_embed_in_child,
                        args=(send, type(embedder), dict(embedder.options), str(path)))
    child.start()
    send.close()
    try:
        out = receive.recv()
    except EOFError:  # the child ended without an answer
        out = None
    child.join()
    if out is not None:
        return out
    return CrashedError(path, f"crashed the process ({_how_it_ended(child.exitcode)}), also when "
                            f"embedded alone in a child process; skipped")


def _how_it_ended(code: int | None) -> str:
    """``SIGSEGV`` for a child killed by that signal, else ``exit status N``."""
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"
