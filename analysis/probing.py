"""What a space captures: linear probes of attributes, and how far controlled changes move it.

Pure functions on arrays, for :mod:`probe` (``python main.py probe``) and notebooks.

- :func:`category_probe` -- cross-validated logistic regression, balanced accuracy and its
  chance level, grouped so that a piece's audio and MIDI never sit on both sides of a fold;
- :func:`continuous_probe` -- the same with ridge regression: R² and Spearman ρ of the
  out-of-fold predictions;
- :func:`sensitivity` -- distance original→variant over the median distance between
  different originals (0 = invariant, 1 = as far as another piece);
- :func:`identity_recall_at_1` -- share of variants whose nearest original is their own;
- :func:`label_kept` -- share of variants whose k-NN label among the *other* originals is
  still their label.

Every value comes with a 95 % interval over the independent units (pieces): exact
(Clopper–Pearson or its balanced-accuracy form) for proportions, a bootstrap over pieces
otherwise.
"""
from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from .intervals import balanced_accuracy_interval, clopper_pearson

__all__ = ["MIN_PER_CLASS", "category_probe", "continuous_probe", "identity_recall_at_1",
           "label_kept", "pairwise_cosine_distance", "sensitivity", "validate",
           "variation_problem"]

#: A category probe needs at least 2 classes with this many distinct pieces each.
MIN_PER_CLASS = 5
#: A continuous attribute whose spread (std / (|mean| + 1e-9)) is below this is near-constant.
MIN_RELATIVE_SPREAD = 1e-3


def validate(X: ArrayLike, y: ArrayLike, groups: ArrayLike | None = None) -> tuple:
    """Check a probe's inputs; return ``(X float64 [n, dim], y [n], groups str [n])``.

    Raises
    ------
    ValueError
        X not 2-d or not finite, y or groups of another length, fewer than 4 rows.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-d (n, dim), got shape {X.shape}")
    if len(y) != len(X):
        raise ValueError(f"y has {len(y)} entries for {len(X)} rows of X")
    if not np.all(np.isfinite(X)):
        raise ValueError("X holds NaN or infinite values")
    if len(X) < 4:
        raise ValueError(f"a probe needs at least 4 items, got {len(X)}")
    if groups is None:
        g = np.arange(len(X)).astype(str)
    else:
        g = np.asarray(groups).astype(str)
        if len(g) != len(X):
            raise ValueError(f"groups has {len(g)} entries for {len(X)} rows of X")
        own = g == ""
        g = g.copy()
        g[own] = [f"__item{i}" for i in np.flatnonzero(own)]  # an empty group: its own piece
    return X, y, g


def variation_problem(y: ArrayLike, groups: ArrayLike, *, kind: str) -> str | None:
    """Why an attribute cannot be probed here (``None`` when it can).

    A category needs at least 2 classes with :data:`MIN_PER_CLASS` distinct pieces each
    (smaller classes are left out by :func:`category_probe`); a continuous value must not be
    near-constant.
    """
    y = np.asarray(y)
    g = np.asarray(groups).astype(str)
    if kind == "category":
        sizes = {c: len(set(g[y == c])) for c in np.unique(y)}
        big = [c for c, s in sizes.items() if s >= MIN_PER_CLASS]
        if len(big) < 2:
            return (f"fewer than 2 classes with {MIN_PER_CLASS} pieces "
                    f"({', '.join(f'{c}: {s}' for c, s in sorted(sizes.items()))})")
        return None
    v = y.astype(np.float64)
    if len(np.unique(g)) < 2 * MIN_PER_CLASS:
        return f"only {len(np.unique(g))} pieces (a regression probe needs {2 * MIN_PER_CLASS})"
    if float(np.std(v)) <= MIN_RELATIVE_SPREAD * (abs(float(np.mean(v))) + 1e-9):
        return f"near-constant (mean {np.mean(v):.4g}, sd {np.std(v):.2g})"
    return None


def _one_blas_thread():
    """Probes are small problems: BLAS threads only add overhead (0.3 s instead of 0.02 s per
    logistic fit measured on a loaded 2-core machine)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


def _folds(y: ArrayLike, g: np.ndarray, *, n_splits: int, seed: int, stratify: bool):
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
    n_groups = len(np.unique(g))
    if stratify:
        per_class = min(len(set(g[np.asarray(y) == c])) for c in np.unique(y))
        k = min(n_splits, per_class)
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        k = min(n_splits, n_groups)
        cv = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(cv.split(np.zeros((len(g), 1)), y, g)), k


def category_probe(X: ArrayLike, y: ArrayLike, groups: ArrayLike | None = None, *,
                   n_splits: int = 5, seed: int = 0, C: float = 1.0) -> dict:
    """Grouped, stratified k-fold logistic-regression probe of a category.

    Classes with fewer than :data:`MIN_PER_CLASS` distinct pieces are left out (said in
    ``dropped_classes``).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    y : np.ndarray [shape=(n,)]
        Class of each item.
    groups : np.ndarray [shape=(n,)] or None
        Piece (pair) id of each item: a group is never on both sides of a fold.

    Returns
    -------
    dict: ``value`` (balanced accuracy of the pooled out-of-fold predictions), ``ci95``
    (per-class Beta interval on the piece counts), ``chance`` (1 / classes), ``metric``
    ("balanced_accuracy"), ``n`` (items), ``n_pieces``, ``n_splits``, ``classes``,
    ``dropped_classes``.

    Raises
    ------
    ValueError
        Bad shapes, or fewer than 2 classes large enough (:func:`variation_problem`).
    """
    # Long mostly by its docstring; the body is one grouped cross-validation loop and its
    # interval, kept together so the folds and the scores cannot drift apart.
    # checks, folds, fit, per-class recalls and interval in sequence (over 60 lines with its
    # docstring); the shared steps are _folds and validate
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y, g = validate(X, y, groups)
    y = y.astype(str)
    problem = variation_problem(y, g, kind="category")
    if problem:
        raise ValueError(f"category probe impossible: {problem}")
    sizes = {c: len(set(g[y == c])) for c in np.unique(y)}
    keep = np.isin(y, [c for c, s in sizes.items() if s >= MIN_PER_CLASS])
    dropped = sorted(c for c, s in sizes.items() if s < MIN_PER_CLASS)
    X, y, g = X[keep], y[keep], g[keep]
    folds, k = _folds(y, g, n_splits=n_splits, seed=seed, stratify=True)
    pred = np.empty(len(y), dtype=y.dtype)
    with warnings.catch_warnings(), _one_blas_thread():
        warnings.simplefilter("ignore")
        for tr, te in folds:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
            model.fit(X[tr], y[tr])
            pred[te] = model.predict(X[te])
    classes = sorted(np.unique(y))
    recalls, correct_units, units = [], [], []
    for c in classes:
        rows = y == c
        recall = float(np.mean(pred[rows] == c))
        n_pieces = len(set(g[rows]))  # the independent units of this class
        recalls.append(recall)
        correct_units.append(recall * n_pieces)
        units.append(n_pieces)
    value = float(np.mean(recalls))
    ci = balanced_accuracy_interval(correct_units, units, seed=seed)
    return {"value": value, "ci95": [min(ci[0], value), max(ci[1], value)],
            "metric": "balanced_accuracy", "chance": 1.0 / len(classes), "n": int(len(y)),
            "n_pieces": int(len(np.unique(g))), "n_splits": int(k), "classes": classes,
            "dropped_classes": dropped}


def continuous_probe(X: ArrayLike, y: ArrayLike, groups: ArrayLike | None = None, *,
                     n_splits: int = 5, seed: int = 0, n_boot: int = 500) -> dict:
    """Grouped k-fold ridge probe of a continuous value (alpha chosen inside each fold).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
    y : np.ndarray [shape=(n,)]
    groups : np.ndarray [shape=(n,)] or None

    Returns
    -------
    dict: ``value`` (R² of the pooled out-of-fold predictions; 0 = predicting the mean,
    negative = worse), ``ci95`` (bootstrap over pieces), ``spearman`` (ρ of predictions and
    truth), ``chance`` (0.0), ``metric`` ("r2"), ``n``, ``n_pieces``, ``n_splits``.
    """
    from scipy.stats import spearmanr
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y, g = validate(X, y, groups)
    y = y.astype(np.float64)
    problem = variation_problem(y, g, kind="continuous")
    if problem:
        raise ValueError(f"continuous probe impossible: {problem}")
    folds, k = _folds(y, g, n_splits=n_splits, seed=seed, stratify=False)
    pred = np.empty(len(y))
    with _one_blas_thread():
        for tr, te in folds:
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))
            model.fit(X[tr], y[tr])
            pred[te] = model.predict(X[te])

    def r2(rows):
        resid = np.sum((y[rows] - pred[rows]) ** 2)
        total = np.sum((y[rows] - y[rows].mean()) ** 2)
        return 1.0 - resid / total if total > 0 else np.nan

    value = float(r2(np.arange(len(y))))
    pieces, inverse = np.unique(g, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(pieces))]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):  # resample pieces, keeping each piece's items together
        pick = rng.integers(0, len(pieces), len(pieces))
        boots.append(r2(np.concatenate([members[i] for i in pick])))
    boots = np.asarray(boots)
    boots = boots[np.isfinite(boots)]
    lo, hi = (np.quantile(boots, [0.025, 0.975]) if len(boots) else (value, value))
    rho = spearmanr(y, pred).statistic
    return {"value": value, "ci95": [float(min(lo, value)), float(max(hi, value))],
            "metric": "r2", "chance": 0.0, "n": int(len(y)), "n_pieces": int(len(pieces)),
            "n_splits": int(k), "spearman": float(rho) if np.isfinite(rho) else None}


# -- interventions ----------------------------------------------------------------------------

def _pair_inputs(originals: ArrayLike, variants: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    O = np.asarray(originals, dtype=np.float64)
    V = np.asarray(variants, dtype=np.float64)
    if O.ndim != 2 or V.shape != O.shape:
        raise ValueError(f"originals and variants must be 2-d of one shape (row i = piece i), "
                         f"got {O.shape} and {V.shape}")
    if len(O) < 2:
        raise ValueError(f"need at least 2 pieces, got {len(O)}")
    if not (np.all(np.isfinite(O)) and np.all(np.isfinite(V))):
        raise ValueError("vectors hold NaN or infinite values")
    return O, V


def _unit(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def pairwise_cosine_distance(A: ArrayLike, B: ArrayLike) -> np.ndarray:
    """Cosine distances [shape=(len(A), len(B))] (1 - cosine similarity; a zero vector is at
    distance 1 from everything)."""
    return 1.0 - _unit(np.asarray(A, np.float64)) @ _unit(np.asarray(B, np.float64)).T


def _bootstrap_mean_ci(values: np.ndarray, *, seed: int, n_boot: int = 1000) -> list[float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    mean = float(values.mean())
    return [float(min(lo, mean)), float(max(hi, mean))]


def sensitivity(originals: ArrayLike, variants: ArrayLike, *, seed: int = 0) -> dict:
    """How far a change moves a piece, in units of the distance between different pieces.

    Parameters
    ----------
    originals : np.ndarray [shape=(n, dim)]
    variants : np.ndarray [shape=(n, dim)]
        Row i is the variant of original i.

    Returns
    -------
    dict: ``value`` (mean over pieces of cos-dist(original_i, variant_i) / the median cosine
    distance between different originals), ``ci95`` (bootstrap over pieces), ``per_piece``
    [shape=(n,)], ``scale`` (that median).
    """
    O, V = _pair_inputs(originals, variants)
    between = pairwise_cosine_distance(O, O)[np.triu_indices(len(O), 1)]
    scale = float(np.median(between))
    if scale <= 1e-12:
        raise ValueError("the originals are all at the same point: sensitivity is undefined")
    own = 1.0 - np.sum(_unit(O) * _unit(V), axis=1)
    per_piece = np.maximum(own, 0.0) / scale
    return {"value": float(per_piece.mean()), "ci95": _bootstrap_mean_ci(per_piece, seed=seed),
            "per_piece": per_piece, "scale": scale}


def identity_recall_at_1(originals: ArrayLike, variants: ArrayLike) -> dict:
    """Share of variants whose nearest original (cosine) is their own piece.

    Returns
    -------
    dict: ``value``, ``ci95`` (Clopper–Pearson over pieces), ``chance`` (1/n), ``hits``
    [shape=(n,), bool].
    """
    O, V = _pair_inputs(originals, variants)
    D = pairwise_cosine_distance(V, O)
    own = np.diag(D)
    # a tie with another piece counts as a miss: "nearest" must be unambiguous
    hits = np.array([np.all(np.delete(D[i], i) > own[i]) for i in range(len(O))])
    n = len(hits)
    return {"value": float(hits.mean()), "ci95": clopper_pearson(int(hits.sum()), n),
            "chance": 1.0 / n, "hits": hits}


def label_kept(originals: ArrayLike, variants: ArrayLike, labels: ArrayLike, *,
               k: int = 5) -> dict:
    """Share of variants whose k-NN label among the other originals is still their own.

    The piece's own original is left out (as a classifier trained on clean data would not hold
    the test piece), so a fully invariant space scores the originals' leave-one-out k-NN
    accuracy, given as ``reference``. Votes are by count, ties broken by the nearest neighbour.

    Parameters
    ----------
    originals, variants : np.ndarray [shape=(n, dim)]
    labels : np.ndarray [shape=(n,)]
    k : int
        Neighbours (at most n - 1).

    Returns
    -------
    dict: ``value``, ``ci95`` (Clopper–Pearson over pieces), ``reference``, ``k``.
    """
    O, V = _pair_inputs(originals, variants)
    labels = np.asarray(labels).astype(str)
    if len(labels) != len(O):
        raise ValueError(f"labels has {len(labels)} entries for {len(O)} pieces")
    k = int(max(1, min(k, len(O) - 1)))

    def kept(Q):
        D = pairwise_cosine_distance(Q, O)
        np.fill_diagonal(D, np.inf)  # never the piece's own original
        out = np.zeros(len(O), dtype=bool)
        for i in range(len(O)):
            nearest = np.argsort(D[i], kind="stable")[:k]
            votes: dict = {}
            for rank, j in enumerate(nearest):
                votes.setdefault(labels[j], [0, rank])[0] += 1
            best = max(votes.items(), key=lambda kv: (kv[1][0], -kv[1][1]))[0]
            out[i] = best == labels[i]
        return out

    hits = kept(V)
    return {"value": float(hits.mean()), "ci95": clopper_pearson(int(hits.sum()), len(hits)),
            "reference": float(kept(O).mean()), "k": k}
