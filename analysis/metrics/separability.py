"""Separability of the classes in one space: silhouette, k-NN, linear probe, k-means agreement,
within/total variance. Kernels in :mod:`analysis.separability` and :mod:`analysis.structure`."""
from __future__ import annotations

from functools import partial

import numpy as np

from .. import separability as kernel
from .. import structure
from ..bootstrap import bootstrap_mean_ci
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


def probe_accuracy(ctx: EmbedderContext) -> Measured:
    """Accuracy of the pooled out-of-fold probe predictions, exact interval over pieces."""
    r = ctx.probe()
    return _proportion(ctx, (r["y_pred"] == r["y_true"]).astype(np.float64),
                       {"n_splits": r["n_splits"]})


def probe_balanced_accuracy(ctx: EmbedderContext) -> Measured:
    """Balanced accuracy of the pooled out-of-fold probe predictions."""
    r = ctx.probe()
    return _balanced(ctx, r["y_pred"], {"n_splits": r["n_splits"]})


def probe_macro_f1(ctx: EmbedderContext) -> Measured:
    """Macro F1 of the pooled out-of-fold probe predictions; grouped bootstrap."""
    from sklearn.metrics import f1_score
    r = ctx.probe()
    b = ctx.boot(lambda t, p: f1_score(t, p, average="macro", zero_division=0),
                 r["y_true"], r["y_pred"])
    return Measured(r["macro_f1"], b["ci95"], {
        "n_splits": r["n_splits"], **boot_params(b),
        "ci_note": "bootstrap of pooled out-of-fold predictions"},
        n_units=ctx.n_units, bounds=(0.0, 1.0))


def v_measure(ctx: EmbedderContext) -> Measured:
    """V-measure of k-means clusters vs labels; bootstrap of (label, cluster) pairs."""
    from sklearn.metrics import v_measure_score
    cl = ctx.clusters()
    b = ctx.boot(lambda t, c: v_measure_score(t, c), ctx.labels, cl)
    return Measured(kernel.cluster_agreement(ctx.labels, cl)["v_measure"], b["ci95"], {
        **boot_params(b), "ci_note": "bootstrap of (label, cluster) pairs of one fit"},
        n_units=ctx.n_units, bounds=(0.0, 1.0))


def adjusted_rand(ctx: EmbedderContext) -> Measured:
    """Adjusted Rand index of the same clusters; bootstrap of (label, cluster) pairs."""
    from sklearn.metrics import adjusted_rand_score
    cl = ctx.clusters()
    b = ctx.boot(lambda t, c: adjusted_rand_score(t, c), ctx.labels, cl)
    return Measured(kernel.cluster_agreement(ctx.labels, cl)["adjusted_rand"], b["ci95"],
                    {**boot_params(b), "ci_note": "bootstrap of (label, cluster) pairs of one "
                                                  "fit"},
                    n_units=ctx.n_units, bounds=(-1.0, 1.0))


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
_PROBE_COST = "O(folds x n dim x classes x iterations) (one probe shared by the three)"
_KMEANS_COST = "O(n_init x iterations x n dim x classes) (one fit shared by the two)"

register("silhouette_cosine", kind="embedder", fn=silhouette_cosine, interval=_BOOT,
         cost="O(n^2 dim)", higher_is_better=True, params={"metric": "cosine",
                                                           "centered": False},
         read="Mean silhouette with cosine distance, -1..1: near 1 = tight, well separated "
              "classes; near 0 = overlapping classes; negative = items sit closer to another "
              "class.")
for _k in KNN_KS:
    register(f"knn_accuracy_k{_k}", kind="embedder", fn=partial(knn_accuracy, k=_k),
             family="separability", interval=_CP, cost=_KNN_COST, higher_is_better=True,
             params={"k": _k, **_KNN}, chance="params.chance_majority",
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
             chance="params.chance_uniform",
             read=("Mean over classes of the 1-NN recall: every class counts equally, so "
                   "predicting the big class earns nothing; chance is 1/classes "
                   "(params.chance_uniform) whatever the class sizes." if _k == 1 else
                   f"Balanced accuracy of the {_k}-NN majority vote; chance 1/classes. Far "
                   f"below knn_accuracy_k{_k} = the accuracy comes from the large classes."))
register("probe_accuracy", kind="embedder", fn=probe_accuracy, interval=_CP, cost=_PROBE_COST,
         higher_is_better=True, params=_PROBE, context_params=_PROBE_RUN,
         chance="params.chance_majority",
         read="Accuracy of a cross-validated linear classifier (standardised features, "
              "logistic regression), folds grouped by pair id so no piece is on both sides: "
              "how linearly decodable the classes are.")
register("probe_balanced_accuracy", kind="embedder", fn=probe_balanced_accuracy, interval=_BETA,
         cost=_PROBE_COST, higher_is_better=True, params=_PROBE, context_params=_PROBE_RUN,
         chance="params.chance_uniform",
         read="Mean per-class recall of the same probe: chance is 1/classes; read it instead of "
              "probe_accuracy when classes are imbalanced.")
register("probe_macro_f1", kind="embedder", fn=probe_macro_f1, interval=_BOOT,
         cost=_PROBE_COST, higher_is_better=True, params=_PROBE, context_params=_PROBE_RUN,
         read="Macro-averaged F1 of the same probe: every class counts equally, so it drops "
              "when small classes are missed.")
register("v_measure", kind="embedder", fn=v_measure, interval=_BOOT, cost=_KMEANS_COST,
         higher_is_better=True, params=_KMEANS, context_params={"seed": "seed"},
         read="Agreement (0..1) between k-means clusters (k = number of classes, on unit "
              "vectors) and the labels; 1 = clusters reproduce the classes.")
register("adjusted_rand", kind="embedder", fn=adjusted_rand, interval=_BOOT, cost=_KMEANS_COST,
         higher_is_better=True, params=_KMEANS, context_params={"seed": "seed"}, chance=0.0,
         read="Adjusted Rand index between the same k-means clusters and the labels: 0 = "
              "chance agreement, 1 = identical partitions.")
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
