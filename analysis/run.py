"""The run: every registered metric of every embedder and embedder pair, then the tables,
figures and report of :mod:`analysis.outputs` and :mod:`analysis.report`.

Metric definitions live in :mod:`analysis.metrics` (one registration each), the per-embedder /
per-pair assembly in :mod:`analysis.evaluate`; this module only orchestrates and records how
the run was made (``parameters``, read from the registry and the contexts' defaults).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from common.progress import progress_bar

from . import comparisons, outputs
from ._common import UndefinedMetricError
from . import layers as layer_plots
from . import metrics as registry
from .evaluate import evaluate_embedder_context, evaluate_pair
from .io import jsonable, write_json_atomic
from .metrics.context import (DEFAULT_N_BOOTSTRAP, DEFAULT_N_PERMUTATIONS, EmbedderContext,
                              PairContext, entry)
from .metrics import frechet as frechet_metrics
from .schema import PAIR_METRICS

__all__ = ["run_analysis", "software_versions"]


def software_versions() -> dict:
    """Versions of python and the numerical libraries (torch etc. only if installed).

    Read from package metadata, so nothing heavy is imported."""
    from importlib import metadata
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for mod, dist in (("numpy", "numpy"), ("scipy", "scipy"), ("sklearn", "scikit-learn"),
                      ("matplotlib", "matplotlib"), ("openTSNE", "openTSNE"),
                      ("umap", "umap-learn"), ("torch", "torch"), ("librosa", "librosa"),
                      ("pretty_midi", "pretty_midi"), ("soundfile", "soundfile")):
        m = sys.modules.get(mod)
        v = getattr(m, "__version__", None) if m is not None else None
        if v is None:
            try:
                v = metadata.version(dist)
            except Exception:
                continue
        out[mod] = str(v)
    return out


def _pair_alignment(a, b) -> tuple[np.ndarray, np.ndarray, str]:
    """(ia, ib, how) aligning two EmbeddingSets: :func:`analysis.comparisons.shared_items`
    (one definition for the between-space metrics and the paired comparisons)."""
    return comparisons.shared_items(a, b)


def _unique_sets(sets, notes: list) -> list:
    """The sets in order, a repeated name kept once (noted)."""
    seen, uniq = set(), []
    for s in sets:
        if s.name in seen:
            notes.append(f"duplicate embedder name {s.name!r}: later set ignored")
            continue
        seen.add(s.name)
        uniq.append(s)
    return uniq


def _analyse_embedder(s, *, seed: int, n_bootstrap: int, hubness_reduction: str | None = None,
                      contexts: dict | None = None) -> OrderedDict:
    """:func:`evaluate_embedder` of one EmbeddingSet; a failure becomes undefined entries.
    Its context goes to ``contexts[s.name]`` (the comparisons reuse its repeated probe)."""
    try:
        ctx = EmbedderContext(s.vectors, s.labels, s.pair_ids, seed=seed,
                              n_bootstrap=n_bootstrap, hubness_reduction=hubness_reduction)
        if contexts is not None:
            contexts[s.name] = ctx
        r = evaluate_embedder_context(ctx, ids=s.ids)
    except Exception as exc:
        r = OrderedDict((m, entry(None, note=f"error: {exc}"))
                        for m in registry.names("embedder"))
        r.update(n_items=len(s), n_classes=len(s.classes), dim=s.dim,
                 notes=[f"analysis failed: {type(exc).__name__}: {exc}"])
    r["modality"] = s.modality
    r["options"] = dict(s.options or {})
    return r


def _analyse_pair(a, b, *, seed: int, n_bootstrap: int, n_permutations: int) -> OrderedDict:
    """:func:`evaluate_pair` on the items two EmbeddingSets share."""
    ia, ib, how = _pair_alignment(a, b)
    try:
        lab_a, lab_b = a.labels[ia], b.labels[ib]
        mismatch = int(np.sum(lab_a != lab_b))
        r = evaluate_pair(a.vectors[ia], b.vectors[ib], lab_a, seed=seed,
                          n_bootstrap=n_bootstrap, n_permutations=n_permutations)
        if mismatch:
            r["notes"].append(f"{mismatch} matched items carry different labels in the two "
                              f"sets; labels of {a.name} used")
    except Exception as exc:
        r = OrderedDict((m, entry(None, note=f"error: {exc}")) for m in PAIR_METRICS)
        r["notes"] = [f"analysis failed: {type(exc).__name__}: {exc}"]
    r["matched_by"] = how
    r["a"], r["b"] = a.name, b.name
    r["modalities"] = [a.modality, b.modality]
    if len(ia) == 0:
        r["notes"].insert(0, f"no shared items (matched by {how})")
    return r


def _analyse_all(sets, metrics: OrderedDict, bar, *, seed: int, n_bootstrap: int,
                 n_permutations: int, hubness_reduction: str | None = None,
                 methods: Sequence[str] = (), maps: dict | None = None, pool=None) -> None:
    """Fill ``metrics["embedders"]`` and ``metrics["pairs"]``; collect their notes. With
    a ``pool`` of worker processes the embedders and pairs are analysed there (each seeded as
    here, so the entries are the same whatever the count), and filled in the same order;
    the maps of ``methods`` are projected there too, into ``maps`` (see
    :func:`analysis.outputs.draw_maps`'s ``given``)."""
    notes = metrics["notes"]
    contexts: dict = {}
    pairs = [(a, b) for i, a in enumerate(sets) for b in sets[i + 1:]]
    emb_kw = {"seed": seed, "n_bootstrap": n_bootstrap, "hubness_reduction": hubness_reduction}
    pair_kw = {"seed": seed, "n_bootstrap": n_bootstrap, "n_permutations": n_permutations}
    done = (_analyse_in_workers(sets, pairs, emb_kw, pair_kw, pool, contexts, bar, notes,
                                methods=methods, seed=seed)
            if pool is not None else {})
    if maps is not None:
        maps.update({key[1:]: r for key, r in done.items() if key[0] == "map"})
    for s in sets:
        bar.set_postfix_str(s.name)
        if ("embedder", s.name) in done:
            r = done[("embedder", s.name)]
        else:
            bar.update()
            r = _analyse_embedder(s, contexts=contexts, **emb_kw)
            # keep what the comparisons reuse, not the context (its float64 copy of the
            # vectors and every cached intermediate: ~1 GB per space at 100,000 x 512-d)
            contexts[s.name] = _shared_parts(contexts.get(s.name), len(s))
        metrics["embedders"][s.name] = r
        notes.extend(f"{s.name}: {n}" for n in r.get("notes", []))
    for a, b in pairs:
        key = f"{a.name}__vs__{b.name}"
        bar.set_postfix_str(key)
        if ("pair", key) in done:
            r = done[("pair", key)]
        else:
            bar.update()
            r = _analyse_pair(a, b, **pair_kw)
        metrics["pairs"][key] = r
        notes.extend(f"{key}: {n}" for n in r.get("notes", []))
    if len(sets) == 1:
        notes.append("only one embedder: no between-embedder comparison")
    bar.set_postfix_str("paired comparisons")
    metrics["comparisons"] = _compare(sets, contexts, seed=seed, notes=notes)


class _SharedResults:
    """What the paired comparisons reuse of an embedder analysed in a worker process (its
    repeated probe, its neighbour table), in place of the context that stayed there."""

    def __init__(self, probe, table):
        self._probe, self._table = probe, table

    def repeated_probe(self) -> dict:
        if self._probe is None:
            raise UndefinedMetricError("no repeated probe")
        return self._probe

    def neighbours(self, k: int) -> np.ndarray:
        if self._table is None or self._table.shape[1] < k:
            raise UndefinedMetricError(f"no neighbour table at k={k}")
        return self._table[:, :k]


def _shared_parts(ctx, n: int) -> _SharedResults | None:
    """What the comparisons reuse of an embedder's context: its repeated probe and its
    neighbour table at the comparisons' largest k (both computed and cached by its metrics)."""
    if ctx is None:
        return None
    ks = _comparison_settings()["knn_ks"]
    table = None
    if ks:
        try:
            table = ctx.neighbours(min(max(ks), n - 1))
        except Exception:
            table = None
    return _SharedResults(ctx.peek("repeated_probe"), table)


def _embedder_job(s, kwargs: dict) -> tuple:
    """A worker's :func:`_analyse_embedder`, with what the comparisons reuse."""
    contexts: dict = {}
    r = _analyse_embedder(s, contexts=contexts, **kwargs)
    return r, _shared_parts(contexts.get(s.name), len(s))


def _pair_job(a, b, kwargs: dict):
    """A worker's :func:`_analyse_pair` (named here, so the worker looks it up in its own copy
    of this module: a caller that wrapped the main process's, e.g. a benchmark's timer, is not
    sent to the worker)."""
    return _analyse_pair(a, b, **kwargs)


def _worker_init(parent: int) -> None:
    """One BLAS / OpenMP thread per worker process: the workers are the parallelism. A worker
    also ends when the run's process is gone (killed, not interrupted): it would otherwise
    wait on its queue forever, holding its copy of the vectors."""
    global _WORKER_THREADS
    import threading
    from threadpoolctl import threadpool_limits
    _WORKER_THREADS = threadpool_limits(limits=1)
    # the run's pid comes from the run: a worker that starts after the run died would read
    # its new parent (init) here and wait for it forever
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _worker_pid(_=None) -> int:
    """The worker's process id (a test's probe of the pool)."""
    return os.getpid()


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


_WORKER_THREADS = None


def _map_job(s, method: str, seed: int):
    """A worker's projection for :func:`analysis.outputs.draw_maps`: (Y, params), or the
    exception (raised again where the map is drawn, which notes it)."""
    try:
        return outputs.project_set(s, method, seed=seed)
    except Exception as exc:
        return exc


def _worker_pool(workers: int):
    """The run's worker processes (spawned, one BLAS thread each), or None for one."""
    if workers <= 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    return ProcessPoolExecutor(max_workers=workers, initializer=_worker_init,
                               initargs=(os.getpid(),),
                               mp_context=multiprocessing.get_context("spawn"))


def _analyse_in_workers(sets, pairs, emb_kw, pair_kw, ex, contexts, bar, notes, *,
                        methods=(), seed: int = 0) -> dict:
    """Every embedder and pair analysed, and every map projected, in the executor ``ex``:
    {(kind, name...): result}. A broken pool (a worker killed) leaves its tasks to the
    sequential code, with a note."""
    done: dict = {}
    futures: list = []
    try:
        futures += [(("embedder", s.name), ex.submit(_embedder_job, s, emb_kw)) for s in sets]
        # the slowest maps first (t-SNE): they overlap with the pairs' metrics
        futures += [(("map", m, s.name), ex.submit(_map_job, s, m, seed))
                    for m in sorted(methods, key=lambda m: m == "pca") for s in sets]
        futures += [(("pair", f"{a.name}__vs__{b.name}"),
                     ex.submit(_pair_job, a, b, pair_kw)) for a, b in pairs]
        for key, fut in futures:
            res = fut.result()
            if key[0] != "map":  # a map's step is counted where it is drawn
                bar.update()
            if key[0] == "embedder":
                res, shared = res
                if shared is not None:
                    contexts[key[1]] = shared
            done[key] = res
    except Exception as exc:  # e.g. BrokenProcessPool: the rest runs here, one at a time
        notes.append(f"analysis workers failed ({type(exc).__name__}: {exc}); the "
                     f"{sum(1 for k, _ in futures if k[0] != 'map' and k not in done)} "
                     "remaining analyses ran in the main process")
    return done


def _compared_metrics() -> list:
    """The registered metrics compared between embedders (``compared=True``), in order."""
    return [m.name for m in registry.metrics("embedder") if m.compared]


def _comparison_settings() -> dict:
    """compare_all's settings, read from the registry and the embedder context, so a
    comparison's probe folds are the per-embedder probe's."""
    names = _compared_metrics()
    knn = [registry.get(n).params["k"] for n in names if n.startswith("knn_accuracy_k")]
    families = [f for f in ("knn", "probe") if any(n.startswith(f) for n in names)]
    return {"knn_ks": knn, "families": families,
            "probe_repeats": EmbedderContext.probe_repeats,
            "n_splits": registry.context_default(EmbedderContext, "n_splits")}


def _compare(sets: list, contexts: dict, *, seed: int, notes: list) -> list:
    """metrics["comparisons"]: every two embedders on their shared items
    (:func:`analysis.comparisons.compare_all`, Holm across the run). Each embedder's repeated
    probe is reused where the shared items are all the items of both."""
    def probe_of(s):
        ctx = contexts.get(s.name)
        try:
            return None if ctx is None else ctx.repeated_probe()
        except Exception:  # undefined there: compare_embedders notes it on the shared items
            return None
    settings = _comparison_settings()

    def neighbours_of(s):  # the embedder's one neighbour search, not a second one
        ctx, ks = contexts.get(s.name), settings["knn_ks"]
        try:
            return None if ctx is None or not ks else ctx.neighbours(max(ks))
        except Exception:
            return None
    if len(sets) < 2:
        return []
    try:
        return comparisons.compare_all(sets, seed=seed, probe_of=probe_of,
                                       neighbours_of=neighbours_of, **settings)
    except Exception as exc:
        notes.append(f"paired comparisons failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return []


def _run_parameters(*, seed, n_bootstrap, n_permutations, methods, title,
                    run_config) -> OrderedDict:
    """The run's settings as metrics.json records them: read from the registry and from the
    contexts' defaults, never restated."""
    default = registry.context_default
    knn = [m.params["k"] for m in registry.metrics("embedder")
           if m.name.startswith("knn_accuracy_k")]
    jaccard = [m.params["k"] for m in registry.metrics("pair")
               if m.name.startswith("knn_jaccard_k")]
    cosine = [m for m in registry.metrics() if m.cosine_based]
    return OrderedDict(
        seed=seed, n_bootstrap=n_bootstrap, n_permutations=n_permutations, ci_level=0.95,
        methods=list(methods), title=title, knn_ks=knn,
        probe_n_splits=default(EmbedderContext, "n_splits"),
        jaccard_k=jaccard[0] if len(jaccard) == 1 else jaccard,
        retrieval_test_fraction=default(PairContext, "test_fraction"),
        retrieval_max_components=default(PairContext, "max_components"),
        retrieval_splits=default(PairContext, "retrieval_splits"),
        cosine_centering={"centered": [m.name for m in cosine if m.params["centered"]],
                          "uncentered": [m.name for m in cosine if not m.params["centered"]],
                          "descriptives": "centroid_cosine centered, centroid_cosine_uncentered "
                                          "and the nearest-neighbour listing not"},
        probe_repeats=EmbedderContext.probe_repeats,
        kmeans_seeds=EmbedderContext.kmeans_seeds,
        comparisons=_comparison_parameters(),
        frechet_shrinkage=frechet_metrics.SHRINKAGE,
        frechet_outliers_listed=frechet_metrics.N_OUTLIERS,
        projections={}, run_config=run_config)


def _comparison_parameters() -> OrderedDict:
    """What metrics.json["comparisons"] compares, on which items, with which tests."""
    return OrderedDict(
        metrics=_compared_metrics(),
        on="the items each two embedders share (by pair id across modalities, by item id "
           "within one; items whose labels differ dropped), never each embedder's own items",
        tests={"knn_accuracy_k*": "McNemar exact, discordant counts divided by the neighbour "
                                  "and piece design effect; Newcombe interval",
               "knn_balanced_accuracy_k*": "continuity-corrected z-test, variance with "
                                           "neighbour and piece dependence",
               "probe_*": "exact sign-flip test of per-piece differences, the same "
                          f"{EmbedderContext.probe_repeats} grouped splits for both; Rubin "
                          "interval"},
        correction="Holm across every comparison of the run (p_holm)", alpha=0.05,
        **{k: v for k, v in _comparison_settings().items() if k != "families"})


def _make_dirs(*paths) -> list[Path]:
    dirs = [Path(d) for d in paths]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def run_analysis(sets: Sequence, out: str | Path, *, plot_dir: str | Path, cos_dir: str | Path,
                 var_dir: str | Path, title: str = "", methods: Sequence[str] = ("pca", "tsne"),
                 seed: int = 0, dataset_summary: dict | None = None, run_config: dict | None = None,
                 n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                 n_permutations: int = DEFAULT_N_PERMUTATIONS, progress: bool = False,
                 hubness_reduction: str | None = None, report_audio: str = "link",
                 probe_dir: str | Path | None = None, layers: dict | None = None,
                 workers: int = 1) -> dict:
    """Analyse every embedding set and every pair; write metrics, tables, plots and the report.

    Parameters
    ----------
    sets : list of EmbeddingSet
    out : Path
        Receives metrics.json, metrics_*.csv, confusion/neighbour CSVs, report.html, report.md.
    plot_dir, cos_dir, var_dir : Path
        Maps and bar chart; centroid cosine CSV + heatmaps; within-class variance CSVs.
    methods : tuple of str
        Subset of ("pca", "tsne", "umap").
    progress : bool
        Show a progress bar (one step per embedder, per pair and per map).
    hubness_reduction : {None, "mp"}
        ``"mp"`` adds the recommendation metrics under mutual proximity (``*_mp``).
    report_audio : {"link", "embed"}
        How the report's interactive maps play audio: a link relative to ``out``, or an embedded
        excerpt (:mod:`analysis.interactive`).
    workers : int
        Processes analysing the embedders and pairs side by side (1: all in this process).
        The entries are the same whatever the count (each analysis is seeded on its own);
        each worker runs one BLAS thread.
    layers : dict, optional
        Embedder -> its layers' space names in order (``layer=all``); default: the dataset
        summary's ``layers``. Recorded as ``metrics["layers"]``, drawn as metric by layer.

    Returns
    -------
    dict: the content of metrics.json.
    """
    # Long mostly by its docstring (every parameter documented); the body is the run's stages in
    # order (metrics, early metrics.json, tables and figures, maps, probes section, report).
    t_start = time.perf_counter()
    dirs = _make_dirs(out, plot_dir, cos_dir, var_dir)
    out = dirs[0]
    dataset_summary = dict(dataset_summary or {})
    methods = tuple(methods or ())
    n_bootstrap = int(DEFAULT_N_BOOTSTRAP if n_bootstrap is None else n_bootstrap)
    notes: list[str] = []
    params = _run_parameters(seed=seed, n_bootstrap=n_bootstrap, n_permutations=n_permutations,
                             methods=methods, title=title, run_config=dict(run_config or {}))
    metrics = OrderedDict(embedders=OrderedDict(), pairs=OrderedDict(), comparisons=[],
                          notes=notes, parameters=params, dataset=dataset_summary,
                          software=software_versions(), files={})
    sets = list(sets or [])
    if not sets:
        notes.append("no embedding sets were given: nothing to analyse")
    sets = _unique_sets(sets, notes)
    metrics["layers"] = layer_plots.layer_lists(
        layers if layers is not None else dataset_summary.get("layers"), [s.name for s in sets])
    n_steps = len(sets) + len(sets) * (len(sets) - 1) // 2 + len(methods) * len(sets)
    bar = progress_bar(n_steps, desc="analysis", unit="step", enabled=progress, leave=False)
    params["hubness_reduction"] = hubness_reduction
    maps_done: dict = {}
    tasks = len(sets) * (len(sets) + 1) // 2 + len(sets) * len(methods)
    pool = _worker_pool(int(workers) if tasks > 1 else 1)
    try:
        _analyse_all(sets, metrics, bar, seed=seed, n_bootstrap=n_bootstrap,
                     n_permutations=n_permutations, hubness_reduction=hubness_reduction,
                     methods=methods, maps=maps_done, pool=pool)
        params["seconds_metrics"] = round(time.perf_counter() - t_start, 3)
        write_json_atomic(metrics, out / "metrics.json")  # early copy; rewritten at the end
        all_classes = sorted({c for s in sets for c in s.labels.tolist()}
                             | set(dataset_summary.get("classes", []) or []))
        coords: OrderedDict = OrderedDict()
        images = outputs.write_tables_and_figures(
            metrics, sets, *dirs, title=title, methods=methods, seed=seed,
            all_classes=all_classes, bar=bar, coords=coords, given=maps_done, pool=pool)
    finally:
        if pool is not None:
            pool.shutdown()
    layer_plots.add_layer_figures(metrics, images, dirs[1], prefix=f"{title}: " if title else "")
    bar.close()
    params["seconds_total"] = round(time.perf_counter() - t_start, 3)
    write_json_atomic(metrics, out / "metrics.json")
    maps = _interactive_maps(coords, sets, out, notes, report_audio=report_audio,
                             seed=seed)
    sections = _probe_sections(probe_dir, out, metrics)
    _write_report(metrics, images, out, title=title, maps_html=maps, sections=sections)
    write_json_atomic(metrics, out / "metrics.json")
    return json.loads(json.dumps(jsonable(metrics)))


def _interactive_maps(coords: dict, sets: list, out: Path, notes: list, *,
                      report_audio: str, seed: int = 0) -> str:
    """The report's interactive maps of the coordinates just drawn ("" if none or failed)."""
    if not coords:
        return ""
    from . import interactive
    coords, sets = _map_subsample(coords, sets, notes, seed=seed)
    try:
        maps = interactive.maps_html(coords, sets, report_dir=out, audio=report_audio)
    except ImportError as exc:
        notes.append(f"no interactive maps in the report: {exc} (pip install plotly)")
        return ""
    except Exception as exc:
        notes.append(f"interactive maps failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return ""
    notes.extend(f"interactive maps: {n}" for n in maps.notes)
    return str(maps)


def _map_subsample(coords: dict, sets: list, notes: list, *, seed: int = 0) -> tuple:
    """The interactive page of a large set shows the rows its t-SNE map was fitted on
    (:func:`analysis.projection.map_rows`, above MAP_MAX_ITEMS items): its file grows with the
    items, and its neighbour lists cost O(n^2 dim). Returns (coords, sets) restricted."""
    import dataclasses

    from .projection import MAP_MAX_ITEMS, map_rows
    out_sets, keep = [], {}
    for s in sets:
        rows = map_rows(len(s), s.labels, s.pair_ids, seed=seed)
        if rows is None:
            out_sets.append(s)
            continue
        keep[s.name] = rows
        out_sets.append(dataclasses.replace(
            s, ids=s.ids[rows], labels=s.labels[rows], pair_ids=s.pair_ids[rows],
            vectors=s.vectors[rows], paths=s.paths[rows]))
        notes.append(f"interactive maps: {s.name} shows a seeded subsample of {len(rows):,} of "
                     f"{len(s):,} items (MAP_MAX_ITEMS = {MAP_MAX_ITEMS:,}); the static maps "
                     "and every metric use all items")
    if not keep:
        return coords, sets
    coords = OrderedDict((m, OrderedDict((name, Y[keep[name]] if name in keep else Y)
                                         for name, Y in per.items()))
                         for m, per in coords.items())
    return coords, out_sets


def _probe_sections(probe_dir, out: Path, metrics: OrderedDict) -> list:
    """The probes' report section ``[(html, markdown)]`` from ``probe_dir``/probe.json (written
    by :func:`probe.run.run_probes`), images linked relative to ``out``; [] without one."""
    if probe_dir is None or not (Path(probe_dir) / "probe.json").is_file():
        return []
    from .probe_report import render_probe_section
    probe_dir = Path(probe_dir)
    try:
        probe = json.loads((probe_dir / "probe.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        metrics["notes"].append(f"probe section left out: {probe_dir / 'probe.json'}: {exc}")
        return []
    images = {key: os.path.relpath(probe_dir / "plots" / f"probe_{key}.png", out)
              for key in ("attributes", "interventions")
              if (probe_dir / "plots" / f"probe_{key}.png").is_file()}
    metrics["files"]["probe_json"] = str(probe_dir / "probe.json")
    return [render_probe_section(probe, images)]


def _write_report(metrics: OrderedDict, images: dict, out: Path, *, title: str,
                  maps_html: str = "", sections: list = ()) -> None:
    from . import report
    try:
        report.write_report(metrics, images, out, title=title, maps_html=maps_html,
                            sections=sections)
        metrics["files"]["report_html"] = str(out / "report.html")
        metrics["files"]["report_md"] = str(out / "report.md")
    except Exception as exc:
        metrics["notes"].append(f"report failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
