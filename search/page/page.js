// The page of 'main.py serve'. Every name from the collection or an upload reaches the DOM
// through textContent, a property or setAttribute on a fixed attribute: never as HTML.
'use strict';
const $ = id => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
const params = new URLSearchParams(location.search);
let spaces = [], items = [], labels = [];
let textInfo = {available: false, message: ''};

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
async function getJSON(url, opts) {
  const r = await fetch(url, opts);
  let j = null;
  try { j = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new Error((j && j.error) || r.statusText);
  return j;
}
const q = obj => Object.entries(obj).map(([k, v]) => k + '=' + encodeURIComponent(v)).join('&');
const audioUrl = (space, item) => '/api/audio?' + q({embedder: space, item: item});
const colour = l => `hsl(${Math.round(360 * labels.indexOf(l) / Math.max(labels.length, 1))},60%,50%)`;
function space() { return spaces.find(s => s.name === $('embedder').value); }

function play(space_, item) {
  const a = $('player');
  a.src = audioUrl(space_, item);
  $('playing').textContent = item;
  a.play().catch(() => {});  // a browser may want a gesture first; the controls remain
}

function drawMap(name, pts, query) {
  const svg = $('map');
  svg.replaceChildren();
  $('mapname').textContent = name;
  const all = pts.map(p => p.xy).concat(query ? [query.xy] : []);
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = x => 20 + 420 * (x - x0) / ((x1 - x0) || 1);
  const sy = y => 440 - 420 * (y - y0) / ((y1 - y0) || 1);
  for (const p of pts) {
    const c = document.createElementNS(SVG, 'circle');
    c.setAttribute('cx', sx(p.xy[0])); c.setAttribute('cy', sy(p.xy[1]));
    c.setAttribute('r', p.hit ? 6 : 4); c.setAttribute('fill', colour(p.label));
    c.classList.add('point'); if (p.hit) c.classList.add('hit');
    c.dataset.item = p.item_id;
    const t = document.createElementNS(SVG, 'title');
    t.textContent = p.item_id + ' (' + p.label + ')';
    c.appendChild(t);
    c.addEventListener('click', () => { $('item').value = p.item_id; play(name, p.item_id); neighbours(); });
    svg.appendChild(c);
  }
  if (query) {
    const m = document.createElementNS(SVG, 'path');
    const [x, y] = [sx(query.xy[0]), sy(query.xy[1])];
    m.setAttribute('id', 'querymark');
    m.setAttribute('d', `M${x - 7} ${y}h14M${x} ${y - 7}v14`);
    m.setAttribute('stroke', '#d00'); m.setAttribute('stroke-width', '3');
    svg.appendChild(m);
  }
}

function legend() {
  const ul = $('legend');
  ul.replaceChildren();
  for (const l of labels) {
    const li = el('li'), dot = el('span');
    dot.style.background = colour(l);
    li.append(dot, document.createTextNode(l));
    ul.appendChild(li);
  }
}

async function loadSpace() {
  const s = space();
  items = await getJSON('/api/items?' + q({embedder: s.name}));
  labels = [...new Set(items.map(i => i.label))].sort();
  const list = $('items');
  list.replaceChildren(...items.map(i => { const o = document.createElement('option'); o.value = i.item_id; return o; }));
  const target = $('target');
  target.replaceChildren(...s.cross_targets.map(t => { const o = el('option', t); o.value = t; return o; }));
  $('cross').disabled = target.disabled = !s.cross_targets.length;
  legend();
  textControls();
  drawMap(s.name, items, null);
  document.body.dataset.points = items.length;
}

function options() {
  return {embedder: $('embedder').value, k: +$('k').value, cross_modal: $('cross').checked,
          target: $('cross').checked ? $('target').value : null,
          exclude_same_piece: $('same').checked};
}

async function show(res) {
  const tbody = $('results');
  tbody.replaceChildren();
  $('query').textContent = 'query: ' + res.query.name + ' in ' + res.space;
  for (const r of res.results) {
    const tr = el('tr', undefined, 'result');
    tr.dataset.path = r.path; tr.dataset.item = r.item_id;
    tr.append(el('td', String(r.rank)), el('td', r.score.toFixed(4)), el('td', r.label),
              el('td', r.path));
    const td = el('td');
    if (r.playable) {
      const a = document.createElement('audio');
      a.controls = true; a.preload = 'none'; a.src = audioUrl(res.map_embedder, r.item_id);
      td.appendChild(a);
    }
    tr.appendChild(td);
    tbody.appendChild(tr);
  }
  $('status').textContent = '(' + res.results.length + ')';
  let pts = items;
  if (res.space !== $('embedder').value)  // cross-modal: the target's items, aligned
    pts = await getJSON('/api/items?' + q({embedder: $('embedder').value, target: res.map_embedder}));
  const hit = new Set(res.results.map(r => r.item_id));
  drawMap(res.space, pts.map(p => Object.assign({}, p, {hit: hit.has(p.item_id)})), res.query);
  document.body.dataset.done = res.results.length;
}

async function neighbours() {
  $('err').textContent = ''; $('status').textContent = '(searching)';
  try {
    const body = Object.assign(options(), {item: $('item').value});
    await show(await getJSON('/api/recommend', {method: 'POST', body: JSON.stringify(body),
                                                headers: {'Content-Type': 'application/json'}}));
  } catch (e) { $('err').textContent = e.message; $('status').textContent = ''; }
}

async function upload() {
  const f = $('file').files[0];
  if (!f) { $('err').textContent = 'choose a file first'; return; }
  $('err').textContent = ''; $('status').textContent = '(embedding the upload)';
  const form = new FormData();
  for (const [k, v] of Object.entries(options())) if (v !== null) form.append(k, String(v));
  form.append('file', f);
  $('player').src = URL.createObjectURL(f); $('playing').textContent = f.name;
  try { await show(await getJSON('/api/upload', {method: 'POST', body: form})); }
  catch (e) { $('err').textContent = e.message; $('status').textContent = ''; }
}

// Text queries: the server says whether it has a text-to-audio model; the controls work for
// audio spaces only (the generated tune is audio). <body data-text> says which state they are in.
async function textSetup() {
  textInfo = await getJSON('/api/text');
  $('textstate').textContent = textInfo.available ? 'model: ' + textInfo.model
    : 'text queries unavailable: ' + textInfo.message;
  $('text').maxLength = textInfo.max_chars;
  $('tseconds').max = textInfo.max_seconds; $('tsteps').max = textInfo.max_steps;
  textControls();
}
function textControls() {
  const s = space();
  const audio = !!s && s.modality === 'audio';
  for (const id of ['text', 'tseconds', 'tsteps', 'tseed', 'tsend']) $(id).disabled = !(textInfo.available && audio);
  document.body.dataset.text = !textInfo.available ? 'unavailable' : audio ? 'ready' : 'audio spaces only';
}

async function textQuery() {
  const text = $('text').value.trim();
  if (!text) { $('err').textContent = 'describe a sound first'; return; }
  $('err').textContent = ''; $('status').textContent = '(generating the query audio: minutes on a CPU)';
  $('tsend').disabled = true;
  try {
    const body = Object.assign(options(), {text: text, seconds: +$('tseconds').value,
                                           steps: +$('tsteps').value, seed: +$('tseed').value});
    const res = await getJSON('/api/text', {method: 'POST', body: JSON.stringify(body),
                                            headers: {'Content-Type': 'application/json'}});
    $('player').src = res.query.audio;  // the tune searched with, served back by the server
    $('playing').textContent = 'generated: ' + text;
    await show(res);
  } catch (e) { $('err').textContent = e.message; $('status').textContent = ''; }
  finally { textControls(); }
}

(async () => {
  try {
    spaces = await getJSON('/api/spaces');
    $('embedder').replaceChildren(...spaces.map(s => { const o = el('option', s.name); o.value = s.name; return o; }));
    if (params.get('embedder')) $('embedder').value = params.get('embedder');
    if (params.get('k')) $('k').value = params.get('k');
    $('cross').checked = params.get('cross') === '1';
    $('same').checked = params.get('same') === '1';
    await textSetup();
    await loadSpace();
    $('embedder').onchange = loadSpace;
    $('go').onclick = neighbours; $('send').onclick = upload; $('tsend').onclick = textQuery;
    // The player's state on <body data-audio>: 'loaded' once the browser has decoded the header of
    // what the server rendered, 'playing' once it plays, 'error N' (a MediaError code) otherwise.
    const state = s => () => { if (document.body.dataset.audio !== 'playing') document.body.dataset.audio = s; };
    $('player').addEventListener('loadedmetadata', state('loaded'));
    $('player').addEventListener('playing', () => { document.body.dataset.audio = 'playing'; });
    $('player').addEventListener('error', () => { document.body.dataset.audio = 'error ' + ($('player').error || {}).code; });
    if (params.get('text')) {  // auto=1: act as a click on the text button (the browser test)
      $('text').value = params.get('text');
      if (params.get('seconds')) $('tseconds').value = params.get('seconds');
      if (params.get('steps')) $('tsteps').value = params.get('steps');
      if (params.get('auto') === '1') await textQuery();
    }
    if (params.get('item')) {
      $('item').value = params.get('item');
      // auto=1: act as a click on the item's point (the browser test drives the page so)
      const c = [...document.querySelectorAll('circle.point')].find(c => c.dataset.item === params.get('item'));
      if (params.get('auto') === '1' && c) c.dispatchEvent(new MouseEvent('click'));
    }
  } catch (e) { $('err').textContent = e.message; }
})();
