"""Centered kernel alignment between two spaces on the same items: debiased and plain linear
CKA and the permutation test of the pairing. Kernels in :mod:`analysis.crossspace`."""
from __future__ import annotations

import numpy as np

from .. import crossspace
from .context import Measured, PairContext
from .registry import register


def cka_debiased(ctx: PairContext) -> Measured:
    """Debiased linear CKA; percentile bootstrap of the weighted debiased estimator (copies of
    an item never pair with each other, so resamples are not inflated)."""
    X, Y, _ = ctx.cka_data()
    v = crossspace.cka_debiased(X, Y)
    vals = ctx.cka_resamples()[:, 1]
    ci = list(np.percentile(vals, [2.5, 97.5])) if len(vals) >= 2 else None
    return Measured(v, ci, {
        "n_boot": ctx.n_bootstrap, "n_boot_valid": int(len(vals)), "ci_seed": ctx.seed,
        "ci_method": "percentile, class-stratified, debiased estimator",
        "ci_note": "bootstrap of the unbiased-HSIC CKA with each resample's duplicated items "
                   "never paired with their own copies (no duplicate-row inflation)",
        **ctx.cka_params()},
        n_units=len(X), bounds=(-1.0, 1.0))


def cka_linear(ctx: PairContext) -> Measured:
    """Biased linear CKA; percentile bootstrap re-centred on the estimate."""
    X, Y, _ = ctx.cka_data()
    v = crossspace.linear_cka(X, Y)
    vals = ctx.cka_resamples()[:, 0]
    ci, extra = None, {}
    if len(vals) >= 2:
        shift = float(np.mean(vals) - v)  # duplicated rows push every resample upwards
        lo, hi = np.percentile(vals, [2.5, 97.5]) - shift
        ci = [max(0.0, lo), min(1.0, hi)]
        extra["bootstrap_bias"] = shift
    return Measured(v, ci, {
        **extra, "n_boot": ctx.n_bootstrap, "n_boot_valid": int(len(vals)), "ci_seed": ctx.seed,
        "ci_method": "percentile, class-stratified, shifted by the bootstrap bias",
        "ci_note": "resamples inflate the biased CKA (duplicated rows); the percentile "
                   "interval is moved down by their mean excess over the estimate. The value "
                   "itself is biased upwards at small n / high dimension: see cka_debiased",
        **ctx.cka_params()},
        n_units=len(X), bounds=(0.0, 1.0))


def cka_permutation_p(ctx: PairContext) -> Measured:
    """p-value of cka_debiased against shuffled pairings (no interval)."""
    r = ctx.permutation_test()
    extra = {"n_permutations": r["n_permutations"], "null_q95": r["null_q95"],
             "null_mean": r["null_mean"], "observed": r["cka"], "path": r["path"],
             **ctx.cka_params()}
    if r["n_permutations"] < ctx.n_permutations:
        extra["n_permutations_capped_from"] = ctx.n_permutations
    return Measured(r["p"], None, extra)


_CKA = {"kernel": "linear", "centered": True}
_COST = ("O(m (dx^2 + dy^2)) or O(m^2 (dx + dy)) per resample (Gram products, shared with the "
         "bootstrap), m = min(n, CKA_MAX_ITEMS = 5,000) items (params.items_subsampled)")
register("cka_debiased", kind="pair", fn=cka_debiased, section="between",
         interval="bootstrap (percentile, class-stratified, debiased estimator)", cost=_COST,
         higher_is_better=True, chance=0.0,
         params={**_CKA, "estimator": "unbiased HSIC (Song et al. 2012)"},
         read="Linear CKA from the unbiased HSIC estimator: about 0 for unrelated spaces at any "
              "n and dimension (may dip slightly below), 1 = same geometry up to rotation and "
              "scale; the main cross-space similarity.")
register("cka_linear", kind="pair", fn=cka_linear, section="between",
         interval="bootstrap (percentile, shifted by the bootstrap bias)", cost=_COST,
         higher_is_better=True, params={**_CKA, "estimator": "biased HSIC"},
         read="Plain (biased) linear CKA, 0..1, kept for continuity: it sits well above 0 for "
              "unrelated spaces when n is small or the dimension high (compare with "
              "cka_debiased).")
register("cka_permutation_p", kind="pair", fn=cka_permutation_p, section="between",
         interval=None, p_value=True, higher_is_better=None,
         cost="O(permutations x m^2) after one O(m^2 (dx + dy)) Gram computation, m = "
              "min(n, CKA_MAX_ITEMS)",
         params={"test": "permutation of the pairing, one-sided, statistic cka_debiased"},
         context_params={"seed": "seed"},
         read="Permutation p-value of cka_debiased with the pairing of items shuffled: small "
              "(e.g. < 0.05) = the shared geometry is unlikely by chance; params.null_q95 is "
              "what chance alone reaches.")
