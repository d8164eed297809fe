"""Figures (matplotlib, Agg). Every figure is written as PNG and SVG; functions return the list
of written paths. Styles are shared so that figures of different embedders compare directly:
same colours per class, same marker size, and heatmaps on one fixed colour scale."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import ArrayLike

# Figures are only written to files; without a display matplotlib picks Agg by itself, and a
# notebook keeps its own backend.
import matplotlib.pyplot as plt

from common.fsutil import atomic_path

__all__ = ["class_colors", "save", "fix_layout", "annotate_cells", "plot_map",
           "plot_maps_side_by_side", "plot_heatmap", "plot_metric_bars", "plot_confusion",
           "HEATMAP_VMIN", "HEATMAP_VMAX", "HEATMAP_CMAP"]

HEATMAP_VMIN, HEATMAP_VMAX, HEATMAP_CMAP = -1.0, 1.0, "RdBu_r"
MARKER_SIZE = 18
DPI = 110
#: maps with more points than this rasterise their markers in the SVG (see :func:`_scatter`)
RASTER_POINTS = 20_000


def class_colors(classes: Sequence) -> dict:
    """A fixed colour per class (tab10/tab20 by sorted position)."""
    classes = sorted(classes)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    return {c: cmap(i % cmap.N) for i, c in enumerate(classes)}


def save(fig: Any, base: Path) -> list[Path]:
    """Write ``base``.png and ``base``.svg, close the figure, return both paths.

    The layout is solved once, before either file (:func:`fix_layout`). The SVG keeps its text
    as text (``svg.fonttype: "none"``) rather than one path per glyph: titles, labels and the
    numbers in cells stay editable and searchable in Inkscape or Illustrator, and an annotated
    20 x 20 heatmap's SVG is written in about two thirds of the time (its size about the same:
    each text names its font list, each glyph path was a reference). A viewer without DejaVu
    Sans (matplotlib's font) takes the next of that list or a similar sans-serif. The PNG is
    unaffected.
    """
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    fix_layout(fig)
    out = []
    for ext in ("png", "svg"):
        p = Path(f"{base}.{ext}")
        with atomic_path(p) as tmp, plt.rc_context({"svg.fonttype": "none"}):
            fig.savefig(tmp, format=ext, dpi=DPI)
        out.append(p)
    plt.close(fig)
    return out


def fix_layout(fig: Any) -> None:
    """Solve ``fig``'s layout (constrained or tight) now, at the saved DPI, and freeze it.

    Artists added afterwards (e.g. cell annotations, :func:`annotate_cells`) are not measured by
    any layout pass. Freezing also saves work per file: ``savefig`` runs a full pre-draw of the
    figure before the real one whenever the figure has a layout engine, even the placeholder that
    ``set_layout_engine("none")`` leaves, so the engine is removed outright. Calling it again is
    a no-op.
    """
    engine = fig.get_layout_engine()
    if engine is None or not fig.axes:  # as Figure.draw: no axes, no layout
        return
    fig.set_dpi(DPI)  # text is measured in pixels: solve at the resolution the PNG is drawn at
    engine.execute(fig)  # the placeholder engine's execute does nothing
    # None (not "none") removes the engine; the rc settings would otherwise pick one again
    with plt.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)


def annotate_cells(ax: Any, texts: ArrayLike, *, white: ArrayLike, fontsize: float = 7) -> None:
    """Write ``texts[i, j]`` centred in cell (row i, column j) of an ``imshow``-ed matrix.

    ``texts`` [shape=(rows, cols)] strings; ``white`` [shape=(rows, cols)] bool, True where the
    cell is dark enough for white text (else black). Call it last, after the colorbar and titles:
    it fixes the figure's layout first (:func:`fix_layout`) so the rows x cols texts, each
    inside its cell, are laid out only when a file is drawn, not also by ``savefig``'s pre-draw
    for the layout (with the SVG as text: a 20 x 20 heatmap in two thirds of the time).
    """
    fix_layout(ax.figure)
    texts = np.asarray(texts, dtype=object)
    white = np.asarray(white, dtype=bool)
    for (i, j), txt in np.ndenumerate(texts):
        ax.text(j, i, txt, ha="center", va="center", fontsize=fontsize, in_layout=False,
                color="white" if white[i, j] else "black")


def _scatter(ax, Y, labels, colors, title):
    labels, Y = np.asarray(labels), np.asarray(Y, dtype=float)
    drawn = np.all(np.isfinite(Y), axis=1)  # a map of a subsample leaves the other rows NaN
    if not drawn.all():
        labels, Y = labels[drawn], Y[drawn]
    n = len(labels)
    # smaller, lighter markers for many points, so dense regions stay readable
    size = float(np.clip(MARKER_SIZE * np.sqrt(500.0 / max(n, 1)), 2.0, MARKER_SIZE))
    alpha = 0.85 if n <= 2000 else 0.6
    # one scatter in a fixed shuffled order: no class is systematically drawn on top of another
    order = np.random.default_rng(0).permutation(n)
    order = order[np.isin(labels[order], list(colors))]
    if len(order):
        # above RASTER_POINTS points the SVG holds the markers as one image (axes and text
        # stay vector): 100,000 vector markers made a ~20 MB file that drew slowly everywhere
        ax.scatter(Y[order, 0], Y[order, 1], s=size, c=[colors[c] for c in labels[order]],
                   alpha=alpha, edgecolors="none", rasterized=n > RASTER_POINTS)
    for c in sorted(colors):  # legend entries (no data)
        if np.any(labels == c):
            ax.scatter([], [], s=MARKER_SIZE, color=colors[c], label=str(c))
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def plot_map(Y: ArrayLike, labels: ArrayLike, base: Path, *, title: str,
             classes: Sequence | None = None) -> list[Path]:
    """Scatter map Y [shape=(n, 2)] coloured by class."""
    colors = class_colors(classes if classes is not None else np.unique(labels).tolist())
    fig, ax = plt.subplots(figsize=(6.5, 5), layout="constrained")
    _scatter(ax, np.asarray(Y), labels, colors, title)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    return save(fig, base)


def plot_maps_side_by_side(maps: list, base: Path, *, title: str, classes: Sequence) -> list[Path]:
    """``maps`` = [(name, Y [shape=(n, 2)], labels)], one panel each, shared style and legend."""
    colors = class_colors(classes)
    k = max(1, len(maps))
    fig, axes = plt.subplots(1, k, figsize=(4.2 * k + 1.5, 4.6), squeeze=False,
                             layout="constrained")
    for ax, (name, Y, labels) in zip(axes[0], maps):
        _scatter(ax, np.asarray(Y), labels, colors, name)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[c], label=str(c))
               for c in sorted(colors)]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    return save(fig, base)


def plot_heatmap(M: ArrayLike, classes: Sequence, base: Path, *, title: str, annotate: bool = True,
                 vmin: float = HEATMAP_VMIN, vmax: float = HEATMAP_VMAX,
                 cmap: str = HEATMAP_CMAP, cbar_label: str = "cosine similarity") -> list[Path]:
    """Class × class heatmap on a FIXED colour scale (default -1..1) — never rescaled per model."""
    M = np.asarray(M, dtype=float)
    k = len(classes)
    size = max(4.0, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size), layout="constrained")
    im = ax.imshow(np.ma.masked_invalid(M), vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    fig.colorbar(im, ax=ax, label=cbar_label, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=10)
    if annotate and k <= 25:
        finite = np.isfinite(M)
        texts = [[f"{v:.2f}" if ok else "–" for v, ok in zip(row, oks)]
                 for row, oks in zip(M, finite)]
        with np.errstate(invalid="ignore"):
            white = finite & (np.abs(M) > 0.6 * max(abs(vmin), vmax))
        annotate_cells(ax, texts, white=white)
    return save(fig, base)


def plot_confusion(M: ArrayLike, classes: Sequence, base: Path, *, title: str) -> list[Path]:
    """Confusion matrix (rows true, columns predicted), row-normalised colours 0..1, counts
    annotated."""
    M = np.asarray(M, dtype=float)
    rs = M.sum(axis=1, keepdims=True)
    R = np.divide(M, rs, out=np.zeros_like(M), where=rs > 0)
    k = len(classes)
    size = max(4.0, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size), layout="constrained")
    im = ax.imshow(R, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, label="fraction of true class", fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=10)
    if k <= 25:
        annotate_cells(ax, [[str(int(v)) for v in row] for row in M], white=R > 0.6)
    return save(fig, base)


def plot_metric_bars(table: dict, metrics: list, base: Path, *, title: str) -> list[Path]:
    """Grouped bars: ``table[embedder][metric] = (value|None, [lo, hi]|None)``, one group per
    metric, one bar per embedder, 95% CI error bars. Missing values are drawn as 'n/a'."""
    names = list(table)
    m = len(metrics)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * m + 2), 4.8), layout="constrained")
    width = 0.8 / max(1, len(names))
    cmap = plt.get_cmap("Set2")
    for j, name in enumerate(names):
        xs, vals, lo, hi = [], [], [], []
        for i, met in enumerate(metrics):
            v, ci = table[name].get(met, (None, None))
            x = i - 0.4 + width * (j + 0.5)
            if v is None:
                ax.text(x, 0.02, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)
                continue
            xs.append(x)
            vals.append(v)
            if ci:
                lo.append(max(0.0, v - ci[0]))
                hi.append(max(0.0, ci[1] - v))
            else:
                lo.append(0.0)
                hi.append(0.0)
        ax.bar(xs, vals, width=width, color=cmap(j % 8), label=name,
               yerr=[lo, hi] if xs else None, capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks(range(m))
    ax.set_xticklabels(metrics, rotation=30, ha="right", fontsize=8)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1.05)
    ax.set_ylabel("value (error bars: 95% interval, method per metric)")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    return save(fig, base)
