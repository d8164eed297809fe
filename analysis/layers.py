"""Metric by layer: how separability and agreement with the other modality change through a
network, for embedders run with ``layer=all`` (or a list), whose every layer is its own space
(``hf-audio@0``, ``hf-audio@1``, ...).

Nothing is computed here: the values are those ``metrics.json`` holds for each layer's space
(``metrics["embedders"][space]``) and each pair of spaces (``metrics["pairs"]``);
``metrics["layers"]`` (embedder -> its layers' space names, in the network's order) says which
spaces are layers of what. One figure per layered embedder, two panels:

* separability by layer: balanced k-NN accuracy (k=5), balanced linear-probe accuracy and
  cosine silhouette, with their 95 % intervals, and the chance level of a balanced accuracy;
* against the other spaces by layer: linear CKA (solid) and cross-space retrieval MRR (dashed)
  between each layer and every space that is not a layer of this embedder (those of the other
  modality first, then the others; at most :data:`MAX_OTHERS`).
"""
from __future__ import annotations

import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = ["SEPARABILITY_BY_LAYER", "CROSS_BY_LAYER", "MAX_OTHERS", "layer_lists",
           "layer_label", "metric_by_layer", "pair_metric_by_layer", "layer_others",
           "plot_layers", "draw_layer_plots", "add_layer_figures", "report_section"]

#: Separability metrics drawn by layer (left panel).
SEPARABILITY_BY_LAYER = ("knn_balanced_accuracy_k5", "probe_balanced_accuracy",
                         "silhouette_cosine")
#: Between-space metrics drawn by layer (right panel), with their line styles.
CROSS_BY_LAYER = (("cka_linear", "-", "o"), ("retrieval_mrr", "--", "s"))
#: Spaces compared with the layers in one figure, at most (the legend stays readable).
MAX_OTHERS = 6
#: Key prefix of the layer figures in the images dict and ``metrics["files"]["images"]``.
IMAGE_PREFIX = "layers_"


def layer_lists(layers: dict | None, names: Iterable[str]) -> OrderedDict:
    """``metrics["layers"]``: embedder -> the spaces of its layers present in ``names``, in the
    network's order (embedders with none present are left out)."""
    present = set(names)
    out = OrderedDict()
    for embedder, spaces in (layers or {}).items():
        kept = [s for s in spaces if s in present]
        if kept:
            out[embedder] = kept
    return out


def layer_label(space: str) -> str:
    """The layer part of a space name: ``"hf-audio@6"`` -> ``"6"``."""
    return space.rpartition("@")[2] or space


def _value_and_interval(entry: dict | None) -> tuple[float, float, float]:
    entry = entry or {}
    value = entry.get("value")
    lo, hi = (entry.get("ci95") or [None, None])[:2]
    as_float = [np.nan if v is None else float(v) for v in (value, lo, hi)]
    return as_float[0], as_float[1], as_float[2]


def metric_by_layer(metrics: dict, spaces: Sequence[str], metric: str) -> np.ndarray:
    """One embedder metric over the layers.

    Returns
    -------
    np.ndarray [shape=(3, n_layers)]
        Value, lower and upper 95 % bound per layer; NaN where undefined or missing.
    """
    per = metrics.get("embedders") or {}
    return np.array([_value_and_interval((per.get(s) or {}).get(metric)) for s in spaces]).T \
        .reshape(3, len(spaces))


def _pair_lookup(metrics: dict) -> dict:
    return {frozenset((r.get("a"), r.get("b"))): r for r in (metrics.get("pairs") or {}).values()}


def pair_metric_by_layer(metrics: dict, spaces: Sequence[str], other: str,
                         metric: str) -> np.ndarray:
    """A pair metric between each layer and the space ``other``.

    Returns
    -------
    np.ndarray [shape=(3, n_layers)]
        As :func:`metric_by_layer`.
    """
    pairs = _pair_lookup(metrics)
    return np.array([_value_and_interval((pairs.get(frozenset((s, other))) or {}).get(metric))
                     for s in spaces]).T.reshape(3, len(spaces))


def layer_others(metrics: dict, spaces: Sequence[str]) -> list[str]:
    """The spaces the layers are compared with: every analysed space that is not a layer of
    this embedder, the other modality first (at most :data:`MAX_OTHERS`)."""
    per = metrics.get("embedders") or {}
    mine = set(spaces)
    modality = (per.get(spaces[0]) or {}).get("modality") if spaces else None
    others = [s for s in per if s not in mine]
    others.sort(key=lambda s: (per[s].get("modality") == modality))  # stable: other modality first
    return others[:MAX_OTHERS]


def _errorbar(ax, x, rows: np.ndarray, **style) -> None:
    value, lo, hi = rows
    err = np.nan_to_num(np.vstack([value - lo, hi - value]), nan=0.0).clip(min=0.0)
    ax.errorbar(x, value, yerr=err, capsize=3, **style)


def plot_layers(metrics: dict, embedder: str, spaces: Sequence[str], base: Path, *,
                title: str) -> list[Path]:
    """The two-panel "metric by layer" figure of one embedder (module docstring); PNG + SVG."""
    import matplotlib.pyplot as plt  # here: the report imports this module for its section

    from .plots import save
    x = np.arange(len(spaces))
    labels = [layer_label(s) for s in spaces]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), sharex=True)
    for metric in SEPARABILITY_BY_LAYER:
        _errorbar(left, x, metric_by_layer(metrics, spaces, metric), marker="o", label=metric)
    chance = ((metrics.get("embedders") or {}).get(spaces[0], {}).get("chance") or {})
    if chance.get("uniform") is not None:
        left.axhline(chance["uniform"], color="grey", linestyle=":",
                     label="chance (balanced accuracy)")
    left.set_title("separability by layer")
    others = layer_others(metrics, spaces)
    colors = plt.get_cmap("tab10")
    for i, other in enumerate(others):
        for metric, line, marker in CROSS_BY_LAYER:
            _errorbar(right, x, pair_metric_by_layer(metrics, spaces, other, metric),
                      color=colors(i % 10), linestyle=line, marker=marker,
                      label=f"{metric} vs {other}")
    right.set_title("against other spaces by layer" if others
                    else "against other spaces by layer (no other space analysed)")
    slanted = max(map(len, labels)) > 3  # layer names (musicnn) rather than numbers
    for ax in (left, right):
        ax.set_xticks(x, labels, rotation=45 if slanted else 0,
                      ha="right" if slanted else "center")
        ax.set_xlabel(f"layer of {embedder}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, base)


def draw_layer_plots(metrics: dict, plot_dir: str | Path, *, prefix: str = "") -> OrderedDict:
    """One figure per embedder in ``metrics["layers"]`` (two layers or more).

    Returns
    -------
    OrderedDict
        Image key (``layers_<embedder>``) -> written paths (PNG, SVG).
    """
    from .outputs import safe_name

    images = OrderedDict()
    for embedder, spaces in (metrics.get("layers") or {}).items():
        if len(spaces) < 2:
            continue
        base = Path(plot_dir) / f"metric_by_layer_{safe_name(embedder)}"
        images[IMAGE_PREFIX + embedder] = plot_layers(
            metrics, embedder, spaces, base, title=f"{prefix}metric by layer: {embedder}")
    return images


def add_layer_figures(metrics: dict, images: dict, plot_dir: str | Path, *,
                      prefix: str = "") -> None:
    """:func:`draw_layer_plots` into ``images`` and ``metrics["files"]["images"]``; a failure
    is a note, never raised (one broken figure does not lose the run)."""
    try:
        drawn = draw_layer_plots(metrics, plot_dir, prefix=prefix)
    except Exception as exc:
        metrics.setdefault("notes", []).append(
            f"metric-by-layer plots failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return
    images.update(drawn)
    files = metrics.setdefault("files", {}).setdefault("images", {})
    files.update({k: [str(p) for p in v] for k, v in drawn.items()})


def report_section(images: dict, *, heading: Callable[[str], str],
                   figure: Callable[[str, str], list[str]]) -> list[str]:
    """The report's "Metric by layer" part, in the report's own markup: ``heading(text)`` and
    ``figure(image key, caption)`` render it (HTML or Markdown). Empty without layer figures."""
    keys = [k for k in images if k.startswith(IMAGE_PREFIX)]
    if not keys:
        return []
    parts = [heading("Metric by layer")]
    for key in keys:
        parts += figure(key, f"metric by layer: {key[len(IMAGE_PREFIX):]} (separability; "
                             f"CKA and retrieval MRR against the other spaces)")
    return parts
