"""What every metric function receives and returns: the contexts (validated arrays and the
intermediate results several metrics share, each computed once), :class:`Measured`, and the
entry / guard machinery that turns a metric call into a metrics.json entry.

Each metric entry is ``{"value": float|None, "ci95": [lo, hi]|None, "params": {...},
"note": "..."}`` (``note`` only when the value is undefined or caveated; no ``ci95`` for a
metric registered without an interval).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .. import crossspace, separability
from .._common import (UndefinedMetricError, center_unit, cosine_distance_matrix,
                       cosine_neighbors, finite_or_none)
from ..bootstrap import bootstrap_ci, bootstrap_values
from ..intervals import finalize_interval
from ..rsa import RsaResampler

__all__ = ["Measured", "entry", "guard", "boot_params", "units_note", "EmbedderContext",
           "PairContext", "SetContext", "DEFAULT_N_BOOTSTRAP", "DEFAULT_N_PERMUTATIONS",
           "DEFAULT_RETRIEVAL_SPLITS", "RSA_MAX_ITEMS", "CKA_MAX_ITEMS"]

DEFAULT_N_BOOTSTRAP = 200
DEFAULT_N_PERMUTATIONS = 999
# upper bounds on (matrix cells x repetitions) for the RSA bootstrap and Mantel test
RSA_CELL_BUDGET_BOOT = 30_000_000
RSA_CELL_BUDGET_PERM = 200_000_000
#: RSA (point estimate, CI and Mantel test) uses a seeded random subset of this many shared items
#: when there are more: its cost is quadratic (5000 items took ~260 s on 2 cores, 2000 ~30 s),
#: and 2500 items already give ~3.1 million distance pairs.
RSA_MAX_ITEMS = 2500
#: Above this many shared items the three CKA entries (value, bootstrap, permutation test) are
#: computed on a seeded, class-stratified subsample of this size: each bootstrap resample and
#: permutation costs O(n (dx^2 + dy^2)) above CKA_GRAM_MAX_ITEMS (~200 s per 200 resamples at
#: 100,000 items x 512-d on one core), and at 5,000 items the interval is already ~0.01 wide.
CKA_MAX_ITEMS = 5000
#: Retrieval is scored over this many seeded, label-stratified train/test splits.
DEFAULT_RETRIEVAL_SPLITS = 20
#: the neighbour table of an embedder is searched once at this k (the largest default k of the
#: k-NN, recommendation and hubness metrics); a larger k asked for searches again
NEIGHBOUR_TABLE_K = 10


@dataclass
class Measured:
    """What a metric function returns: the value, its interval and how they were obtained.

    ``n_units`` (independent units behind the value) and ``bounds`` (the metric's range) let
    :func:`analysis.intervals.finalize_interval` widen an interval that every resample agreed
    on to an honest one.
    """
    value: float | None
    ci: list | None = None
    params: dict = field(default_factory=dict)
    n_units: float | None = None
    bounds: tuple = (-np.inf, np.inf)


def entry(value=None, *, ci=None, params=None, note=None, with_ci=True) -> OrderedDict:
    """One metrics.json entry (NaN / inf become None; an undefined value gets a note)."""
    e = OrderedDict()
    e["value"] = finite_or_none(value)
    if with_ci:
        e["ci95"] = None if ci is None else [finite_or_none(ci[0]), finite_or_none(ci[1])]
    e["params"] = dict(params or {})
    if note:
        e["note"] = str(note)
    elif e["value"] is None:
        e["note"] = "undefined"
    return e


def guard(metric, ctx) -> OrderedDict:
    """Run a registered metric on ``ctx`` into an entry; every interval is finalised (it
    contains its value and has non-zero width); undefined cases become notes, never crashes."""
    params, with_ci = metric.fixed_params(ctx), metric.with_ci
    try:
        m = metric.fn(ctx)
        p = dict(params)
        p.update(m.params)
        ci = m.ci
        if with_ci:
            ci, flags = finalize_interval(finite_or_none(m.value), ci, n_units=m.n_units,
                                          bounds=m.bounds)
            p.update(flags)
        return entry(m.value, ci=ci, params=p, with_ci=with_ci)
    except UndefinedMetricError as exc:
        return entry(None, params=params, note=str(exc), with_ci=with_ci)
    except Exception as exc:  # a bug or numerical failure: record it, keep going
        return entry(None, params=params, with_ci=with_ci,
                     note=f"error: {type(exc).__name__}: {exc}")


def boot_params(boot: dict | None) -> dict:
    """The params recording how a bootstrap interval was obtained."""
    if not boot:
        return {}
    return {"ci_method": boot.get("method"), "n_boot": boot.get("n_boot"),
            "n_boot_valid": boot.get("n_valid"), "ci_seed": boot.get("seed")}


def units_note(n_units: int, n_items: int, what: str = "items") -> str:
    if n_units == n_items:
        return f"{n_units} {what}, each an independent unit"
    return f"{n_units} independent pieces (pair ids) among {n_items} {what}"


class _Cache:
    """Per-context memo of shared intermediate results; a failure is remembered and re-raised
    for every metric that needs it (so an impossible probe is attempted once)."""

    def __init__(self):
        self._memo: dict = {}

    def once(self, key, compute):
        """``compute()`` the first time ``key`` is asked for; its result (or error) after."""
        if key not in self._memo:
            try:
                self._memo[key] = (True, compute())
            except Exception as exc:
                self._memo[key] = (False, exc)
        ok, v = self._memo[key]
        if not ok:
            raise v
        return v

    _once = once  # the earlier private name

    def peek(self, key):
        """The result ``once(key, ...)`` computed, or None if it has not been or failed."""
        ok, v = self._memo.get(key, (False, None))
        return v if ok else None


class EmbedderContext(_Cache):
    """One embedder's validated arrays and the results its metrics share, each computed once:
    k-NN predictions, the probe's out-of-fold predictions, the k-means clusters, the
    neighbour lists of the recommendation metrics, the class Gaussians of the Fréchet ones.

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]
    groups : np.ndarray [shape=(n,)] or None
        Pair id per item ("" = own group): probe folds and resampling keep a piece whole, and
        intervals count pieces, not items, as the independent units.
    hubness_reduction : {None, "mp"}
        ``"mp"`` adds the recommendation metrics under mutual proximity.
    """

    def __init__(self, X, labels, groups=None, *, seed: int = 0,
                 n_bootstrap: int = DEFAULT_N_BOOTSTRAP, n_splits: int = 5,
                 hubness_reduction: str | None = None):
        super().__init__()
        X, labels, groups = separability.validate(X, labels, groups)
        self.X, self.labels = X, labels.astype(str)
        self.n = X.shape[0]
        self.groups = np.full(self.n, "", dtype=str) if groups is None else groups.astype(str)
        self.units = separability.groups_or_self(self.groups, self.n)  # resampling units
        self.n_units = len(set(self.units.tolist()))
        self.seed, self.n_bootstrap, self.n_splits = seed, n_bootstrap, n_splits
        self.hubness_reduction = hubness_reduction

    def boot(self, metric, *arrays) -> dict:
        """Class-stratified bootstrap over whole pieces (the house resampling)."""
        return bootstrap_ci(metric, *arrays, n_boot=self.n_bootstrap, seed=self.seed,
                            strata=self.labels, groups=self.units)

    def knn_predictions(self, k: int) -> np.ndarray:
        def compute():
            separability.require_classes(self.labels, min_classes=2, what="kNN accuracy")
            nb = self.neighbours(k) if 1 <= k < self.n else None
            return separability.knn_predictions(self.X, self.labels, k=k, neighbors=nb)
        return self.once(("knn", k), compute)

    def neighbours(self, k: int) -> np.ndarray:
        """The k nearest other items (cosine, uncentred) of every item [shape=(n, k)]: one
        search at max(k, NEIGHBOUR_TABLE_K) shared by the k-NN and recommendation metrics (the
        first k columns of a larger search are the k-NN: ties break by index either way)."""
        kmax = min(max(k, NEIGHBOUR_TABLE_K), self.n - 1)
        table = self.once(("neighbours", kmax), lambda: cosine_neighbors(self.X, kmax))
        return table[:, :k]

    def probe(self) -> dict:
        return self.once("probe", lambda: separability.linear_probe(
            self.X, self.labels, self.groups, n_splits=self.n_splits, seed=self.seed))

    def clusters(self) -> np.ndarray:
        return self.once("kmeans", lambda: separability.kmeans_clusters(
            self.X, self.labels, seed=self.seed))

    def chance(self) -> dict:
        return self.once("chance", lambda: separability.chance_levels(self.labels))

    def units_per_class(self) -> np.ndarray:
        """Independent units (pieces) of each class [shape=(n_classes,)], classes sorted."""
        return np.array([len(set(self.units[self.labels == c].tolist()))
                         for c in np.unique(self.labels)], dtype=np.float64)

    # issue 21 (validity): the probe and k-means agreement averaged over seeds. Class attributes,
    # so run parameters read them (one split or one k-means seed is a noisy draw).
    #: seeded grouped splits of the linear probe (repeat r uses seed + r)
    probe_repeats = 10
    #: k-means seeds of the cluster-agreement metrics (seed + s)
    kmeans_seeds = 10

    #: the iterative fits' subsample size (None: the module's FIT_MAX_ITEMS at compute time)
    fit_max_items: int | None = None

    def fit_rows(self) -> np.ndarray | None:
        """Rows the probe and the k-means agreement are fitted on: a seeded, class-stratified
        subsample of whole pieces above ``FIT_MAX_ITEMS`` items, None (all items) below
        (:func:`analysis.separability.subsample_rows`)."""
        cap = self._fit_cap()
        return self.once("fit_rows", lambda: separability.subsample_rows(
            self.labels, self.groups, max_items=cap, seed=self.seed))

    def _fit_cap(self) -> int:
        return separability.FIT_MAX_ITEMS if self.fit_max_items is None else int(
            self.fit_max_items)

    def fit_subset(self) -> tuple:
        """(X, labels, groups, units) of :meth:`fit_rows` (all items when it is None)."""
        rows = self.fit_rows()
        if rows is None:
            return self.X, self.labels, self.groups, self.units
        return self.X[rows], self.labels[rows], self.groups[rows], self.units[rows]

    def fit_params(self) -> dict:
        """``params.items_subsampled`` of the probe and k-means entries ({} on all items)."""
        return separability.subsample_params(self.fit_rows(), self.n, seed=self.seed,
                                             max_items=self._fit_cap())

    def repeated_probe(self) -> dict:
        """:func:`analysis.separability.repeated_linear_probe` on :meth:`fit_subset` (the three
        probe metrics and the paired comparisons on all items share it: ``probe_repeats x
        n_splits`` fits, once). ``rows`` says which items it was fitted on (None: all)."""
        def compute():
            X, labels, groups, _ = self.fit_subset()
            r = separability.repeated_linear_probe(X, labels, groups,
                                                   n_repeats=self.probe_repeats,
                                                   n_splits=self.n_splits, seed=self.seed)
            return {**r, "rows": self.fit_rows()}
        return self.once("repeated_probe", compute)

    def cluster_agreement(self) -> dict:
        """:func:`analysis.separability.repeated_cluster_agreement` over ``kmeans_seeds``
        seeds on :meth:`fit_subset` (v_measure, adjusted_rand and adjusted_mutual_info share
        it)."""
        def compute():
            X, labels, groups, _ = self.fit_subset()
            return separability.repeated_cluster_agreement(
                X, labels, groups, n_seeds=self.kmeans_seeds, seed=self.seed,
                n_boot=self.n_bootstrap)
        return self.once("cluster_agreement", compute)


class PairContext(_Cache):
    """Two spaces on the same items and what their metrics share, each computed once: the CKA
    resamples (both estimators from one set of Gram products), the RSA subset and its centred
    distance matrices, the repeated retrieval.

    Parameters
    ----------
    X : np.ndarray [shape=(n, dx)]
    Y : np.ndarray [shape=(n, dy)]
    labels : np.ndarray [shape=(n,)] or None
    """

    def __init__(self, X, Y, labels=None, *, seed: int = 0,
                 n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
                 n_permutations: int = DEFAULT_N_PERMUTATIONS, test_fraction: float = 0.3,
                 max_components: int = 64, retrieval_splits: int = DEFAULT_RETRIEVAL_SPLITS,
                 rsa_max_items: int | None = None):
        super().__init__()
        #: RSA / Mantel subsample size (None: the module's RSA_MAX_ITEMS at compute time)
        self.rsa_max_items = rsa_max_items
        X, Y, labels = crossspace.validate(X, Y, labels)
        self.X, self.Y = X, Y
        self.n = X.shape[0]
        self.labels = (np.full(self.n, "all", dtype=str) if labels is None
                       else labels.astype(str))
        self.seed, self.n_bootstrap, self.n_permutations = seed, n_bootstrap, n_permutations
        self.test_fraction = test_fraction
        self.max_components, self.retrieval_splits = max_components, retrieval_splits

    #: CKA subsample size (None: the module's CKA_MAX_ITEMS at compute time)
    cka_max_items: int | None = None

    def cka_rows(self) -> np.ndarray | None:
        """Rows of the CKA entries: a seeded, class-stratified subsample above CKA_MAX_ITEMS
        shared items, None (all) below."""
        return self.once("cka_rows", lambda: separability.subsample_rows(
            self.labels, None, max_items=self._cka_cap(), seed=self.seed))

    def _cka_cap(self) -> int:
        return CKA_MAX_ITEMS if self.cka_max_items is None else int(self.cka_max_items)

    def cka_data(self) -> tuple:
        """(X, Y, labels) on :meth:`cka_rows`."""
        rows = self.cka_rows()
        if rows is None:
            return self.X, self.Y, self.labels
        return self.X[rows], self.Y[rows], self.labels[rows]

    def cka_params(self) -> dict:
        return separability.subsample_params(self.cka_rows(), self.n, seed=self.seed,
                                             max_items=self._cka_cap())

    def cka_resamples(self) -> np.ndarray:
        """(cka_linear, cka_debiased) of each bootstrap resample [shape=(n_valid, 2)]."""
        def compute():
            X, Y, labels = self.cka_data()
            f = crossspace.linear_cka_resampler(X, Y)
            return bootstrap_values(f.both, len(X), n_boot=self.n_bootstrap, seed=self.seed,
                                    strata=labels)
        return self.once("cka_boot", compute)

    def rsa_plan(self) -> dict:
        """The RSA subset (all items up to RSA_MAX_ITEMS) and its capped repetitions: RSA
        costs O(n^2) per resample / permutation."""
        def compute():
            n = self.n
            cap = RSA_MAX_ITEMS if self.rsa_max_items is None else int(self.rsa_max_items)
            if n > cap:
                sub = np.sort(np.random.default_rng(self.seed).choice(n, cap, replace=False))
            else:
                sub = np.arange(n)
            n_r = len(sub)
            cells = max(1, n_r * (n_r - 1) // 2)
            return {"sub": sub, "n_r": n_r,
                    "n_boot": int(min(self.n_bootstrap, max(20, RSA_CELL_BUDGET_BOOT // cells))),
                    "n_perm": int(min(self.n_permutations,
                                      max(99, RSA_CELL_BUDGET_PERM // cells)))}
        return self.once("rsa_plan", compute)

    def rsa(self) -> dict:
        """RSA of the centred cosine distances of the subset: rho, Mantel p, bootstrap."""
        def compute():
            plan = self.rsa_plan()
            sub = plan["sub"]
            DA = cosine_distance_matrix(center_unit(self.X[sub]))
            DB = cosine_distance_matrix(center_unit(self.Y[sub]))
            r = crossspace.rsa(self.X[sub], self.Y[sub], n_permutations=plan["n_perm"],
                               seed=self.seed, distances=(DA, DB))
            # each resample's Spearman from the triangles ranked once (RsaResampler): the
            # values of ranking the resampled matrices, to round-off
            b = bootstrap_ci(RsaResampler(DA, DB), np.arange(plan["n_r"]),
                             n_boot=plan["n_boot"], seed=self.seed, strata=self.labels[sub])
            return {**r, "boot": b}
        return self.once("rsa", compute)

    def rsa_subset_params(self) -> dict:
        plan = self.rsa_plan()
        if plan["n_r"] < self.n:
            return {"items_subsampled": {"n_items": plan["n_r"], "of": self.n,
                                         "seed": self.seed}}
        return {}

    def retrieval(self) -> dict:
        return self.once("retrieval", lambda: crossspace.repeated_procrustes_retrieval(
            self.X, self.Y, self.labels, n_splits=self.retrieval_splits,
            test_fraction=self.test_fraction, seed=self.seed,
            max_components=self.max_components))

    def permutation_test(self) -> dict:
        def compute():
            X, Y, _ = self.cka_data()
            return crossspace.cka_permutation_test(X, Y, n_permutations=self.n_permutations,
                                                   seed=self.seed)
        return self.once("cka_perm", compute)


class SetContext(_Cache):
    """A set of vectors and a reference set in the same space (not aligned item by item):
    the context of the ``set`` metrics (e.g. the Fréchet distance of a collection to a
    reference collection).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    reference : np.ndarray [shape=(m, dim)]
    """

    def __init__(self, X, reference, *, seed: int = 0):
        super().__init__()
        from .._common import as_matrix
        self.X, self.reference = as_matrix(X), as_matrix(reference, name="reference")
        if self.X.shape[1] != self.reference.shape[1]:
            raise ValueError(f"X has dimension {self.X.shape[1]}, the reference "
                             f"{self.reference.shape[1]}: they must be in the same space")
        self.n, self.seed = self.X.shape[0], seed
