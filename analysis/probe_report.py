"""The probe section of the report, and its two heatmaps.

``render_probe_section(probe, images)`` turns a ``probe.json`` dict into ``(html, markdown)``;
``plot_attribute_heatmap`` and ``plot_intervention_heatmap`` draw attribute × embedder and
intervention × embedder with every value printed in its cell.
"""
from __future__ import annotations

import html as _html
from pathlib import Path

import numpy as np

__all__ = ["HOW_TO_READ", "attribute_matrix", "intervention_matrix", "plot_attribute_heatmap",
           "plot_intervention_heatmap", "render_probe_section"]

#: One sentence per measure, for the report.
HOW_TO_READ = {
    "balanced_accuracy": "Attribute probe, categories: balanced accuracy of a cross-validated "
                         "logistic regression (folds grouped by piece), to compare with its "
                         "chance level 1/classes; higher means the attribute is linearly "
                         "readable from the space.",
    "r2": "Attribute probe, continuous values: R² of a cross-validated ridge regression (0 = no "
          "better than predicting the mean, 1 = exact), with Spearman ρ of the predictions.",
    "sensitivity": "Sensitivity: cosine distance between a piece's original and its variant, "
                   "divided by the median distance between different pieces (0 = the change is "
                   "invisible, 1 = it moves the piece as far as another piece).",
    "identity_recall_at_1": "Identity recall@1: share of variants whose nearest original is "
                            "their own piece (chance 1/N); high means the piece stays "
                            "recognisable after the change.",
    "label_kept": "Label kept: share of variants whose k-NN label (k = 5, fewer for small "
                  "classes) among the other originals is still their own; compare with the "
                  "reference, the originals' own leave-one-out score.",
}


def _embedders(probe: dict, part: str) -> list[str]:
    order = probe.get("params", {}).get("embedders") or []
    names = list(probe.get(part, {}))
    return [e for e in order if e in names] + [e for e in names if e not in order]


def attribute_matrix(probe: dict) -> tuple[np.ndarray, list[str], list[str]]:
    """Values [shape=(n_attributes, n_embedders)] (NaN where not probed), row and column names."""
    embs = _embedders(probe, "attributes")
    attrs = []
    for e in embs:
        attrs += [a for a in probe["attributes"][e] if a not in attrs]
    M = np.full((len(attrs), len(embs)), np.nan)
    for j, e in enumerate(embs):
        for i, a in enumerate(attrs):
            r = probe["attributes"][e].get(a)
            if r is not None and r.get("value") is not None:
                M[i, j] = r["value"]
    return M, attrs, embs


def intervention_matrix(probe: dict, measure: str = "sensitivity"
                        ) -> tuple[np.ndarray, list[str], list[str]]:
    """``measure`` [shape=(n_interventions, n_embedders)]: NaN where not applicable."""
    embs = _embedders(probe, "interventions")
    names = list(probe.get("params", {}).get("interventions") or [])
    for e in embs:
        names += [n for n in probe["interventions"][e] if n not in names]
    M = np.full((len(names), len(embs)), np.nan)
    for j, e in enumerate(embs):
        for i, n in enumerate(names):
            r = probe["interventions"][e].get(n, {})
            if measure in r:
                M[i, j] = r[measure]["value"]
    return M, names, embs


def _heatmap(M, rows, cols, base: Path, *, title: str, vmax: float, cbar: str,
             empty: str) -> list[Path]:
    import matplotlib.pyplot as plt

    from .plots import save

    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * max(1, len(cols)), 1.4 + 0.42 * max(1, len(rows))),
                           layout="constrained")
    im = ax.imshow(np.ma.masked_invalid(M), vmin=0.0, vmax=vmax, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = M[i, j]
            ax.text(j, i, empty if not np.isfinite(v) else f"{v:.2f}", ha="center",
                    va="center", fontsize=7,
                    color="black" if np.isfinite(v) and v > 0.6 * vmax else "white"
                    if np.isfinite(v) else "gray")
    fig.colorbar(im, ax=ax, label=cbar, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=10)
    return save(fig, base)


def plot_attribute_heatmap(probe: dict, base: Path) -> list[Path]:
    """Attribute × embedder: balanced accuracy (categories) or R² (continuous), printed."""
    M, rows, cols = attribute_matrix(probe)
    kinds = {a: r.get("metric") for e in cols for a, r in probe["attributes"][e].items()}
    labels = [f"{a} ({'bal. acc.' if kinds.get(a) == 'balanced_accuracy' else 'R²'})"
              for a in rows]
    return _heatmap(M, labels, cols, base, title="Attribute probes", vmax=1.0,
                    cbar="balanced accuracy / R² (colour clipped to 0..1)", empty="–")


def plot_intervention_heatmap(probe: dict, base: Path) -> list[Path]:
    """Intervention × embedder sensitivity, printed; "n/a" where it does not apply."""
    M, rows, cols = intervention_matrix(probe)
    return _heatmap(M, rows, cols, base, title="Sensitivity to controlled changes",
                    vmax=max(1.0, float(np.nanmax(M)) if np.isfinite(M).any() else 1.0),
                    cbar="sensitivity (1 = as far as another piece)", empty="n/a")


def _fmt(r: dict | None, *, chance: bool = False) -> str:
    if not r or r.get("value") is None:
        return "–"
    lo, hi = r.get("ci95") or (None, None)
    text = f"{r['value']:.2f}"
    if lo is not None:
        text += f" [{lo:.2f}, {hi:.2f}]"
    if chance and r.get("chance") is not None:
        text += f" (chance {r['chance']:.2f})"
    return text


def _tables(probe: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the section's two tables."""
    _, attrs, embs = attribute_matrix(probe)
    attr_rows = []
    for a in attrs:
        cells = []
        for e in embs:
            r = probe["attributes"][e].get(a)
            cell = _fmt(r, chance=bool(r) and r.get("metric") == "balanced_accuracy")
            if r and r.get("spearman") is not None:
                cell += f", ρ {r['spearman']:.2f}"
            cells.append(cell)
        metric = next((probe["attributes"][e][a]["metric"] for e in embs
                       if a in probe["attributes"][e]), "")
        attr_rows.append([a, "bal. acc." if metric == "balanced_accuracy" else "R²"] + cells)
    _, names, iembs = intervention_matrix(probe)
    int_rows = []
    for n in names:
        cells = []
        for e in iembs:
            r = probe["interventions"][e].get(n, {})
            if r.get("applicable") is False:
                cells.append("n/a (audio only)")
            elif "sensitivity" not in r:
                cells.append("–")
            else:
                cells.append(f"{_fmt(r['sensitivity'])}; id@1 "
                             f"{r['identity_recall_at_1']['value']:.2f}; kept "
                             f"{r['label_kept']['value']:.2f} (n={r['n']})")
        int_rows.append([n] + cells)
    return [("Attribute probes (value [95 % interval])", ["attribute", "metric"] + embs,
             attr_rows),
            ("Controlled changes: sensitivity [95 %]; identity recall@1; label kept",
             ["intervention"] + iembs, int_rows)]


def render_probe_section(probe: dict, images: dict) -> tuple[str, str]:
    """The report section "What each embedding captures" as ``(html, markdown)``.

    Parameters
    ----------
    probe : dict
        What ``probe.json`` holds.
    images : dict
        ``{"attributes": path, "interventions": path}`` (relative to the report), either may
        be missing.
    """
    p = probe.get("params", {})
    intro = (f"Attributes read from each MIDI file (key by {p.get('key_profiles', 'key profiles')}"
             f", key source: {p.get('key_source', 'profile')}) and given to its audio pair; "
             f"controlled changes on {p.get('pieces', '?')} pieces rendered with "
             f"{(p.get('renderer') or {}).get('synth', '?')}.")
    how = [HOW_TO_READ[k] for k in ("balanced_accuracy", "r2", "sensitivity",
                                    "identity_recall_at_1", "label_kept")]
    skipped = probe.get("skipped", [])
    md = ["## What each embedding captures (probes)", "", intro, ""]
    md += [f"- {h}" for h in how] + [""]
    esc = _html.escape
    h = [f"<h2>What each embedding captures (probes)</h2>", f"<p>{esc(intro)}</p>", "<ul>"]
    h += [f"<li>{esc(x)}</li>" for x in how] + ["</ul>"]
    for title, header, rows in _tables(probe):
        md += [f"**{title}**", "", "| " + " | ".join(header) + " |",
               "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in rows] + [""]
        h += [f"<h3>{esc(title)}</h3>", "<table><tr>"
              + "".join(f"<th>{esc(c)}</th>" for c in header) + "</tr>"]
        h += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
        h += ["</table>"]
    for key, alt in (("attributes", "attribute x embedder heatmap"),
                     ("interventions", "intervention x embedder heatmap")):
        if images.get(key):
            md += [f"![{alt}]({images[key]})", ""]
            h += [f'<img src="{esc(str(images[key]))}" alt="{alt}" style="max-width:100%">']
    if skipped:
        md += [f"Skipped ({len(skipped)}):", ""] + [f"- {s['what']}: {s['reason']}"
                                                    for s in skipped[:50]]
        h += [f"<details><summary>Skipped ({len(skipped)})</summary><ul>"]
        h += [f"<li>{esc(s['what'])}: {esc(s['reason'])}</li>" for s in skipped[:50]]
        h += ["</ul></details>"]
        if len(skipped) > 50:
            md += [f"- … and {len(skipped) - 50} more (probe.json)"]
            h += [f"<p>… and {len(skipped) - 50} more (probe.json)</p>"]
    return "\n".join(h) + "\n", "\n".join(md) + "\n"
