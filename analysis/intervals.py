"""Confidence intervals that stay honest where a percentile bootstrap does not.

A percentile bootstrap of a proportion collapses at 0 and 1 (40/40 correct resamples to 40/40
every time: [1, 1]) and can exclude its own estimate when the estimator is biased. The
functions here give

- :func:`clopper_pearson` -- the exact binomial interval of a proportion, over the independent
  units (items or pieces), never zero-width;
- :func:`balanced_accuracy_interval` -- an interval of a mean of per-class proportions from
  independent per-class Beta distributions (after Brodersen et al., ICPR 2010), equal to
  Clopper-Pearson for one class;
- :func:`rubin_interval` -- an interval for a mean over repeated train/test splits that adds the
  between-split variance to the within-split sampling variance (Rubin's rules);
- :func:`finalize_interval` -- the last step for every reported interval: it contains the
  estimate and has non-zero width, and says what it did to get there.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["clopper_pearson", "balanced_accuracy_interval", "rubin_interval",
           "finalize_interval", "all_agree_halfwidth"]


def clopper_pearson(successes: float, n_units: float, *, alpha: float = 0.05) -> list[float]:
    """Exact (Clopper-Pearson) interval [lo, hi] of a proportion ``successes / n_units``.

    ``successes`` may be fractional (a proportion times an effective number of units, e.g. the
    accuracy of items grouped into fewer independent pieces): the Beta quantiles are defined for
    real parameters. At ``successes == n_units`` the lower bound is ``(alpha/2) ** (1/n)`` (0.912
    for 40 of 40), never 1.
    """
    from scipy.stats import beta
    if n_units <= 0:
        raise ValueError(f"n_units must be positive, got {n_units}")
    if not 0 <= successes <= n_units:
        raise ValueError(f"successes must lie in [0, n_units], got {successes} of {n_units}")
    x, n = float(successes), float(n_units)
    lo = 0.0 if x <= 0 else float(beta.ppf(alpha / 2, x, n - x + 1))
    hi = 1.0 if x >= n else float(beta.ppf(1 - alpha / 2, x + 1, n - x))
    return [lo, hi]


def balanced_accuracy_interval(correct_per_class: ArrayLike, n_per_class: ArrayLike, *,
                               alpha: float = 0.05, n_draws: int = 20000,
                               seed: int = 0) -> list[float]:
    """Interval [lo, hi] of the balanced accuracy (mean of per-class recalls).

    Each class's recall gets independent Beta distributions, as in Brodersen et al. ("The
    balanced accuracy and its posterior distribution", ICPR 2010), but with the two Beta
    families whose quantiles make the Clopper-Pearson bounds: the lower bound is the
    ``alpha/2`` quantile of the mean of per-class Beta(c, m - c + 1) draws, the upper bound the
    ``1 - alpha/2`` quantile of the mean of Beta(c + 1, m - c) draws (c correct of m; a
    class with c = 0 or c = m contributes 0 or 1 on that side). With one class this *is* the
    Clopper-Pearson interval; it never has zero width, stays in [0, 1] and contains c/m
    (a uniform-prior posterior would pull a near-perfect class below its own estimate).
    Seeded Monte Carlo: O(n_draws * n_classes).

    Parameters
    ----------
    correct_per_class : np.ndarray [shape=(n_classes,)]
        Correct predictions (or effective units) per class.
    n_per_class : np.ndarray [shape=(n_classes,)]
        Items (or independent units) per class; every entry positive.
    """
    c = np.asarray(correct_per_class, dtype=np.float64)
    m = np.asarray(n_per_class, dtype=np.float64)
    if c.shape != m.shape or c.ndim != 1 or not len(c):
        raise ValueError(f"per-class counts must be two 1-d arrays of one length, got {c.shape} "
                         f"and {m.shape}")
    if np.any(m <= 0) or np.any(c < 0) or np.any(c > m):
        raise ValueError("per-class counts need 0 <= correct <= n and n > 0")
    rng = np.random.default_rng(seed)

    def mean_of_draws(a, b):
        draws = np.empty((n_draws, len(a)))
        for j, (aj, bj) in enumerate(zip(a, b)):  # Beta(0, b) = 0 and Beta(a, 0) = 1
            draws[:, j] = 0.0 if aj <= 0 else (1.0 if bj <= 0 else rng.beta(aj, bj, n_draws))
        return draws.mean(axis=1)
    lo = float(np.quantile(mean_of_draws(c, m - c + 1), alpha / 2))
    hi = float(np.quantile(mean_of_draws(c + 1, m - c), 1 - alpha / 2))
    return [lo, hi]


def rubin_interval(split_values: ArrayLike, within_variances: ArrayLike, *,
                   proportion_units: float | None = None, alpha: float = 0.05) -> tuple[list[float],
                   dict]:
    """Interval of the mean over ``m`` repeated splits, covering split and sampling variation.

    Total variance T = W + (1 + 1/m) B, with W the mean within-split sampling variance and B the
    variance of the split values across splits (Rubin's rules for repeated imputations, here
    repeated random splits). For a proportion (``proportion_units`` = held-out units per split)
    T is turned into an effective number of units ``p (1 - p) / T`` (at most the units of one
    split) and the interval is Clopper-Pearson on it, so it stays honest at 0 and 1; otherwise
    it is the normal interval mean +- z sqrt(T), clipped to [0, 1].

    Parameters
    ----------
    split_values : np.ndarray [shape=(m,)]
    within_variances : np.ndarray [shape=(m,)]
        Sampling variance of each split's value (variance of the per-unit scores / units).

    Returns
    -------
    (ci, info) with info = {``between_split_sd``, ``within_split_sd``, ``total_sd``,
    ``n_effective`` (proportions only)}.
    """
    from scipy.stats import norm
    v = np.asarray(split_values, dtype=np.float64)
    w = np.asarray(within_variances, dtype=np.float64)
    m = len(v)
    if m == 0 or len(w) != m:
        raise ValueError(f"need one within-split variance per split, got {m} and {len(w)}")
    mean = float(v.mean())
    B = float(v.var(ddof=1)) if m > 1 else 0.0
    W = float(w.mean())
    T = W + (1.0 + 1.0 / m) * B
    info = {"between_split_sd": B ** 0.5, "within_split_sd": W ** 0.5, "total_sd": T ** 0.5}
    if proportion_units is not None:
        n_eff = float(proportion_units)
        if T > 0 and 0 < mean < 1:
            n_eff = min(n_eff, mean * (1 - mean) / T)
        n_eff = max(n_eff, 1.0)
        info["n_effective"] = n_eff
        # a mean of proportions can leave [0, 1] by round-off (1.0000000000000004 for splits
        # that all scored 1): clipped, or the exact interval refuses it
        return clopper_pearson(min(max(mean, 0.0), 1.0) * n_eff, n_eff, alpha=alpha), info
    h = float(norm.ppf(1 - alpha / 2)) * T ** 0.5
    return [max(0.0, mean - h), min(1.0, mean + h)], info


def all_agree_halfwidth(n_units: float, *, alpha: float = 0.05) -> float:
    """1 minus the exact lower bound of a proportion when all ``n_units`` units succeed:
    ``1 - (alpha/2) ** (1/n)`` (about 3.7 / n; 0.088 at n = 40)."""
    return 1.0 - (alpha / 2) ** (1.0 / max(1.0, float(n_units)))


def finalize_interval(value: float | None, ci: Sequence[float] | None, *,
                      n_units: float | None = None,
                      bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[list | None, dict]:
    """Make a reported interval honest: it contains ``value`` and has non-zero width.

    1. An interval that excludes the estimate (a biased estimator's bootstrap) is extended to
       it; ``ci_extended_to_value`` records by how much.
    2. A zero-width interval (every resample gave the same number: e.g. a rotated copy has CKA
       1 on every resample) does not mean "no uncertainty" but "the resamples cannot show it":
       it is widened by :func:`all_agree_halfwidth` of ``n_units`` (the exact binomial
       margin of ``n_units`` independent units that all agree), clipped to ``bounds``;
       ``ci_degenerate_widened`` says so. Without ``n_units`` it is left as it is.

    Returns
    -------
    (ci, flags): the interval (None stays None) and the params recording any change.
    """
    flags: dict = {}
    if ci is None or value is None or ci[0] is None or ci[1] is None:
        return ci, flags
    v = float(value)
    if not np.isfinite(v):
        return ci, flags
    lo, hi = float(ci[0]), float(ci[1])
    if v < lo - 1e-12 or v > hi + 1e-12:  # beyond round-off
        flags["ci_extended_to_value"] = float(max(lo - v, v - hi))
    lo, hi = min(lo, v), max(hi, v)
    if hi - lo <= 1e-12 and n_units:
        h = all_agree_halfwidth(n_units)
        lo, hi = min(max(bounds[0], v - h), v), max(min(bounds[1], v + h), v)
        flags["ci_degenerate_widened"] = (f"every resample gave {v:.6g}; widened by the exact "
                                          f"binomial margin of {n_units:g} agreeing units")
    return [lo, hi], flags
