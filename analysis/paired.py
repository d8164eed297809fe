"""Paired tests between two embedders scored on the same items.

When two embedders are scored on the same items, their accuracies are correlated (easy items are
easy for both), so "0.82 vs 0.76" with two separate intervals says little about the difference.
The functions here test the difference itself:

- :func:`mcnemar_exact` -- McNemar's exact test on per-item 0/1 correctness: a two-sided
  binomial test on the discordant items (a right where b is wrong, and the reverse), with
  Newcombe's (1998, method 10) score interval for the paired difference of proportions.
- :func:`clustered_mcnemar` -- the same question when items come in groups (a piece's audio and
  MIDI rendering): the piece is the independent unit. The test is the exact sign-flip
  (randomisation) distribution of the summed per-piece differences, i.e. the exact version of
  the cluster-adjusted McNemar statistic of Durkalski et al. (Statist. Med. 22, 2003); with
  one item per group it *is* :func:`mcnemar_exact`. Per-item correctness may be fractional
  (the mean over repeated probe splits).
- :func:`sign_flip_test` -- the exact (or seeded Monte Carlo) paired randomisation test of a
  sum of per-unit differences, used by the two above and for weighted scores (balanced accuracy).
- :func:`paired_bootstrap` -- any metric of both embedders on the same bootstrap resamples of
  pieces: percentile interval of the difference and a two-sided bootstrap p-value.
- :func:`holm` -- Holm-Bonferroni step-down adjustment across the comparisons made.
"""
from __future__ import annotations

from fractions import Fraction
from math import lcm
from typing import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .bootstrap import bootstrap_values
from .separability import groups_or_self

__all__ = ["mcnemar_exact", "clustered_mcnemar", "paired_accuracy_test", "sign_flip_test",
           "newcombe_paired_interval", "dependence_variance", "paired_bootstrap", "holm"]

MCNEMAR_TEST = "mcnemar exact (two-sided binomial on discordant items)"
CLUSTERED_TEST = ("exact sign-flip test of per-piece differences (cluster-adjusted McNemar, "
                  "Durkalski et al. 2003)")
NEWCOMBE_METHOD = "newcombe 1998 method 10 (paired score interval)"


def _correctness_pair(correct_a: ArrayLike, correct_b: ArrayLike) -> tuple:
    """Validate two per-item correctness arrays [shape=(n,)] with values in [0, 1]."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or len(a) != len(b):
        raise ValueError(f"correct_a and correct_b must be 1-d of one length (the same items), "
                         f"got shapes {a.shape} and {b.shape}")
    if not len(a):
        raise ValueError("paired test needs at least one item")
    for name, v in (("correct_a", a), ("correct_b", b)):
        if not np.all(np.isfinite(v)) or np.any(v < 0) or np.any(v > 1):
            raise ValueError(f"{name} must hold per-item correctness in [0, 1]")
    return a, b


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` over ``n`` (real) units."""
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired_interval(both: float, only_a: float, only_b: float, neither: float, *,
                             alpha: float = 0.05) -> list[float]:
    """Newcombe's (Statist. Med. 17, 1998, method 10) interval for ``p_a - p_b`` from a paired
    2 x 2 table: Wilson score intervals of the two marginal proportions combined with the
    correlation ``phi`` of the table (phi = 0 when a margin is empty).

    Counts may be real (scaled to an effective sample size, or expected counts of fractional
    correctness). Never zero-width for n > 0; stays inside [-1, 1].
    """
    from scipy.stats import norm
    e, f, g, h = (float(x) for x in (both, only_a, only_b, neither))
    n = e + f + g + h
    if n <= 0 or min(e, f, g, h) < 0:
        raise ValueError(f"paired table needs non-negative counts with a positive total, got "
                         f"{(e, f, g, h)}")
    z = float(norm.ppf(1 - alpha / 2))
    pa, pb = (e + f) / n, (e + g) / n
    la, ua = _wilson(pa, n, z)
    lb, ub = _wilson(pb, n, z)
    den = (e + f) * (g + h) * (e + g) * (f + h)
    phi = (e * h - f * g) / np.sqrt(den) if den > 0 else 0.0
    d = pa - pb
    lo = d - np.sqrt(max((pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2, 0.0))
    hi = d + np.sqrt(max((ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2, 0.0))
    return [float(max(-1.0, lo)), float(min(1.0, hi))]


def _paired_table(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """(both, only a, only b, neither): counts for 0/1 correctness, expected counts (sums of
    products) for fractional correctness."""
    return (float(np.sum(a * b)), float(np.sum(a * (1 - b))), float(np.sum((1 - a) * b)),
            float(np.sum((1 - a) * (1 - b))))


def mcnemar_exact(correct_a: ArrayLike, correct_b: ArrayLike, *, alpha: float = 0.05,
                  design_effect: float = 1.0) -> dict:
    """McNemar's exact test of two classifiers' per-item correctness on the SAME items.

    Parameters
    ----------
    correct_a, correct_b : np.ndarray [shape=(n,)]
        1 where the embedder got the item right, 0 where wrong (row i = the same item).
    design_effect : float >= 1
        Variance of the difference over the variance it would have with independent items
        (:func:`dependence_variance`; leave-one-out k-NN correctness of neighbouring items is
        correlated). The discordant counts and the table are divided by it before the test and
        the interval (the binomial with real counts via the regularised incomplete beta): the
        "effective number of items" the tool uses for intervals elsewhere. 1 = plain McNemar.

    Returns
    -------
    dict with ``b`` (a right, b wrong), ``c`` (a wrong, b right), ``n`` (items), ``value_a``,
    ``value_b`` (accuracies), ``difference`` (value_a - value_b), ``ci95`` (Newcombe's
    paired score interval of the difference), ``ci_method``, ``p_value`` (exact two-sided:
    ``min(1, 2 P(X <= min(b, c)))``, X ~ Binomial(b + c, 1/2); 1 exactly when b = c),
    ``test``.
    """
    from scipy.stats import binom
    a, b = _correctness_pair(correct_a, correct_b)
    if not (np.all(np.isin(a, (0.0, 1.0))) and np.all(np.isin(b, (0.0, 1.0)))):
        raise ValueError("mcnemar_exact needs 0/1 correctness; use clustered_mcnemar for "
                         "fractional (repeated-split) correctness")
    if not np.isfinite(design_effect) or design_effect < 1:
        raise ValueError(f"design_effect must be >= 1, got {design_effect}")
    n_b = int(np.sum((a == 1) & (b == 0)))
    n_c = int(np.sum((a == 0) & (b == 1)))
    res = {"b": n_b, "c": n_c, "n": int(len(a)), "value_a": float(a.mean()),
           "value_b": float(b.mean()), "difference": float(a.mean() - b.mean()),
           "ci_method": NEWCOMBE_METHOD, "test": MCNEMAR_TEST}
    table = _paired_table(a, b)
    if design_effect == 1.0:
        d = n_b + n_c
        p = 1.0 if n_b == n_c else min(1.0, 2.0 * float(binom.cdf(min(n_b, n_c), d, 0.5)))
    else:
        from scipy.special import betainc
        x, m = min(n_b, n_c) / design_effect, (n_b + n_c) / design_effect
        # P(X <= x), X ~ Bin(m, 1/2), continued to real m and x: I_{1/2}(m - x, x + 1)
        p = 1.0 if n_b == n_c else min(1.0, 2.0 * float(betainc(m - x, x + 1, 0.5)))
        table = tuple(t / design_effect for t in table)
        res.update(design_effect=float(design_effect),
                   ci_method=NEWCOMBE_METHOD + f", counts / design effect {design_effect:.3g}",
                   test=MCNEMAR_TEST + f", counts / design effect {design_effect:.3g}")
    res.update(ci95=newcombe_paired_interval(*table, alpha=alpha), p_value=p)
    return res


def dependence_variance(residuals: ArrayLike, edges: ArrayLike | None = None) -> float:
    """``sum_ij A_ij e_i e_j``: the variance of ``sum(e)`` when item i's score may be correlated
    with item j's wherever they are linked (A = identity + the undirected ``edges``): a
    network-robust ("sandwich") variance in the spirit of Conley (1999) for spatially dependent
    data. Pieces (items of one piece linked to each other) give the cluster-robust variance;
    k-NN neighbourhoods give the dependence of leave-one-out k-NN correctness.

    Parameters
    ----------
    residuals : np.ndarray [shape=(n,)]
        Per-item (weighted) residuals e_i, e.g. ``(d_i - mean(d)) / n``.
    edges : np.ndarray [shape=(m, 2)] or None
        Linked item pairs (duplicates and self-links ignored).
    """
    e = np.asarray(residuals, dtype=np.float64)
    total = float(e @ e)
    if edges is None or not len(edges):
        return total
    ed = np.sort(np.asarray(edges, dtype=np.int64).reshape(-1, 2), axis=1)
    ed = np.unique(ed[ed[:, 0] != ed[:, 1]], axis=0)
    return total + 2.0 * float(np.sum(e[ed[:, 0]] * e[ed[:, 1]]))


def _integer_scale(values: np.ndarray, max_denominator: int = 10_000) -> int | None:
    """Smallest integer s with ``s * values`` integral (values read as fractions with
    denominators up to ``max_denominator``), or None if there is none that small."""
    s = 1
    for v in values.tolist():
        fr = Fraction(v).limit_denominator(max_denominator)
        if abs(float(fr) - v) > 1e-9:
            return None
        s = lcm(s, fr.denominator)
        if s > max_denominator:
            return None
    return s


def sign_flip_test(unit_differences: ArrayLike, *, n_perm: int = 19_999, seed: int = 0,
                   max_exact_cells: int = 5_000_000) -> dict:
    """Two-sided paired randomisation test of ``T = sum(d)`` against random signs of each unit.

    Under the null hypothesis the two embedders are exchangeable within each unit (piece), so
    each unit's difference ``d_u`` is as likely to have the other sign. The p-value is
    ``P(|T*| >= |T|)`` under the 2^m sign flips: computed exactly by dynamic programming over
    the subset sums when the differences are multiples of a common 1/s (0/1 correctness,
    correctness averaged over repeated splits), else by ``n_perm`` seeded random flips
    (``(1 + hits) / (1 + n_perm)``).

    Parameters
    ----------
    unit_differences : np.ndarray [shape=(m,)]
        Per-unit difference of scores (e.g. summed correctness of a minus b in a piece).

    Returns
    -------
    dict with ``statistic`` (T), ``p_value``, ``exact`` (bool), ``n_units``, ``n_nonzero``,
    ``chi2`` (T^2 / sum d^2: the normal-approximation statistic, Durkalski et al. 2003).
    """
    d = np.asarray(unit_differences, dtype=np.float64)
    if d.ndim != 1 or not np.all(np.isfinite(d)):
        raise ValueError("unit_differences must be a finite 1-d array")
    t = float(d.sum())
    nz = np.abs(d[np.abs(d) > 1e-12])
    ss = float(np.sum(nz ** 2))
    res = {"statistic": t, "n_units": int(len(d)), "n_nonzero": int(len(nz)),
           "chi2": t * t / ss if ss > 0 else 0.0, "exact": True}
    if not len(nz):
        res["p_value"] = 1.0
        return res
    s = _integer_scale(nz)
    total = None if s is None else int(round(float(nz.sum()) * s))
    if total is not None and total * len(nz) <= max_exact_cells:
        ints = np.rint(nz * s).astype(np.int64)
        dist = np.zeros(total + 1)
        dist[0] = 1.0
        for v in ints:  # distribution of the sum of the units given a + sign
            shifted = np.zeros_like(dist)
            shifted[v:] = dist[:len(dist) - v]
            dist = 0.5 * dist + 0.5 * shifted
        t_int = abs(int(round(t * s)))
        stat = np.abs(2 * np.arange(total + 1) - total)  # |T*| for each positive-part sum
        res["p_value"] = float(min(1.0, dist[stat >= t_int].sum()))
        return res
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_perm, 1000):
        signs = rng.choice((-1.0, 1.0), size=(min(1000, n_perm - start), len(nz)))
        hits += int(np.sum(np.abs(signs @ nz) >= abs(t) - 1e-9))
    res.update(p_value=(1 + hits) / (1 + n_perm), exact=False, n_perm=int(n_perm),
               seed=int(seed))
    return res


def clustered_mcnemar(correct_a: ArrayLike, correct_b: ArrayLike, groups: ArrayLike | None,
                      *, alpha: float = 0.05, n_perm: int = 19_999, seed: int = 0) -> dict:
    """Paired accuracy test when items come in groups (pieces): the piece is the unit.

    The test is :func:`sign_flip_test` of the per-piece differences ``D_g = sum_{i in g}
    (a_i - b_i)`` (T = n x difference): the exact randomisation version of the cluster-adjusted
    McNemar statistic (Durkalski et al., Statist. Med. 22, 2003, ``chi2`` in the result).
    With one item per group and 0/1 correctness its p-value equals :func:`mcnemar_exact`'s.

    The interval is Newcombe's method 10 on the paired table scaled down by the design effect
    ``deff = max(1, V_cluster / V_item)``: V_cluster the ratio-estimator (cluster-robust)
    variance of the difference over pieces (as in Obuchowski, Biometrics 54, 1998), V_item the
    variance treating items as independent. Floored at 1 (conservative).

    Parameters
    ----------
    correct_a, correct_b : np.ndarray [shape=(n,)]
        Per-item correctness in [0, 1] (0/1, or the mean over repeated splits).
    groups : np.ndarray [shape=(n,)] or None
        Piece (pair) id per item; ``""``/None = the item is its own piece.

    Returns
    -------
    dict as :func:`mcnemar_exact` (``b`` and ``c`` as sums of (fractional) discordance) plus
    ``n_units`` (pieces), ``design_effect``, ``chi2``, ``exact``.
    """
    a, b = _correctness_pair(correct_a, correct_b)
    n = len(a)
    units = groups_or_self(groups, n)
    _, unit_of = np.unique(units.astype(str), return_inverse=True)
    m = int(unit_of.max()) + 1
    diff_i = a - b
    D = np.bincount(unit_of, weights=diff_i, minlength=m)
    size = np.bincount(unit_of, minlength=m).astype(np.float64)
    delta = float(diff_i.mean())
    v_item = float(np.sum((diff_i - delta) ** 2)) / n ** 2
    v_cluster = float(np.sum((D - delta * size) ** 2)) / n ** 2
    deff = max(1.0, v_cluster / v_item) if v_item > 0 else 1.0
    test = sign_flip_test(D, n_perm=n_perm, seed=seed)
    table = [x / deff for x in _paired_table(a, b)]
    return {"b": table[1] * deff, "c": table[2] * deff, "n": n, "n_units": m,
            "value_a": float(a.mean()), "value_b": float(b.mean()), "difference": delta,
            "ci95": newcombe_paired_interval(*table, alpha=alpha),
            "ci_method": NEWCOMBE_METHOD + (f", counts / design effect {deff:.3g}"
                                            if deff > 1 else ""),
            "design_effect": deff, "p_value": test["p_value"], "chi2": test["chi2"],
            "exact": test["exact"], "test": CLUSTERED_TEST}


def paired_accuracy_test(correct_a: ArrayLike, correct_b: ArrayLike,
                         groups: ArrayLike | None = None, **kwargs) -> dict:
    """:func:`mcnemar_exact` when every item is its own unit and correctness is 0/1, else
    :func:`clustered_mcnemar`; both results carry ``n_units``."""
    a, b = _correctness_pair(correct_a, correct_b)
    units = groups_or_self(groups, len(a))
    binary = np.all(np.isin(a, (0.0, 1.0))) and np.all(np.isin(b, (0.0, 1.0)))
    if binary and len(set(units.tolist())) == len(a):
        res = mcnemar_exact(a, b, alpha=kwargs.get("alpha", 0.05))
        res["n_units"] = res["n"]
        return res
    return clustered_mcnemar(a, b, groups, **kwargs)


def paired_bootstrap(metric: Callable, a_inputs: Sequence[ArrayLike],
                     b_inputs: Sequence[ArrayLike], *, groups: ArrayLike | None = None,
                     strata: ArrayLike | None = None, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
    """Difference ``metric(*a_inputs) - metric(*b_inputs)`` with both embedders scored on the
    SAME bootstrap resamples of pieces (:func:`analysis.bootstrap.bootstrap_values`: grouped
    by ``groups``, stratified by ``strata``, as the rest of the tool resamples).

    Parameters
    ----------
    metric : callable
        ``metric(*arrays) -> float`` (e.g. ``f(y_true, y_pred)``).
    a_inputs, b_inputs : sequence of np.ndarray [shape=(n, ...)]
        Row-aligned inputs of the two embedders (row i = the same item in all of them).
    groups, strata : np.ndarray [shape=(n,)] or None
        Piece id (resampled whole) and class (sizes kept) per item.

    Returns
    -------
    dict with ``value_a``, ``value_b``, ``difference`` (on the data), ``ci95`` (percentile
    interval of the resampled differences, widened to contain the difference if needed,
    flagged ``ci_extended_to_value``), ``p_value`` (two-sided bootstrap p: twice the smaller
    share of resampled differences at or beyond 0 on either side, ``(1 + count) / (1 + B)``
    each, capped at 1 -- the smallest level at which the percentile interval excludes 0),
    ``n_boot``, ``n_valid``, ``seed``, ``test``.
    """
    a_inputs = [np.asarray(x) for x in a_inputs]
    b_inputs = [np.asarray(x) for x in b_inputs]
    n = len(a_inputs[0]) if a_inputs else 0
    if not n or any(len(x) != n for x in [*a_inputs, *b_inputs]):
        raise ValueError("paired_bootstrap needs non-empty inputs of one length (the same items)")
    value_a, value_b = float(metric(*a_inputs)), float(metric(*b_inputs))

    def both(idx):
        return [metric(*[x[idx] for x in a_inputs]), metric(*[x[idx] for x in b_inputs])]
    vals = bootstrap_values(both, n, n_boot=n_boot, seed=seed, strata=strata, groups=groups)
    res = {"value_a": value_a, "value_b": value_b, "difference": value_a - value_b,
           "ci95": None, "p_value": None, "n_boot": int(n_boot), "n_valid": int(len(vals)),
           "seed": int(seed), "test": "paired bootstrap over pieces (same resamples for both)"}
    if len(vals) < 2:
        return res
    diffs = vals[:, 0] - vals[:, 1]
    lo, hi = np.percentile(diffs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    d = res["difference"]
    if d < lo or d > hi:
        res["ci_extended_to_value"] = float(max(lo - d, d - hi))
    res["ci95"] = [float(min(lo, d)), float(max(hi, d))]
    B = len(diffs)
    below = (1 + int(np.sum(diffs <= 0))) / (1 + B)
    above = (1 + int(np.sum(diffs >= 0))) / (1 + B)
    res["p_value"] = float(min(1.0, 2 * min(below, above)))
    return res


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest of m p-values (i from 0) becomes
    ``max_{j <= i} min(1, (m - j) p_(j))`` (monotone: an adjusted p never falls below that of
    a smaller raw p). Reject at level alpha where the adjusted p <= alpha. ``None``/NaN entries
    stay None and do not count in m.
    """
    vals = [None if p is None or not np.isfinite(float(p)) else float(p) for p in p_values]
    for p in vals:
        if p is not None and not 0 <= p <= 1:
            raise ValueError(f"p-values must lie in [0, 1], got {p}")
    idx = [i for i, p in enumerate(vals) if p is not None]
    order = sorted(idx, key=lambda i: (vals[i], i))
    m = len(order)
    out: list[float | None] = [None] * len(vals)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * vals[i]))
        out[i] = running
    return out
