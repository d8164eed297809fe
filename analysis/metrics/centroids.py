"""Centroid structure shared by two spaces: correlation of their class-centroid cosine
matrices. Kernels in :mod:`analysis.crossspace` and :mod:`analysis.structure`."""
from __future__ import annotations

import numpy as np

from .. import crossspace
from ..bootstrap import percentile_interval, resample_counts
from ..centroids import centroid_matrix_correlation_resamples
from .context import Measured, PairContext, boot_params
from .registry import register


def centroid_matrix_correlation(ctx: PairContext) -> Measured:
    """Correlation of the two centred centroid cosine matrices; item bootstrap (resamples as
    weights, :func:`analysis.crossspace.centroid_matrix_correlation_resampler`)."""
    v = crossspace.centroid_matrix_correlation(ctx.X, ctx.Y, ctx.labels, center=True)
    # the resamples bootstrap_ci would draw, scored in batches of item weights
    vals = centroid_matrix_correlation_resamples(
        ctx.X, ctx.Y, ctx.labels, resample_counts(ctx.n, n_boot=ctx.n_bootstrap, seed=ctx.seed,
                                                  strata=ctx.labels), center=True)
    b = percentile_interval(vals, n_boot=ctx.n_bootstrap, seed=ctx.seed,
                            method="percentile, class-stratified")
    return Measured(v, b["ci95"], boot_params(b), n_units=ctx.n, bounds=(-1.0, 1.0))


register("centroid_matrix_correlation", kind="pair", fn=centroid_matrix_correlation,
         section="between", interval="bootstrap (items as weights, class-stratified)",
         cost="O(n (dx + dy) + classes^2 (dx + dy)) per resample (resamples in batches of "
              "matrix products)", higher_is_better=True,
         params={"correlation": "pearson", "entries": "off-diagonal upper triangle",
                 "centered": True},
         read="Correlation of the off-diagonal (centred) class-centroid cosine similarities: "
              "high = both spaces agree on which classes are alike.")
