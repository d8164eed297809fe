"""report.html (one self-contained page: images embedded as base64 PNG, inline CSS, no external
resources) and report.md (a Markdown twin that links the PNG files by relative path)."""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from typing import Sequence
from pathlib import Path

from . import metrics as registry
from .findings import findings_paragraph, side_by_side_rows
from .schema import (EMBEDDER_METRICS, FRECHET_METRICS, METRIC_HELP, PAIR_METRICS,
                     recommend_metric_names)
from common.fsutil import atomic_write_text

from .io import jsonable
from . import layers as layer_plots

__all__ = ["write_report", "render_html", "render_markdown"]

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;
color:#222;line-height:1.4;padding:0 16px}
h1{font-size:1.6em;border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
h3{margin-top:1.5em}table{border-collapse:collapse;margin:8px 0;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff6e0;border-left:4px solid #e0a800;padding:6px 10px;margin:6px 0}
.na{color:#999}img{max-width:100%;height:auto;border:1px solid #eee;margin:6px 0}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:0.8em}
.help dt{font-weight:bold;margin-top:4px}.help dd{margin-left:18px}
figure{margin:10px 0}.tw{overflow-x:auto;max-width:100%}figcaption{font-size:0.85em;color:#555}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(v, digits=3):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
    return str(v)


def _fmt_entry(e) -> tuple[str, str]:
    """(value text, CI text) of a metric entry."""
    if not isinstance(e, dict):
        return "n/a", ""
    v = e.get("value")
    ci = e.get("ci95")
    ci_txt = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci and ci[0] is not None else ""
    return _fmt(v), ci_txt


def _img_tag(png: Path, alt: str) -> str:
    try:
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    except OSError:
        return f'<p class="na">(image {_e(Path(png).name)} missing)</p>'
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f'<figcaption>{_e(alt)}</figcaption></figure>')


def _pngs(images, key):
    return [Path(p) for p in images.get(key, []) if str(p).endswith(".png")]


def _table(header, rows, num_cols=()) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in header)
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            cls = ' class="num"' if i in num_cols else ""
            cells.append(f"<td{cls}>{c}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='tw'><table><thead><tr>{h}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _md_table(header, rows) -> str:
    def clean(x):
        return str(x).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(clean(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _pairs_list(x):
    out = []
    for it in x or []:
        if isinstance(it, (list, tuple)) and len(it) >= 2:
            out.append((str(it[0]), str(it[1])))
        elif isinstance(it, dict):
            out.append((str(it.get("id", it.get("path", ""))), str(it.get("reason", ""))))
        else:
            out.append((str(it), ""))
    return out


def _dataset_blocks(ds: dict):
    """Return list of (heading, header, rows, text) describing the dataset summary."""
    blocks = []
    kv = []
    for k in ("root", "n_files", "n_usable", "n_pairs"):
        if k in ds:
            kv.append((k, ds[k]))
    if ds.get("classes") is not None:
        kv.append(("classes", ", ".join(map(str, ds["classes"]))))
    if ds.get("empty_classes"):
        kv.append(("empty classes", ", ".join(map(str, ds["empty_classes"]))))
    blocks.append(("Overview", ["field", "value"], kv))
    counts = ds.get("counts") or {}
    if counts:
        rows = []
        for lab, c in counts.items():
            if isinstance(c, dict):
                rows.append((lab, c.get("audio", 0), c.get("symbolic", 0)))
            else:
                rows.append((lab, c, ""))
        blocks.append(("Items per class", ["class", "audio", "symbolic"], rows))
    emb = ds.get("embedders") or {}
    if emb:
        keys = ["found", "embedded", "computed", "cached", "skipped", "seconds"]
        rows = [[name] + [(v or {}).get(k, "") if isinstance(v, dict) else "" for k in keys]
                for name, v in emb.items()]
        blocks.append(("Embedders", ["embedder"] + keys, rows))
    for key, title in (("skipped", "Skipped files"), ("unusable", "Unusable files")):
        lst = _pairs_list(ds.get(key))
        blocks.append((title, ["file", "reason"], lst if lst else [("(none)", "")]))
    seen = (ds.get("seen_in_training") or {}).items()
    if seen:  # a model trained on this collection is judged only on items it never saw
        blocks.append(("Left out of the analysis: items a model was trained on",
                       ["embedder", "items left out"], list(seen)))
    noted = [(name, note, n) for name, counts in (ds.get("note_counts") or {}).items()
             for note, n in sorted(counts.items())]
    if noted:  # unusual but valid files an embedder accepted (e.g. SMPTE MIDI for CLaMP 2)
        blocks.append(("Embedded with a note", ["embedder", "note", "files"], noted))
    if ds.get("damaged_cache_entries"):
        blocks.append(("Damaged cache entries", ["entry"],
                       [(str(x),) for x in ds["damaged_cache_entries"]]))
    if ds.get("warnings"):
        blocks.append(("Warnings", ["warning"], [(str(x),) for x in ds["warnings"]]))
    return blocks


def _entries(metrics: dict):
    """(where, metric name, entry) of every metric entry in metrics.json."""
    for group in ("embedders", "pairs"):
        for key, r in (metrics.get(group) or {}).items():
            for name, e in r.items():
                if isinstance(e, dict) and "value" in e and "params" in e:
                    yield key, name, e


def _intervals_sentence(metrics: dict) -> str:
    """How the intervals were obtained and which were adjusted, from what metrics.json
    records (each entry's params.ci_method and finalisation flags)."""
    p = metrics.get("parameters", {})
    methods: dict = {}
    extended, widened = set(), set()
    for key, name, e in _entries(metrics):
        pe = e.get("params") or {}
        if e.get("ci95") and pe.get("ci_method"):
            methods.setdefault(pe["ci_method"], []).append(name)
        if "ci_extended_to_value" in pe:
            extended.add(f"{key}: {name}")
        if "ci_degenerate_widened" in pe:
            widened.add(f"{key}: {name}")
    how = "; ".join(f"{m} ({', '.join(dict.fromkeys(names))})" for m, names in methods.items())
    text = (f"95% intervals ({p.get('n_bootstrap')} bootstrap resamples, seed "
            f"{p.get('seed')}); each entry's params.ci_method says how: {how or 'none'}. "
            "Every interval contains its value: ")
    if not extended and not widened:
        return text + "none had to be extended or widened."
    parts = []
    if extended:
        parts.append(f"{len(extended)} extended to reach it (params.ci_extended_to_value: "
                     f"{', '.join(sorted(extended))})")
    if widened:
        parts.append(f"{len(widened)} widened because every resample agreed "
                     f"(params.ci_degenerate_widened: {', '.join(sorted(widened))})")
    return text + "; ".join(parts) + "."


def _centering_sentence(metrics: dict) -> str:
    """Which cosine-based entries used centred vectors, from parameters.cosine_centering."""
    cc = (metrics.get("parameters") or {}).get("cosine_centering")
    if not isinstance(cc, dict):
        return str(cc or "")
    return (f"On centred vectors (params.centered): {', '.join(cc.get('centered', []))}; on "
            f"uncentred ones: {', '.join(cc.get('uncentered', []))}; "
            f"{cc.get('descriptives', '')}.")


def _maps_sentence(metrics: dict) -> str:
    """How the maps were computed, from parameters.projections (e.g. which t-SNE gradient)."""
    proj = (metrics.get("parameters") or {}).get("projections") or {}
    seen = {}
    for name, methods in proj.items():
        for method, p in methods.items():
            desc = ", ".join(f"{k}={p[k]}" for k in ("implementation", "negative_gradient_method",
                                                      "neighbors", "perplexity", "svd_solver")
                             if k in p)
            seen.setdefault(f"{method}: {desc}", []).append(name)
    return " ".join(f"{k} ({', '.join(v)})." for k, v in seen.items())


def _notes_lines(metrics: dict) -> list:
    """The run's notes; when there are none, what that means (generated, not asserted)."""
    return list(metrics.get("notes") or []) or [
        "No notes were recorded (no undefined metric, failed step or imbalance warning); "
        "interval adjustments are listed at the top."]


def _frechet_summary_rows(metrics):
    rows = []
    for name, r in metrics.get("embedders", {}).items():
        row = [name]
        for m in FRECHET_METRICS:
            v, _ = _fmt_entry(r.get(m))
            row.append(v)
        rows.append(row)
    return rows


def _frechet_outlier_rows(r: dict) -> list:
    fr = r.get("frechet") or {}
    return [(os.path.basename(o["id"]), o["label"], _fmt(o["score"]))
            for o in fr.get("outliers") or []]


_FRECHET_INTRO = ("Fréchet distances between the Gaussians (Ledoit-Wolf covariance) of the "
                  "classes of each space, divided by the total variance so embedders compare; "
                  "the per-class matrices are in each embedder's section, the items least like "
                  "their class (squared Mahalanobis distance / dim) below them.")


def _help_items() -> list:
    """(name, help) of every registered metric computed by run_analysis, in report order."""
    return [(m.name, METRIC_HELP.get(m.name, "")) for m in registry.metrics()
            if m.kind != "set"]


def _embedder_summary_rows(metrics):
    rows = []
    for name, r in metrics.get("embedders", {}).items():
        row = [name, r.get("modality", ""), r.get("n_items", ""), r.get("n_classes", ""),
               r.get("dim", "")]
        for m in EMBEDDER_METRICS:
            v, ci = _fmt_entry(r.get(m))
            row.append(f"{v} {ci}".strip())
        rows.append(row)
    return rows


def _recommend_summary_rows(metrics, names):
    rows = []
    for name, r in metrics.get("embedders", {}).items():
        row = [name]
        for m in names:
            v, ci = _fmt_entry(r.get(m))
            row.append(f"{v} {ci}".strip())
        ch = ((r.get("recommend_precision_at_10") or {}).get("params") or {}).get("chance")
        row.append(_fmt(ch) if ch is not None else "n/a")
        rows.append(row)
    return rows


_RECOMMEND_INTRO = ("Each item's nearest other items (cosine) as its recommendations: "
                    "precision@k against its label, coverage and hubness of the top 10. "
                    "Cross-modal same-piece hits are the retrieval metrics between embedders.")


def _pair_summary_rows(metrics):
    rows = []
    for key, r in metrics.get("pairs", {}).items():
        ch = r.get("retrieval_chance") or {}
        row = [key, r.get("matched_by", ""), r.get("n_shared", "")]
        for m in PAIR_METRICS:
            v, ci = _fmt_entry(r.get(m))
            row.append(f"{v} {ci}".strip())
        row.append(f"R@1 {_fmt(ch.get('recall_at_1'))}, MRR {_fmt(ch.get('mrr'))}"
                   if ch else "n/a")
        rows.append(row)
    return rows


def _metric_detail_rows(r, names):
    rows = []
    for m in names:
        e = r.get(m)
        if not isinstance(e, dict):
            continue
        v, ci = _fmt_entry(e)
        p = e.get("params") or {}
        ptxt = "; ".join(f"{k}={v2}" for k, v2 in p.items() if not isinstance(v2, dict))
        rows.append((m, v, ci, ptxt, e.get("note", "")))
    return rows


def render_html(metrics: dict, images: dict, *, title: str = "", maps_html: str = "",
                sections_html: Sequence[str] = ()) -> str:
    """The report page as one string (self-contained). ``maps_html``: the interactive maps
    (:func:`analysis.interactive.maps_html`), placed right after the summary;
    ``sections_html``: further sections (e.g. the probes') placed after the pair tables."""
    t = title or "Embedding comparison"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{_e(t)}</title><style>{CSS}</style></head><body>",
             f"<h1>{_e(t)}</h1>",
             f"<p>Generated {_e(_dt.datetime.now().isoformat(timespec='seconds'))}. "
             f"{_e(_intervals_sentence(metrics))} {_e(_centering_sentence(metrics))}</p>"]
    toc = ["Dataset", "Notes", "Summary", "Maps", "Per embedder", "Between embedders",
           "How to read the metrics", "Run configuration", "Software"]
    parts.append("<p>" + " · ".join(f"<a href='#{s.lower().replace(' ', '-')}'>{_e(s)}</a>"
                                     for s in toc) + "</p>")
    _html_dataset_and_notes(parts, metrics)
    _html_summary(parts, metrics, images)
    parts += layer_plots.report_section(  # metric by layer (layer=all), analysis/layers.py
        images, heading=lambda t: f"<h3>{_e(t)}</h3>",
        figure=lambda key, cap: [_img_tag(png, cap) for png in _pngs(images, key)])
    if maps_html:
        parts.append(maps_html)
    _html_maps(parts, images, metrics)
    parts.append("<h2 id='per-embedder'>Per embedder</h2>")
    for name, r in metrics.get("embedders", {}).items():
        _html_embedder(parts, name, r, images)
    parts.append("<h2 id='between-embedders'>Between embedders</h2>")
    for key, r in metrics.get("pairs", {}).items():
        _metric_section(parts, f"{key} (matched by {r.get('matched_by')}, "
                               f"{r.get('n_shared')} shared items)", r, PAIR_METRICS)
        ch = r.get("retrieval_chance")
        if ch:
            parts.append(f"<p>Retrieval chance levels with {_e(r.get('retrieval_n_test'))} "
                         f"held-out pairs: " + ", ".join(f"{_e(k)} = {_fmt(v)}"
                                                         for k, v in ch.items()) + ".</p>")
    parts.extend(sections_html)
    _html_help_and_config(parts, metrics)
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_dataset_and_notes(parts: list, metrics: dict) -> None:
    parts.append("<h2 id='dataset'>Dataset</h2>")
    ds = metrics.get("dataset") or {}
    if not ds:
        parts.append("<p class='na'>No dataset summary was given.</p>")
    for heading, header, rows in _dataset_blocks(ds):
        parts.append(f"<h3>{_e(heading)}</h3>")
        parts.append(_table(header, [[_e(c) for c in r] for r in rows]))
    parts.append("<h2 id='notes'>Notes</h2>")
    parts += [f"<div class='note'>{_e(n)}</div>" for n in _notes_lines(metrics)]


_COMPARISON_HEADER = ["metric", "a", "b", "a: all items (n)", "b: all items (n)", "a on shared",
                      "b on shared", "difference [95% CI]", "p (Holm)", "test",
                      "shared n (pieces)"]
_COMPARISON_CAPTION = ("The all-items columns are each embedder's own value on its own items "
                       "(not comparable when n differs); the comparison, its interval and its "
                       "paired test use only the shared items.")


def _comparison_rows(metrics: dict) -> list:
    """The side-by-side comparison table (analysis.findings.side_by_side_rows) as text cells."""
    rows = []
    for r in side_by_side_rows(metrics):
        ci = r["ci95"] or [None, None]
        units = r.get("n_units")
        rows.append([r["metric"], r["a"], r["b"], f"{_fmt(r['a_all'])} ({r['n_a_all']})",
                     f"{_fmt(r['b_all'])} ({r['n_b_all']})", _fmt(r["a_shared"]),
                     _fmt(r["b_shared"]),
                     f"{_fmt(r['difference'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]",
                     _fmt(r["p_holm"]), str(r.get("test") or "").split(" (")[0],
                     f"{r['n_shared']}" + (f" ({units})" if units is not None else "")])
    return rows


def _compared_sentence(metrics: dict) -> str:
    """What was compared on which items, from parameters.comparisons and the entries."""
    cmp = metrics.get("comparisons") or []
    p = (metrics.get("parameters") or {}).get("comparisons") or {}
    if not cmp:
        return "No paired comparison (fewer than two embedders)."
    seen: dict = {}
    for c in cmp:
        key = (c.get("a"), c.get("b"))
        if key not in seen:
            mm = c.get("n_label_mismatch")
            seen[key] = (f"{c.get('a')} vs {c.get('b')}: {c.get('n_items')} shared items "
                         f"(matched by {c.get('matched_by', 'item')}; {c.get('a')} has "
                         f"{c.get('n_items_a_all')}, {c.get('b')} {c.get('n_items_b_all')}"
                         + (f"; {mm} with different labels dropped" if mm else "") + ")")
    metric_names = ", ".join(p.get("metrics") or sorted({c["metric"] for c in cmp
                                                          if c.get("metric")}))
    return (f"Compared: {metric_names}, on {p.get('on', 'the shared items')}. "
            + "; ".join(seen.values()) + f". {p.get('correction', 'Holm across the run')}.")


def _html_summary(parts: list, metrics: dict, images: dict) -> None:
    parts.append("<h2 id='summary'>Summary</h2>")
    parts.append(f"<p class='findings'><b>Findings.</b> {_e(findings_paragraph(metrics))}</p>")
    if metrics.get("comparisons"):
        parts.append("<h3>Paired comparisons on shared items</h3>")
        parts.append(f"<p>{_e(_compared_sentence(metrics))} {_e(_COMPARISON_CAPTION)}</p>")
        parts.append(_table(_COMPARISON_HEADER,
                            [[_e(c) for c in r] for r in _comparison_rows(metrics)],
                            num_cols=(3, 4, 5, 6, 7, 8)))
    parts.append("<h3>Separability per embedder</h3>")
    if metrics.get("embedders"):
        parts.append(_table(["embedder", "modality", "n", "classes", "dim"]
                            + list(EMBEDDER_METRICS),
                            [[_e(c) for c in r] for r in _embedder_summary_rows(metrics)]))
    else:
        parts.append("<p class='na'>No embedders.</p>")
    for png in _pngs(images, "metric_bars"):
        parts.append(_img_tag(png, "Separability metrics per embedder (95% interval error "
                                   "bars)"))
    if metrics.get("embedders"):
        names = recommend_metric_names(metrics["embedders"])
        parts.append(f"<h3>Recommendation quality</h3><p>{_e(_RECOMMEND_INTRO)}</p>")
        parts.append(_table(["embedder"] + names + ["chance precision"],
                            [[_e(c) for c in r] for r in _recommend_summary_rows(metrics,
                                                                                 names)]))
    if metrics.get("embedders"):
        parts.append(f"<h3>Fréchet distances between classes</h3><p>{_e(_FRECHET_INTRO)}</p>")
        parts.append(_table(["embedder"] + list(FRECHET_METRICS),
                            [[_e(c) for c in r] for r in _frechet_summary_rows(metrics)]))
    parts.append("<h3>Between embedders</h3>")
    if metrics.get("pairs"):
        parts.append(_table(["pair", "matched by", "shared"] + list(PAIR_METRICS)
                            + ["retrieval chance"],
                            [[_e(c) for c in r] for r in _pair_summary_rows(metrics)]))
    else:
        parts.append("<p class='na'>No embedder pairs (fewer than two embedders).</p>")


def _html_maps(parts: list, images: dict, metrics: dict) -> None:
    parts.append("<h2 id='maps'>Maps</h2>")
    if _maps_sentence(metrics):
        parts.append(f"<p>{_e(_maps_sentence(metrics))}</p>")
    any_map = False
    for key in images:
        if key.startswith("all_"):
            for png in _pngs(images, key):
                parts.append(_img_tag(png, f"All embedders — {key[4:].upper()}"))
                any_map = True
    if not any_map:
        parts.append("<p class='na'>No maps were drawn (see notes).</p>")


def _chance_sentence(r: dict) -> str:
    """The chance levels of one embedder's accuracies, flagging imbalanced classes."""
    ch = r.get("chance") or {}
    if not ch:
        return ""
    flag = (" Classes are imbalanced: read the balanced accuracies."
            if ch.get("imbalance", 1.0) >= 1.5 else "")
    return (f"Chance: accuracy {_fmt(ch.get('majority_rate'))} (majority-class rate), balanced "
            f"accuracy {_fmt(ch.get('uniform'))} (1/classes); largest/smallest class "
            f"{_fmt(ch.get('imbalance'))}.{flag}")


def _html_embedder(parts: list, name: str, r: dict, images: dict) -> None:
    """One embedder: metrics, chance levels, maps, heatmaps, spread and neighbours."""
    _metric_section(parts, f"{name} ({r.get('modality', '')}, n={r.get('n_items')}, "
                           f"dim={r.get('dim')})", r,
                    list(EMBEDDER_METRICS) + recommend_metric_names(r) + list(FRECHET_METRICS))
    if _chance_sentence(r):
        parts.append(f"<p>{_e(_chance_sentence(r))}</p>")
    for key, cap in ((f"{name}_pca", "PCA map"), (f"{name}_tsne", "t-SNE map"),
                     (f"{name}_umap", "UMAP map"),
                     (f"{name}_centroid_cosine",
                      "Centroid cosine similarity, centred (fixed -1..1)"),
                     (f"{name}_centroid_cosine_uncentered",
                      "Centroid cosine similarity, uncentred as in the original study "
                      "(fixed -1..1)"),
                     (f"{name}_frechet_normalized",
                      "Class x class Fréchet distance / total variance"),
                     (f"{name}_confusion", "Nearest-centroid confusion (leave-one-out)")):
        for png in _pngs(images, key):
            parts.append(_img_tag(png, f"{name}: {cap}"))
    cv = r.get("class_variance") or []
    if cv:
        parts.append("<h4>Within-class spread</h4>")
        parts.append(_table(["class", "n", "raw variance (mean/dim)", "normalised raw var.",
                             "mean cosine distance to centroid"],
                            [[_e(d["class"]), _e(d["n"]), _e(_fmt(d["raw_variance"])),
                              _e(_fmt(d["normalized_variance"])),
                              _e(_fmt(d["mean_cosine_distance"]))] for d in cv],
                            num_cols=(1, 2, 3, 4)))
    if _frechet_outlier_rows(r):
        parts.append("<h4>Items least like their class (Fréchet outlier score)</h4>")
        parts.append(_table(["item", "class", "score"],
                            [[_e(c) for c in row] for row in _frechet_outlier_rows(r)],
                            num_cols=(2,)))
    nbs = r.get("nearest_neighbours") or []
    if nbs:
        parts.append("<h4>Nearest neighbours (cosine)</h4>")
        rows = []
        for q in nbs:
            nb_txt = "<br>".join(
                f"{_e(os.path.basename(d['id']))} <span class='na'>[{_e(d['label'])}, "
                f"{d['cosine_distance']:.3f}]</span>" for d in q["neighbours"])
            rows.append([_e(os.path.basename(q["id"])), _e(q["label"]),
                         _e(_fmt(q["same_label"])), nb_txt])
        parts.append(_table(["item", "class", "same-class fraction", "5 nearest"], rows))


def _html_help_and_config(parts: list, metrics: dict) -> None:
    parts.append("<h2 id='how-to-read-the-metrics'>How to read the metrics</h2><dl class='help'>")
    for m, text in _help_items():
        parts.append(f"<dt>{_e(m)}</dt><dd>{_e(text)}</dd>")
    parts.append("</dl>")
    params = dict(metrics.get("parameters") or {})
    run_config = params.pop("run_config", {})
    parts.append("<h2 id='run-configuration'>Run configuration</h2>")
    parts.append(f"<pre>{_e(json.dumps(run_config, indent=2, default=str))}</pre>")
    parts.append("<h3>Analysis parameters</h3>")
    parts.append(f"<pre>{_e(json.dumps(params, indent=2, default=str))}</pre>")
    parts.append("<h2 id='software'>Software</h2>")
    parts.append(_table(["package", "version"],
                        [[_e(k), _e(v)] for k, v in (metrics.get("software") or {}).items()]))


def _md_embedder_section(name: str, r: dict, link) -> list[str]:
    """One embedder's Markdown section: notes, metric table, its plots, nearest neighbours."""
    L = [f"### {name}", ""] + [f"> {n}" for n in r.get("notes", [])]
    L += ["", _md_table(["metric", "value", "95% CI", "parameters", "note"],
                        _metric_detail_rows(r, list(EMBEDDER_METRICS)
                                            + recommend_metric_names(r)
                                            + list(FRECHET_METRICS))), ""]
    if _chance_sentence(r):
        L += [_chance_sentence(r), ""]
    for key in (f"{name}_pca", f"{name}_tsne", f"{name}_umap", f"{name}_centroid_cosine",
                f"{name}_centroid_cosine_uncentered", f"{name}_frechet_normalized",
                f"{name}_confusion"):
        L += link(key, key)
    if _frechet_outlier_rows(r):
        L += ["", "Items least like their class (Fréchet outlier score):", "",
              _md_table(["item", "class", "score"], _frechet_outlier_rows(r))]
    nbs = r.get("nearest_neighbours") or []
    if nbs:
        L += ["", "Nearest neighbours:", "",
              _md_table(["item", "class", "same-class", "neighbours"],
                        [(os.path.basename(q["id"]), q["label"], _fmt(q["same_label"]),
                          "; ".join(f"{os.path.basename(d['id'])} [{d['label']}]"
                                    for d in q["neighbours"])) for q in nbs])]
    return L + [""]


def _md_findings(metrics: dict) -> list[str]:
    """The findings paragraph and the paired-comparison table that open the summary."""
    L = [f"**Findings.** {findings_paragraph(metrics)}", ""]
    if metrics.get("comparisons"):
        L += ["### Paired comparisons on shared items", "",
              f"{_compared_sentence(metrics)} {_COMPARISON_CAPTION}", "",
              _md_table(_COMPARISON_HEADER, _comparison_rows(metrics)), ""]
    return L


def render_markdown(metrics: dict, images: dict, out: Path, *, title: str = "",
                    sections_md: Sequence[str] = ()) -> str:
    """The Markdown twin; images are linked by path relative to ``out``; ``sections_md`` as
    :func:`render_html`'s ``sections_html``."""
    # Long because it is the Markdown report's sections in reading order, one short block each
    # (the HTML twin delegates to helpers; splitting this one would only scatter the order).
    out = Path(out)
    t = title or "Embedding comparison"

    def link(key, cap):
        return [f"![{cap}]({Path(os.path.relpath(p, out)).as_posix()})"
                for p in _pngs(images, key)]
    L = [f"# {t}", "", f"Generated {_dt.datetime.now().isoformat(timespec='seconds')}. "
         f"{_intervals_sentence(metrics)} {_centering_sentence(metrics)}", ""]
    L += ["## Dataset", ""]
    for heading, header, rows in _dataset_blocks(metrics.get("dataset") or {}):
        L += [f"### {heading}", "", _md_table(header, rows), ""]
    L += ["## Notes", ""]
    L += [f"- {n}" for n in _notes_lines(metrics)]
    L += ["", "## Summary", ""] + _md_findings(metrics) + ["### Separability per embedder", ""]
    if metrics.get("embedders"):
        L += [_md_table(["embedder", "modality", "n", "classes", "dim"] + list(EMBEDDER_METRICS),
                        _embedder_summary_rows(metrics)), ""]
    L += link("metric_bars", "separability metrics") + [""]
    if metrics.get("embedders"):
        names = recommend_metric_names(metrics["embedders"])
        L += ["### Recommendation quality", "", _RECOMMEND_INTRO, "",
              _md_table(["embedder"] + names + ["chance precision"],
                        _recommend_summary_rows(metrics, names)), ""]
    if metrics.get("embedders"):
        L += ["### Fréchet distances between classes", "", _FRECHET_INTRO, "",
              _md_table(["embedder"] + list(FRECHET_METRICS), _frechet_summary_rows(metrics)),
              ""]
    L += ["### Between embedders", ""]
    if metrics.get("pairs"):
        L += [_md_table(["pair", "matched by", "shared"] + list(PAIR_METRICS)
                        + ["retrieval chance"], _pair_summary_rows(metrics)), ""]
    else:
        L += ["No embedder pairs.", ""]
    L += layer_plots.report_section(images, heading=lambda t: f"### {t}\n", figure=link) + [""]
    L += ["## Maps", ""] + ([_maps_sentence(metrics), ""] if _maps_sentence(metrics) else [])
    for key in images:
        if key.startswith("all_"):
            L += link(key, f"all embedders {key[4:]}") + [""]
    L += ["## Per embedder", ""]
    for name, r in metrics.get("embedders", {}).items():
        L += _md_embedder_section(name, r, link)
    L += ["## Between embedders", ""]
    for key, r in metrics.get("pairs", {}).items():
        L += [f"### {key}", ""] + [f"> {n}" for n in r.get("notes", [])]
        L += ["", _md_table(["metric", "value", "95% CI", "parameters", "note"],
                            _metric_detail_rows(r, PAIR_METRICS)), ""]
    for section in sections_md:
        L += [section, ""]
    L += ["## How to read the metrics", ""]
    L += [f"- **{m}**: {text}" for m, text in _help_items()]
    params = dict(metrics.get("parameters") or {})
    run_config = params.pop("run_config", {})
    L += ["", "## Run configuration", "", "```json", json.dumps(run_config, indent=2,
                                                                default=str), "```", ""]
    L += ["## Analysis parameters", "", "```json", json.dumps(params, indent=2, default=str),
          "```", ""]
    L += ["## Software", "", _md_table(["package", "version"],
                                       list((metrics.get("software") or {}).items())), ""]
    return "\n".join(L)


def _metric_section(parts: list, heading: str, entry: dict, names) -> None:
    """A heading, the entry's notes and its table of metrics (value, CI, parameters, note)."""
    parts.append(f"<h3>{_e(heading)}</h3>")
    for n in entry.get("notes", []):
        parts.append(f"<div class='note'>{_e(n)}</div>")
    parts.append(_table(["metric", "value", "95% CI", "parameters", "note"],
                        [[_e(c) for c in row] for row in _metric_detail_rows(entry, names)],
                        num_cols=(1,)))


def _write_atomic(path: Path, text: str):
    atomic_write_text(path, text)


def write_report(metrics: dict, images: dict, out: Path, *, title: str = "",
                 maps_html: str = "", sections: Sequence[tuple[str, str]] = ()) -> tuple:
    """Write ``out``/report.html and ``out``/report.md; return their paths (``maps_html``: see
    :func:`render_html`; ``sections``: ``(html, markdown)`` of further sections)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = jsonable(metrics)
    h, md = out / "report.html", out / "report.md"
    _write_atomic(h, render_html(m, images, title=title, maps_html=maps_html,
                                 sections_html=[html for html, _ in sections]))
    _write_atomic(md, render_markdown(m, images, out, title=title,
                                      sections_md=[md_text for _, md_text in sections]))
    return h, md
