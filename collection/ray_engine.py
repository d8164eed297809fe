"""The Ray engine: embed a collection on the actors of a Ray cluster, into the same store.

>>> from collection import embed_dataset                                     # doctest: +SKIP
>>> embed_dataset("DATA", [get_embedder("openl3")], emb_dir="/shared/emb", out_dir="results/x",
...               engine="ray", engine_options={"address": "auto", "gpus_per_worker": 1})

What runs where: the driver (this process) scans and hashes the collection, looks every file
up in the store, and sends the missing ones, a few per task, to long-lived actors. Each actor
holds one loaded model (on a GPU when ``gpus_per_worker`` > 0), embeds its files the way the
embedder batches best (:meth:`~embedders.base.Embedder.embed_many`: CLaMP 2 across files,
OpenL3 by frames inside a file), and writes each cache entry itself, atomically, with the same
function as the in-process engine (:func:`collection.runs.store_result`, which also refuses a
file that changed while it was embedded). Only small results come back: the run entry (key,
clip vector, frame count, notes) or the reason a file is skipped. The driver then writes the
manifest and the export, and runs the analysis, as it does for the in-process engine.

Every node must therefore see the dataset and the embeddings folder at the same paths (a shared
filesystem: NFS, Lustre, a cloud file store), and have this repository importable (the same
checkout at the same path; its folder is put on the workers' ``PYTHONPATH``).

Faults: an actor that dies (killed, out of memory, node lost) is restarted and its task run again
(:data:`RETRIES` times); past that, its files are skipped with a reason and the next run embeds
them. Entries are renamed into place only when complete, so neither a dead worker nor an
interrupted driver leaves a half-written one, and a rerun resumes from what is stored.
Ray moves the actors of a lost node to the nodes that remain; a driver that has waited
:data:`LIVENESS_POLL_S` for a result asks the cluster which nodes are alive, and when none is
left to run them (every node lost, or the driver's own node, whose raylet it talks through)
it ends with :class:`RayClusterLostError` instead of waiting forever.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Iterator

from embedders import Embedder, get_embedder
from .runs import CHUNK_FILES, RunEntry, store_spaces
from .scan import Item
from .store import EmbeddingStore

#: How often a dead actor is restarted, and its task run again, before its files are left over.
RETRIES = 3

#: Tasks queued per actor, so that an actor has its next files while the driver reads results.
TASKS_IN_FLIGHT = 2

#: The repository root: on every worker's ``PYTHONPATH`` so that actors import the packages.
CODE_ROOT = str(Path(__file__).resolve().parents[1])

INSTALL_HINT = "pip install 'ray>=2.60' (or pip install -r requirements.txt)"

#: Seconds the driver waits for a result before it checks that the cluster still has its nodes.
LIVENESS_POLL_S = 10.0
#: Seconds the cluster gets to say which nodes are alive; no answer counts as a lost cluster.
CLUSTER_ANSWER_S = 30.0


class RayEngineError(RuntimeError):
    """The Ray engine cannot run: Ray is not installed, or the cluster lacks what was asked."""


class RayClusterLostError(RayEngineError):
    """The Ray cluster lost the nodes the run needs mid-run; what was embedded is in the store."""


def require_ray():
    """The ``ray`` module; :class:`RayEngineError` with how to install it when it is absent."""
    try:
        import ray
    except ImportError:
        raise RayEngineError(f"--engine ray needs the ray package, which is not installed: "
                             f"{INSTALL_HINT}") from None
    return ray


def connect(address: str | None = None) -> bool:
    """Join the Ray cluster at ``address``, or start a local one (``None``).

    Does nothing when this process is already connected (a caller's own ``ray.init``).
    A local instance binds to 127.0.0.1 and uses every CPU of this machine.

    Returns
    -------
    bool
        Whether this call connected (the caller may then ``ray.shutdown()``).
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    python_path = os.pathsep.join(p for p in (CODE_ROOT, os.environ.get("PYTHONPATH")) if p)
    kwargs = dict(runtime_env={"env_vars": {"PYTHONPATH": python_path}},
                  logging_level=logging.WARNING, include_dashboard=False)
    if address is None:
        kwargs["_node_ip_address"] = "127.0.0.1"
    ray.init(address=address, **kwargs)
    return True


class EmbedWorker:
    """One long-lived worker: a loaded embedder and the store it writes (a Ray actor class).

    Parameters
    ----------
    module : str
        The module that registers the embedder (imported first, so that embedders defined
        outside :mod:`embedders`, e.g. a project's own, are found by name).
    name : str
    options : dict
        As given to :func:`embedders.get_embedder`.
    store_root : str
        The embeddings folder, at the same path on every node.
    thread_limits : dict, optional
        Threads per thread pool API (``{"blas": 2}``), as :func:`threadpoolctl.threadpool_limits`
        takes them, and ``"torch"``: torch's intra-op threads. Ray gives each actor one thread;
        the driver's counts make an actor's numbers bit-identical to the in-process engine's
        (float sums are split by thread count).
    """

    def __init__(self, module: str, name: str, options: dict, store_root: str,
                 thread_limits: dict | None = None):
        limits = dict(thread_limits or {})
        torch_threads = limits.pop("torch", None)
        if torch_threads:
            import torch
            torch.set_num_threads(torch_threads)
        if limits:
            from threadpoolctl import threadpool_limits
            self._threads = threadpool_limits(limits=limits)  # held for the actor's life
        importlib.import_module(module)
        self.embedder = get_embedder(name, **options).load()
        self.store = EmbeddingStore(store_root)

    def embed(self, items: list[Item], keys: dict[str, dict[str, str]], options: dict
              ) -> list[tuple[str, dict[str, RunEntry] | str]]:
        """Embed and cache ``items``; per item, ``(item id, {space: run entry} or skip reason)``
        (``keys``: item id -> space -> cache key; ``options``: space -> cache options)."""
        by_path = {it.path: it for it in items}
        done = []
        for path, out in self.embedder.embed_many_spaces(list(by_path)):
            it = by_path[path]
            done.append((it.id, store_spaces(it, out, self.embedder, self.store,
                                             keys=keys[it.id], options=options)))
            del out  # cached now; only the clip vector travels back
        return done


def driver_thread_limits() -> dict:
    """This process's thread count per thread pool API (BLAS, OpenMP; torch), for the actors."""
    limits: dict[str, int] = {}
    if "torch" in sys.modules:  # a model embedder is loaded here; no import otherwise
        limits["torch"] = sys.modules["torch"].get_num_threads()
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # scikit-learn's dependency; without it actors keep Ray's default
        return limits
    for pool in threadpool_info():
        limits[pool["user_api"]] = max(limits.get(pool["user_api"], 1), pool["num_threads"])
    return limits


def cluster_workers(*, gpus_per_worker: float = 0.0) -> int:
    """How many workers the connected cluster holds: one per CPU, or per ``gpus_per_worker`` GPUs.

    Raises
    ------
    RayEngineError
        GPUs were asked for and the cluster has too few.
    """
    ray = require_ray()
    resources = ray.cluster_resources()
    if gpus_per_worker > 0:
        n = int(resources.get("GPU", 0) // gpus_per_worker)
        if n < 1:
            raise RayEngineError(f"--ray-gpus-per-worker {gpus_per_worker:g}: the Ray cluster has "
                                 f"{resources.get('GPU', 0):g} GPUs")
        return n
    return max(1, int(resources.get("CPU", 1)))


def files_per_task(embedder: Embedder, n_files: int, n_workers: int) -> int:
    """Files sent to an actor at once.

    File-by-file embedders (``parallel_files``; OpenL3 batches frames inside a file) get a few,
    so that the work spreads evenly while a task's overhead stays small; embedders that batch
    across files (CLaMP 2) get a full share, up to :data:`~collection.runs.CHUNK_FILES`.
    """
    if embedder.parallel_files:
        return max(1, min(8, math.ceil(n_files / (4 * n_workers))))
    return max(1, min(CHUNK_FILES, math.ceil(n_files / n_workers)))


def ray_results(todo: list[Item], embedder: Embedder, store: EmbeddingStore, *,
                keys: dict[str, str], options: dict, workers: int = 0,
                address: str | None = None, gpus_per_worker: float = 0.0
                ) -> Iterator[tuple[Item, RunEntry | str]]:
    """Embed ``todo`` on Ray actors, which cache each entry; yield the results as they come.

    Parameters
    ----------
    todo : list of Item
        Items missing from the store.
    embedder : Embedder
        Its name, options and registering module are sent to the actors, not the object.
    keys : dict
        Item id → space → cache key (one space unless the embedder gives several layers).
    options : dict
        Space → its cache options (stored in each entry's meta).
    workers : int
        Actors to start; 0: one per CPU of the cluster (or per ``gpus_per_worker`` GPUs).
    address : str, optional
        ``"auto"``, ``"ray://HOST:PORT"`` or ``"HOST:PORT"``; ``None``: Ray on this machine.
    gpus_per_worker : float
        GPUs each actor holds (fractions share a GPU); 0: CPU actors.

    Yields
    ------
    (Item, RunEntry or str)
        As the in-process engine (:func:`collection.pipeline.local_results`).
    """
    # Long by one generator's life cycle (start actors, submit, poll with the liveness check,
    # retry, shut down) that must stay in one frame so its finally-clause can clean up.
    if not todo:
        return
    ray = require_ray()
    connect(address)
    n_workers = workers or cluster_workers(gpus_per_worker=gpus_per_worker)
    per_task = files_per_task(embedder, len(todo), n_workers)
    batches = deque(todo[i:i + per_task] for i in range(0, len(todo), per_task))
    actors = _start_actors(ray, embedder, store, min(n_workers, len(batches)), gpus_per_worker)
    pending = {}

    def submit(actor) -> None:
        if batches:
            batch = batches.popleft()
            ref = actor.embed.remote(batch, {it.id: keys[it.id] for it in batch}, options)
            pending[ref] = (actor, batch)

    try:
        for actor in [a for a in actors for _ in range(TASKS_IN_FLIGHT)]:
            submit(actor)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=LIVENESS_POLL_S)
            if not ready:  # a quiet spell: is anything left to run the tasks?
                _check_cluster(ray, pending, batches)
                continue
            actor, batch = pending.pop(ready[0])
            lost = yield from _task_results(ray, ready[0], batch)
            if not lost:  # a lost actor, past its restarts, gets no more files
                submit(actor)
        for batch in batches:  # every actor was lost
            for it in batch:
                yield it, "no Ray worker left; run again"
    finally:
        _kill_actors(ray, actors)


def _kill_actors(ray, actors: list) -> None:
    """Free the actors' CPUs/GPUs for the next embedder's actors."""
    for actor in actors:
        try:
            ray.kill(actor)
        except Exception:  # noqa: BLE001 (a lost cluster: nothing is left to free)
            pass


def _check_cluster(ray, pending: dict, batches: deque) -> None:
    """Raise :class:`RayClusterLostError` when the cluster can no longer run the pending tasks."""
    lost = cluster_lost(ray)
    if lost:
        n_left = sum(len(b) for _, b in pending.values()) + sum(len(b) for b in batches)
        raise RayClusterLostError(f"{lost}: {n_left} files not embedded; the files embedded "
                                  f"so far are kept in the store and a re-run embeds the rest")


def cluster_lost(ray, *, answer_s: float | None = None) -> str | None:
    """Why the connected cluster cannot run tasks any more, or None while it can.

    Lost: no node alive, the driver's own node dead (its results come through that raylet), or
    no answer from the cluster within ``answer_s`` seconds (default :data:`CLUSTER_ANSWER_S`;
    asked from a thread, as the client may itself retry for minutes).
    """
    answer: dict = {}

    def ask() -> None:
        try:
            answer["alive"] = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
            answer["mine"] = ray.get_runtime_context().get_node_id()
        except Exception as exc:  # noqa: BLE001 (any failure to answer is the answer)
            answer["error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else \
                type(exc).__name__

    wait_s = CLUSTER_ANSWER_S if answer_s is None else answer_s
    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(wait_s)
    if asker.is_alive():
        return f"the Ray cluster does not answer (no reply within {wait_s:g} s)"
    if "error" in answer and "alive" not in answer:
        return f"the Ray cluster does not answer ({answer['error']})"
    if not answer["alive"]:
        return "the Ray cluster lost every node"
    if answer.get("mine") and answer["mine"] not in answer["alive"]:
        return f"the Ray cluster lost this machine's node ({answer['mine'][:12]})"
    return None


def _start_actors(ray, embedder: Embedder, store: EmbeddingStore, n: int,
                  gpus_per_worker: float) -> list:
    """``n`` :class:`EmbedWorker` actors, each restarted up to :data:`RETRIES` times."""
    worker_class = ray.remote(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=RETRIES,
                              max_task_retries=RETRIES)(EmbedWorker)
    return [worker_class.remote(type(embedder).__module__, embedder.name, dict(embedder.options),
                                str(store.root), driver_thread_limits())
            for _ in range(n)]


def _task_results(ray, ref, batch: list[Item]):
    """Yield ``(item, run entry or skip reason)`` for one finished task; return whether its
    actor was lost (then its files are left for the next run)."""
    try:
        done = dict(ray.get(ref))
    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
        cluster = cluster_lost(ray)  # a node lost with it: no worker can take the files
        if cluster:
            raise RayClusterLostError(f"{cluster}: the files embedded so far are kept in the "
                                      f"store and a re-run embeds the rest") from exc
        reason = f"Ray worker lost ({type(exc).__name__}); run again"
        for it in batch:
            yield it, reason
        return True
    for it in batch:
        entry = done.get(it.id, "not returned by its Ray worker; run again")
        # the driver's own Item, not the copy that travelled
        yield it, entry if isinstance(entry, str) else {
            space: dataclasses.replace(e, item=it) for space, e in entry.items()}
    return False
