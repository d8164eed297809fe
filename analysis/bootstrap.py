"""Percentile bootstrap confidence intervals with a fixed seed.

:func:`bootstrap_ci` resamples the rows of one or more aligned arrays (items), optionally within
each class (stratified: every class keeps its size) and/or by whole groups (pair ids: both
renderings of a piece are drawn together), recomputes a metric on each resample and returns
the 2.5th and 97.5th percentiles. Resamples where the metric is undefined (it raises
``ValueError``, returns None or NaN) are skipped and counted.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["resample_indices", "resample_counts", "bootstrap_ci", "bootstrap_mean_ci",
           "bootstrap_values", "percentile_interval"]


class _Plan:
    """Precomputed resampling units (items or groups) and their strata."""

    def __init__(self, n, strata=None, groups=None):
        self.n = n
        if groups is None:
            self.unit_of = np.arange(n)
            n_units = n
        else:
            _, self.unit_of = np.unique(np.asarray(groups).astype(str), return_inverse=True)
            n_units = int(self.unit_of.max()) + 1 if n else 0
        self.units = np.arange(n_units)
        self.grouped = groups is not None
        if self.grouped:
            order = np.argsort(self.unit_of, kind="stable")
            bounds = np.searchsorted(self.unit_of[order], np.arange(n_units + 1))
            self.rows_of = [order[bounds[u]:bounds[u + 1]] for u in range(n_units)]
        if strata is None:
            self.strata_units = [self.units]
        else:
            strata = np.asarray(strata).astype(str)
            first_row = np.full(n_units, -1)
            first_row[self.unit_of[::-1]] = np.arange(n)[::-1]
            unit_stratum = strata[first_row]
            self.strata_units = [self.units[unit_stratum == s] for s in np.unique(unit_stratum)]

    def draw(self, rng) -> np.ndarray:
        parts = [rng.choice(m, size=len(m), replace=True) for m in self.strata_units if len(m)]
        drawn = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        if not self.grouped:
            return drawn.astype(np.int64)
        if not len(drawn):
            return drawn.astype(np.int64)
        return np.concatenate([self.rows_of[u] for u in drawn]).astype(np.int64)


def resample_indices(n: int, rng: np.random.Generator, *, strata: ArrayLike | None = None,
                     groups: ArrayLike | None = None) -> np.ndarray:
    """One bootstrap resample: row indices [shape=(~n,)] drawn with replacement.

    Parameters
    ----------
    strata : np.ndarray [shape=(n,)] or None
        Resample within each stratum (class), keeping stratum sizes (in units).
    groups : np.ndarray [shape=(n,)] or None
        Resample whole groups (all rows of a drawn group come along).
    """
    return _Plan(n, strata, groups).draw(rng)


def resample_counts(n: int, *, n_boot: int, seed: int = 0, strata: ArrayLike | None = None,
                    groups: ArrayLike | None = None, chunk: int = 64):
    """How often each row is drawn in the resamples :func:`bootstrap_ci` draws with these
    arguments, in the same order, yielded ``chunk`` resamples at a time [shape=(<= chunk, n)]:
    a metric linear in item weights scores many resamples in one matrix product."""
    rng = np.random.default_rng(seed)
    plan = _Plan(n, strata, groups)
    for start in range(0, int(n_boot), chunk):
        W = np.zeros((min(chunk, int(n_boot) - start), n))
        for row in W:
            row += np.bincount(plan.draw(rng), minlength=n)
        yield W


def percentile_interval(values: ArrayLike, *, n_boot: int, seed: int, method: str,
                        alpha: float = 0.05) -> dict:
    """:func:`bootstrap_ci`'s result for the resamples' metric ``values`` (undefined ones:
    None or non-finite, left out and counted)."""
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    res = {"ci95": None, "n_boot": int(n_boot), "n_valid": len(vals), "seed": int(seed),
           "method": method}
    if len(vals) >= 2:
        lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        res["ci95"] = [float(lo), float(hi)]
    return res


def bootstrap_ci(metric: Callable, *arrays: ArrayLike, n_boot: int = 200, seed: int = 0,
                 strata: ArrayLike | None = None, groups: ArrayLike | None = None,
                 alpha: float = 0.05, pass_index: bool = False) -> dict:
    """Percentile bootstrap CI of ``metric(*[a[idx] for a in arrays])``.

    Parameters
    ----------
    metric : callable
        Function of the resampled arrays (e.g. ``f(X, labels)``) returning a float. With
        ``pass_index=True`` it also receives ``index=idx`` (the source rows, to spot duplicates).
    *arrays : np.ndarray [shape=(n, ...)]
        Row-aligned arrays (vectors, labels, groups, per-item scores ...).
    n_boot : int
        Number of resamples (0 = no interval).
    seed : int
        Seed of the resampling generator: same seed, same interval.
    strata, groups : np.ndarray [shape=(n,)] or None
        See :func:`resample_indices`.

    Returns
    -------
    dict with ``ci95`` ([lo, hi] or None), ``n_boot``, ``n_valid`` (defined resamples),
    ``method``.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    n = len(arrays[0])
    for a in arrays:
        if len(a) != n:
            raise ValueError(f"bootstrap arrays differ in length: {[len(x) for x in arrays]}")
    res = {"ci95": None, "n_boot": int(n_boot), "n_valid": 0, "seed": int(seed),
           "method": "percentile" + (", class-stratified" if strata is not None else "")
                     + (", grouped by pair id" if groups is not None else "")}
    if n_boot <= 0 or n == 0:
        return res
    rng = np.random.default_rng(seed)
    plan = _Plan(n, strata, groups)
    vals = []
    for _ in range(int(n_boot)):
        idx = plan.draw(rng)
        sub = [np.asarray(a)[idx] for a in arrays]
        try:
            v = metric(*sub, index=idx) if pass_index else metric(*sub)
        except ValueError:
            continue
        if v is None:
            continue
        v = float(v)
        if np.isfinite(v):
            vals.append(v)
    res["n_valid"] = len(vals)
    if len(vals) >= 2:
        lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        res["ci95"] = [float(lo), float(hi)]
    return res


def bootstrap_values(metric: Callable, n: int, *, n_boot: int = 200, seed: int = 0,
                     strata: ArrayLike | None = None,
                     groups: ArrayLike | None = None) -> np.ndarray:
    """``metric(idx)`` on each of ``n_boot`` resamples of ``n`` rows: [shape=(n_valid, m)] for a
    metric returning m numbers (resamples where it raises ``ValueError`` or gives a non-finite
    number are dropped). The resamples are those :func:`bootstrap_ci` draws with the same seed,
    strata and groups; for statistics computed jointly (e.g. two CKA estimators from one set of
    Gram products)."""
    vals = []
    if n_boot > 0 and n > 0:
        rng = np.random.default_rng(seed)
        plan = _Plan(n, strata, groups)
        for _ in range(int(n_boot)):
            idx = plan.draw(rng)
            try:
                v = np.atleast_1d(np.asarray(metric(idx), dtype=np.float64))
            except ValueError:
                continue
            if np.all(np.isfinite(v)):
                vals.append(v)
    return np.array(vals).reshape(len(vals), -1) if vals else np.zeros((0, 1))


def bootstrap_mean_ci(values: ArrayLike, *, n_boot: int = 200, seed: int = 0,
                      strata: ArrayLike | None = None, groups: ArrayLike | None = None) -> dict:
    """Percentile bootstrap CI of the mean of per-item scores ``values`` [shape=(n,)]."""
    values = np.asarray(values, dtype=np.float64)
    return bootstrap_ci(lambda v: float(np.mean(v)), values, n_boot=n_boot, seed=seed,
                        strata=strata, groups=groups)
