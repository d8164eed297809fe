"""The report's interactive maps (analysis/interactive.py): neighbours against a brute-force
reference, the embedded JSON round-trips and cannot be broken out of, audio excerpts are bounded,
and in a real headless Chromium (driven over the DevTools protocol on a pipe, stdlib only) hover
shows the file, a click plays the audio, lists the neighbours and marks the partner."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from analysis import interactive
from analysis.compare import run_analysis
from collection import EmbeddingSet
from conftest import write_midi, write_wav
from test_report import _chromium

CLASSES = ["blues", "jazz", "rock"]
# a real file name (no '/' inside a segment) that would break out of a naive page
EVIL = 'jazz/</script><img src=x onerror="window.__xss=1">&amp;"q\'.wav'


def _sets(root: Path, n_per: int = 6, seed: int = 0):
    """Two audio and one symbolic embedder over n_per items per class, paired by stem; the first
    jazz audio file is called EVIL. Audio files are real WAVs under root."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(CLASSES, n_per)
    n = len(labels)
    stems = [f"{c}/piece{i:02d}" for i, c in enumerate(labels)]
    audio_ids = [f"{s}.wav" for s in stems]
    audio_ids[n_per] = EVIL
    for i, item in enumerate(audio_ids):
        write_wav(root / item, seconds=4.0, sr=8000, freq=200.0 + 40 * i)
    for i, stem in enumerate(stems):  # 10 s of notes: the excerpt takes the first 5 s
        write_midi(root / f"{stem}.mid", pitches=[48 + (i + 2 * j) % 24 for j in range(20)],
                   note_seconds=0.5)
    centres = rng.normal(size=(len(CLASSES), 8)) * 4
    latent = centres[np.repeat(np.arange(len(CLASSES)), n_per)] + rng.normal(size=(n, 8))
    out = []
    for name, mod, ids in (("audio-a", "audio", audio_ids), ("audio-b", "audio", audio_ids),
                           ("midi-a", "symbolic", [f"{s}.mid" for s in stems])):
        V = latent @ rng.normal(size=(8, 10)) + 0.3 * rng.normal(size=(n, 10))
        out.append(EmbeddingSet(name, mod, ids, labels, stems, V.astype(np.float32),
                                paths=[str(root / i) for i in ids]))
    return out


def _data_block(page: str) -> dict:
    m = re.search(r"<script type='application/json' id='imap-data'>(.*?)</script>", page, re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


def test_cosine_top_k_matches_brute_force():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 6))
    X[7] = 0.0  # a zero vector: similarity 0 to all
    idx, dist = interactive.cosine_top_k(X, k=5, chunk=16)  # chunks cross the data
    norms = np.linalg.norm(X, axis=1)
    for i in range(len(X)):
        sims = [(0.0 if norms[i] == 0 or norms[j] == 0 else X[i] @ X[j] / (norms[i] * norms[j]), j)
                for j in range(len(X)) if j != i]
        want = sorted(sims, key=lambda t: (-t[0], t[1]))[:5]
        assert idx[i].tolist() == [j for _, j in want]
        np.testing.assert_allclose(dist[i], [1 - s for s, _ in want], atol=1e-6)
    idx2, _ = interactive.cosine_top_k(X[:3], k=5)
    assert idx2.shape == (3, 2)
    with pytest.raises(ValueError, match="non-finite"):
        interactive.cosine_top_k(np.array([[np.nan, 1.0], [1.0, 1.0]]))


def test_fragment_json_round_trips_and_cannot_be_broken_out_of(tmp_path):
    sets = _sets(tmp_path / "data")
    coords = {"pca": {s.name: np.arange(2 * len(s), dtype=float).reshape(-1, 2) / 7
                      for s in sets}}
    maps = interactive.maps_html(coords, sets, report_dir=tmp_path / "out")
    frag = maps.fragment
    assert "<img" not in frag.replace("&lt;img", "")  # the name is never markup
    assert frag.count("</script>") == 1  # only the data block's own end tag
    data = _data_block(frag)
    items = data["items"]
    audio = [i for i, m in enumerate(items["modality"]) if m == "audio"]
    assert [items["file"][i] for i in audio] == sets[0].ids.tolist()  # one item per (modality, id)
    assert EVIL in items["file"]
    assert items["pair"][:len(sets[0])] == sets[0].pair_ids.tolist()
    assert items["label"][:len(sets[0])] == sets[0].labels.tolist()
    # a MIDI item links (without --report-audio embed) to the audio file of its pair
    midi = [i for i, m in enumerate(items["modality"]) if m == "symbolic"]
    assert midi and all(items["audio_from"][i] == "pair" for i in midi)
    for i in midi:
        target = (tmp_path / "out" / _unquote(items["audio"][i])).resolve()
        partner = items["pair"].index(items["pair"][i])  # the audio item comes first
        assert items["modality"][partner] == "audio"
        assert target == (tmp_path / "data" / items["file"][partner]).resolve()
    # links are relative to the report folder and lead to the file
    for i in audio:
        target = (tmp_path / "out" / _unquote(items["audio"][i])).resolve()
        assert target == (tmp_path / "data" / items["file"][i]).resolve()
    assert [s["embedder"] for s in data["spaces"]] == [s.name for s in sets]
    m0 = data["maps"][0]
    np.testing.assert_allclose(m0["x"], coords["pca"]["audio-a"][:, 0], rtol=1e-4)
    want_nb, _ = interactive.cosine_top_k(sets[0].vectors, k=5)
    assert data["spaces"][0]["nb"] == want_nb.tolist()
    assert maps.bundle.count("<script>") == 2 and "Plotly" in maps.bundle
    with pytest.raises(ValueError, match="coordinates of shape"):
        interactive.maps_html({"pca": {"audio-a": np.zeros((3, 2))}}, sets,
                              report_dir=tmp_path)


def _unquote(url: str) -> str:
    from urllib.parse import unquote
    return unquote(url)


def test_embedded_excerpts_are_short_and_bounded(tmp_path, monkeypatch):
    import soundfile as sf
    src = write_wav(tmp_path / "long.wav", seconds=9.0, sr=44100, channels=2)
    uri = interactive.audio_excerpt_uri(src)
    mime, b64 = re.match(r"data:(audio/\w+);base64,(.*)", uri).groups()
    y, sr = sf.read(io.BytesIO(base64.b64decode(b64)))
    assert sr == interactive.EXCERPT_SR and y.ndim == 1
    assert abs(len(y) / sr - interactive.EXCERPT_SECONDS) < 0.1
    sets = _sets(tmp_path / "data", n_per=3)
    coords = {"pca": {s.name: np.zeros((len(s), 2)) for s in sets}}
    monkeypatch.setattr(interactive, "EMBED_BUDGET_BYTES", 3 * len(uri) // 2)
    data, notes = interactive.map_data(coords, sets, report_dir=tmp_path, audio="embed")
    srcs = [a for a in data["items"]["audio"] if a is not None]
    embedded = [a for a in srcs if a.startswith("data:")]
    assert 1 <= len(embedded) < len(srcs)  # the budget stopped embedding ...
    assert sum(map(len, embedded)) <= interactive.EMBED_BUDGET_BYTES
    assert any("linked, not embedded" in n for n in notes)  # ... and says so
    with pytest.raises(ValueError, match="audio must be one of"):
        interactive.map_data(coords, sets, report_dir=tmp_path, audio="stream")


def test_midi_items_play_rendered_excerpts_or_nothing_without_a_pair(tmp_path):
    import soundfile as sf
    sets = _sets(tmp_path / "data", n_per=2)
    midi_set = sets[2]
    midi_set.pair_ids[0] = ""  # one MIDI file without a pair
    coords = {"pca": {s.name: np.zeros((len(s), 2)) for s in sets}}
    data, notes = interactive.map_data(coords, sets, report_dir=tmp_path, audio="embed")
    items = data["items"]
    midi = [i for i, m in enumerate(items["modality"]) if m == "symbolic"]
    assert [items["audio_from"][i] for i in midi] == ["render"] * len(midi)
    mime, b64 = re.match(r"data:(audio/\w+);base64,(.*)", items["audio"][midi[1]]).groups()
    y, sr = sf.read(io.BytesIO(base64.b64decode(b64)))
    assert sr == interactive.EXCERPT_SR  # the first 5 s of 10 s of notes, and not silent
    assert abs(len(y) / sr - interactive.EXCERPT_SECONDS) < 0.05 and np.abs(y).max() > 0.1
    # its pitch: the first note (pitch 49, 138.6 Hz) is the strongest partial of the first 0.4 s
    spectrum = np.abs(np.fft.rfft(y[:int(0.4 * sr)]))
    assert abs(np.argmax(spectrum) * sr / int(0.4 * sr) - 138.6) < 4
    assert not notes
    data, _ = interactive.map_data(coords, sets, report_dir=tmp_path, audio="link")
    row = data["items"]["file"].index(midi_set.ids[0])
    assert data["items"]["audio"][row] is None and data["items"]["audio_from"][row] is None
    (tmp_path / "data" / midi_set.ids[1]).write_bytes(b"MThd nonsense")  # unreadable: the pair
    data, notes = interactive.map_data(coords, sets, report_dir=tmp_path, audio="embed")
    row = data["items"]["file"].index(midi_set.ids[1])
    assert data["items"]["audio_from"][row] == "pair"
    assert any("could not be read or rendered" in n for n in notes)


def _high_fd(fd: int) -> int:
    import fcntl
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class _DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, exe: str, profile: Path):
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()
        # above 10, so that moving them to 3 and 4 cannot overwrite one with the other
        to_child_r, from_child_w = (_high_fd(to_child_r), _high_fd(from_child_w))
        # bash (dash refuses fds above 9) moves the pipe ends to the fds 3 and 4 chromium expects, then becomes chromium
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_child_r} 4>&{from_child_w}', exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--autoplay-policy=no-user-gesture-required", "--remote-debugging-pipe",
             "--window-size=1280,1400", f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_child_r, from_child_w), stdout=subprocess.DEVNULL,
            stderr=open(profile.parent / "chromium.log", "wb"))
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf, self._id, self.session, self.events = b"", 0, None, []
        target = next(t for t in self.call("Target.getTargets")["targetInfos"]
                      if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=target["targetId"],
                                 flatten=True)["sessionId"]

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        t_end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    assert "error" not in reply, reply
                    return reply["result"]
                if "method" in reply:
                    self.events.append(reply)
            assert time.monotonic() < t_end, f"no answer to {method}"
            chunk = os.read(self._r, 1 << 16)
            assert chunk, "chromium closed the pipe"
            self._buf += chunk

    def js(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def wait_for(self, expr: str, timeout: float = 60):
        t_end = time.monotonic() + timeout
        while not self.js(expr):
            assert time.monotonic() < t_end, f"never true: {expr}"
            time.sleep(0.2)

    def mouse(self, kind: str, x: float, y: float):
        extra = {"button": "left", "clickCount": 1} if kind != "mouseMoved" else {}
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def close(self):
        self.proc.kill()
        self.proc.wait(timeout=20)
        os.close(self._r)
        os.close(self._w)


# the viewport position of the point of item FILE in plot P (scrolled into view first)
_POINT_XY = """(function(){
  var P = embcompareMaps.plots[%d], D = JSON.parse(document.getElementById('imap-data').textContent);
  var it = D.items.file.indexOf(%s), r = P.space.item.indexOf(it);
  P.div.scrollIntoView({block: 'center'});
  var fl = P.div._fullLayout, bb = P.div.getBoundingClientRect();
  return [bb.left + fl._size.l + fl.xaxis.l2p(P.map.x[r]),
          bb.top + fl._size.t + fl.yaxis.l2p(P.map.y[r])];
})()"""


# the player took a source it can decode: playing, or (headless Chromium without an audio
# device may hold playback) at least its metadata loaded; no load error either way
_PLAYABLE = ("(function(){var a = document.getElementById('imap-audio');"
             "return a.error === null && a.src !== '' && "
             "((!a.paused && a.currentTime > 0) || a.readyState >= 1);})()")


def _click_item(cdp, plot: int, file: str) -> None:
    x, y = cdp.js(_POINT_XY % (plot, json.dumps(file)))
    cdp.mouse("mousePressed", x, y)
    cdp.mouse("mouseReleased", x, y)


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interactive")
    sets = _sets(tmp / "data")
    out = tmp / "out"
    run_analysis(sets, out, plot_dir=out / "plots", cos_dir=out / "cos", var_dir=out / "var",
                 title="interactive", methods=("pca",), seed=0, n_bootstrap=5,
                 n_permutations=9)
    return out, sets


def test_report_holds_the_maps_once_after_the_summary(report_run):
    out, sets = report_run
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("id='imap-data'") == 1 and page.count("Plotly.newPlot") == 1
    assert page.index("id='summary'") < page.index("id='interactive-maps'") < page.index(
        "id='per-embedder'")
    assert len(_data_block(page)["maps"]) == len(sets)
    assert (out / "plots" / "all_embedders_pca.png").stat().st_size > 5000  # static maps stay
    assert (out / "plots" / "all_embedders_pca.svg").exists()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=['\"]?https?:", page)  # offline


def test_hover_click_play_neighbours_partner_in_chromium(report_run, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium on this machine: the browser test of the report is skipped")
    out, sets = report_run
    cdp = _DevTools(exe, tmp_path / "profile")
    try:
        cdp.call("Page.enable")
        cdp.call("Network.enable")
        cdp.call("Page.navigate", url=(out / "report.html").resolve().as_uri())
        cdp.wait_for("window.embcompareMaps && embcompareMaps.plots.length === 3 && "
                     "document.querySelectorAll('.imap-plot .scatterlayer .point').length > 0")
        assert cdp.js("window.__xss === undefined && !document.querySelector('img[src=x]')")
        x, y = cdp.js(_POINT_XY % (0, json.dumps(EVIL)))
        cdp.mouse("mouseMoved", x, y)
        cdp.wait_for("getComputedStyle(document.getElementById('imap-tip')).display === 'block'",
                     timeout=10)
        tip = cdp.js("document.getElementById('imap-tip').textContent")
        assert f"file: {EVIL}" in tip and "label: jazz" in tip and "pair: jazz/piece06" in tip
        cdp.mouse("mousePressed", x, y)
        cdp.mouse("mouseReleased", x, y)
        cdp.wait_for("document.querySelectorAll('#imap-neighbours li').length === 5", timeout=10)
        # playing: not paused, no load error (which would pause it), and time moves on
        cdp.wait_for("document.getElementById('imap-audio').currentTime > 0.2", timeout=10)
        state = cdp.js("(function(){var a = document.getElementById('imap-audio');"
                       "return {paused: a.paused, error: a.error && a.error.code, src: a.src};})()")
        assert state["paused"] is False and state["error"] is None, state
        assert Path(_unquote(state["src"][len("file://"):])) == (out.parent / "data" / EVIL)
        want_nb = interactive.cosine_top_k(sets[0].vectors, k=5)[0][sets[0].ids.tolist()
                                                                    .index(EVIL)]
        shown = cdp.js("Array.from(document.querySelectorAll('#imap-neighbours li'))"
                       ".map(function(li){return li.textContent;})")
        assert [s.split(" (")[0] for s in shown] == [sets[0].ids[j] for j in want_nb]
        # the partner (same pair, MIDI) is starred in the symbolic map, the same file in audio-b
        marked = cdp.js("embcompareMaps.plots.map(function(P){var t = P.div.data[P.nTraces-1];"
                        "return [t.x.length, t.x[0], t.y[0]];})")
        row = sets[2].pair_ids.tolist().index(sets[0].pair_ids[sets[0].ids.tolist().index(EVIL)])
        midi_xy = cdp.js(f"[embcompareMaps.plots[2].map.x[{row}], embcompareMaps.plots[2].map.y[{row}]]")
        assert [m[0] for m in marked] == [1, 1, 1] and marked[2][1:] == midi_xy
        partners = cdp.js("document.getElementById('imap-partners').textContent")
        assert "midi-a (symbolic): partner jazz/piece06.mid" in partners
        # a MIDI point plays the audio file of its pair (no --report-audio embed)
        _click_item(cdp, 2, "rock/piece12.mid")
        cdp.wait_for("document.body.getAttribute('data-imap-playing') === 'pair'", timeout=10)
        cdp.wait_for(_PLAYABLE, timeout=10)
        src = cdp.js("document.getElementById('imap-audio').src")
        assert Path(_unquote(src[len("file://"):])) == out.parent / "data" / "rock/piece12.wav"
        assert "playing the audio of its pair" in cdp.js(
            "document.getElementById('imap-selected').textContent")
        # the legend toggles a class in every map
        lx, ly = cdp.js("(function(){var b = embcompareMaps.plots[0].div.querySelector("
                        "'.legend .traces').getBoundingClientRect();"
                        "return [b.left + 10, b.top + b.height / 2];})()")
        cdp.mouse("mousePressed", lx, ly)
        cdp.mouse("mouseReleased", lx, ly)
        cdp.wait_for("embcompareMaps.plots.every(function(P){return P.div.data[0].visible === "
                     "'legendonly';})", timeout=10)
        # offline: everything the page asked for was on disk or in the page
        urls = [e["params"]["request"]["url"] for e in cdp.events
                if e["method"] == "Network.requestWillBeSent"]
        assert urls and all(u.split(":", 1)[0] in ("file", "data") for u in urls), urls
    finally:
        cdp.close()


def test_embedded_excerpt_plays_in_chromium(tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium on this machine: the browser test of the report is skipped")
    sets = _sets(tmp_path / "data", n_per=3)
    coords = {"pca": {s.name: np.random.default_rng(1).normal(size=(len(s), 2)) for s in sets}}
    maps = interactive.maps_html(coords, sets, report_dir=tmp_path / "out", audio="embed")
    page = tmp_path / "out" / "page.html"
    page.parent.mkdir()
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{maps}"
                    "</body></html>", encoding="utf-8")
    (tmp_path / "data").rename(tmp_path / "moved")  # the excerpt needs no file
    cdp = _DevTools(exe, tmp_path / "profile")
    try:
        cdp.call("Page.navigate", url=page.resolve().as_uri())
        cdp.wait_for("window.embcompareMaps && embcompareMaps.plots.length === 3")
        x, y = cdp.js(_POINT_XY % (1, json.dumps("blues/piece01.wav")))
        cdp.mouse("mousePressed", x, y)
        cdp.mouse("mouseReleased", x, y)
        cdp.wait_for("document.getElementById('imap-audio').currentTime > 0.2", timeout=10)
        assert cdp.js("(function(){var a = document.getElementById('imap-audio');"
                      "return !a.paused && a.error === null && "
                      "a.src.indexOf('data:audio/ogg;base64,') === 0;})()")
        assert "blues/piece01.wav" in cdp.js("document.getElementById('imap-selected').textContent")
        # a MIDI point plays its own notes, rendered into the page
        _click_item(cdp, 2, "jazz/piece04.mid")
        cdp.wait_for("document.body.getAttribute('data-imap-playing') === 'render'", timeout=10)
        cdp.wait_for(_PLAYABLE, timeout=10)
        assert cdp.js("document.getElementById('imap-audio').src.indexOf('data:audio/') === 0")
        assert "jazz/piece04.mid" in cdp.js("document.getElementById('imap-selected').textContent")
    finally:
        cdp.close()
