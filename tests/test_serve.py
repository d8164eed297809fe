"""``main.py serve``: the API answers as the command line does, and holds against the hostile
requests of issue 25 (each test below failed on the hand-written http.server page); the page
driven in headless Chromium (skipped where Chromium is missing) shows the map before any query,
plays a clicked point and lists its neighbours, and survives its shard files being truncated.

The corpus is the demo's with two traps: a file named to break out of an HTML attribute, and a
symlink to a file outside the collection."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import cli
from conftest import ROOT
from search.serve import close, make_app, make_server, make_work_dir

HOSTILE = """x" tabindex=1 autofocus onfocus="document.title='pwned'" y=".wav"""
BASE = "http://127.0.0.1:8501"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    import soundfile as sf

    from collection import embed_dataset
    from collection.demo_corpus import build_demo_corpus
    from embedders import get_embedder
    from search import build_indexes

    base = tmp_path_factory.mktemp("serve")
    root, emb = base / "corpus", base / "emb"
    build_demo_corpus(root, n_per_genre=2, synth="builtin")
    (root / "ballad" / "ballad_01.wav").rename(root / "ballad" / HOSTILE)
    secret = base / "secret.wav"  # outside the collection
    sf.write(secret, 0.1 * np.sin(np.linspace(0, 2000, 22050)), 22050)
    (root / "rock" / "outside.wav").symlink_to(secret)
    embed_dataset(root, [get_embedder("audio-stats"), get_embedder("midi-stats")],
                  emb_dir=emb, out_dir=base / "out", progress=False)
    build_indexes(emb)
    return root, emb


@pytest.fixture(scope="module")
def client(indexed):
    from starlette.testclient import TestClient

    app = make_app(indexed[1])
    with TestClient(app, base_url=BASE) as c:
        yield c
    close(app)


def _cli_json(emb, query, *extra, capsys):
    assert cli.main(["recommend", str(query), "--emb-dir", str(emb), *extra, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_api_answers_like_the_cli_and_keeps_uploads_out(indexed, client, capsys):
    root, emb = indexed
    want = _cli_json(emb, root / "rock" / "rock_00.wav", "--embedder", "audio-stats", "-k",
                     "4", "--cross-modal", capsys=capsys)
    assert client.get("/").status_code == 200
    spaces = client.get("/api/spaces").json()
    assert {s["name"] for s in spaces} == {"audio-stats", "midi-stats"}
    res = client.post("/api/recommend", json={"embedder": "audio-stats", "k": 4,
                                              "item": "rock/rock_00.wav", "cross_modal": True})
    assert res.status_code == 200, res.text
    res = res.json()
    assert [r["path"] for r in res["results"]] == [w["path"] for w in want]
    assert len(res["query"]["xy"]) == 2 and all("xy" in r for r in res["results"])
    # the map of the aligned target space has every result on it
    aligned = client.get("/api/items", params={"embedder": "audio-stats",
                                               "target": "midi-stats"}).json()
    assert {r["item_id"] for r in res["results"]} <= {i["item_id"] for i in aligned}
    before = sorted(p.name for p in root.rglob("*"))
    midi = (root / "jazz" / "jazz_01.mid").read_bytes()
    up = client.post("/api/upload", data={"embedder": "midi-stats", "k": "3"},
                     files={"file": ("mine.mid", midi, "audio/midi")})
    assert up.status_code == 200, up.text
    got = up.json()
    want = _cli_json(emb, root / "jazz" / "jazz_01.mid", "--embedder", "midi-stats", "-k", "3",
                     capsys=capsys)
    assert [r["path"] for r in got["results"]] == [w["path"] for w in want]
    assert got["query"]["name"] == "mine.mid"
    assert sorted(p.name for p in root.rglob("*")) == before  # nothing written there
    assert not list((client.app.state.work / "uploads").iterdir())
    wav = client.get("/api/audio", params={"embedder": "midi-stats", "item": "jazz/jazz_01.mid"})
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
    assert len(client.app.state.spaces._rendered) >= 1  # rendered once, then cached


def test_hostile_names_are_json_data_and_the_page_builds_no_html(indexed, client):
    hostile_id = f"ballad/{HOSTILE}"
    items = client.get("/api/items", params={"embedder": "audio-stats"})
    assert items.headers["content-type"] == "application/json"
    assert hostile_id in [i["item_id"] for i in items.json()]
    page = client.get("/")
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]
    assert "<script>" not in page.text  # no inline script: only /static/page.js
    js = client.get("/static/page.js").text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in js
    res = client.post("/api/recommend", json={"embedder": "audio-stats", "item": hostile_id,
                                              "k": 2})
    assert res.status_code == 200 and res.json()["query"]["name"] == hostile_id


@pytest.mark.parametrize("params", [
    {"embedder": "musicnn__to__midi-stats/../../../evil", "item": "x"},
    {"embedder": "audio-stats__to__midi-stats", "item": "rock/rock_00.mid"},
    {"embedder": "../index", "item": "rock/rock_00.wav"},
    {"embedder": "nope", "item": "rock/rock_00.wav"},
    {"embedder": "audio-stats", "item": "../../../../../etc/passwd"},
    {"embedder": "audio-stats", "item": "/etc/passwd"},
    {"embedder": "audio-stats", "item": "rock/outside.wav"},  # a symlink leaving the collection
    {"embedder": "audio-stats"},
])
def test_unknown_or_escaping_names_get_one_neutral_404(client, params):
    r = client.get("/api/audio", params=params)
    assert (r.status_code, r.json()) == (404, {"error": "not found"})
    r = client.post("/api/recommend", json={**params, "k": 1})
    assert (r.status_code, r.json()) == (404, {"error": "not found"})


def test_a_symlink_out_of_the_collection_is_neither_listed_nor_served(indexed, client):
    # (scanning follows symlinks today, so the item is in the export; the page still hides it)
    for space in ("audio-stats",):
        ids = [i["item_id"] for i in client.get("/api/items", params={"embedder": space}).json()]
        assert "rock/outside.wav" not in ids and "rock/rock_00.wav" in ids


def test_host_and_origin_are_checked(client):
    ok = {"embedder": "midi-stats", "item": "rock/rock_00.mid", "k": 1}
    assert client.get("/api/spaces", headers={"Host": "attacker.example"}).status_code == 400
    assert client.get("/api/spaces", headers={"Host": "localhost:8501"}).status_code == 200
    r = client.post("/api/recommend", json=ok, headers={"Origin": "http://attacker.example"})
    assert r.status_code == 403
    r = client.post("/api/recommend", json=ok, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = client.post("/api/recommend", content=json.dumps(ok),
                    headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = client.post("/api/recommend", json=ok, headers={"Origin": BASE})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("body", [
    b"[1, 2]", b"{not json", b"\xff\xfe", b'"upload"', b"null",
    b'{"embedder": "midi-stats", "item": "rock/rock_00.mid", "k": 1e20}',
    b'{"embedder": "midi-stats", "item": "rock/rock_00.mid", "k": "ten"}',
    b'{"embedder": "midi-stats", "item": "rock/rock_00.mid", "k": true}',
    b'{"embedder": "midi-stats", "item": "rock/rock_00.mid", "k": 100000}',
    b'{"embedder": "midi-stats", "item": "rock/rock_00.mid", "cross_modal": "yes"}',
    b'{"embedder": "midi-stats", "item": "rock/rock_00.mid", "label": 5}',
    b'{"embedder": ["midi-stats"], "item": "rock/rock_00.mid"}',
    b'{"embedder": "midi-stats", "item": {"a": 1}}',
    b'{"embedder": "midi-stats", "upload": "AAAA"}',
])
def test_malformed_queries_are_4xx_json(client, body):
    r = client.post("/api/recommend", content=body,
                    headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500 and "error" in r.json()


@pytest.mark.parametrize("name", ["..", "../../x.mid", "/etc/passwd", "", "a\\..\\b.mid",
                                  "x\" onfocus=\"y.mid"])
def test_an_uploads_name_is_never_a_path(indexed, client, name):
    root, _ = indexed
    midi = (root / "jazz" / "jazz_01.mid").read_bytes()
    r = client.post("/api/upload", data={"embedder": "midi-stats", "k": "2"},
                    files={"file": (name, midi, "audio/midi")})
    assert r.status_code < 500
    if r.status_code == 200:  # shown as sent (httpx writes a quote as %22), used as nothing
        assert r.json()["query"]["name"] in (name, name.replace('"', "%22"), "upload")
    assert not list((client.app.state.work / "uploads").iterdir())
    assert str(client.app.state.work) not in r.text


def test_upload_form_errors_are_4xx(client):
    r = client.post("/api/upload", data={"embedder": "midi-stats"})
    assert r.status_code == 415  # a form must be multipart
    r = client.post("/api/upload", files={"embedder": (None, "midi-stats")})
    assert r.status_code == 400 and r.json()["error"] == "no file in the upload"
    r = client.post("/api/upload", files={"embedder": (None, "x" * 100_000),
                                          "file": ("a.mid", b"MThd")})
    assert r.status_code == 400  # a form field over its size
    r = client.post("/api/upload", content=b"--x\r\nbroken", headers={
        "Content-Type": "multipart/form-data; boundary=x"})
    assert 400 <= r.status_code < 500


def test_too_long_an_upload_is_refused_before_embedding(indexed, tmp_path):
    import soundfile as sf
    from starlette.testclient import TestClient

    silent = tmp_path / "silence.flac"  # small on disk, long in time (issue 25: 30 min, 308 KB)
    sf.write(silent, np.zeros(22050 * 20, dtype=np.int16), 22050, format="FLAC")
    app = make_app(indexed[1], max_upload_seconds=5)
    try:
        with TestClient(app, base_url=BASE) as c:
            t0 = time.monotonic()
            r = c.post("/api/upload", data={"embedder": "audio-stats"},
                       files={"file": ("s.flac", silent.read_bytes(), "audio/flac")})
            assert r.status_code == 413 and "20 s" in r.json()["error"]
            assert time.monotonic() - t0 < 30
    finally:
        close(app)


def _slow_embed(*args):
    time.sleep(60)


def _crashing_embed(*args):
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_slow_upload_is_cut_off_and_blocks_no_other_query(indexed):
    from starlette.testclient import TestClient

    app = make_app(indexed[1], embed=_slow_embed, upload_timeout_s=4)
    try:
        with TestClient(app, base_url=BASE) as c:
            answers = {}

            def upload():
                answers["upload"] = c.post(
                    "/api/upload", data={"embedder": "midi-stats"},
                    files={"file": ("a.mid", b"MThd", "audio/midi")}).status_code
            t = threading.Thread(target=upload)
            t0 = time.monotonic()
            t.start()
            time.sleep(0.5)
            r = c.post("/api/recommend", json={"embedder": "midi-stats", "k": 2,
                                               "item": "rock/rock_00.mid"})
            assert r.status_code == 200 and time.monotonic() - t0 < 3.5  # before the cut-off
            t.join(60)
            assert answers["upload"] == 504 and time.monotonic() - t0 < 30
            assert not list((app.state.work / "uploads").iterdir())
    finally:
        close(app)


def test_a_crashing_upload_is_a_4xx_and_leaves_no_file(indexed):
    from starlette.testclient import TestClient

    app = make_app(indexed[1], embed=_crashing_embed)
    try:
        with TestClient(app, base_url=BASE) as c:
            r = c.post("/api/upload", data={"embedder": "midi-stats"},
                       files={"file": ("a.mid", b"MThd", "audio/midi")})
            assert r.status_code == 422
            assert not list((app.state.work / "uploads").iterdir())
    finally:
        close(app)


def test_work_folders_of_dead_servers_are_removed_at_start(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    left = tmp_path / f"{dead}-abcd" / "uploads" / "x.flac"  # a crash mid-upload left it
    left.parent.mkdir(parents=True)
    left.write_bytes(b"x")
    alive = tmp_path / f"{os.getpid()}-live"
    alive.mkdir()
    work = make_work_dir(tmp_path)
    assert not left.parent.parent.exists() and alive.exists() and work.is_dir()


@contextmanager
def _uvicorn(emb, **options):
    port = _free_port()
    server = make_server(emb, port=port, **options)
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    t_end = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < t_end and t.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        t.join(15)
        close(server.app)


def _raw(port: int, head: bytes, body: bytes = b"", *, wait: float = 20) -> tuple[int, float]:
    """Send bytes on a socket, read the answer's status line: (status, seconds)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(head + body)
        data = b""
        while b"\r\n" not in data:
            try:
                chunk = s.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not chunk:
                break
            data += chunk
    m = re.match(rb"HTTP/1\.1 (\d+)", data)
    return (int(m.group(1)) if m else 0), time.monotonic() - t0


def _post_head(path: str, port: int, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


def test_body_limits_count_the_bytes_read_and_stalls_time_out(indexed):
    limit = 100_000
    with _uvicorn(indexed[1], max_upload_bytes=limit, read_timeout_s=1.5,
                  head_timeout_s=1.5) as port:
        # a head that never ends: the connection is closed (no answer) after the deadline
        status, took = _raw(port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-a:".encode())
        assert status == 0 and took < 10
        big = b"{" + b" " * (3 * limit) + b"}"
        # no Content-Length: chunked; the count, not the header, refuses it
        chunked = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n"
                           for c in (big[i:i + 8192] for i in range(0, len(big), 8192)))
        status, _ = _raw(port, _post_head("/api/recommend", port,
                                          "Transfer-Encoding: chunked\r\n"), chunked + b"0\r\n\r\n")
        assert status == 413
        for bad in ("-1", "abc", "1e9"):
            status, _ = _raw(port, _post_head("/api/recommend", port,
                                              f"Content-Length: {bad}\r\n"), big)
            assert 400 <= status < 500, bad
        status, _ = _raw(port, _post_head("/api/recommend", port,
                                          f"Content-Length: {3 * limit}\r\n"))
        assert status == 413
        # a body that stops coming: answered (and the connection dropped) after the timeout
        status, took = _raw(port, _post_head("/api/recommend", port, "Content-Length: 1000\r\n"),
                            b'{"embedder"')
        assert status == 408 and took < 10
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/spaces", timeout=10) as r:
            assert r.status == 200  # and the server goes on


def _hostile_pass(port: int, root: Path) -> None:
    """Hostile requests on the real server: every one a 4xx (or a dropped connection), none
    serving a file from outside the collection or naming a server path."""
    h = f"Host: 127.0.0.1:{port}\r\n"
    j = h + "Content-Type: application/json\r\n"
    reqs = [f"GET /api/audio?embedder=midi-stats__to__audio-stats/../../../../etc&item=passwd "
            f"HTTP/1.1\r\n{h}\r\n",
            f"GET /static/..%2F..%2Fserve.py HTTP/1.1\r\n{h}\r\n",
            f"GET /static/%2e%2e/serve.py HTTP/1.1\r\n{h}\r\n",
            f"GET /../../../../etc/passwd HTTP/1.1\r\n{h}\r\n",
            f"GET /api/items?embedder=audio-stats&target=../../x HTTP/1.1\r\n{h}\r\n",
            f"GET /api/items?embedder=audio-stats&embedder=x HTTP/1.1\r\n{h}\r\n",
            "GET /api/spaces HTTP/1.1\r\nHost: attacker.example\r\n\r\n",
            "GET /api/spaces HTTP/1.1\r\n\r\n",
            f"POST /api/recommend HTTP/1.1\r\n{h}Content-Type: text/plain\r\n"
            f"Origin: http://attacker.example\r\nContent-Length: 2\r\n\r\n{{}}",
            f"POST /api/recommend HTTP/1.1\r\n{j}Content-Length: -1\r\n\r\n{{}}",
            f"POST /api/recommend HTTP/1.1\r\n{j}Content-Length: x\r\n\r\n{{}}",
            f"POST /api/recommend HTTP/1.1\r\n{j}Content-Length: 6\r\n\r\n[1, 2]",
            f"POST /api/recommend HTTP/1.1\r\n{j}Content-Length: 4\r\n\r\nnull",
            f"POST /api/upload HTTP/1.1\r\n{h}Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: 8\r\n\r\n--b\r\nxx\r\n",
            f"POST /api/upload HTTP/1.1\r\n{h}Content-Type: multipart/form-data\r\n"
            f"Content-Length: 2\r\n\r\nxx",
            f"DELETE /api/recommend HTTP/1.1\r\n{h}\r\n",
            f"GET /api/audio?embedder=audio-stats&item=rock/outside.wav HTTP/1.1\r\n{h}\r\n"]
    for raw in reqs:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(raw.encode())
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        m = re.match(rb"HTTP/1\.1 (\d+)", data)
        assert m is None or 400 <= int(m.group(1)) < 500, (raw, data[:300])
        assert b"root:" not in data and str(root).encode() not in data, raw
        assert b"RIFF" not in data and b"/tmp/" not in data, raw


def _chromium():
    for c in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(c) or (c if Path(c).is_file() else None)
        if p:
            return p
    return None


def _attributes(html: str) -> set[tuple[str, str]]:
    """Every (attribute, value) of every element of a page, as a parser reads them."""
    from html.parser import HTMLParser

    found = set()

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.update((a, v or "") for a, v in attrs)

    Collect().feed(html)
    return found


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read()


@pytest.mark.slow
def test_page_in_chromium_and_a_truncated_shard(indexed, tmp_path, capsys):
    """The page: one point per item before any query, a click plays the (MIDI) item and lists the
    CLI's neighbours, the hostile name adds no attribute. Then every shard file of the served
    index is truncated: the server answers from its own copy, with no crash."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium on this machine: the browser test of 'serve' is skipped")
    root, emb0 = indexed
    emb = tmp_path / "emb"
    shutil.copytree(emb0, emb, symlinks=True)
    k = 5
    want = _cli_json(emb, root / "electronic" / "electronic_00.mid", "--embedder", "midi-stats",
                     "-k", str(k), capsys=capsys)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "main.py", "serve", "--emb-dir", str(emb),
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        t_end = time.monotonic() + 90
        while True:
            try:
                if _get(f"http://127.0.0.1:{port}/")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < t_end and proc.poll() is None, "serve did not come up"
            time.sleep(0.2)
        n_items = len(json.loads(
            _get(f"http://127.0.0.1:{port}/api/items?embedder=audio-stats")[1]))

        def dom(query: str) -> str:
            return subprocess.run(
                [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--autoplay-policy=no-user-gesture-required",
                 # audio in the browser process: headless then plays (to no device)
                 "--disable-features=AudioServiceOutOfProcess",
                 f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
                 "--dump-dom", f"http://127.0.0.1:{port}/?{query}"],
                capture_output=True, text=True, timeout=120).stdout

        first = dom("embedder=audio-stats")  # no query: the map is there
        assert len(re.findall(r'<circle[^>]*class="point', first)) == n_items, first[-2000:]
        attrs = _attributes(first)  # the hostile name is a value, never attributes
        assert not {"onfocus", "autofocus", "tabindex", "y"} & {a for a, _ in attrs}
        assert ("data-item", f"ballad/{HOSTILE}") in attrs
        assert "pwned" not in re.search(r"<title>(.*?)</title>", first).group(1)
        # rendered once ahead (cached): headless dumps the DOM on virtual time, which a slow
        # render on this loaded machine can outlast
        _get(f"http://127.0.0.1:{port}/api/audio?embedder=midi-stats&item=electronic/"
             f"electronic_00.mid")
        query = f"embedder=midi-stats&item=electronic/electronic_00.mid&k={k}&auto=1"
        page = dom(query)
        if not re.search(r'<body[^>]*data-audio="', page):
            # headless Chromium dumps the DOM when its virtual-time budget is spent; on a loaded
            # machine the media pipeline can still be starting then (seen once in CI): once more
            page = dom(query)
        shown = [p.replace("&quot;", '"').replace("&amp;", "&") for p in
                 re.findall(r'<tr class="result" data-path="([^"]*)"', page)]
        assert shown == [w["path"] for w in want], page[-2000:]
        assert re.search(r'<path id="querymark" d="M[-0-9]', page)  # the query is on the map
        # the clicked MIDI item, rendered to WAV by the server, was decoded by the browser and
        # asked to play: 'playing' needs an audio pipeline, which headless CI may lack, so the
        # decoded header ('loaded') passes too, and a media error fails
        assert re.search(r'<body[^>]*data-audio="(loaded|playing)"', page), page[:500]
        assert re.search(r'<audio id="player" controls="" src="/api/audio\?embedder=midi-stats'
                         r'&amp;item=electronic%2Felectronic_00.mid"', page)
        _hostile_pass(port, root)
        # truncate every file of the served shards (issue 25: a bus error killed the server)
        for f in (emb / "index").rglob("*"):
            if f.is_file() and ".shard-" in str(f):
                with open(f, "r+b") as fh:
                    fh.truncate(0)  # pages mapped past the end: SIGBUS
        url = f"http://127.0.0.1:{port}/api/recommend"
        req = urllib.request.Request(url, method="POST", headers={
            "Content-Type": "application/json"}, data=json.dumps(
            {"embedder": "midi-stats", "item": "jazz/jazz_00.mid", "k": 3}).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200 and len(json.loads(r.read())["results"]) == 3
        assert proc.poll() is None
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
    assert "Traceback" not in out, out
