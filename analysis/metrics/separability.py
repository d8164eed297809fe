"""Separability of the classes in one space: silhouette, k-NN, linear probe (mean over seeded
splits), k-means agreement (mean over seeds), within/total variance. Kernels in
:mod:`analysis.separability` and :mod:`analysis.structure`."""
from __future__ import annotations

from functools import partial

import numpy as np

from .. import separability as kernel
from .. import structure
from ..bootstrap import bootstrap_mean_ci, bootstrap_values
from ..intervals import balanced_accuracy_interval, clopper_pearson
from .context import EmbedderContext, Measured, boot_params, units_note
from .registry import register

KNN_KS = (1, 5)


def _proportion(ctx: EmbedderContext, correct: np.ndarray, extra: dict) -> Measured:
    """Accuracy of per-item 0/1 ``correct`` with a Clopper-Pearson interval over pieces."""
    acc = float(np.mean(correct))
    ch = ctx.chance()
    return Measured(acc, clopper_pearson(acc * ctx.n_units, ctx.n_units), {
        **extra, "chance_majority": ch["majority_rate"], "chance_uniform": ch["uniform"],
        "ci_method": "clopper-pearson",
        "ci_note": "exact binomial interval over " + units_note(ctx.n_units, ctx.n)})


def _balanced(ctx: EmbedderContext, y_pred: np.ndarray, extra: dict) -> Measured:
    """Balanced accuracy of ``y_pred``; the interval of the mean of per-class Beta draws from
    the Clopper-Pearson families (not a posterior: see
    :func:`analysis.intervals.balanced_accuracy_interval`), over pieces per class."""
    _, correct, size = kernel.per_class_correct(ctx.labels, y_pred)
    recall = correct / size
    value = float(np.mean(recall))
    units = ctx.units_per_class()
    ci = balanced_accuracy_interval(recall * units, units, seed=ctx.seed)
    ch = ctx.chance()
    return Measured(value, ci, {
        **extra, "chance_uniform": ch["uniform"], "chance_majority": ch["majority_rate"],
        "class_imbalance": ch["imbalance"], "ci_method": "per-class beta (clopper-pearson "
                                                         "families), monte carlo",
        "ci_note": "2.5% / 97.5% quantiles of the mean of independent per-class Beta draws "
                   "(the Clopper-Pearson families; one class = Clopper-Pearson), over "
                   + units_note(ctx.n_units, ctx.n)})


def silhouette_cosine(ctx: EmbedderContext) -> Measured:
    """Mean cosine silhouette; bootstrap of the per-item values."""
    s = kernel.silhouette_samples_cosine(ctx.X, ctx.labels)
    b = bootstrap_mean_ci(s, n_boot=ctx.n_bootstrap, seed=ctx.seed, strata=ctx.labels,
                          groups=ctx.units)
    return Measured(float(np.mean(s)), b["ci95"], {
        **boot_params(b), "ci_note": "bootstrap of per-item silhouette values"},
        n_units=ctx.n_units, bounds=(-1.0, 1.0))


def knn_accuracy(ctx: EmbedderContext, *, k: int) -> Measured:
    """Leave-one-out k-NN accuracy (cosine, uncentred) with an exact binomial interval."""
    pred = ctx.knn_predictions(k)
    return _proportion(ctx, (pred == ctx.labels).astype(np.float64), {})


def knn_balanced_accuracy(ctx: EmbedderContext, *, k: int) -> Measured:
    """Balanced accuracy of the same leave-one-out k-NN predictions."""
    return _balanced(ctx, ctx.knn_predictions(k), {})


_PROBE_NOTE = ("mean over {m} seeded grouped {k}-fold splits; variance = within-split sampling "
               "variance over pieces + (1 + 1/splits) x between-split variance")


def _repeated_probe_score(ctx: EmbedderContext, key: str, extra: dict) -> Measured:
    """Mean over the repeated probe splits with its Rubin interval (split + sampling variation),
    Clopper-Pearson on the effective number of pieces."""
    r = ctx.repeated_probe()
    s = r[key]
    return Measured(s["value"], s["ci95"], {
        **extra, "n_splits": r["n_splits"], "n_repeats": len(r["seeds"]), "seeds": r["seeds"],
        "split_min": s["split_min"], "split_max": s["split_max"],
        "between_split_sd": s["between_split_sd"], "within_split_sd": s["within_split_sd"],
        "total_sd": s["total_sd"], "n_effective": s["n_effective"],
        "ci_method": "rubin + clopper-pearson",
        "ci_note": _PROBE_NOTE.format(m=len(r["seeds"]), k=r["n_splits"]),
        **ctx.fit_params()},
        n_units=r["n_units"], bounds=(0.0, 1.0))


def probe_accuracy(ctx: EmbedderContext) -> Measured:
    """Accuracy of the linear probe, mean over the repeated seeded grouped splits."""
    ch = ctx.chance()
    return _repeated_probe_score(ctx, "accuracy", {"chance_majority": ch["majority_rate"],
                                                   "chance_uniform": ch["uniform"]})


def probe_balanced_accuracy(ctx: EmbedderContext) -> Measured:
    """Balanced accuracy of the linear probe, mean over the repeated splits (the within-split
    variance is class-weighted)."""
    ch = ctx.chance()
    return _repeated_probe_score(ctx, "balanced_accuracy", {
        "chance_uniform": ch["uniform"], "chance_majority": ch["majority_rate"],
        "class_imbalance": ch["imbalance"]})


def probe_macro_f1(ctx: EmbedderContext) -> Measured:
    """Macro F1 of the linear probe, mean over the repeated splits; interval by Rubin's rules
    with bootstrap within-split variances (each split's pooled out-of-fold predictions, pieces
    resampled within classes), normal, clipped to [0, 1] -- as the cluster agreement."""
    from ..agreement import macro_f1
    from ..intervals import rubin_interval
    r = ctx.repeated_probe()
    _, y, _, units = ctx.fit_subset()
    per_boot = max(20, ctx.n_bootstrap // len(r["seeds"]))
    per_split, within = [], []
    for s, pred in zip(r["seeds"], r["y_pred"]):
        per_split.append(macro_f1(y, pred))
        boot = bootstrap_values(lambda idx: macro_f1(y[idx], pred[idx]),
                                len(y), n_boot=per_boot, seed=s, strata=y, groups=units)
        within.append(float(boot[:, 0].var(ddof=1)) if len(boot) > 1 else 0.0)
    ci, info = rubin_interval(per_split, within)
    return Measured(float(np.mean(per_split)), ci, {
        "n_splits": r["n_splits"], "n_repeats": len(r["seeds"]), "seeds": r["seeds"],
        "split_min": float(np.min(per_split)), "split_max": float(np.max(per_split)), **info,
        "n_boot_per_split": per_boot,
        "ci_method": "rubin (between splits + within-split bootstrap variance), normal",
        "ci_note": _PROBE_NOTE.format(m=len(r["seeds"]), k=r["n_splits"]).replace(
            "sampling variance over pieces", "bootstrap variance over pieces"),
        **ctx.fit_params()},
        n_units=r["n_units"], bounds=(0.0, 1.0))


def _cluster_score(ctx: EmbedderContext, name: str) -> Measured:
    """One score of the k-means agreement averaged over seeds; its interval is centred on the
    value (never stretched), a zero-width one widened and flagged."""
    c = ctx.cluster_agreement()
    s = c[name]
    flags = {k: s[k] for k in ("ci_degenerate_widened",) if k in s}
    return Measured(s["value"], s["ci95"], {
        "n_seeds": len(c["seeds"]), "seeds": c["seeds"], "n_boot_per_seed": c["n_boot_per_seed"],
        "seed_min": s["seed_min"], "seed_max": s["seed_max"],
        "between_split_sd": s["between_split_sd"], "within_split_sd": s["within_split_sd"],
        "total_sd": s["total_sd"], "ci_method": c["ci_method"], **flags,
        "ci_note": f"mean over {len(c['seeds'])} k-means seeds; value +- 1.96 sd, variance = "
                   "within-seed bootstrap variance (clusters fixed, pieces resampled within "
                   "classes) + (1 + 1/seeds) x between-seed variance", **ctx.fit_params()},
        n_units=c["n_units"], bounds=kernel.CLUSTER_SCORE_BOUNDS[name])


def v_measure(ctx: EmbedderContext) -> Measured:
    """V-measure of k-means clusters vs labels, mean over k-means seeds."""
    return _cluster_score(ctx, "v_measure")


def adjusted_mutual_info(ctx: EmbedderContext) -> Measured:
    """Adjusted mutual information of the same clusterings (v_measure corrected for chance)."""
    return _cluster_score(ctx, "adjusted_mutual_info")


def adjusted_rand(ctx: EmbedderContext) -> Measured:
    """Adjusted Rand index of the same clusterings, mean over k-means seeds."""
    return _cluster_score(ctx, "adjusted_rand")


def within_total_variance_ratio(ctx: EmbedderContext, *, normalize: bool = True) -> Measured:
    """trace(S_within) / trace(S_total); bootstrap of the per-item contributions."""
    v = structure.within_total_variance_ratio(ctx.X, ctx.labels, normalize=normalize)
    w, t = structure.within_total_contributions(ctx.X, ctx.labels, normalize=normalize)
    b = ctx.boot(lambda w, t: float(w.sum() / t.sum()) if t.sum() > 0 else None, w, t)
    return Measured(v, b["ci95"], {
        **boot_params(b), "ci_note": "bootstrap of per-item squared distances (class and "
                                      "grand means fixed), ratio of sums"},
        n_units=ctx.n_units, bounds=(0.0, 1.0))


# ----------------------------------------------------------------------------- registrations
_KNN = {"metric": "cosine", "centered": False,
        "scheme": "leave-one-out, majority vote, ties to nearest"}
_PROBE = {"model": "StandardScaler + LogisticRegression(C=1.0, max_iter=2000)",
          "cv": "StratifiedGroupKFold (shuffle, grouped by pair id; unpaired items are their "
                "own group)"}
_PROBE_RUN = {"n_splits_requested": "n_splits", "seed": "seed"}
_KMEANS = {"algorithm": "KMeans(n_clusters=n_classes, n_init=10) on L2-normalised vectors"}
_BOOT = "bootstrap (percentile, class-stratified, grouped by pair id)"
_CP = "clopper-pearson over pieces"
_BETA = "mean of per-class Beta draws (Clopper-Pearson families), monte carlo"
_KNN_COST = ("O(n^2 dim) time, O(n) memory per block: one exact neighbour table at k=10 "
             "(float32 blocks, float64 re-scoring) shared by every k-NN and recommendation metric")
#: seeded splits of the probe and k-means seeds of the cluster agreement (EmbedderContext)
_R, _S = EmbedderContext.probe_repeats, EmbedderContext.kmeans_seeds
_RUBIN_CP = (f"rubin (between {_R} seeded splits + within-split variance over pieces), "
             "clopper-pearson on the effective number of pieces")
_RUBIN_BOOT = (f"rubin (between {_R} seeded splits + within-split bootstrap variance over "
               "pieces), normal")
_RUBIN_SEEDS = (f"rubin (between {_S} k-means seeds + within-seed bootstrap variance over "
                "pieces), normal, centred on the value")
_FIT_N = f"min(n, FIT_MAX_ITEMS = {kernel.FIT_MAX_ITEMS:,})"
_PROBE_COST = (f"O(repeats x folds x m dim x classes x iterations), m = {_FIT_N} items "
               f"(params.items_subsampled) ({_R} x folds fits, shared by the three and by the "
               "paired comparisons on all items)")
_KMEANS_COST = (f"O(seeds x (n_init x iterations x m dim x classes + n_boot/seeds x m)), m = "
                f"{_FIT_N} items (params.items_subsampled) ({_S} seeds shared by the three)")

register("silhouette_cosine", kind="embedder", fn=silhouette_cosine, interval=_BOOT,
         cost="O(n classes dim) (class sums replace the n x n distances)",
         higher_is_better=True, params={"metric": "cosine",
                                                           "centered": False},
         read="Mean silhouette with cosine distance, -1..1: near 1 = tight, well separated "
              "classes; near 0 = overlapping classes; negative = items sit closer to another "
              "class.")
for _k in KNN_KS:
    register(f"knn_accuracy_k{_k}", kind="embedder", fn=partial(knn_accuracy, k=_k),
             family="separability", interval=_CP, cost=_KNN_COST, higher_is_better=True,
             params={"k": _k, **_KNN}, chance="params.chance_majority", compared=True,
             read=("Leave-one-out 1-nearest-neighbour accuracy (cosine): fraction of items "
                   "whose nearest other item has the same class; compare with the "
                   "majority-class rate (params.chance_majority), not with 1/classes."
                   if _k == 1 else
                   f"Leave-one-out {_k}-nearest-neighbour majority-vote accuracy (cosine); "
                   "less sensitive to single near-duplicates than k=1."))
for _k in KNN_KS:
    register(f"knn_balanced_accuracy_k{_k}", kind="embedder",
             fn=partial(knn_balanced_accuracy, k=_k), family="separability", interval=_BETA,
             cost=_KNN_COST, higher_is_better=True, params={"k": _k, **_KNN},
             chance="params.chance_uniform", compared=True,
             read=("Mean over classes of the 1-NN recall: every class counts equally, so "
                   "predicting the big class earns nothing; chance is 1/classes "
                   "(params.chance_uniform) whatever the class sizes." if _k == 1 else
                   f"Balanced accuracy of the {_k}-NN majority vote; chance 1/classes. Far "
                   f"below knn_accuracy_k{_k} = the accuracy comes from the large classes."))
register("probe_accuracy", kind="embedder", fn=probe_accuracy, interval=_RUBIN_CP,
         cost=_PROBE_COST, higher_is_better=True, params=_PROBE, context_params=_PROBE_RUN,
         chance="params.chance_majority", compared=True,
         read="Accuracy of a cross-validated linear classifier (standardised features, "
              "logistic regression), folds grouped by pair id so no piece is on both sides: "
              f"how linearly decodable the classes are. The mean over {_R} seeded grouped "
              "5-fold splits (params.split_min..split_max: one split's spread); the interval "
              "covers split and sampling variation (Rubin's rules).")
register("probe_balanced_accuracy", kind="embedder", fn=probe_balanced_accuracy,
         interval=_RUBIN_CP, cost=_PROBE_COST, higher_is_better=True, params=_PROBE,
         context_params=_PROBE_RUN, chance="params.chance_uniform", compared=True,
         read=f"Mean per-class recall of the same probe (mean over the same {_R} splits): "
              "chance is 1/classes; read it instead of probe_accuracy when classes are imbalanced.")
register("probe_macro_f1", kind="embedder", fn=probe_macro_f1, interval=_RUBIN_BOOT,
         cost=_PROBE_COST, higher_is_better=True, params=_PROBE, context_params=_PROBE_RUN,
         read=f"Macro-averaged F1 of the same probe (mean over the same {_R} splits): every "
              "class counts equally, so it drops when small classes are missed.")
register("v_measure", kind="embedder", fn=v_measure, interval=_RUBIN_SEEDS, cost=_KMEANS_COST,
         higher_is_better=True, params=_KMEANS, context_params={"seed": "seed"},
         read="Agreement (0..1) between k-means clusters (k = number of classes, on unit "
              f"vectors, averaged over {_S} seeds) and the labels; 1 = clusters reproduce the "
              "classes. Not corrected for chance: noise with 7 classes of 20 scores about 0.08; "
              "read adjusted_mutual_info.")
register("adjusted_mutual_info", kind="embedder", fn=adjusted_mutual_info,
         interval=_RUBIN_SEEDS, cost=_KMEANS_COST, higher_is_better=True, params=_KMEANS,
         context_params={"seed": "seed"}, chance=0.0,
         read="Adjusted mutual information between k-means clusters (k = classes, unit vectors, "
              f"averaged over {_S} seeds) and the labels: v_measure corrected for chance, "
              "about 0 for clusters unrelated to the labels, 1 = clusters reproduce the classes.")
register("adjusted_rand", kind="embedder", fn=adjusted_rand, interval=_RUBIN_SEEDS,
         cost=_KMEANS_COST, higher_is_better=True, params=_KMEANS,
         context_params={"seed": "seed"}, chance=0.0,
         read="Adjusted Rand index between the same k-means clusters (averaged over the "
              f"same {_S} seeds) and the labels: 0 = chance agreement, 1 = identical partitions.")
register("within_total_variance_ratio", kind="embedder", fn=within_total_variance_ratio,
         interval=_BOOT, cost="O(n dim)", higher_is_better=False,
         params={"definition": "trace(S_within) / trace(S_total), L2-normalised vectors"},
         read="Within-class scatter / total scatter (trace ratio) of the L2-normalised "
              "vectors, 0..1, scale-free (also per item): lower = classes occupy distinct "
              "directions; 1 = class means coincide.")
register("within_total_variance_ratio_raw", kind="embedder",
         fn=partial(within_total_variance_ratio, normalize=False), family="separability",
         interval=_BOOT, cost="O(n dim)", higher_is_better=False,
         params={"definition": "trace(S_within) / trace(S_total), raw vectors (not invariant "
                               "to per-item scale)"},
         read="The same ratio on the raw vectors (the earlier definition): moves when single "
              "items are rescaled, so compare embedders with the normalised one.")
