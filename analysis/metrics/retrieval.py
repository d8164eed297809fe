"""Cross-space retrieval of held-out partners after PCA + orthogonal Procrustes, over repeated
stratified splits. Kernels in :mod:`analysis.crossspace`."""
from __future__ import annotations

from functools import partial

import numpy as np

from ..intervals import rubin_interval
from .. import retrieval as kernel
from .context import Measured, PairContext
from .registry import register

RECALL_KS = (1, 5, 10)


def retrieval(ctx: PairContext, *, key: str) -> Measured:
    """Mean over repeated stratified splits of recall@k or MRR; interval from split and
    sampling variation together (Rubin's rules)."""
    r = ctx.retrieval()
    per_split = np.array([s[key] for s in r["splits"]])
    within = np.array([s["within_var"][key] for s in r["splits"]])
    proportion = key != "mrr"
    ci, info = rubin_interval(per_split, within,
                              proportion_units=r["n_queries"] if proportion else None)
    sub = {} if r["n_queries"] == r["n_test"] else {"items_subsampled": {
        "n_items": r["n_queries"], "of": r["n_test"], "seed": ctx.seed,
        "max_items": kernel.RETRIEVAL_MAX_QUERIES,
        "how": "queries per split (split s draws them with seed + s), the same in both "
               "directions, each ranked among all held-out items"}}
    return Measured(r[key], ci, {
        "n_train": r["n_train"], "n_test": r["n_test"], "n_queries": r["n_queries"],
        "dims": r["dims"], **sub,
        "chance": r["chance"][key], "x_to_y": r["x_to_y"][key], "y_to_x": r["y_to_x"][key],
        "n_splits": r["n_splits"], "split_min": float(per_split.min()),
        "split_max": float(per_split.max()), **info,
        "ci_method": ("rubin + clopper-pearson" if proportion else "rubin, normal"),
        "ci_note": "mean over repeated splits; variance = within-split sampling variance over "
                   "held-out pairs + (1 + 1/splits) x between-split variance" +
                   ("; exact binomial on the effective number of pairs" if proportion else "")},
        n_units=r["n_queries"], bounds=(0.0, 1.0))


_PARAMS = {"method": "PCA (fit on train) + orthogonal Procrustes (train pairs only), cosine "
                     "retrieval among held-out pairs, both directions averaged",
           "splits": "stratified by label, seeds seed..seed+n_splits-1", "centered": True}
_RUN = {"test_fraction": "test_fraction", "max_components": "max_components",
        "n_splits_requested": "retrieval_splits", "seed": "seed"}
_COST = ("O(n (dx^2 + dy^2)) once, then per split O(n_test (dx^2 + dy^2) + d (dx^2 + dy^2) "
         "+ q n_test d), q = min(n_test, RETRIEVAL_MAX_QUERIES = 3,000) queries "
         "(params.items_subsampled) (shared by the four; ranking in 128 MB blocks); above "
         "1,024-d the d^3 eigendecomposition is a warm-started subspace iteration, O(dim^2 d) "
         "per split")
_INTERVAL = "Rubin's rules over splits (within-split sampling + between-split variance)"
for _k in RECALL_KS:
    register(f"retrieval_recall_at_{_k}", kind="pair", section="between", family="retrieval",
             fn=partial(retrieval, key=f"recall_at_{_k}"), interval=_INTERVAL + ", exact "
             "binomial on the effective number of pairs", cost=_COST, higher_is_better=True,
             chance="params.chance", params=_PARAMS, context_params=_RUN,
             read=("Held-out cross-space retrieval after PCA + orthogonal Procrustes fitted on "
                   "training pairs, averaged over repeated stratified splits: fraction of "
                   "queries whose partner ranks first; compare with the chance level k/n_test "
                   "(split spread in params)." if _k == 1 else
                   f"As recall@1, partner within the top {_k}."))
register("retrieval_mrr", kind="pair", section="between", fn=partial(retrieval, key="mrr"),
         family="retrieval", interval=_INTERVAL + ", normal", cost=_COST, higher_is_better=True,
         chance="params.chance", params=_PARAMS, context_params=_RUN,
         read="Mean reciprocal rank of the partner among held-out items (1 = always first); "
              "compare with the expected MRR of random ranking.")
