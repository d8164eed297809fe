"""Representational similarity analysis: Spearman correlation of the two spaces' centred
cosine-distance matrices and its Mantel test. Kernels in :mod:`analysis.crossspace`."""
from __future__ import annotations

from .context import Measured, PairContext, boot_params
from .registry import register


def rsa_spearman(ctx: PairContext) -> Measured:
    """Spearman RSA of centred cosine distances; bootstrap leaving duplicated pairs out."""
    r, plan = ctx.rsa(), ctx.rsa_plan()
    b = r["boot"]
    extra = {**boot_params(b), "ci_note": "pairs of duplicated items left out",
             **ctx.rsa_subset_params()}
    if plan["n_boot"] < ctx.n_bootstrap:
        extra["n_boot_capped_from"] = ctx.n_bootstrap
    return Measured(r["rho"], b["ci95"], extra, n_units=plan["n_r"], bounds=(-1.0, 1.0))


def rsa_mantel_p(ctx: PairContext) -> Measured:
    """One-sided Mantel p-value of the RSA correlation (no interval)."""
    r, plan = ctx.rsa(), ctx.rsa_plan()
    extra = {"n_permutations": r["n_permutations"], **ctx.rsa_subset_params()}
    if plan["n_perm"] < ctx.n_permutations:
        extra["n_permutations_capped_from"] = ctx.n_permutations
    return Measured(r["p"], None, extra)


_COST = ("O(m^2 (dx + dy) + m^2 log m) once, then O(m^2) per resample (triangles ranked once) "
         "and per permutation, on a seeded subsample of m = "
         "min(n, RSA_MAX_ITEMS = 2500) items (params.items_subsampled), repetitions capped at a "
         "cell budget: bounded in n")
register("rsa_spearman", kind="pair", fn=rsa_spearman, section="between",
         interval="bootstrap (percentile, class-stratified, duplicated pairs left out)",
         cost=_COST, higher_is_better=True, chance=0.0,
         params={"distance": "cosine", "centered": True, "correlation": "spearman",
                 "entries": "upper triangle"},
         read="Spearman correlation between the two spaces' pairwise cosine-distance matrices "
              "(centred vectors): high = items that are close in one space are close in the "
              "other.")
register("rsa_mantel_p", kind="pair", fn=rsa_mantel_p, section="between", interval=None,
         p_value=True, higher_is_better=None, cost=_COST,
         params={"test": "Mantel, one-sided, items of one matrix permuted", "centered": True},
         context_params={"seed": "seed"},
         read="Mantel permutation p-value of the RSA correlation (items permuted): small (e.g. "
              "< 0.05) = the agreement is unlikely by chance.")
