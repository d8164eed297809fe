"""Neighbourhood overlap between two spaces: mean Jaccard overlap of each item's k nearest
neighbours. Kernels in :mod:`analysis.crossspace`."""
from __future__ import annotations

from functools import partial

import numpy as np

from .. import crossspace, separability
from .._common import UndefinedMetricError
from ..bootstrap import bootstrap_mean_ci
from .context import Measured, PairContext, boot_params
from .registry import register

JACCARD_K = 10
#: Above this many shared items the mean Jaccard is taken over a seeded, class-stratified
#: sample of this many query items (their neighbours still searched among all items): the two
#: searches of every item cost O(n^2 (dx + dy)), ~10 minutes at 100,000 items on one core,
#: and the mean of 10,000 per-item values is already known to about +-0.005.
JACCARD_MAX_QUERIES = 10_000


def knn_jaccard(ctx: PairContext, *, k: int = JACCARD_K) -> Measured:
    """Mean Jaccard overlap of the k-NN sets (centred cosine); its exact chance level."""
    n, asked, extra = ctx.n, k, {}
    if n < k + 1:
        k = min(asked, n - 2)
        if k < 1:
            raise UndefinedMetricError(f"kNN Jaccard needs at least 3 shared items, got {n}")
        extra["k_reduced_from"] = asked
    rows = separability.subsample_rows(ctx.labels, None, max_items=JACCARD_MAX_QUERIES,
                                       seed=ctx.seed)
    per = crossspace.knn_jaccard_per_item(ctx.X, ctx.Y, k=k, center=True, rows=rows)
    strata = ctx.labels if rows is None else ctx.labels[rows]
    b = bootstrap_mean_ci(per, n_boot=ctx.n_bootstrap, seed=ctx.seed, strata=strata)
    sub = separability.subsample_params(rows, n, seed=ctx.seed, max_items=JACCARD_MAX_QUERIES)
    if sub:
        sub["items_subsampled"]["how"] += "; query items only: neighbours among all items"
    extra.update({"k": k, "chance": crossspace.knn_jaccard_chance(n, k),
                  "chance_overlap_fraction": k / (n - 1), **boot_params(b),
                  "ci_note": "bootstrap of per-item Jaccard values", **sub})
    return Measured(float(np.mean(per)), b["ci95"], extra, n_units=len(per), bounds=(0.0, 1.0))


register(f"knn_jaccard_k{JACCARD_K}", kind="pair", fn=partial(knn_jaccard, k=JACCARD_K),
         family="neighbourhood", section="between",
         interval="bootstrap of per-item values (percentile, class-stratified)",
         cost="O(m n (dx + dy)) time, m = min(n, JACCARD_MAX_QUERIES = 10,000) query items "
              "(params.items_subsampled), bounded memory (blocked exact search)",
         higher_is_better=True, chance="params.chance",
         params={"k": JACCARD_K, "metric": "cosine", "centered": True},
         read=f"Mean Jaccard overlap of each shared item's {JACCARD_K} nearest neighbours "
              "(cosine, centred vectors) in the two spaces: 1 = identical neighbourhoods; "
              "chance (params.chance) is about k/(2(n-1)-k).")
