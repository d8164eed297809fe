"""Tables and figures of a finished ``metrics`` dict: the CSVs next to metrics.json, the
centroid-cosine and within-class-variance tables, the maps, heatmaps and the metric bar chart.

Everything here reads numbers that :mod:`analysis.run` already computed (only the 2-d maps
are computed here, by :mod:`analysis.projection`); a failure is recorded as a note, never
raised, so one broken figure does not lose the run.
"""
from __future__ import annotations

import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from common.csvfile import write_csv

from ._common import UndefinedMetricError, finite_or_none
from .io import six_digits
from . import metrics as registry
from .schema import EMBEDDER_METRICS, PAIR_METRICS, embedder_metric_names

__all__ = ["write_tables_and_figures", "write_metric_tables", "write_comparison_table",
           "write_embedder_tables",
           "draw_maps", "draw_matrices", "safe_name", "CENTROID_MATRICES"]

#: (key in an embedder's metrics, file suffix, heatmap title) of the centroid cosine matrices
CENTROID_MATRICES = (
    ("centroid_cosine", "centroid_cosine",
     "centroid cosine similarity, centred (fixed scale -1..1)"),
    ("centroid_cosine_uncentered", "centroid_cosine_uncentered",
     "centroid cosine similarity, UNCENTERED as in the original study (fixed scale -1..1)"),
)
#: (key in frechet, file suffix, heatmap title) of the class x class Fréchet matrices
FRECHET_MATRICES = (
    ("normalized", "frechet_normalized",
     "class x class Fréchet distance / total variance (scale-free)"),
    ("matrix", "frechet", "class x class Fréchet distance (squared units of the space)"),
)


def safe_name(name: str) -> str:
    """``name`` with every character but letters, digits and ``-_.`` replaced by ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name)) or "embedder"


def _write_table(path: Path, header: list, rows: list) -> Path:
    """One CSV table (6 significant digits, None as an empty cell), atomically."""
    return write_csv(path, rows, header=header, float_format=six_digits)


def write_tables_and_figures(metrics: dict, sets: list, out: Path, plot_dir: Path,
                             cos_dir: Path, var_dir: Path, *, title: str, methods: tuple,
                             seed: int, all_classes: list, bar: Any,
                             coords: dict | None = None, given: dict | None = None,
                             pool: Any = None) -> OrderedDict:
    """Every CSV and figure; file paths go to ``metrics["files"]``, failures to its notes.
    ``coords``, if given, receives the maps' 2-d coordinates; ``given`` holds projections
    already computed (see :func:`draw_maps`).

    Returns
    -------
    OrderedDict: image key -> written paths (PNG and SVG), for the report.
    """
    files, notes = metrics["files"], metrics["notes"]
    try:
        write_metric_tables(metrics, out, files)
        write_embedder_tables(metrics, out, cos_dir, var_dir, files)
    except Exception as exc:
        notes.append(f"writing tables failed: {type(exc).__name__}: {exc}")
    images = OrderedDict()
    prefix = f"{title}: " if title else ""
    try:
        draw_maps(sets, plot_dir, methods=methods, seed=seed, all_classes=all_classes,
                  prefix=prefix, images=images, notes=notes,
                  projections=metrics["parameters"]["projections"], bar=bar, coords=coords,
                  given=given)
        draw_matrices(metrics, plot_dir, cos_dir, prefix=prefix, images=images, pool=pool)
    except Exception as exc:
        notes.append(f"plotting failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    files["images"] = {k: [str(p) for p in v] for k, v in images.items()}
    return images


def _metric_cells(entry: dict, names) -> list:
    """value, ci_lo, ci_hi of each metric in ``names`` (None where missing)."""
    cells = []
    for m in names:
        e = entry.get(m) or {}
        ci = e.get("ci95") or [None, None]
        cells += [e.get("value"), ci[0], ci[1]]
    return cells


def _param(entry: dict, metric: str, key: str):
    return ((entry.get(metric) or {}).get("params") or {}).get(key)


def _chance_columns(kind: str) -> list:
    """(column, metric) of every registered metric whose entries record their chance level."""
    return [(f"{m.name}_chance", m) for m in registry.metrics(kind)
            if isinstance(m.chance, str) and m.chance.startswith("params.")]


def write_metric_tables(metrics: dict, out: Path, files: dict) -> None:
    """metrics_embedders.csv and metrics_pairs.csv: every registered metric with its interval
    (columns generated from the registry), and the chance levels / null quantile needed to
    read them; metrics_comparisons.csv when embedders were compared."""
    header = ["embedder", "modality", "n_items", "n_classes", "dim"]
    names = (embedder_metric_names(metrics["embedders"]) if metrics["embedders"]
             else list(registry.names("embedder")))
    for m in names:
        header += [m, f"{m}_ci_lo", f"{m}_ci_hi"]
    header += ["chance_majority_rate", "chance_uniform", "class_imbalance"]
    rows = []
    for name, r in metrics["embedders"].items():
        ch = r.get("chance") or {}
        rows.append([name, r.get("modality"), r.get("n_items"), r.get("n_classes"), r.get("dim")]
                    + _metric_cells(r, names)
                    + [ch.get("majority_rate"), ch.get("uniform"), ch.get("imbalance")])
    files["metrics_embedders_csv"] = str(_write_table(out / "metrics_embedders.csv",
                                                           header, rows))
    header = ["pair", "a", "b", "matched_by", "n_shared"]
    for m in PAIR_METRICS:
        header += [m, f"{m}_ci_lo", f"{m}_ci_hi"]
    chance = _chance_columns("pair")
    header += ["cka_null_q95"] + [c for c, _ in chance]
    rows = []
    for key, r in metrics["pairs"].items():
        rows.append([key, r.get("a"), r.get("b"), r.get("matched_by"), r.get("n_shared")]
                    + _metric_cells(r, PAIR_METRICS)
                    + [_param(r, "cka_permutation_p", "null_q95")]
                    + [m.chance_level(r.get(m.name)) for _, m in chance])
    files["metrics_pairs_csv"] = str(_write_table(out / "metrics_pairs.csv", header, rows))
    if metrics.get("comparisons"):
        files["metrics_comparisons_csv"] = str(write_comparison_table(
            metrics["comparisons"], out / "metrics_comparisons.csv"))


#: columns of metrics_comparisons.csv (metrics.json["comparisons"], ci95 split in two)
COMPARISON_COLUMNS = ("metric", "a", "b", "value_a", "value_b", "difference", "ci_lo", "ci_hi",
                      "p_value", "p_holm", "test", "n_items", "n_units", "n_items_a_all",
                      "n_items_b_all", "matched_by", "note")


def write_comparison_table(comparisons: list, path: Path) -> Path:
    """metrics_comparisons.csv: one row per paired comparison on shared items."""
    rows = []
    for c in comparisons:
        ci = c.get("ci95") or [None, None]
        rows.append({**c, "ci_lo": ci[0], "ci_hi": ci[1]})
    return _write_table(path, list(COMPARISON_COLUMNS), rows)


def _matrix_csv(path: Path, classes: list, M, cast = finite_or_none, corner: str = "") -> Path:
    M = np.asarray(M)
    return _write_table(path, [corner] + list(classes),
                            [[c] + [cast(v) for v in M[i]] for i, c in enumerate(classes)])


def write_embedder_tables(metrics: dict, out: Path, cos_dir: Path, var_dir: Path,
                          files: dict) -> None:
    """Per embedder: centroid cosine CSVs (centred and uncentred), within-class variance,
    confusion; and neighbours.csv for all."""
    nb_rows = []
    for name, r in metrics["embedders"].items():
        safe = safe_name(name)
        for key, suffix, _ in CENTROID_MATRICES:
            cc = r.get(key) or {}
            if cc.get("matrix") is not None:
                p = _matrix_csv(cos_dir / f"{safe}_{suffix}.csv", cc["classes"],
                                np.asarray(cc["matrix"], dtype=float))
                files[f"{name}_{suffix}_csv"] = str(p)
        cv = r.get("class_variance") or []
        p = _write_table(var_dir / f"{safe}_within_class_variance.csv",
                             ["class", "n", "raw_variance_mean_per_dim",
                              "mean_cosine_distance_to_centroid", "normalized_raw_variance"],
                             [[d["class"], d["n"], d["raw_variance"],
                               d["mean_cosine_distance"], d["normalized_variance"]] for d in cv])
        files[f"{name}_within_class_variance_csv"] = str(p)
        conf = r.get("confusion") or {}
        if conf.get("matrix") is not None:
            p = _matrix_csv(out / f"confusion_{safe}.csv", conf["classes"], conf["matrix"],
                            cast=int, corner="true \\ predicted")
            files[f"{name}_confusion_csv"] = str(p)
        fr = r.get("frechet") or {}
        for key, suffix, _ in FRECHET_MATRICES:
            if fr.get(key) is not None:
                p = _matrix_csv(cos_dir / f"{safe}_{suffix}.csv", fr["classes"],
                                np.asarray(fr[key], dtype=float))
                files[f"{name}_{suffix}_csv"] = str(p)
        for q in r.get("nearest_neighbours") or []:
            for rank, nb in enumerate(q["neighbours"], 1):
                nb_rows.append([name, q["id"], q["label"], rank, nb["id"], nb["label"],
                                nb["cosine_distance"]])
    files["neighbours_csv"] = str(_write_table(
        out / "neighbours.csv", ["embedder", "query", "query_label", "rank", "neighbour",
                                 "neighbour_label", "cosine_distance"], nb_rows))


def draw_maps(sets: list, plot_dir: Path, *, methods: tuple, seed: int, all_classes: list,
              prefix: str, images: dict, notes: list, projections: dict, bar: Any,
              coords: dict | None = None, given: dict | None = None) -> None:
    """2-d maps per embedder and method, and one side-by-side panel per method.

    ``coords`` (optional) receives {method: {embedder: Y [shape=(n, 2)]}}, for the report's
    interactive maps (:mod:`analysis.interactive`), so they draw the same coordinates.
    ``given`` (optional): {(method, embedder): :func:`project_set`'s result, or the exception
    it raised}, computed elsewhere (the analysis workers); the rest are computed here."""
    from . import plots
    for method in methods:
        panels = []
        for s in sets:
            bar.set_postfix_str(f"{method} {s.name}")
            bar.update()
            try:
                done = (given or {}).get((method, s.name))
                if isinstance(done, BaseException):
                    raise done
                Y, p = done if done is not None else project_set(s, method, seed=seed)
            except UndefinedMetricError as exc:
                notes.append(f"{s.name}: no {method} map: {exc}")
                continue
            except ImportError as exc:
                notes.append(f"{method} not available: {exc}")
                break
            except Exception as exc:
                notes.append(f"{s.name}: {method} map failed: {type(exc).__name__}: {exc}")
                continue
            projections.setdefault(s.name, {})[method] = p
            if coords is not None:
                coords.setdefault(method, OrderedDict())[s.name] = Y
            sub = p.get("items_subsampled")
            shown = (f" ({sub['n_items']:,} of {sub['of']:,} items, seeded subsample)"
                     if sub else "")
            images[f"{s.name}_{method}"] = plots.plot_map(
                Y, s.labels, plot_dir / f"{safe_name(s.name)}_{method}",
                title=f"{prefix}{s.name} — {method.upper()}{shown}", classes=all_classes)
            panels.append((s.name + shown, Y, s.labels))
        if panels:
            images[f"all_{method}"] = plots.plot_maps_side_by_side(
                panels, plot_dir / f"all_embedders_{method}",
                title=f"{prefix}all embedders — {method.upper()}", classes=all_classes)


_MATRIX_KEYS = tuple(k for k, _, _ in CENTROID_MATRICES) + ("frechet", "confusion")


def embedder_matrices(name: str, r: dict, plot_dir: Path, cos_dir: Path, *,
                      prefix: str) -> OrderedDict:
    """One embedder's class x class figures (centroid cosines, Fréchet distances, confusion)
    from its metrics entry ``r``: {image key: written paths}."""
    from . import plots
    images, safe = OrderedDict(), safe_name(name)
    for key, suffix, what in CENTROID_MATRICES:
        cc = r.get(key) or {}
        if cc.get("matrix") is not None:
            images[f"{name}_{suffix}"] = plots.plot_heatmap(
                cc["matrix"], cc["classes"], cos_dir / f"{safe}_{suffix}",
                title=f"{prefix}{name}: {what}")
    fr = r.get("frechet") or {}
    for key, suffix, what in FRECHET_MATRICES:
        if fr.get(key) is not None:
            M = np.asarray(fr[key], dtype=float)
            top = float(np.nanmax(M)) if np.isfinite(M).any() else 0.0
            images[f"{name}_{suffix}"] = plots.plot_heatmap(
                M, fr["classes"], cos_dir / f"{safe}_{suffix}",
                title=f"{prefix}{name}: {what}", vmin=0.0, vmax=top if top > 0 else 1.0,
                cmap="viridis_r", cbar_label="Fréchet distance")
    conf = r.get("confusion") or {}
    if conf.get("matrix") is not None:
        images[f"{name}_confusion"] = plots.plot_confusion(
            conf["matrix"], conf["classes"], plot_dir / f"{safe}_confusion",
            title=f"{prefix}{name}: nearest-centroid confusion (leave-one-out)")
    return images


def project_set(s, method: str, *, seed: int) -> tuple:
    """:func:`analysis.projection.project` of an EmbeddingSet (pieces kept whole when a map
    is fitted on a subsample): (Y [shape=(n, 2)], params)."""
    from . import projection
    return projection.project(s.vectors, method, s.labels, seed=seed, groups=s.pair_ids)


def draw_matrices(metrics: dict, plot_dir: Path, cos_dir: Path, *, prefix: str,
                  images: dict, pool: Any = None) -> None:
    """Centroid cosine heatmaps (fixed -1..1), confusion matrices and the metric bar chart.
    ``pool`` (a concurrent.futures executor, optional) draws each embedder's matrices in a
    worker; the images are the same, listed in the same order."""
    from . import plots
    jobs = [(name, {k: r.get(k) for k in _MATRIX_KEYS}) for name, r in
            metrics["embedders"].items()]
    drawn: dict = {}
    if pool is not None:
        from concurrent.futures import BrokenExecutor
        try:
            futures = [pool.submit(embedder_matrices, name, part, plot_dir, cos_dir,
                                   prefix=prefix) for name, part in jobs]
            for (name, _), fut in zip(jobs, futures):
                drawn[name] = fut.result()
        except BrokenExecutor:  # a worker died: the rest are drawn here
            pass
    for name, part in jobs:
        images.update(drawn[name] if name in drawn else
                      embedder_matrices(name, part, plot_dir, cos_dir, prefix=prefix))
    if metrics["embedders"]:
        table = {name: {m: ((r.get(m) or {}).get("value"), (r.get(m) or {}).get("ci95"))
                        for m in EMBEDDER_METRICS}
                 for name, r in metrics["embedders"].items()}
        images["metric_bars"] = plots.plot_metric_bars(
            table, list(EMBEDDER_METRICS), plot_dir / "separability_metrics",
            title=f"{prefix}separability per embedder")
