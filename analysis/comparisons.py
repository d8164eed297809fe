"""Paired comparisons of two embedders on the items they share (``metrics.json["comparisons"]``).

Two embedders are often scored on different items (a MIDI embedder sees 9 unpaired MIDI files
more than an audio one), so their separately reported accuracies compare different sets. Here
both are scored on the SAME items, with the same leave-one-out neighbours and the same probe
splits, and each accuracy-type metric gets a paired test of the difference
(:mod:`analysis.paired`); Holm's adjustment runs over every comparison made.

>>> rows = compare_embedders(Xa, Xb, labels, groups, names=("openl3", "clamp2"))  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from . import crossspace, separability
from ._common import UndefinedMetricError, as_labels, as_matrix, cosine_neighbors
from .intervals import finalize_interval, rubin_interval
from .paired import dependence_variance, holm, mcnemar_exact, sign_flip_test

__all__ = ["shared_items", "compare_embedders", "compare_sets", "compare_all", "add_holm",
           "COMPARISON_KEYS"]

Z95 = 1.959963984540054  # standard normal 97.5 % quantile

#: keys of every comparison entry, in order
COMPARISON_KEYS = ("metric", "a", "b", "value_a", "value_b", "difference", "ci95", "ci_method",
                   "p_value", "p_holm", "test", "n_items", "n_units", "on", "note")


def shared_items(a, b) -> tuple[np.ndarray, np.ndarray, str]:
    """(ia, ib, how): rows of two EmbeddingSet-like objects (``modality``, ``ids``,
    ``pair_ids``) holding the same items -- by pair id across modalities (a piece's audio and
    MIDI rendering), by item id within one modality -- via :func:`crossspace.match_items`
    (sorted by key; empty keys never match)."""
    if a.modality != b.modality:
        ia, ib = crossspace.match_items(a.pair_ids, b.pair_ids)
        return ia, ib, "pair id"
    ia, ib = crossspace.match_items(a.ids, b.ids)
    return ia, ib, "item id"


def _unit_sums(values: np.ndarray, groups) -> np.ndarray:
    """Per-piece sums [shape=(n_units,)] of per-item ``values`` [shape=(n,)]."""
    units = separability.groups_or_self(groups, len(values))
    _, unit_of = np.unique(units.astype(str), return_inverse=True)
    return np.bincount(unit_of, weights=values)


def _n_units(groups, n: int) -> int:
    return len(set(separability.groups_or_self(groups, n).tolist()))


def _weighted_paired(correct_a: np.ndarray, correct_b: np.ndarray, labels, groups, *,
                     balanced: bool, seed: int) -> dict:
    """Paired test of the probe's (balanced) accuracy from per-split correctness
    [shape=(m, n)] of both embedders on the same m splits.

    p: :func:`sign_flip_test` of the per-piece weighted differences of the split-averaged
    correctness. Interval: difference +- z sqrt(T), T from Rubin's rules on the per-split
    differences (within: cluster-robust variance of the paired difference; between: across
    splits), clipped to [-1, 1], a zero-width one widened over the pieces.
    """
    w = separability.item_weights(labels, balanced=balanced)
    n = len(labels)
    split_a, split_b = correct_a @ w, correct_b @ w
    diffs = split_a - split_b
    within = [separability.weighted_score_variance(da - db, labels, groups, balanced=balanced)
              for da, db in zip(correct_a, correct_b)]
    _, info = rubin_interval(diffs, within)
    d = float(diffs.mean())
    h = Z95 * info["total_sd"]
    n_units = _n_units(groups, n)
    ci, flags = finalize_interval(d, [max(-1.0, d - h), min(1.0, d + h)], n_units=n_units,
                                  bounds=(-1.0, 1.0))
    # scaled so that plain accuracy differences are integers on the 1/m grid (exact test)
    scale = n if not balanced else len(np.unique(labels))
    unit_d = _unit_sums(scale * w * (correct_a.mean(axis=0) - correct_b.mean(axis=0)), groups)
    test = sign_flip_test(unit_d, seed=seed)
    method = "normal, cluster-robust variance of the paired difference"
    if len(diffs) > 1:
        method = "rubin (between-split + within-split variance of the paired difference), normal"
    return {"value_a": float(split_a.mean()), "value_b": float(split_b.mean()), "difference": d,
            "ci95": ci, "ci_method": method, "p_value": test["p_value"],
            "test": ("exact " if test["exact"] else "monte carlo ") + "sign-flip test of "
                    "per-piece differences" + (" (class-weighted)" if balanced else ""),
            "n_units": n_units, **flags}


def _dependence_edges(neighbours: Sequence[np.ndarray], groups, n: int) -> np.ndarray:
    """Undirected links [shape=(m, 2)] between items whose scores may be correlated: each item
    and its k nearest neighbours in either space, and the items of one piece."""
    parts = [np.column_stack([np.repeat(np.arange(n), nb.shape[1]), nb.ravel()])
             for nb in neighbours]
    units = separability.groups_or_self(groups, n)
    _, unit_of = np.unique(units.astype(str), return_inverse=True)
    for u in np.flatnonzero(np.bincount(unit_of) > 1):  # every two items of one piece
        rows = np.flatnonzero(unit_of == u)
        i, j = np.triu_indices(len(rows), k=1)
        parts.append(np.column_stack([rows[i], rows[j]]))
    return np.concatenate(parts)


def _knn_accuracy_entry(ca, cb, edges, n_units) -> dict:
    """McNemar exact with the discordant counts deflated by the neighbour/piece design effect."""
    d = ca - cb
    e = (d - d.mean()) / len(d)
    v_item = float(e @ e)
    v_dep = dependence_variance(e, edges)
    deff = max(1.0, v_dep / v_item) if v_item > 0 else 1.0
    r = mcnemar_exact(ca, cb, design_effect=deff)
    return {**{k: r[k] for k in ("value_a", "value_b", "difference", "ci95", "ci_method",
                                 "p_value", "test")},
            "n_units": n_units, "design_effect": deff, "discordant": [r["b"], r["c"]]}


def _knn_balanced_entry(ca, cb, labels, groups, edges, n_units, seed) -> dict:
    """Class-weighted difference; continuity-corrected normal test and normal interval with the
    dependence variance (residuals about the overall difference: without the correction and
    with class-centred residuals a null simulation rejected 8-11 % at 5 %; as here 6-7 %)."""
    from scipy.stats import norm
    w = separability.item_weights(labels, balanced=True)
    d = ca - cb
    diff = float(w @ d)
    e = w * (d - diff)
    v_item = float(e @ e)
    var = max(dependence_variance(e, edges), v_item)
    if var > 0:
        # as McNemar's (|b - c| - 1): one discordant item's (mean) weight
        cc = float(np.mean(w[d != 0])) if np.any(d != 0) else 0.0
        p = float(min(1.0, 2 * norm.sf(max(abs(diff) - cc, 0.0) / np.sqrt(var))))
    else:  # every item agrees within its class: the exact test of the per-piece differences
        p = sign_flip_test(_unit_sums(len(np.unique(labels)) * w * d, groups),
                           seed=seed)["p_value"]
    h = Z95 * np.sqrt(var)
    ci, flags = finalize_interval(diff, [max(-1.0, diff - h), min(1.0, diff + h)],
                                  n_units=n_units, bounds=(-1.0, 1.0))
    return {"value_a": float(w @ ca), "value_b": float(w @ cb), "difference": diff, "ci95": ci,
            "ci_method": "normal, variance with neighbour and piece dependence",
            "p_value": p, "test": "z-test of the class-weighted difference (continuity-"
                                  "corrected; variance with neighbour and piece dependence)",
            "n_units": n_units, "design_effect": var / v_item if v_item > 0 else 1.0, **flags}


def _knn_rows(Xa, Xb, labels, groups, *, knn_ks, seed, given=None) -> list:
    """k-NN entries. Leave-one-out correctness of items that are each other's neighbours is
    correlated (in a null simulation, treating items as independent rejected 12-13 % of the
    time at k = 1 at the 5 % level), so the variance of the difference counts each item's links to
    its k neighbours in both spaces and to its piece (:func:`dependence_variance`)."""
    n = len(labels)
    n_units = _n_units(groups, n)
    rows_acc, rows_bal = [], []
    # one exact search per space at the largest k: its first k columns are the k-NN (ties by
    # index either way), so every k and the dependence edges share it (an O(n^2 dim) search)
    # (compare_embedders checked n >= 2, so kmax >= 1; a k above n - 1 is refused by
    # knn_predictions before its table is read)
    kmax = min(max(knn_ks, default=1), n - 1)
    tables = [np.asarray(t)[:, :kmax] if t is not None and np.shape(t)[1] >= kmax
              else cosine_neighbors(X, kmax) for t, X in zip(given or (None, None), (Xa, Xb))]
    for k in knn_ks:
        nb = [t[:, :k] for t in tables]
        pa = separability.knn_predictions(Xa, labels, k=k, neighbors=nb[0])
        pb = separability.knn_predictions(Xb, labels, k=k, neighbors=nb[1])
        ca, cb = (pa == labels).astype(float), (pb == labels).astype(float)
        edges = _dependence_edges(nb, groups, n)
        params = {"k": k, "scheme": "leave-one-out, cosine",
                  "dependence": f"{k} nearest neighbours in either space, and pieces"}
        acc = _knn_accuracy_entry(ca, cb, edges, n_units)
        rows_acc.append((f"knn_accuracy_k{k}", acc, {**params,
                                                     "design_effect": acc["design_effect"],
                                                     "discordant": acc["discordant"]}))
        bal = _knn_balanced_entry(ca, cb, labels, groups, edges, n_units, seed)
        rows_bal.append((f"knn_balanced_accuracy_k{k}", bal,
                         {**params, "design_effect": bal["design_effect"]}))
    return rows_acc + rows_bal


def _reusable(r: dict | None, *, n_repeats: int, seed: int, n: int) -> bool:
    """Whether a given repeated-probe result was made with these settings on n items."""
    return (r is not None and list(r.get("seeds", [])) == [seed + i for i in range(n_repeats)]
            and np.shape(r.get("correct")) == (n_repeats, n)
            and np.shape(r.get("folds")) == (n_repeats, n))


def _probe_rows(Xa, Xb, labels, groups, *, n_repeats, n_splits, seed, given=None) -> list:
    """Probe entries; ``given`` = the two embedders' :func:`repeated_linear_probe` results on
    these rows (reused, not refitted, when made with these settings on the same folds)."""
    # above FIT_MAX_ITEMS shared items both probes are fitted on one seeded subsample of
    # them, as each embedder's own probe is (its own subsample is not reusable here)
    n_all = len(labels)
    sub = separability.subsample_rows(labels, groups, max_items=separability.FIT_MAX_ITEMS,
                                      seed=seed)
    if sub is not None:
        Xa, Xb, labels = Xa[sub], Xb[sub], labels[sub]
        groups = None if groups is None else groups[sub]
        given = None

    def fit(X):
        return separability.repeated_linear_probe(X, labels, groups, n_repeats=n_repeats,
                                                  n_splits=n_splits, seed=seed)
    given = [r if _reusable(r, n_repeats=n_repeats, seed=seed, n=len(labels)) else None
             for r in (given or (None, None))]
    ra, rb = (r if r is not None else fit(X) for r, X in zip(given, (Xa, Xb)))
    if not np.array_equal(ra["folds"], rb["folds"]) and any(r is not None for r in given):
        ra, rb = fit(Xa), fit(Xb)  # a given probe was split otherwise: refit both here
        given = [None, None]
    if not np.array_equal(ra["folds"], rb["folds"]):  # cannot happen: folds ignore X
        raise RuntimeError("the two probes were not split identically")
    reused = [name for name, r in zip(("a", "b"), given) if r is not None]
    params = {"n_repeats": n_repeats, "n_splits": ra["n_splits"], "seeds": ra["seeds"],
              "splits": "the same grouped stratified folds for both embedders",
              "probe_fits": ("refitted on the shared items" if not reused else
                             f"reused for {' and '.join(reused)}: the embedder's own repeated "
                             "probe (its items are the shared items, same folds)"
                             + ("" if len(reused) == 2 else "; the other refitted")),
              **separability.subsample_params(sub, n_all, seed=seed,
                                              max_items=separability.FIT_MAX_ITEMS)}
    return [(name, _weighted_paired(ra["correct"], rb["correct"], labels, groups,
                                    balanced=balanced, seed=seed), params)
            for name, balanced in (("probe_accuracy", False),
                                   ("probe_balanced_accuracy", True))]


def compare_embedders(Xa: ArrayLike, Xb: ArrayLike, labels: ArrayLike,
                      groups: ArrayLike | None = None, *, names: Sequence[str] = ("a", "b"),
                      seed: int = 0, knn_ks: Sequence[int] = (1, 5), probe_repeats: int = 10,
                      n_splits: int = 5, families: Sequence[str] = ("knn", "probe"),
                      probe_results: tuple | None = None,
                      neighbour_tables: tuple | None = None) -> list[dict]:
    """Paired comparison of two embedders on the same items, one entry per accuracy-type metric.

    Parameters
    ----------
    Xa : np.ndarray [shape=(n, dim_a)]
    Xb : np.ndarray [shape=(n, dim_b)]
        Vectors of the same n items (row i = the same item) in the two spaces.
    labels : np.ndarray [shape=(n,)]
    groups : np.ndarray [shape=(n,)] or None
        Piece (pair) id per item (``""`` = own piece): the independent unit of every test.
    names : (str, str)
        Embedder names written into the entries.
    families : sequence of "knn", "probe"
        Which metric families to compare (the probe costs 2 x probe_repeats x n_splits fits).
    probe_results : (dict or None, dict or None) or None
        Each embedder's :func:`analysis.separability.repeated_linear_probe` result on these
        rows, in this order, with these settings: reused instead of refitting when it was
        split as here (``params.probe_fits`` says which happened).
    neighbour_tables : (np.ndarray or None, np.ndarray or None) or None
        Each space's :func:`~analysis._common.cosine_neighbors` table of these rows at
        k' >= max(knn_ks) [shape=(n, k')] (reused instead of searching again).

    Returns
    -------
    list of dict with :data:`COMPARISON_KEYS` (``p_holm`` over these entries only; use
    :func:`add_holm` across a whole run), ``on`` = ``"shared items"`` and ``params``. Metrics:
    ``knn_accuracy_k{k}`` (McNemar exact / per-piece sign-flip, Newcombe interval),
    ``knn_balanced_accuracy_k{k}``, ``probe_accuracy``, ``probe_balanced_accuracy`` (mean over
    ``probe_repeats`` shared splits). A metric undefined on these items gets None values and a
    ``note``.
    """
    # long by its docstring (every parameter and returned key documented)
    Xa, Xb = as_matrix(Xa, name="Xa"), as_matrix(Xb, name="Xb")
    if Xa.shape[0] != Xb.shape[0]:
        raise ValueError(f"Xa and Xb must hold the same items: {Xa.shape[0]} vs {Xb.shape[0]} "
                         "rows")
    labels = as_labels(labels, Xa.shape[0]).astype(str)
    if groups is not None:
        groups = as_labels(groups, Xa.shape[0], name="groups").astype(str)
    compute_family = {
        "knn": lambda: _knn_rows(Xa, Xb, labels, groups, knn_ks=knn_ks, seed=seed,
                                 given=neighbour_tables),
        "probe": lambda: _probe_rows(Xa, Xb, labels, groups, n_repeats=probe_repeats,
                                     n_splits=n_splits, seed=seed, given=probe_results)}
    wanted = {"knn": [f"knn_accuracy_k{k}" for k in knn_ks]
              + [f"knn_balanced_accuracy_k{k}" for k in knn_ks],
              "probe": ["probe_accuracy", "probe_balanced_accuracy"]}
    rows, notes = [], {}
    for family in (f for f in compute_family if f in families):
        try:
            separability.require_classes(labels, min_classes=2, min_items=2, what=family)
            rows += compute_family[family]()
        except UndefinedMetricError as exc:
            for name in wanted[family]:
                notes[name] = str(exc)
                rows.append((name, {"n_units": _n_units(groups, len(labels))}, {}))
    return add_holm([_entry(name, r, params, names=names, n=len(labels), note=notes.get(name))
                     for name, r, params in rows])


def _entry(name: str, r: dict, params: dict, *, names, n: int, note) -> dict:
    """One comparison entry with :data:`COMPARISON_KEYS`, ``params`` and interval flags."""
    e = {key: r.get(key) for key in COMPARISON_KEYS}
    e.update(metric=name, a=names[0], b=names[1], n_items=n, on="shared items", note=note,
             params=dict(params))
    for flag in ("ci_degenerate_widened", "ci_extended_to_value"):
        if flag in r:
            e["params"][flag] = r[flag]
    return e


def add_holm(entries: list[dict]) -> list[dict]:
    """Set ``p_holm`` of every entry: :func:`analysis.paired.holm` over all entries with a
    p-value (the family is every comparison in the list). Returns the same list."""
    for e, p in zip(entries, holm([e.get("p_value") for e in entries])):
        e["p_holm"] = p
    return entries


def _probe_on_rows(r: dict | None, rows: np.ndarray) -> dict | None:
    """A repeated-probe result on all of a set's items, restricted (reordered) to ``rows``;
    None for one fitted on a subsample of them (``r["rows"]``, above FIT_MAX_ITEMS): the
    comparison then fits its own subsample of the shared items."""
    if r is None or r.get("rows") is not None or np.shape(r.get("correct"))[-1] != len(rows):
        return None
    return {**r, "correct": np.asarray(r["correct"])[:, rows],
            "folds": np.asarray(r["folds"])[:, rows]}


def _given_probes(a, b, ia, ib, probe_of) -> tuple | None:
    """Each set's own repeated probe on the shared rows where the shared items are all its
    items (None for a set with more items: its probe is refitted on the shared items)."""
    if probe_of is None:
        return None
    return tuple(_probe_on_rows(probe_of(s), rows) if len(rows) == len(s) else None
                 for s, rows in ((a, ia), (b, ib)))


def _given_neighbours(a, b, ia, ib, neighbours_of) -> tuple | None:
    """Each set's own neighbour table on the shared rows where the shared items are all its
    items, renumbered to the shared order (None for a set with more items). Exact ties
    between other items then keep the set's own index order."""
    if neighbours_of is None:
        return None
    out = []
    for s, rows in ((a, ia), (b, ib)):
        table = neighbours_of(s) if len(rows) == len(s) else None
        if table is None:
            out.append(None)
            continue
        shared_row = np.empty(len(s), dtype=np.int64)
        shared_row[rows] = np.arange(len(rows))
        out.append(shared_row[np.asarray(table)[rows]])
    return tuple(out)


def compare_sets(a, b, *, probe_of=None, neighbours_of=None, **kwargs) -> list[dict]:
    """:func:`compare_embedders` of two EmbeddingSets on their shared items
    (:func:`shared_items`), items whose labels disagree dropped; pieces = ``a``'s pair ids.

    Each entry also gets ``n_items_a_all`` / ``n_items_b_all`` (what each embedder's
    all-items value in ``metrics.json["embedders"]`` was computed on), ``matched_by`` and
    ``n_label_mismatch``. ``probe_of(set)`` (optional) returns the set's repeated probe on all
    its items (or None): reused for a set whose items are all shared; ``neighbours_of(set)``
    likewise its cosine neighbour table (:func:`~analysis._common.cosine_neighbors`, k' >=
    max(knn_ks)).
    """
    ia, ib, how = shared_items(a, b)
    keep = a.labels[ia] == b.labels[ib]
    ia, ib = ia[keep], ib[keep]
    extra = {"n_items_a_all": len(a), "n_items_b_all": len(b), "matched_by": how,
             "n_label_mismatch": int(np.sum(~keep))}
    if len(ia) < 2:
        note = f"fewer than 2 shared items (matched by {how})"
        return [{**{k: None for k in COMPARISON_KEYS}, "metric": None, "a": a.name,
                 "b": b.name, "n_items": int(len(ia)), "note": note, **extra}]
    entries = compare_embedders(a.vectors[ia], b.vectors[ib], a.labels[ia], a.pair_ids[ia],
                                names=(a.name, b.name),
                                probe_results=_given_probes(a, b, ia, ib, probe_of),
                                neighbour_tables=_given_neighbours(a, b, ia, ib, neighbours_of),
                                **kwargs)
    return [{**e, **extra} for e in entries]


def compare_all(sets: Sequence, **kwargs) -> list[dict]:
    """:func:`compare_sets` for every two sets (in the given order; ``probe_of`` and the
    settings passed on), then Holm across all the comparisons made (``p_holm``)."""
    entries = []
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            entries += compare_sets(sets[i], sets[j], **kwargs)
    return add_holm(entries)
