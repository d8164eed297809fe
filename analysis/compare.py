"""Orchestration: every metric of every embedder and embedder pair, tables, plots and report.

Notebook use::

    from analysis.compare import evaluate_embedder, evaluate_pair
    m = evaluate_embedder(X, labels, groups)          # ordered dict of metric entries
    p = evaluate_pair(X_audio, X_midi, labels)       # rows aligned by pair id

Each metric entry is ``{"value": float|None, "ci95": [lo, hi]|None, "params": {...},
"note": "..."}`` (``note`` only when the value is undefined or caveated).
"""
from __future__ import annotations

import json
import platform
import sys
import time
import traceback
from collections import OrderedDict
from pathlib import Path

import numpy as np

from . import crossspace, separability, structure
from ._common import UndefinedMetricError, finite_or_none
from .bootstrap import bootstrap_ci, bootstrap_mean_ci
from .schema import EMBEDDER_METRICS, PAIR_METRICS
from common.progress import progress_bar

from .io import jsonable, write_csv_atomic, write_json_atomic

__all__ = ["evaluate_embedder", "evaluate_pair", "run_analysis",
           "software_versions", "DEFAULT_N_BOOTSTRAP", "DEFAULT_N_PERMUTATIONS"]

DEFAULT_N_BOOTSTRAP = 200
DEFAULT_N_PERMUTATIONS = 999
# upper bounds on (matrix cells x repetitions) for the RSA bootstrap and Mantel test
RSA_CELL_BUDGET_BOOT = 30_000_000
RSA_CELL_BUDGET_PERM = 200_000_000
#: RSA (point estimate, CI and Mantel test) uses a seeded random subset of this many shared items
#: when there are more: its cost is quadratic (5000 items took ~260 s on 2 cores, 2000 ~30 s),
#: and 2500 items already give ~3.1 million distance pairs.
RSA_MAX_ITEMS = 2500


# ----------------------------------------------------------------------------- helpers
def _entry(value=None, *, ci=None, params=None, note=None, with_ci=True):
    e = OrderedDict()
    e["value"] = finite_or_none(value)
    if with_ci:
        e["ci95"] = None if ci is None else [finite_or_none(ci[0]), finite_or_none(ci[1])]
    e["params"] = dict(params or {})
    if note:
        e["note"] = str(note)
    elif e["value"] is None:
        e["note"] = "undefined"
    return e


def _guard(fn, params, *, with_ci=True):
    """Run ``fn() -> (value, ci, extra_params)``; undefined cases become notes, never crashes."""
    try:
        value, ci, extra = fn()
        p = dict(params)
        p.update(extra or {})
        return _entry(value, ci=ci, params=p, with_ci=with_ci)
    except UndefinedMetricError as exc:
        return _entry(None, params=params, note=str(exc), with_ci=with_ci)
    except Exception as exc:  # a bug or numerical failure: record it, keep going
        return _entry(None, params=params, with_ci=with_ci,
                      note=f"error: {type(exc).__name__}: {exc}")


def _ci(boot):
    return boot.get("ci95") if boot else None


def _boot_params(boot):
    if not boot:
        return {}
    return {"ci_method": boot.get("method"), "n_boot": boot.get("n_boot"),
            "n_boot_valid": boot.get("n_valid"), "ci_seed": boot.get("seed")}


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name)) or "embedder"


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


# ----------------------------------------------------------------------------- per embedder
def evaluate_embedder(X, labels, groups=None, *, ids=None, seed: int = 0,
                      n_bootstrap: int = DEFAULT_N_BOOTSTRAP, n_splits: int = 5,
                      knn_ks=(1, 5), neighbours_per_class: int = 3,
                      n_neighbours: int = 5) -> "OrderedDict":
    """Every single-space metric of one embedder.

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]
    groups : np.ndarray [shape=(n,)] or None
        Pair id per item ("" = own group); used for grouped probe folds and bootstrap.
    ids : np.ndarray [shape=(n,)] or None
        Item names for the nearest-neighbour listing.

    Returns
    -------
    OrderedDict: the metric entries of :data:`analysis.schema.EMBEDDER_METRICS`, then
    ``n_items``, ``n_classes``, ``dim``, ``classes``, ``class_counts``, ``centroid_cosine``,
    ``confusion``, ``class_variance``, ``nearest_neighbours``, ``notes``.
    """
    X, labels, groups = separability.validate(X, labels, groups)
    labels = labels.astype(str)
    n = X.shape[0]
    groups = np.full(n, "", dtype=str) if groups is None else groups.astype(str)
    ids = np.array([f"item{i}" for i in range(n)]) if ids is None else np.asarray(ids, dtype=str)
    classes = sorted(np.unique(labels).tolist())
    notes = []
    res = OrderedDict()
    strata = labels
    bgroups = separability.groups_or_self(groups, n)

    if n == 0:
        notes.append("no items: every metric is undefined")
    elif len(classes) < 2:
        notes.append(f"only one class ({classes[0]!r}): separability metrics are undefined")
    else:
        counts = [int(np.sum(labels == c)) for c in classes]
        if max(counts) == 1:
            notes.append("one item per class: neighbourhood, probe and clustering metrics are "
                         "undefined or meaningless")

    # silhouette
    def sil():
        s = separability.silhouette_samples_cosine(X, labels)
        b = bootstrap_mean_ci(s, n_boot=n_bootstrap, seed=seed, strata=strata, groups=bgroups)
        return float(np.mean(s)), _ci(b), {**_boot_params(b),
                                          "ci_note": "bootstrap of per-item silhouette values"}
    res["silhouette_cosine"] = _guard(sil, {"metric": "cosine"})

    # kNN
    for k in knn_ks:
        def knn(k=k):
            c = separability.knn_correct(X, labels, k=k)
            b = bootstrap_mean_ci(c, n_boot=n_bootstrap, seed=seed, strata=strata,
                                  groups=bgroups)
            return float(np.mean(c)), _ci(b), {**_boot_params(b),
                                              "ci_note": "bootstrap of per-item correctness"}
        res[f"knn_accuracy_k{k}"] = _guard(knn, {"k": k, "metric": "cosine",
                                                 "scheme": "leave-one-out, majority vote, "
                                                           "ties to nearest"})

    # probe
    probe_params = {"model": "StandardScaler + LogisticRegression(C=1.0, max_iter=2000)",
                    "cv": "StratifiedGroupKFold (shuffle, grouped by pair id; unpaired items "
                          "are their own group)", "n_splits_requested": n_splits, "seed": seed}
    probe_state = {}

    def probe_acc():
        from sklearn.metrics import accuracy_score
        r = separability.linear_probe(X, labels, groups, n_splits=n_splits, seed=seed)
        probe_state["r"] = r
        b = bootstrap_ci(lambda t, p: accuracy_score(t, p), r["y_true"], r["y_pred"],
                         n_boot=n_bootstrap, seed=seed, strata=strata, groups=bgroups)
        extra = {"n_splits": r["n_splits"], **_boot_params(b),
                 "ci_note": "bootstrap of pooled out-of-fold predictions"}
        return r["accuracy"], _ci(b), extra
    res["probe_accuracy"] = _guard(probe_acc, probe_params)
    if res["probe_accuracy"]["value"] is not None and \
            res["probe_accuracy"]["params"].get("n_splits", n_splits) < n_splits:
        res["probe_accuracy"]["note"] = (f"n_splits reduced to "
                                         f"{res['probe_accuracy']['params']['n_splits']} "
                                         "(smallest class has too few pieces)")

    def probe_f1():
        from sklearn.metrics import f1_score
        if "r" not in probe_state:
            raise UndefinedMetricError(res["probe_accuracy"].get("note", "probe undefined"))
        r = probe_state["r"]
        b = bootstrap_ci(lambda t, p: f1_score(t, p, average="macro", zero_division=0),
                         r["y_true"], r["y_pred"], n_boot=n_bootstrap, seed=seed,
                         strata=strata, groups=bgroups)
        return r["macro_f1"], _ci(b), {"n_splits": r["n_splits"], **_boot_params(b),
                                       "ci_note": "bootstrap of pooled out-of-fold predictions"}
    res["probe_macro_f1"] = _guard(probe_f1, probe_params)

    # clustering
    km_state = {}
    km_params = {"algorithm": "KMeans(n_clusters=n_classes, n_init=10) on L2-normalised "
                              "vectors", "seed": seed}

    def vm():
        from sklearn.metrics import v_measure_score
        cl = separability.kmeans_clusters(X, labels, seed=seed)
        km_state["c"] = cl
        b = bootstrap_ci(lambda t, c: v_measure_score(t, c), labels, cl, n_boot=n_bootstrap,
                         seed=seed, strata=strata, groups=bgroups)
        return separability.cluster_agreement(labels, cl)["v_measure"], _ci(b), {
            **_boot_params(b), "ci_note": "bootstrap of (label, cluster) pairs of one fit"}
    res["v_measure"] = _guard(vm, km_params)

    def ari():
        from sklearn.metrics import adjusted_rand_score
        if "c" not in km_state:
            raise UndefinedMetricError(res["v_measure"].get("note", "k-means undefined"))
        cl = km_state["c"]
        b = bootstrap_ci(lambda t, c: adjusted_rand_score(t, c), labels, cl, n_boot=n_bootstrap,
                         seed=seed, strata=strata, groups=bgroups)
        return separability.cluster_agreement(labels, cl)["adjusted_rand"], _ci(b), {
            **_boot_params(b), "ci_note": "bootstrap of (label, cluster) pairs of one fit"}
    res["adjusted_rand"] = _guard(ari, km_params)

    def wtv():
        v = structure.within_total_variance_ratio(X, labels)
        w, t = structure.within_total_contributions(X, labels)
        b = bootstrap_ci(lambda w, t: float(w.sum() / t.sum()) if t.sum() > 0 else None, w, t,
                         n_boot=n_bootstrap, seed=seed, strata=strata, groups=bgroups)
        return v, _ci(b), {**_boot_params(b), "ci_note": "bootstrap of per-item squared "
                                                        "distances (class and grand means "
                                                        "fixed), ratio of sums"}
    res["within_total_variance_ratio"] = _guard(
        wtv, {"definition": "trace(S_within) / trace(S_total), raw vectors"})

    # descriptive extras
    res["n_items"] = int(n)
    res["n_classes"] = len(classes)
    res["dim"] = int(X.shape[1])
    res["classes"] = classes
    res["class_counts"] = {c: int(np.sum(labels == c)) for c in classes}
    res["n_paired_items"] = int(np.sum(groups != ""))
    try:
        cls, M = structure.centroid_cosine_matrix(X, labels)
        res["centroid_cosine"] = {"classes": cls, "matrix": M,
                                  "params": {"centroids": "mean of L2-normalised vectors",
                                             "centered": False}}
    except UndefinedMetricError as exc:
        res["centroid_cosine"] = {"classes": classes, "matrix": None, "note": str(exc)}
    try:
        cls, C, _ = structure.nearest_centroid_confusion(X, labels)
        res["confusion"] = {"classes": cls, "matrix": C,
                            "accuracy": float(np.trace(C) / max(1, C.sum())),
                            "params": {"classifier": "nearest centroid (cosine)",
                                       "leave_one_out": True}}
    except UndefinedMetricError as exc:
        res["confusion"] = {"classes": classes, "matrix": None, "note": str(exc)}
    res["class_variance"] = structure.class_variance_table(X, labels) if n else []
    try:
        res["nearest_neighbours"] = structure.nearest_neighbours(
            X, labels, ids, k=n_neighbours, per_class=neighbours_per_class, seed=seed)
    except UndefinedMetricError as exc:
        res["nearest_neighbours"] = []
        notes.append(f"nearest neighbours: {exc}")
    for name in EMBEDDER_METRICS:
        e = res.get(name)
        if e is not None and e["value"] is None and e.get("note"):
            notes.append(f"{name}: {e['note']}")
    res["notes"] = notes
    return res


# ----------------------------------------------------------------------------- per pair
def evaluate_pair(X, Y, labels=None, *, seed: int = 0, n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                  n_permutations: int = DEFAULT_N_PERMUTATIONS, knn_k: int = 10,
                  test_fraction: float = 0.3, max_components: int = 64) -> "OrderedDict":
    """Every between-space metric for two spaces on the same items (row i = same piece).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dx)]
    Y : np.ndarray [shape=(n, dy)]
    labels : np.ndarray [shape=(n,)] or None
        Classes of the shared items (for centroid correlation and class-stratified bootstrap).

    Returns
    -------
    OrderedDict: the entries of :data:`analysis.schema.PAIR_METRICS`, then ``n_shared``,
    ``retrieval_chance`` and ``notes``.
    """
    X, Y, labels = crossspace.validate(X, Y, labels)
    n = X.shape[0]
    labels = np.full(n, "all", dtype=str) if labels is None else labels.astype(str)
    strata = labels
    notes = []
    res = OrderedDict()
    if n == 0:
        notes.append("no shared items: every between-space metric is undefined")

    def cka():
        v = crossspace.linear_cka(X, Y)
        f = crossspace.linear_cka_resampler(X, Y)
        b = bootstrap_ci(f, np.arange(n), n_boot=n_bootstrap, seed=seed, strata=strata)
        return v, _ci(b), _boot_params(b)
    res["cka_linear"] = _guard(cka, {"kernel": "linear", "centered": True})

    rsa_state = {}

    # RSA costs O(n^2) per bootstrap resample / permutation: a subset of items for large n,
    # and a capped number of repetitions
    if n > RSA_MAX_ITEMS:
        sub = np.sort(np.random.default_rng(seed).choice(n, RSA_MAX_ITEMS, replace=False))
    else:
        sub = np.arange(n)
    Xr, Yr, strata_r = X[sub], Y[sub], strata[sub]
    n_r = len(sub)
    cells = max(1, n_r * (n_r - 1) // 2)
    rsa_boot = int(min(n_bootstrap, max(20, RSA_CELL_BUDGET_BOOT // cells)))
    rsa_perm = int(min(n_permutations, max(99, RSA_CELL_BUDGET_PERM // cells)))

    def rsa_rho():
        DA, DB = crossspace.cosine_distance_matrix(Xr), crossspace.cosine_distance_matrix(Yr)
        r = crossspace.rsa(Xr, Yr, n_permutations=rsa_perm, seed=seed, distances=(DA, DB))
        rsa_state["r"] = r
        b = bootstrap_ci(lambda idx: crossspace.rsa_from_distances(
                            DA[np.ix_(idx, idx)], DB[np.ix_(idx, idx)], exclude=idx),
                         np.arange(n_r), n_boot=rsa_boot, seed=seed, strata=strata_r)
        extra = {**_boot_params(b), "ci_note": "pairs of duplicated items left out"}
        if rsa_boot < n_bootstrap:
            extra["n_boot_capped_from"] = n_bootstrap
        if n_r < n:
            extra["items_subsampled"] = {"n_items": n_r, "of": n, "seed": seed}
        return r["rho"], _ci(b), extra
    res["rsa_spearman"] = _guard(rsa_rho, {"distance": "cosine", "correlation": "spearman",
                                           "entries": "upper triangle"})

    def rsa_p():
        if "r" not in rsa_state:
            raise UndefinedMetricError(res["rsa_spearman"].get("note", "RSA undefined"))
        extra = {"n_permutations": rsa_state["r"]["n_permutations"]}
        if rsa_perm < n_permutations:
            extra["n_permutations_capped_from"] = n_permutations
        if n_r < n:
            extra["items_subsampled"] = {"n_items": n_r, "of": n, "seed": seed}
        return rsa_state["r"]["p"], None, extra
    if n_r < n and res["rsa_spearman"]["value"] is not None:
        res["rsa_spearman"]["note"] = (f"computed on a random subset of {n_r} of the {n} shared "
                                       "items (its cost grows with the square of n)")
    res["rsa_mantel_p"] = _guard(rsa_p, {"test": "Mantel, one-sided, items of one matrix "
                                                 "permuted", "seed": seed}, with_ci=False)

    def jac():
        k = knn_k
        extra = {}
        if n < k + 1:
            k = min(knn_k, n - 2)
            if k < 1:
                raise UndefinedMetricError(f"kNN Jaccard needs at least 3 shared items, got {n}")
            extra["k_reduced_from"] = knn_k
        per = crossspace.knn_jaccard_per_item(X, Y, k=k)
        b = bootstrap_mean_ci(per, n_boot=n_bootstrap, seed=seed, strata=strata)
        extra.update({"k": k, "chance_approx": k / max(1, n - 1), **_boot_params(b)})
        return float(np.mean(per)), _ci(b), extra
    res[f"knn_jaccard_k{knn_k}"] = _guard(jac, {"k": knn_k, "metric": "cosine"})
    if res[f"knn_jaccard_k{knn_k}"]["params"].get("k_reduced_from"):
        res[f"knn_jaccard_k{knn_k}"]["note"] = (
            f"only {n} shared items: k reduced to {res[f'knn_jaccard_k{knn_k}']['params']['k']}")

    def cmc():
        v = crossspace.centroid_matrix_correlation(X, Y, labels)
        b = bootstrap_ci(crossspace.centroid_matrix_correlation, X, Y, labels,
                         n_boot=n_bootstrap, seed=seed, strata=strata)
        return v, _ci(b), _boot_params(b)
    res["centroid_matrix_correlation"] = _guard(cmc, {"correlation": "pearson",
                                                      "entries": "off-diagonal upper triangle"})

    ret_params = {"method": "PCA (fit on train) + orthogonal Procrustes (train pairs only), "
                            "cosine retrieval among held-out pairs, both directions averaged",
                  "test_fraction": test_fraction, "max_components": max_components,
                  "seed": seed}
    ret_state = {}
    try:
        ret_state["r"] = crossspace.procrustes_retrieval(
            X, Y, test_fraction=test_fraction, seed=seed, max_components=max_components)
    except UndefinedMetricError as exc:
        ret_state["err"] = str(exc)
    except Exception as exc:
        ret_state["err"] = f"error: {type(exc).__name__}: {exc}"
    for key, k in (("retrieval_recall_at_1", 1), ("retrieval_recall_at_5", 5),
                   ("retrieval_recall_at_10", 10), ("retrieval_mrr", None)):
        def ret(k=k):
            if "r" not in ret_state:
                raise UndefinedMetricError(ret_state["err"])
            r = ret_state["r"]
            ranks = r["ranks"]
            per = ((ranks <= k).mean(axis=0) if k else (1.0 / ranks).mean(axis=0))
            b = bootstrap_mean_ci(per, n_boot=n_bootstrap, seed=seed)
            sub = "mrr" if k is None else f"recall_at_{k}"
            return r[sub], _ci(b), {"n_train": r["n_train"], "n_test": r["n_test"],
                                    "dims": r["dims"], "chance": r["chance"][sub],
                                    "x_to_y": r["x_to_y"][sub], "y_to_x": r["y_to_x"][sub],
                                    **_boot_params(b),
                                    "ci_note": "bootstrap over held-out pairs (split fixed)"}
        res[key] = _guard(ret, ret_params)
    res["n_shared"] = int(n)
    res["n_classes"] = len(np.unique(labels)) if n else 0
    if "r" in ret_state:
        res["retrieval_chance"] = ret_state["r"]["chance"]
        res["retrieval_n_test"] = ret_state["r"]["n_test"]
    else:
        res["retrieval_chance"] = None
    for name in res:
        e = res[name]
        if isinstance(e, dict) and "value" in e and e["value"] is None and e.get("note"):
            notes.append(f"{name}: {e['note']}")
    res["notes"] = notes
    return res


# ----------------------------------------------------------------------------- orchestration
def _pair_alignment(a, b):
    """(ia, ib, how) aligning two EmbeddingSets: by pair id across modalities, by id within."""
    if a.modality != b.modality:
        ia, ib = crossspace.match_items(a.pair_ids, b.pair_ids)
        return ia, ib, "pair id"
    ia, ib = crossspace.match_items(a.ids, b.ids)
    return ia, ib, "item id"


def run_analysis(sets, out, *, plot_dir, cos_dir, var_dir, title: str = "",
                 methods=("pca", "tsne"), seed: int = 0, dataset_summary: dict | None = None,
                 run_config: dict | None = None, n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                 n_permutations: int = DEFAULT_N_PERMUTATIONS, progress: bool = False) -> dict:
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

    Returns
    -------
    dict: the content of metrics.json.
    """
    from . import report
    t_start = time.perf_counter()
    out, plot_dir, cos_dir, var_dir = map(Path, (out, plot_dir, cos_dir, var_dir))
    for d in (out, plot_dir, cos_dir, var_dir):
        d.mkdir(parents=True, exist_ok=True)
    sets = list(sets or [])
    dataset_summary = dict(dataset_summary or {})
    run_config = dict(run_config or {})
    methods = tuple(methods or ())
    n_bootstrap = int(DEFAULT_N_BOOTSTRAP if n_bootstrap is None else n_bootstrap)
    notes: list[str] = []
    params = OrderedDict(seed=seed, n_bootstrap=n_bootstrap, n_permutations=n_permutations,
                         ci_level=0.95, methods=list(methods), title=title, knn_ks=[1, 5],
                         probe_n_splits=5, jaccard_k=10, retrieval_test_fraction=0.3,
                         retrieval_max_components=64, projections={}, run_config=run_config)
    metrics = OrderedDict(embedders=OrderedDict(), pairs=OrderedDict(), notes=notes,
                          parameters=params, dataset=dataset_summary,
                          software=software_versions(), files={})
    if not sets:
        notes.append("no embedding sets were given: nothing to analyse")
    seen = set()
    uniq = []
    for s in sets:
        if s.name in seen:
            notes.append(f"duplicate embedder name {s.name!r}: later set ignored")
            continue
        seen.add(s.name)
        uniq.append(s)
    sets = uniq
    all_classes = sorted({c for s in sets for c in s.labels.tolist()}
                         | set(dataset_summary.get("classes", []) or []))

    n_steps = len(sets) + len(sets) * (len(sets) - 1) // 2 + len(methods) * len(sets)
    bar = progress_bar(n_steps, desc="analysis", unit="step", enabled=progress, leave=False)

    # ---- per embedder metrics
    for s in sets:
        bar.set_postfix_str(s.name)
        bar.update()
        try:
            r = evaluate_embedder(s.vectors, s.labels, s.pair_ids, ids=s.ids, seed=seed,
                                  n_bootstrap=n_bootstrap)
        except Exception as exc:
            notes.append(f"{s.name}: analysis failed: {type(exc).__name__}: {exc}")
            r = OrderedDict((m, _entry(None, note=f"error: {exc}")) for m in EMBEDDER_METRICS)
            r.update(n_items=len(s), n_classes=len(s.classes), dim=s.dim, notes=[])
        r["modality"] = s.modality
        r["options"] = dict(s.options or {})
        metrics["embedders"][s.name] = r
        notes.extend(f"{s.name}: {n}" for n in r.get("notes", []))

    # ---- pairs
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            a, b = sets[i], sets[j]
            key = f"{a.name}__vs__{b.name}"
            bar.set_postfix_str(key)
            bar.update()
            ia, ib, how = _pair_alignment(a, b)
            try:
                lab_a, lab_b = a.labels[ia], b.labels[ib]
                mismatch = int(np.sum(lab_a != lab_b))
                r = evaluate_pair(a.vectors[ia], b.vectors[ib], lab_a, seed=seed,
                                  n_bootstrap=n_bootstrap, n_permutations=n_permutations)
                if mismatch:
                    r["notes"].append(f"{mismatch} matched items carry different labels in the "
                                      f"two sets; labels of {a.name} used")
            except Exception as exc:
                r = OrderedDict((m, _entry(None, note=f"error: {exc}")) for m in PAIR_METRICS)
                r["notes"] = [f"analysis failed: {type(exc).__name__}: {exc}"]
            r["matched_by"] = how
            r["a"], r["b"] = a.name, b.name
            r["modalities"] = [a.modality, b.modality]
            if len(ia) == 0:
                r["notes"].insert(0, f"no shared items (matched by {how})")
            metrics["pairs"][key] = r
            notes.extend(f"{key}: {n}" for n in r.get("notes", []))
    if len(sets) < 2 and sets:
        notes.append("only one embedder: no between-embedder comparison")

    params["seconds_metrics"] = round(time.perf_counter() - t_start, 3)
    write_json_atomic(metrics, out / "metrics.json")  # early copy; rewritten at the end

    # ---- tables
    files = metrics["files"]
    try:
        _write_tables(metrics, sets, out, cos_dir, var_dir, files)
    except Exception as exc:
        notes.append(f"writing tables failed: {type(exc).__name__}: {exc}")

    # ---- plots
    images = OrderedDict()
    try:
        _make_plots(metrics, sets, plot_dir, cos_dir, out, title, methods, seed, all_classes,
                    images, notes, params, bar)
    except Exception as exc:
        notes.append(f"plotting failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    bar.close()
    files["images"] = {k: [str(p) for p in v] for k, v in images.items()}
    params["seconds_total"] = round(time.perf_counter() - t_start, 3)
    write_json_atomic(metrics, out / "metrics.json")

    # ---- report
    try:
        report.write_report(metrics, images, out, title=title)
        files["report_html"] = str(out / "report.html")
        files["report_md"] = str(out / "report.md")
    except Exception as exc:
        notes.append(f"report failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    write_json_atomic(metrics, out / "metrics.json")
    return json.loads(json.dumps(jsonable(metrics)))


def _val(e):
    return e.get("value") if isinstance(e, dict) else None


def _metric_cells(entry, names) -> list:
    """value, ci_lo, ci_hi of each metric in ``names`` (None where missing)."""
    cells = []
    for m in names:
        e = entry.get(m) or {}
        ci = e.get("ci95") or [None, None]
        cells += [e.get("value"), ci[0], ci[1]]
    return cells


def _write_tables(metrics, sets, out, cos_dir, var_dir, files):
    rows = []
    for name, r in metrics["embedders"].items():
        rows.append([name, r.get("modality"), r.get("n_items"), r.get("n_classes"), r.get("dim")]
                    + _metric_cells(r, EMBEDDER_METRICS))
    header = ["embedder", "modality", "n_items", "n_classes", "dim"]
    for m in EMBEDDER_METRICS:
        header += [m, f"{m}_ci_lo", f"{m}_ci_hi"]
    files["metrics_embedders_csv"] = str(write_csv_atomic(out / "metrics_embedders.csv",
                                                           header, rows))
    rows = []
    for key, r in metrics["pairs"].items():
        row = [key, r.get("a"), r.get("b"), r.get("matched_by"), r.get("n_shared")]
        row += _metric_cells(r, PAIR_METRICS)
        ch = r.get("retrieval_chance") or {}
        row += [ch.get("recall_at_1"), ch.get("mrr")]
        rows.append(row)
    header = ["pair", "a", "b", "matched_by", "n_shared"]
    for m in PAIR_METRICS:
        header += [m, f"{m}_ci_lo", f"{m}_ci_hi"]
    header += ["chance_recall_at_1", "chance_mrr"]
    files["metrics_pairs_csv"] = str(write_csv_atomic(out / "metrics_pairs.csv", header, rows))
    nb_rows = []
    for name, r in metrics["embedders"].items():
        safe = _safe_name(name)
        cc = r.get("centroid_cosine") or {}
        if cc.get("matrix") is not None:
            M = np.asarray(cc["matrix"], dtype=float)
            p = write_csv_atomic(cos_dir / f"{safe}_centroid_cosine.csv", [""] + cc["classes"],
                                  [[c] + [finite_or_none(v) for v in M[i]]
                                   for i, c in enumerate(cc["classes"])])
            files[f"{name}_centroid_cosine_csv"] = str(p)
        cv = r.get("class_variance") or []
        p = write_csv_atomic(var_dir / f"{safe}_within_class_variance.csv",
                              ["class", "n", "raw_variance_mean_per_dim",
                               "mean_cosine_distance_to_centroid",
                               "normalized_raw_variance"],
                              [[d["class"], d["n"], d["raw_variance"],
                                d["mean_cosine_distance"], d["normalized_variance"]] for d in cv])
        files[f"{name}_within_class_variance_csv"] = str(p)
        conf = r.get("confusion") or {}
        if conf.get("matrix") is not None:
            M = np.asarray(conf["matrix"])
            p = write_csv_atomic(out / f"confusion_{safe}.csv",
                                  ["true \\ predicted"] + conf["classes"],
                                  [[c] + [int(v) for v in M[i]]
                                   for i, c in enumerate(conf["classes"])])
            files[f"{name}_confusion_csv"] = str(p)
        for q in r.get("nearest_neighbours") or []:
            for rank, nb in enumerate(q["neighbours"], 1):
                nb_rows.append([name, q["id"], q["label"], rank, nb["id"], nb["label"],
                                nb["cosine_distance"]])
    files["neighbours_csv"] = str(write_csv_atomic(
        out / "neighbours.csv", ["embedder", "query", "query_label", "rank", "neighbour",
                                 "neighbour_label", "cosine_distance"], nb_rows))


def _make_plots(metrics, sets, plot_dir, cos_dir, out, title, methods, seed, all_classes,
                images, notes, params, bar):
    from . import plots, projection
    prefix = f"{title}: " if title else ""
    for method in methods:
        panels = []
        for s in sets:
            bar.set_postfix_str(f"{method} {s.name}")
            bar.update()
            safe = _safe_name(s.name)
            try:
                Y, p = projection.project(s.vectors, method, s.labels, seed=seed)
            except UndefinedMetricError as exc:
                notes.append(f"{s.name}: no {method} map: {exc}")
                continue
            except ImportError as exc:
                notes.append(f"{method} not available: {exc}")
                break
            except Exception as exc:
                notes.append(f"{s.name}: {method} map failed: {type(exc).__name__}: {exc}")
                continue
            params["projections"].setdefault(s.name, {})[method] = p
            images[f"{s.name}_{method}"] = plots.plot_map(
                Y, s.labels, plot_dir / f"{safe}_{method}",
                title=f"{prefix}{s.name} — {method.upper()}", classes=all_classes)
            panels.append((s.name, Y, s.labels))
        if panels:
            images[f"all_{method}"] = plots.plot_maps_side_by_side(
                panels, plot_dir / f"all_embedders_{method}",
                title=f"{prefix}all embedders — {method.upper()}", classes=all_classes)
    for name, r in metrics["embedders"].items():
        safe = _safe_name(name)
        cc = r.get("centroid_cosine") or {}
        if cc.get("matrix") is not None:
            images[f"{name}_centroid_cosine"] = plots.plot_heatmap(
                cc["matrix"], cc["classes"], cos_dir / f"{safe}_centroid_cosine",
                title=f"{prefix}{name}: centroid cosine similarity (fixed scale -1..1)")
        conf = r.get("confusion") or {}
        if conf.get("matrix") is not None:
            images[f"{name}_confusion"] = plots.plot_confusion(
                conf["matrix"], conf["classes"], plot_dir / f"{safe}_confusion",
                title=f"{prefix}{name}: nearest-centroid confusion (leave-one-out)")
    if metrics["embedders"]:
        table = {name: {m: (_val(r.get(m)), (r.get(m) or {}).get("ci95"))
                        for m in EMBEDDER_METRICS}
                 for name, r in metrics["embedders"].items()}
        images["metric_bars"] = plots.plot_metric_bars(
            table, list(EMBEDDER_METRICS), plot_dir / "separability_metrics",
            title=f"{prefix}separability per embedder")
