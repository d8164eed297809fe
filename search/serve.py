"""``python main.py serve``: one HTML page over a small JSON API, on the standard library's HTTP
server (no web framework: a page, five endpoints, nothing to install).

Endpoints (all GET except one):

- ``/``: the page (choose an item or upload a file, listen, see the top-k and the 2-D map);
- ``/api/spaces``: the indexed embedders (name, modality, items, cross-modal targets);
- ``/api/items?embedder=NAME``: the items of one space with their 2-D map coordinates;
- ``POST /api/recommend``: JSON ``{embedder, item | upload: {name, data (base64)}, k,
  cross_modal, exclude_same_piece, label}`` -> ``{query, results, map}``;
- ``/api/audio?embedder=NAME&item=ID``: an indexed item to listen to (MIDI rendered to WAV by
  the demo corpus's built-in synthesizer).

An upload is written to a temporary folder outside the collection, embedded through the cache,
and deleted after the query. The server binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import base64
import io
import json
import mimetypes
import shutil
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from .index import CROSS_SEPARATOR, SearchError, index_root, read_index_meta
from .recommend import Recommender

MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class _Spaces:
    """What the page needs, per indexed space, computed once: item lists and 2-D PCA maps."""

    def __init__(self, emb_dir: Path):
        self.emb_dir = emb_dir
        self.lock = threading.Lock()  # Qdrant Edge: one open handle per shard at a time
        self.metas = {}
        root = index_root(emb_dir)
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            meta = read_index_meta(folder)
            if meta and meta.get("state") == "complete":
                self.metas[folder.name] = meta
        if not any(CROSS_SEPARATOR not in n for n in self.metas):
            raise SearchError(f"{root}: no index yet; build it with 'python main.py index "
                              f"--emb-dir {emb_dir}'")
        self._maps: dict[str, dict] = {}
        self._recommenders: dict[str, Recommender] = {}

    def close(self) -> None:
        with self.lock:
            for rec in self._recommenders.values():
                rec.close()

    def spaces(self) -> list[dict]:
        out = []
        for name, meta in self.metas.items():
            if CROSS_SEPARATOR in name:
                continue
            targets = [n.split(CROSS_SEPARATOR)[1] for n in self.metas
                       if n.startswith(name + CROSS_SEPARATOR)]
            out.append({"name": name, "modality": meta["modality"], "n_items": meta["n_items"],
                        "cross_targets": targets})
        return out

    def recommender(self, name: str) -> Recommender:
        if name not in self._recommenders:
            if name not in self.metas or CROSS_SEPARATOR in name:
                raise SearchError(f"no index for embedder {name!r}")
            # shards stay open between queries: opening one costs seconds at 100k items
            self._recommenders[name] = Recommender(self.emb_dir, embedder=name, keep_open=True)
        return self._recommenders[name]

    def map(self, name: str) -> dict:
        """2-D PCA map of a space's items (a cross-modal space: the target items as aligned)."""
        if name not in self._maps:
            source = name.split(CROSS_SEPARATOR)
            export = self.recommender(source[0]).export() if len(source) == 1 else \
                Recommender(self.emb_dir, embedder=source[1]).export()
            X = np.asarray(export.clip, dtype=np.float64)
            if len(source) == 2:
                fit = np.load(index_root(self.emb_dir) / name / "alignment.npz")
                X = (X - fit["target_mean"]) @ fit["target_basis"]
            Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
            mean = Xn.mean(axis=0)
            _, _, Vt = np.linalg.svd(Xn - mean, full_matrices=False)
            basis = Vt[:2].T if Vt.shape[0] >= 2 else np.eye(Xn.shape[1], 2)
            xy = (Xn - mean) @ basis
            self._maps[name] = {"mean": mean, "basis": basis, "xy": xy,
                                "ids": [str(i) for i in export.ids],
                                "labels": [str(x) for x in export.labels],
                                "paths": [str(p) for p in export.paths]}
        return self._maps[name]

    def project(self, name: str, vector: np.ndarray) -> list[float]:
        m = self.map(name)
        v = vector / max(np.linalg.norm(vector), 1e-12)
        return [round(float(c), 5) for c in (v - m["mean"]) @ m["basis"]]


def _render_midi(path: str) -> bytes:
    import pretty_midi
    import soundfile as sf

    from collection.demo_corpus import synthesize

    sr = 22050
    audio = synthesize(pretty_midi.PrettyMIDI(path), sr)
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _items(space_map: dict) -> list[dict]:
    """``GET /api/items``: every item of a space with its label and map position."""
    return [{"item_id": i, "label": lab, "xy": [round(float(a), 5) for a in xy]}
            for i, lab, xy in zip(space_map["ids"], space_map["labels"], space_map["xy"])]


def _recommend(spaces: _Spaces, req: dict) -> dict:
    """The answer to ``POST /api/recommend``: the results (with their map positions), the
    query's position on the map, and the space searched. An upload lives in a temporary
    folder while it is embedded."""
    name = str(req.get("embedder", ""))
    rec = spaces.recommender(name)
    k = int(req.get("k", 10))
    cross = bool(req.get("cross_modal"))
    tmp = None
    try:
        if req.get("upload"):
            tmp = Path(tempfile.mkdtemp(prefix="embcompare-upload-"))
            label = Path(str(req["upload"].get("name", "upload"))).name or "upload"
            query = tmp / label
            query.write_bytes(base64.b64decode(req["upload"]["data"]))
        else:
            m = spaces.map(name)
            if req.get("item") not in m["ids"]:
                raise SearchError(f"no item {req.get('item')!r} in {name}")
            query = Path(m["paths"][m["ids"].index(req["item"])])
            label = req["item"]
        with spaces.lock:
            vector, chash, pair = rec.query_vector(query)
            results = rec.recommend_vector(
                vector, k, content_hash=chash, pair_id=pair, cross_modal=cross,
                exclude_same_piece=bool(req.get("exclude_same_piece")),
                label=req.get("label") or None)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    space = rec._cross_name() if cross else name
    if cross:
        fit = np.load(index_root(spaces.emb_dir) / space / "alignment.npz")
        qv = (vector - fit["source_mean"]) @ fit["source_basis"] @ fit["rotation"]
    else:
        qv = np.asarray(vector, dtype=np.float64)
    m = spaces.map(space)
    out = []
    for r in results:
        d = r.to_dict()
        if r.item_id in m["ids"]:
            d["xy"] = [round(float(a), 5) for a in m["xy"][m["ids"].index(r.item_id)]]
        out.append(d)
    return {"query": {"name": label, "xy": spaces.project(space, qv)}, "results": out,
            "space": space, "map_embedder": space.split(CROSS_SEPARATOR)[-1]}


def _handler(spaces: _Spaces):
    class Handler(BaseHTTPRequestHandler):
        server_version = "embcompare-serve"

        def log_message(self, fmt, *args):  # quiet: one line per error only
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, obj, status: int = 200) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _error(self, status: int, msg: str) -> None:
            self._json({"error": msg}, status)

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            qs = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            try:
                if url.path == "/":
                    self._send(200, PAGE.encode(), "text/html; charset=utf-8")
                elif url.path == "/api/spaces":
                    self._json(spaces.spaces())
                elif url.path == "/api/items":
                    self._json(_items(spaces.map(qs.get("embedder", ""))))
                elif url.path == "/api/audio":
                    m = spaces.map(qs.get("embedder", ""))
                    if qs.get("item") not in m["ids"]:
                        return self._error(404, "no such item")
                    path = m["paths"][m["ids"].index(qs["item"])]
                    if path.lower().endswith((".mid", ".midi")):
                        self._send(200, _render_midi(path), "audio/wav")
                    else:
                        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
                        self._send(200, Path(path).read_bytes(), ctype)
                else:
                    self._error(404, "not found")
            except (SearchError, OSError, ValueError) as exc:
                self._error(400, str(exc))

        def do_POST(self):
            if urllib.parse.urlparse(self.path).path != "/api/recommend":
                return self._error(404, "not found")
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_UPLOAD_BYTES * 4 // 3 + 4096:
                return self._error(413, "upload too large")
            try:
                self._json(_recommend(spaces, json.loads(self.rfile.read(n) or b"{}")))
            except SearchError as exc:
                self._error(400, str(exc))
            except (ValueError, KeyError, TypeError) as exc:
                self._error(400, f"bad request ({exc})")

    return Handler


def make_server(emb_dir, *, host: str = "127.0.0.1", port: int = 8501) -> ThreadingHTTPServer:
    """The server, bound and ready (``serve_forever`` not yet called)."""
    spaces = _Spaces(Path(emb_dir))
    server = ThreadingHTTPServer((host, port), _handler(spaces))
    server.daemon_threads = True
    server.spaces = spaces
    return server


def serve(emb_dir, *, host: str = "127.0.0.1", port: int = 8501) -> int:
    server = make_server(emb_dir, host=host, port=port)
    print(f"serving {emb_dir} on http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.spaces.close()
    return 0


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>embcompare: recommend</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
fieldset{border:1px solid #ccc;margin-bottom:1em}
table{border-collapse:collapse}td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:left}
#wrap{display:flex;gap:2em;flex-wrap:wrap}#err{color:#b00}
svg{border:1px solid #ddd;background:#fafafa}
</style></head><body>
<h1>Similar music</h1>
<fieldset><legend>Query</legend>
<label>Space <select id="embedder"></select></label>
<label><input type="checkbox" id="cross"> cross-modal</label>
<label><input type="checkbox" id="same"> exclude same piece</label>
<label>k <input type="number" id="k" value="10" min="1" max="100" style="width:4em"></label><br>
<label>Item <select id="item"></select></label> <button id="go">Recommend</button>
<label>or upload <input type="file" id="file"></label>
<div><audio id="qaudio" controls></audio></div>
</fieldset>
<div id="err"></div>
<div id="wrap">
<div><h2>Results <span id="status"></span></h2>
<table><thead><tr><th>rank</th><th>score</th><th>label</th><th>path</th><th>listen</th></tr></thead>
<tbody id="results"></tbody></table></div>
<div><h2>Map</h2><svg id="map" width="420" height="420"></svg></div>
</div>
<script>
const $ = id => document.getElementById(id);
const params = new URLSearchParams(location.search);
let spaces = [];
async function getJSON(url, opts) {
  const r = await fetch(url, opts); const j = await r.json();
  if (!r.ok) throw new Error(j.error || r.statusText); return j;
}
function esc(s) { const d = document.createElement('div'); d.textContent = s; return d.innerHTML; }
async function loadItems() {
  const items = await getJSON('/api/items?embedder=' + encodeURIComponent($('embedder').value));
  $('item').innerHTML = items.map(i => `<option value="${esc(i.item_id)}">${esc(i.item_id)}</option>`).join('');
  if (params.get('item')) $('item').value = params.get('item');
  setQueryAudio();
  return items;
}
function setQueryAudio() {
  $('qaudio').src = '/api/audio?embedder=' + encodeURIComponent($('embedder').value) +
                    '&item=' + encodeURIComponent($('item').value);
}
async function drawMap(space, res) {
  const items = await getJSON('/api/items?embedder=' + encodeURIComponent(space));
  const pts = items.map(i => i.xy).concat([res.query.xy]);
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = x => 20 + 380 * (x - x0) / ((x1 - x0) || 1), sy = y => 400 - 380 * (y - y0) / ((y1 - y0) || 1);
  const labels = [...new Set(items.map(i => i.label))];
  const colour = l => `hsl(${360 * labels.indexOf(l) / labels.length},60%,55%)`;
  const hit = new Set(res.results.map(r => r.item_id));
  let s = items.map(i => `<circle cx="${sx(i.xy[0])}" cy="${sy(i.xy[1])}" r="${hit.has(i.item_id) ? 6 : 3}"
    fill="${colour(i.label)}" stroke="${hit.has(i.item_id) ? '#000' : 'none'}"><title>${esc(i.item_id)}</title></circle>`).join('');
  s += `<path id="querymark" d="M${sx(res.query.xy[0]) - 7} ${sy(res.query.xy[1])}h14M${sx(res.query.xy[0])} ${sy(res.query.xy[1]) - 7}v14" stroke="#000" stroke-width="3"/>`;
  $('map').innerHTML = s;
}
async function recommend() {
  $('err').textContent = ''; $('status').textContent = '(searching)';
  const body = {embedder: $('embedder').value, k: +$('k').value,
                cross_modal: $('cross').checked, exclude_same_piece: $('same').checked};
  const f = $('file').files[0];
  if (f) {
    const buf = new Uint8Array(await f.arrayBuffer()); let bin = '';
    for (let i = 0; i < buf.length; i += 32768) bin += String.fromCharCode(...buf.subarray(i, i + 32768));
    body.upload = {name: f.name, data: btoa(bin)};
    $('qaudio').src = URL.createObjectURL(f);
  } else body.item = $('item').value;
  try {
    const res = await getJSON('/api/recommend', {method: 'POST', body: JSON.stringify(body)});
    $('results').innerHTML = res.results.map(r => `<tr class="result" data-path="${esc(r.path)}">
      <td>${r.rank}</td><td>${r.score.toFixed(4)}</td><td>${esc(r.label)}</td><td>${esc(r.path)}</td>
      <td><audio controls preload="none" src="/api/audio?embedder=${encodeURIComponent(res.map_embedder)}&item=${encodeURIComponent(r.item_id)}"></audio></td></tr>`).join('');
    $('status').textContent = `(${res.results.length})`;
    document.body.dataset.done = res.results.length;
    await drawMap(res.space, res);
  } catch (e) { $('err').textContent = e.message; $('status').textContent = ''; }
}
(async () => {
  try {
    spaces = await getJSON('/api/spaces');
    $('embedder').innerHTML = spaces.map(s => `<option>${esc(s.name)}</option>`).join('');
    if (params.get('embedder')) $('embedder').value = params.get('embedder');
    if (params.get('k')) $('k').value = params.get('k');
    $('cross').checked = params.get('cross') === '1';
    $('same').checked = params.get('same') === '1';
    await loadItems();
    $('embedder').onchange = loadItems; $('item').onchange = setQueryAudio;
    $('go').onclick = recommend;
    if (params.get('auto') === '1') await recommend();
  } catch (e) { $('err').textContent = e.message; }
})();
</script></body></html>
"""
