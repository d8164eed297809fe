"""Fréchet distances (FAD / FMD style) inside one space -- between its classes, each class
against the rest at n -> infinity -- and of a set against a reference set. Kernels in
:mod:`analysis.frechet`.

This module is the worked example of adding a metric: each is one function of a context plus
one :func:`register` call; the schema, CSV columns, report and README table pick it up.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from .. import frechet as kernel
from .._common import UndefinedMetricError
from .context import EmbedderContext, Measured, SetContext
from .registry import register

SHRINKAGE = "ledoit-wolf"
#: items listed as outliers per embedder (highest scores)
N_OUTLIERS = 10
#: FD∞ of each class against the rest: subset sizes and draws per size (each draw costs a
#: thin SVD of the subset and, where class + rest outnumber dim, a dim x dim eigvalsh)
FD_INF_SIZES, FD_INF_DRAWS = 4, 2


def class_structure(ctx: EmbedderContext, *, shrinkage: str = SHRINKAGE) -> dict:
    """The class matrix, each class's FD∞ against the rest and the item scores, computed once
    per context (the metrics below and the ``frechet`` descriptive read them)."""
    def compute():
        m = kernel.frechet_class_matrix(ctx.X, ctx.labels, shrinkage=shrinkage)
        tv = m["total_variance"]
        each = kernel.frechet_inf_class_vs_rest(ctx.X, ctx.labels, m["classes"],
                                                shrinkage=shrinkage, n_sizes=FD_INF_SIZES,
                                                n_draws=FD_INF_DRAWS, seed=ctx.seed)
        vs_rest = {c: {"value": r["value"], "normalized": r["value"] / tv if tv > 0 else None,
                       "fd_full": r["fd_full"], "sizes": r["sizes"], "fd": r["fd"]}
                   for c, r in each.items()}
        return {**m, "vs_rest_inf": vs_rest,
                "item_scores": kernel.frechet_item_scores(ctx.X, ctx.labels,
                                                          shrinkage=shrinkage)}
    return ctx.once(("frechet", shrinkage), compute)


def _off_diagonal_mean(M: np.ndarray) -> float:
    off = M[~np.eye(len(M), dtype=bool)]
    off = off[np.isfinite(off)]
    if not len(off):
        raise UndefinedMetricError("no two classes with at least 2 items each")
    return float(np.mean(off))


def frechet_class_mean(ctx: EmbedderContext, *, normalized: bool = True,
                       shrinkage: str = SHRINKAGE) -> Measured:
    """Mean Fréchet distance over pairs of classes (normalised: / total variance)."""
    s = class_structure(ctx, shrinkage=shrinkage)
    M = s["normalized"] if normalized else s["matrix"]
    return Measured(_off_diagonal_mean(M), None, {
        "n_class_pairs": int(np.sum(np.isfinite(M[np.triu_indices(len(M), 1)]))),
        "total_variance": s["total_variance"]})


def frechet_inf_class_vs_rest(ctx: EmbedderContext, *, shrinkage: str = SHRINKAGE) -> Measured:
    """Mean over classes of FD∞(class, all other items) / total variance."""
    s = class_structure(ctx, shrinkage=shrinkage)
    vals = [v["normalized"] for v in s["vs_rest_inf"].values() if v["normalized"] is not None]
    if not vals:
        raise UndefinedMetricError("FD∞ needs classes with at least 3 items")
    return Measured(float(np.mean(vals)), None, {"n_classes_used": len(vals)})


def frechet_to_reference(ctx: SetContext, *, shrinkage: str = SHRINKAGE) -> Measured:
    """FD between the set and the reference set (raw, squared units of the space)."""
    return Measured(kernel.frechet_distance(ctx.X, ctx.reference, shrinkage=shrinkage), None,
                    {"n": ctx.n, "n_reference": int(ctx.reference.shape[0])})


def frechet_inf_to_reference(ctx: SetContext, *, shrinkage: str = SHRINKAGE) -> Measured:
    """FD∞ of the set against the reference set (the set subsampled, the reference whole)."""
    r = kernel.frechet_distance_inf(ctx.X, ctx.reference, shrinkage=shrinkage, seed=ctx.seed)
    return Measured(r["value"], None, {"sizes": r["sizes"], "fd": r["fd"], "slope": r["slope"]})


_P = {"shrinkage": SHRINKAGE,
      "covariance": "Ledoit-Wolf per class (sklearn's formula), kept as basis + floor",
      "trace_term": "eigenvalues of the symmetric C_a^1/2 C_b C_a^1/2, clipped at 0"}
_COST = ("O(n dim min(n_c, dim)) for the class fits (a thin SVD each; the dim x dim scatter "
         "for a class of more than dim items) + per class pair O(dim n_a n_b + (n_a + n_b)^3) "
         "when n_a + n_b <= dim, else O(dim^2 min(n_b, dim)) and one dim x dim eigvalsh (two "
         "dense classes: products with a Cholesky factor kept per class)")
_INTERVAL = None  # an interval would need the class pairs' eigendecompositions per resample
register("frechet_class_mean", kind="embedder", section="frechet", family="frechet",
         fn=frechet_class_mean, interval=_INTERVAL, cost=_COST, higher_is_better=True,
         params={**_P, "normalization": "FD / trace of the covariance of all items"},
         read="Mean Fréchet distance between the Gaussians of two classes, divided by the total "
              "variance (scale-free, comparable across embedders): 0 = classes share mean and "
              "covariance; larger = classes further apart (per class pair: the frechet matrix).")
register("frechet_class_mean_raw", kind="embedder", section="frechet", family="frechet",
         fn=partial(frechet_class_mean, normalized=False), interval=_INTERVAL, cost=_COST,
         higher_is_better=None, params={**_P, "normalization": "none (squared units)"},
         read="The same mean in the space's own squared units (what FAD / FMD report): "
              "scale-dependent, so compare it only within one embedder.")
register("frechet_inf_class_vs_rest", kind="embedder", section="frechet", family="frechet",
         fn=frechet_inf_class_vs_rest, interval=_INTERVAL, higher_is_better=True,
         cost="O(classes x sizes x draws x (n_c dim min(n_c, dim) + pair cost as above)); "
              "the rest's Gaussians from one dim x dim scatter of all items, O(n dim^2) once "
              "+ O(n_c dim^2 + n dim) per class", context_params={"seed": "seed"},
         params={**_P, "normalization": "FD / trace of the covariance of all items",
                 "extrapolation": f"FD of class subsets of {FD_INF_SIZES} sizes "
                                  f"({FD_INF_DRAWS} draws each but the full one) vs the rest, "
                                  "linear in 1/size, intercept"},
         read="Mean over classes of the FD∞ of the class against all other items (the "
              "finite-sample bias extrapolated away), / total variance: like frechet_class_mean "
              "but comparable across class sizes; near 0 = the class looks like the rest.")
register("frechet_to_reference", kind="set", section="reference", family="frechet",
         fn=frechet_to_reference, interval=None, higher_is_better=False,
         cost="O((n + m) dim min(n + m, dim)), + O(dim^3) only when n + m > dim",
         params={**_P, "covariance": "Ledoit-Wolf per set"},
         read="Fréchet distance between a collection and a reference collection in the same "
              "space (FAD / FMD): 0 = same Gaussian; squared units, grows with the bias of "
              "small n (use frechet_inf_to_reference to compare sets of different sizes).")
register("frechet_inf_to_reference", kind="set", section="reference", family="frechet",
         fn=frechet_inf_to_reference, interval=None, higher_is_better=False,
         cost="O(sizes x draws x (n dim min(n, dim) + pair cost of frechet_to_reference))",
         context_params={"seed": "seed"}, params={**_P, "covariance": "Ledoit-Wolf per set"},
         read="FD of the collection against the reference extrapolated to infinitely many "
              "items (intercept in 1/n): comparable across collection sizes; scatters around 0 "
              "(may dip below) when both come from one distribution.")


def outliers(ctx: EmbedderContext, ids: np.ndarray, *, top: int = N_OUTLIERS,
             shrinkage: str = SHRINKAGE) -> list:
    """The ``top`` items with the highest :func:`analysis.frechet.frechet_item_scores`."""
    scores = class_structure(ctx, shrinkage=shrinkage)["item_scores"]
    order = [i for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
             if np.isfinite(scores[i])][:top]
    return [{"id": str(ids[i]), "label": str(ctx.labels[i]), "score": float(scores[i])}
            for i in order]
