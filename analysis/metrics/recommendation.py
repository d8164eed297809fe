"""Recommendation quality of one space: leave-one-out top-k lists as recommendations,
precision@k, coverage and hubness, optionally under mutual proximity. Kernels in
:mod:`analysis.recommendation`."""
from __future__ import annotations

from functools import partial

from .._common import UndefinedMetricError
from .. import recommendation as kernel
from .context import EmbedderContext, Measured
from .registry import register

#: the suffix of the same metrics with mutual proximity (``--hubness-reduction mp``)
MP_SUFFIX = "_mp"


def recommend_metric(ctx: EmbedderContext, *, key: str,
                     hubness_reduction: str | None = None) -> Measured:
    """One recommendation-quality metric (all of them share one neighbour computation)."""
    def compute():
        nb = None
        if hubness_reduction is None and ctx.n >= 2:
            nb = ctx.neighbours(min(10, ctx.n - 1))  # the shared table (k-NN metrics too)
        return kernel.recommendation_quality(ctx.X, ctx.labels,
                                             hubness_reduction=hubness_reduction, neighbors=nb)
    q = ctx.once(("recommend", hubness_reduction), compute)
    v = q[key]
    if v is None:
        raise UndefinedMetricError(f"{key}: undefined (too few items or constant occurrence)")
    if isinstance(v, dict):  # a precision: Wilson interval and chance level
        return Measured(v["value"], v["ci95"], {
            "chance": v["chance"], "successes": v["successes"], "trials": v["trials"],
            "ci_method": "wilson", "ci_note": "Wilson interval over the n*k judgements "
                                              "(optimistic: neighbour lists overlap)"},
            n_units=v["trials"], bounds=(0.0, 1.0))
    return Measured(float(v), None, {})


_READ = {
    "recommend_precision_at_5": "Share of each item's 5 nearest other items (cosine, "
                                "leave-one-out: its recommendations) with its label; Wilson "
                                "interval over the n*5 judgements (optimistic: lists overlap); "
                                "compare with params.chance. Cross-modal same-piece hits are the "
                                "retrieval_* metrics between embedders.",
    "recommend_precision_at_10": "As recommend_precision_at_5 with 10 recommendations.",
    "recommend_coverage_at_10": "Share of items in at least one item's top-10: how much of the "
                                "collection a nearest-neighbour recommender ever recommends.",
    "hubness_skewness_k10": "Skewness of the 10-occurrence distribution (how often each item is "
                            "in others' top-10; Radovanovic et al., JMLR 2010): near 0 = fair; "
                            "large positive = a few hubs recommended to everyone.",
    "hubness_never_recommended_k10": "Share of items in no one's top-10 (anti-hubs): what a "
                                     "listener would never be recommended.",
}
_BETTER = {"recommend_precision_at_5": True, "recommend_precision_at_10": True,
           "recommend_coverage_at_10": True, "hubness_skewness_k10": False,
           "hubness_never_recommended_k10": False}
_COST = {None: "O(n^2 dim) time, bounded blocks (the embedder's neighbour table, shared with "
               "the k-NN metrics)",
         "mp": "O(n^2 dim + n^2) (mutual proximity of all distances, shared by the five)"}

for _red in (None, "mp"):
    for _name, _read in _READ.items():
        _precision = _name.startswith("recommend_precision")
        register(
            _name + (MP_SUFFIX if _red else ""), kind="embedder", family="recommendation",
            fn=partial(recommend_metric, key=_name, hubness_reduction=_red),
            interval="wilson over the n*k judgements" if _precision else None,
            cost=_COST[_red], higher_is_better=_BETTER[_name], section="recommendation",
            chance="params.chance" if _precision else None,
            when=None if _red is None else ("hubness_reduction", _red),
            params={"scheme": "leave-one-out top-k (cosine)" if _red is None else
                    "leave-one-out top-k by Gaussian mutual proximity", "centered": False},
            read=_read if _red is None else
            (f"{_name} with neighbours ranked by mutual proximity (Schnitzer et al., JMLR 2012) "
             "instead of cosine: read it beside the plain value to see the effect of hubness "
             "reduction."))
