"""Interactive maps for report.html: the PCA / t-SNE / UMAP coordinates the run already
computed, drawn with plotly.js (bundled into the page once, so it opens offline from disk).

Hover shows file, label and pair; the legend toggles classes (in every map at once); a click on a
point plays it (audio items), lists its nearest neighbours in the embedder's full space (top
``k`` by cosine, computed here in numpy and embedded as JSON) and marks the same item in the
other maps of that method: the same file in maps of its own modality, its partner (same pair id)
in the maps of the other modality.

Nothing here recomputes a projection: :func:`maps_html` takes the coordinates from
:func:`analysis.outputs.draw_maps`. Every text from the data (file names, labels) reaches the page
only inside one ``<script type="application/json">`` block (``<``, ``>``, ``&`` escaped) and is
put into the DOM with ``textContent``; no data string is ever parsed as HTML.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import quote

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["AUDIO_MODES", "EXCERPT_SECONDS", "EXCERPT_SR", "EMBED_BUDGET_BYTES", "MapsHTML",
           "cosine_top_k", "audio_excerpt_uri", "midi_excerpt_uri", "map_data", "maps_html",
           "plotly_bundle"]

AUDIO_MODES = ("link", "embed")
#: ``--report-audio embed``: the first EXCERPT_SECONDS of each audio file, mono, EXCERPT_SR Hz
EXCERPT_SECONDS = 5.0
EXCERPT_SR = 16000
#: bound on all embedded excerpts of one report together (base64 bytes); files past it are
#: linked instead, and the report says how many
EMBED_BUDGET_BYTES = 8 * 1024 * 1024
#: above this many points a map is drawn with WebGL (scattergl): SVG gets slow
WEBGL_FROM = 3000
#: coordinates are written with this many significant digits (a map needs no more)
COORD_DIGITS = 5

_METHOD_TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
#: tab10 / tab20, the colours analysis.plots gives the classes (same sorted order)
_TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]
_TAB20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728",
          "#ff9896", "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2",
          "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5"]


@dataclass
class MapsHTML:
    """What the report inserts: ``bundle`` (plotly.js and this module's script, once per page)
    and ``fragment`` (the maps' markup and their data); ``notes`` say what was left out."""
    fragment: str
    bundle: str
    notes: list = field(default_factory=list)

    def __str__(self) -> str:
        return self.fragment + "\n" + self.bundle


def cosine_top_k(X: ArrayLike, *, k: int = 5, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows by cosine similarity (self excluded).

    Parameters
    ----------
    X : np.ndarray [shape=(n, dim)]
        Vectors; a zero row has similarity 0 to everything.
    k : int
        Neighbours per row (at most n - 1 are returned).

    Returns
    -------
    index : np.ndarray [shape=(n, min(k, n-1)), dtype=int]
        Neighbour rows, nearest first (ties by lower row index).
    distance : np.ndarray [shape=(n, min(k, n-1))]
        Their cosine distances (1 - cosine similarity).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-d (n, dim), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X holds non-finite values")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = X.shape[0]
    kk = min(k, n - 1)
    if kk <= 0:
        return np.zeros((n, 0), dtype=int), np.zeros((n, 0))
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    # float32 products: half the time and memory of float64, and ample for a top-5 list
    Xn = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0).astype(np.float32)
    index = np.empty((n, kk), dtype=int)
    dist = np.empty((n, kk))
    for start in range(0, n, chunk):  # chunked: n x n similarities would not fit for large n
        negS = -(Xn[start:start + chunk] @ Xn.T)
        rows = np.arange(negS.shape[0])
        negS[rows, start + rows] = np.inf
        # the kk-th largest similarity of each row bounds the candidates (more than kk on ties);
        # sorting only those, by (-similarity, row), is exact and far cheaper than a full sort
        part = np.argpartition(negS, kk - 1, axis=1)[:, :kk]
        threshold = np.take_along_axis(negS, part, axis=1).max(axis=1)
        for r in rows:
            cand = np.flatnonzero(negS[r] <= threshold[r])
            best = cand[np.lexsort((cand, negS[r, cand]))][:kk]
            index[start + r] = best
            dist[start + r] = 1.0 + negS[r, best].astype(np.float64)
    return index, dist


def audio_excerpt_uri(path: str | Path, *, seconds: float = EXCERPT_SECONDS,
                      sr: int = EXCERPT_SR) -> str:
    """A ``data:`` URI of the first ``seconds`` of ``path``, mono, resampled to ``sr``:
    Ogg Vorbis where libsndfile writes it, 16-bit WAV otherwise. Raises on unreadable audio."""
    import soundfile as sf
    with sf.SoundFile(str(path)) as f:
        y = f.read(frames=int(seconds * f.samplerate), dtype="float32", always_2d=True)
        native = f.samplerate
    y = y.mean(axis=1)
    if native != sr and len(y):
        import soxr
        y = soxr.resample(y, native, sr).astype(np.float32)
    return _audio_uri(y, sr)


def midi_excerpt_uri(path: str | Path, *, seconds: float = EXCERPT_SECONDS,
                     sr: int = EXCERPT_SR) -> str:
    """A ``data:`` URI of the first ``seconds`` of a MIDI file rendered to audio with the
    project's built-in synthesizer (:func:`collection.demo_corpus.synthesize`: no program, no
    soundfont, deterministic). Raises on an unreadable or empty MIDI file."""
    import pretty_midi
    from collection.demo_corpus import synthesize
    pm = pretty_midi.PrettyMIDI(str(path))
    for inst in pm.instruments:  # only what sounds in the excerpt is rendered
        inst.notes = [n for n in inst.notes if n.start < seconds]
        for n in inst.notes:
            n.end = min(n.end, seconds)
    if not any(inst.notes for inst in pm.instruments):
        raise ValueError(f"{path}: no notes in the first {seconds:g} s")
    return _audio_uri(synthesize(pm, sr)[:int(seconds * sr)], sr)


def _audio_uri(y: np.ndarray, sr: int) -> str:
    """Mono samples [shape=(n,)] as a data URI: Ogg Vorbis, or 16-bit WAV without Vorbis."""
    import soundfile as sf
    buf = io.BytesIO()
    try:
        sf.write(buf, y, sr, format="OGG", subtype="VORBIS")
        mime = "audio/ogg"
    except Exception:  # a libsndfile built without Vorbis
        buf = io.BytesIO()
        sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
        mime = "audio/wav"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _relative_url(path: str, report_dir: str) -> str:
    """``path`` relative to ``report_dir`` (both made absolute, symlinks kept), URL-quoted."""
    rel = os.path.relpath(os.path.abspath(path), report_dir)
    return quote(Path(rel).as_posix(), safe="/")


def _round(values: np.ndarray) -> list:
    return [float(f"{v:.{COORD_DIGITS}g}") for v in np.asarray(values, dtype=float)]


def _items_table(sets: Sequence) -> tuple[OrderedDict, dict]:
    """One entry per (modality, id) over all sets: the same file in two audio embedders is one
    item. Returns (key -> row, columns)."""
    keys: OrderedDict = OrderedDict()
    cols = {"file": [], "label": [], "pair": [], "modality": [], "path": []}
    for s in sets:
        for i, item_id in enumerate(s.ids.tolist()):
            key = (s.modality, item_id)
            if key in keys:
                continue
            keys[key] = len(keys)
            cols["file"].append(item_id)
            cols["label"].append(str(s.labels[i]))
            cols["pair"].append(str(s.pair_ids[i]))
            cols["modality"].append(s.modality)
            cols["path"].append(str(s.paths[i]))
    return keys, cols


class _EmbedBudget:
    """The bound on all embedded excerpts of one report: ``take(uri)`` says whether it fits."""

    def __init__(self):
        self.used, self.spent, self.failed, self.linked = 0, False, 0, 0

    def take(self, make_uri, path) -> str | None:
        if self.spent:
            return None
        try:
            uri = make_uri(path)
        except Exception:
            self.failed += 1
            return None
        if self.used + len(uri) > EMBED_BUDGET_BYTES:
            self.spent = True  # budget spent: link the rest
            return None
        self.used += len(uri)
        return uri


def _paired_audio(cols: dict) -> dict:
    """pair id -> row of the first audio item of that pair."""
    out = {}
    for row, (pair, modality) in enumerate(zip(cols["pair"], cols["modality"])):
        if modality == "audio" and pair and pair not in out:
            out[pair] = row
    return out


def _audio_sources(cols: dict, *, report_dir: Path, audio: str, notes: list) -> tuple[list, list]:
    """Per item, what the player gets: the source (relative link or data URI, None for nothing
    to play) and where it comes from ("file", "render": the MIDI rendered here, "pair": the audio
    file of the same pair, or None).

    An audio item plays its own file (linked, or an excerpt with ``embed``). A MIDI item plays,
    with ``embed``, an excerpt rendered from its notes; otherwise (or when it cannot be read)
    the audio file of its pair, when the collection has one."""
    budget, report_dir = _EmbedBudget(), os.path.abspath(report_dir)
    pair_row = _paired_audio(cols)
    src, origin = [], []
    for path, modality, pair in zip(cols["path"], cols["modality"], cols["pair"]):
        maker = {"audio": audio_excerpt_uri, "symbolic": midi_excerpt_uri}.get(modality)
        uri = budget.take(maker, path) if audio == "embed" and maker else None
        if uri is not None:
            src.append(uri)
            origin.append("file" if modality == "audio" else "render")
        elif modality == "audio":
            budget.linked += audio == "embed"
            src.append(_relative_url(path, report_dir))
            origin.append("file")
        elif pair in pair_row:
            budget.linked += audio == "embed"
            src.append(_relative_url(cols["path"][pair_row[pair]], report_dir))
            origin.append("pair")
        else:
            src.append(None)
            origin.append(None)
    if budget.failed:
        notes.append(f"{budget.failed} file(s) could not be read or rendered for an excerpt: "
                     "linked instead where there is a file to link")
    if audio == "embed" and budget.linked:
        notes.append(f"{budget.linked} item(s) linked, not embedded: the embedded excerpts reached "
                     f"their bound of {EMBED_BUDGET_BYTES // (1024 * 1024)} MiB")
    return src, origin


def map_data(coords: Mapping[str, Mapping[str, ArrayLike]], sets: Sequence, *,
             report_dir: str | Path, audio: str = "link", k: int = 5) -> tuple[dict, list]:
    """The maps' data as a JSON-able dict, and notes.

    Parameters
    ----------
    coords : {method: {embedder name: np.ndarray [shape=(n, 2)]}}
        The 2-d coordinates the run drew (rows in the order of that embedder's set).
    sets : list of EmbeddingSet
        name, modality, ids, labels, pair_ids, paths [shape=(n,)] and vectors [shape=(n, dim)].
    report_dir : Path
        Folder of report.html: audio links are relative to it.
    audio : {"link", "embed"}
    k : int
        Nearest neighbours listed per item.

    Returns
    -------
    data : dict
        ``items`` (columns file, label, pair, modality, audio: the player's source or None,
        audio_from: "file", "render", "pair" or None), ``spaces`` (per embedder: its
        rows' item numbers and top-k neighbours), ``maps`` (method, space number, x, y),
        ``classes`` and ``colors``.
    notes : list of str
    """
    if audio not in AUDIO_MODES:
        raise ValueError(f"audio must be one of {AUDIO_MODES}, got {audio!r}")
    notes: list = []
    drawn = {name for per in coords.values() for name in per}
    sets = [s for s in sets if s.name in drawn]
    keys, cols = _items_table(sets)
    cols["audio"], cols["audio_from"] = _audio_sources(cols, report_dir=Path(report_dir),
                                                       audio=audio, notes=notes)
    del cols["path"]
    spaces, space_of = [], {}
    for s in sets:
        nb, dist = cosine_top_k(s.vectors, k=k)
        space_of[s.name] = len(spaces)
        spaces.append({"embedder": s.name, "modality": s.modality,
                       "item": [keys[(s.modality, i)] for i in s.ids.tolist()],
                       "nb": nb.tolist(), "dist": [[round(float(d), 4) for d in row]
                                                   for row in dist]})
    maps = []
    for method, per in coords.items():
        for name, Y in per.items():
            Y = np.asarray(Y, dtype=float)
            sp = space_of[name]
            if Y.shape != (len(spaces[sp]["item"]), 2):
                raise ValueError(f"{name} {method}: coordinates of shape {Y.shape}, expected "
                                 f"({len(spaces[sp]['item'])}, 2)")
            maps.append({"method": method, "title": _METHOD_TITLES.get(method, method),
                         "space": sp, "x": _round(Y[:, 0]), "y": _round(Y[:, 1])})
    classes = sorted(set(cols["label"]))
    palette = _TAB10 if len(classes) <= 10 else _TAB20
    return {"items": cols, "spaces": spaces, "maps": maps, "classes": classes,
            "colors": {c: palette[i % len(palette)] for i, c in enumerate(classes)},
            "webgl_from": WEBGL_FROM}, notes


def _json_for_script(data) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' survives unescaped (they can only occur in
    strings, where \\u003c etc. mean the same)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def plotly_bundle() -> str:
    """plotly.js (the copy inside the plotly package) as an inline script; ImportError without
    plotly."""
    from plotly.offline import get_plotlyjs
    js = get_plotlyjs().replace("</script", "<\\/script")
    return f"<script>{js}</script>"


_CSS = """
.imap-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:8px}
.imap-plot{height:400px;border:1px solid #eee}
#imap-tip{position:fixed;display:none;pointer-events:none;background:#fff;border:1px solid #888;
padding:4px 7px;font-size:0.8em;white-space:pre;z-index:10;box-shadow:1px 1px 4px #0003}
#imap-panel{position:sticky;bottom:0;background:#fafafa;border:1px solid #ccc;padding:6px 10px;
font-size:0.85em;max-height:40vh;overflow-y:auto}
#imap-panel li{cursor:pointer}#imap-panel li:hover{text-decoration:underline}
"""

_INTRO = ("Hover a point for its file, label and pair; click a class in a legend to hide or show "
          "it in every map; click a point to hear it (an audio item plays its file; a MIDI item "
          "plays its notes rendered by the built-in synthesizer with --report-audio embed, "
          "else the audio file of its pair), to list its {k} nearest "
          "neighbours in that embedder's full space (cosine) and to see it marked (★) in the "
          "other maps of the method: the same file in maps of its own modality, its partner (same "
          "pair id) in maps of the other modality. Each panel is one embedder's map; the panels "
          "side by side are the comparison. The static PNG/SVG maps are written for papers.")


def maps_html(coords: Mapping[str, Mapping[str, ArrayLike]], sets: Sequence, *,
              report_dir: str | Path, audio: str = "link", k: int = 5) -> MapsHTML:
    """The interactive maps section of report.html (see :func:`map_data` for the arguments).

    Returns
    -------
    MapsHTML: ``fragment`` (heading, one grid per method, the panel and the data block) and
    ``bundle`` (plotly.js and the page script; insert once, after the fragment).
    """
    data, notes = map_data(coords, sets, report_dir=report_dir, audio=audio, k=k)
    parts = [f"<style>{_CSS}</style>", "<h2 id='interactive-maps'>Interactive maps</h2>",
             f"<p>{_INTRO.format(k=k)}</p>"]
    parts += [f"<div class='note'>{_escape(n)}</div>" for n in notes]
    for method in dict.fromkeys(m["method"] for m in data["maps"]):
        parts.append(f"<h3>{_escape(_METHOD_TITLES.get(method, method))}</h3>"
                     f"<div class='imap-grid' data-method='{_escape(method)}'></div>")
    parts.append("<div id='imap-panel'><div id='imap-selected'>Click a point on a map.</div>"
                 "<audio id='imap-audio' controls preload='none'></audio>"
                 "<ol id='imap-neighbours'></ol><ul id='imap-partners'></ul></div>"
                 "<div id='imap-tip'></div>")
    parts.append("<script type='application/json' id='imap-data'>" + _json_for_script(data)
                 + "</script>")
    bundle = plotly_bundle() + "<script>" + _SCRIPT + "</script>"
    return MapsHTML("\n".join(parts), bundle, notes)


def _escape(x) -> str:
    return html.escape(str(x))


# The page script. Data strings go into the DOM by textContent only.
_SCRIPT = r"""
(function(){
"use strict";
var D = JSON.parse(document.getElementById('imap-data').textContent);
var I = D.items, tip = document.getElementById('imap-tip');
var player = document.getElementById('imap-audio');
var plots = [];  // {div, map, space, rowOfItem, nClasses}
function text(el, s){ el.textContent = s; return el; }
function describe(it){
  return I.file[it] + ' (' + I.label[it] + (I.pair[it] ? ', pair ' + I.pair[it] : '') + ')';
}
function traces(m, sp){
  var kind = m.x.length >= D.webgl_from ? 'scattergl' : 'scatter', out = [];
  D.classes.forEach(function(c){
    var rows = [];
    sp.item.forEach(function(it, r){ if (I.label[it] === c) rows.push(r); });
    if (!rows.length) return;
    out.push({type: kind, mode: 'markers', name: c, legendgroup: c, hoverinfo: 'none',
      x: rows.map(function(r){ return m.x[r]; }), y: rows.map(function(r){ return m.y[r]; }),
      customdata: rows, marker: {color: D.colors[c], size: 7, opacity: 0.8}});
  });
  out.push({type: kind, mode: 'markers', name: 'neighbours', showlegend: false, hoverinfo: 'skip',
    x: [], y: [], marker: {size: 13, color: 'rgba(0,0,0,0)', line: {color: '#000', width: 1.5}}});
  out.push({type: kind, mode: 'markers', name: 'selected', showlegend: false, hoverinfo: 'skip',
    x: [], y: [], marker: {size: 18, symbol: 'star', color: '#000', line: {color: '#fff', width: 1}}});
  return out;
}
function play(it){
  var src = I.audio[it];
  if (src === null) { player.removeAttribute('src'); return false; }
  player.src = src;
  var p = player.play();
  if (p && p.catch) p.catch(function(){});
  return true;
}
function mark(P, rows, which){
  Plotly.restyle(P.div, {x: [rows.map(function(r){ return P.map.x[r]; })],
                         y: [rows.map(function(r){ return P.map.y[r]; })]},
                 [P.nTraces - (which === 'selected' ? 1 : 2)]);
}
function select(P, row){
  var sp = P.space, it = sp.item[row];
  var heard = play(it), from = {render: ' (playing its notes, rendered)',
                                 pair: ' (playing the audio of its pair)'}[I.audio_from[it]];
  document.body.setAttribute('data-imap-playing', heard ? I.audio_from[it] : 'none');
  text(document.getElementById('imap-selected'), describe(it) + ' — ' + sp.embedder + ', ' +
       P.map.title + (heard ? (from || '') : ' (no audio: ' + I.modality[it] +
       ' item without a paired audio file; --report-audio embed renders MIDI)'));
  var ol = document.getElementById('imap-neighbours'); ol.textContent = '';
  sp.nb[row].forEach(function(r, j){
    var li = document.createElement('li');
    text(li, describe(sp.item[r]) + ' · cosine distance ' + sp.dist[row][j]);
    li.addEventListener('click', function(){ select(P, r); });
    ol.appendChild(li);
  });
  var ul = document.getElementById('imap-partners'); ul.textContent = '';
  plots.forEach(function(Q){
    if (Q.map.method !== P.map.method) return;
    var rows = [];
    if (Q.space.modality === I.modality[it]) {
      if (Q.rowOfItem.has(it)) rows.push(Q.rowOfItem.get(it));
    } else if (I.pair[it]) {
      Q.space.item.forEach(function(jt, r){ if (I.pair[jt] === I.pair[it]) rows.push(r); });
    }
    mark(Q, rows, 'selected');
    mark(Q, Q === P ? sp.nb[row] : [], 'neighbours');
    if (Q.space.modality !== I.modality[it]) {
      var li = document.createElement('li');
      text(li, Q.space.embedder + ' (' + Q.space.modality + '): ' + (rows.length ?
           'partner ' + rows.map(function(r){ return describe(Q.space.item[r]); }).join('; ') :
           'no partner'));
      if (rows.length) li.addEventListener('click', function(){ select(Q, rows[0]); });
      ul.appendChild(li);
    }
  });
}
function legendClick(ev){
  var name = ev.data[ev.curveNumber].name;
  var vis = ev.data[ev.curveNumber].visible === 'legendonly' ? true : 'legendonly';
  plots.forEach(function(Q){
    Q.div.data.forEach(function(t, i){ if (t.name === name) Plotly.restyle(Q.div, {visible: vis}, [i]); });
  });
  return false;
}
document.querySelectorAll('.imap-grid').forEach(function(grid){
  D.maps.forEach(function(m){
    if (m.method !== grid.getAttribute('data-method')) return;
    var sp = D.spaces[m.space], div = document.createElement('div');
    div.className = 'imap-plot';
    div.setAttribute('data-embedder', sp.embedder);
    grid.appendChild(div);
    var tr = traces(m, sp), P = {div: div, map: m, space: sp, nTraces: tr.length,
                                 rowOfItem: new Map(sp.item.map(function(it, r){ return [it, r]; }))};
    plots.push(P);
    Plotly.newPlot(div, tr, {title: {text: sp.embedder + ' — ' + m.title, font: {size: 13}},
      margin: {l: 30, r: 10, t: 30, b: 25}, hovermode: 'closest', dragmode: 'pan',
      legend: {font: {size: 10}}, xaxis: {zeroline: false}, yaxis: {zeroline: false}},
      {displaylogo: false, responsive: true, scrollZoom: true});
    div.on('plotly_hover', function(ev){
      var pt = ev.points[0]; if (pt.customdata === undefined) return;
      var it = sp.item[pt.customdata];
      text(tip, 'file: ' + I.file[it] + '\nlabel: ' + I.label[it] + '\npair: ' +
           (I.pair[it] || '—') + '\n' + sp.embedder + ' (' + I.modality[it] + ')');
      var e = ev.event || {clientX: 0, clientY: 0};
      tip.style.left = (e.clientX + 14) + 'px'; tip.style.top = (e.clientY + 14) + 'px';
      tip.style.display = 'block';
    });
    div.on('plotly_unhover', function(){ tip.style.display = 'none'; });
    div.on('plotly_click', function(ev){
      var pt = ev.points[0]; if (pt.customdata !== undefined) select(P, pt.customdata);
    });
    div.on('plotly_legendclick', legendClick);
  });
});
window.embcompareMaps = {plots: plots, select: select};
})();
"""
