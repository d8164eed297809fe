"""``main.py serve``: the JSON API in-process, and the page driven in headless Chromium (skipped
where Chromium is missing): a query shows k results equal to the command line's."""
import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from html import unescape
from pathlib import Path

import pytest

pytest.importorskip("qdrant_edge")

import cli
from conftest import ROOT, indexed_demo_corpus
from search.serve import make_server


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    return indexed_demo_corpus(tmp_path_factory.mktemp("serve"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, data=None):
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read()


def _cli_json(emb, query, *extra, capsys):
    assert cli.main(["recommend", str(query), "--emb-dir", str(emb), *extra, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_api_answers_like_the_cli_and_keeps_uploads_out(indexed, tmp_path, capsys):
    root, emb = indexed
    # the CLI first: while the page runs it holds the shards (one process per shard)
    want = _cli_json(emb, root / "rock" / "rock_00.wav", "--embedder", "audio-stats", "-k",
                     "4", "--cross-modal", capsys=capsys)
    server = make_server(emb, port=0)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert _get(base + "/")[0] == 200
        spaces = json.loads(_get(base + "/api/spaces")[1])
        assert {s["name"] for s in spaces} == {"audio-stats", "midi-stats"}
        body = json.dumps({"embedder": "audio-stats", "item": "rock/rock_00.wav", "k": 4,
                           "cross_modal": True}).encode()
        res = json.loads(_get(base + "/api/recommend", body)[1])
        assert [r["path"] for r in res["results"]] == [w["path"] for w in want]
        assert len(res["query"]["xy"]) == 2 and all("xy" in r for r in res["results"])
        before = sorted(p.name for p in root.rglob("*"))
        up = {"name": "mine.mid", "data": base64.b64encode(
            (root / "jazz" / "jazz_01.mid").read_bytes()).decode()}
        res = json.loads(_get(base + "/api/recommend", json.dumps(
            {"embedder": "midi-stats", "upload": up, "k": 3}).encode())[1])
        assert len(res["results"]) == 3
        assert str(root / "jazz" / "jazz_01.mid") not in [r["path"] for r in res["results"]]
        assert sorted(p.name for p in root.rglob("*")) == before  # nothing written there
        status, wav = _get(base + "/api/audio?embedder=midi-stats&item=jazz/jazz_01.mid")
        assert status == 200 and wav[:4] == b"RIFF"
    finally:
        server.shutdown()
        server.server_close()
        server.spaces.close()  # the page holds its shards open; free them for the next test


def _chromium():
    for c in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(c) or (c if Path(c).is_file() else None)
        if p:
            return p
    return None


def test_page_in_headless_chromium_shows_the_cli_results(indexed, tmp_path, capsys):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium on this machine: the browser test of 'serve' is skipped")
    root, emb = indexed
    k = 5
    want = _cli_json(emb, root / "electronic" / "electronic_00.mid", "--embedder", "midi-stats",
                     "-k", str(k), capsys=capsys)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "main.py", "serve", "--emb-dir", str(emb),
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        t_end = time.monotonic() + 60
        while True:
            try:
                if _get(f"http://127.0.0.1:{port}/")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < t_end and proc.poll() is None, "serve did not come up"
            time.sleep(0.2)
        url = (f"http://127.0.0.1:{port}/?embedder=midi-stats&item=electronic/electronic_00.mid"
               f"&k={k}&auto=1")
        dom = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000",
             "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        # (the page's script holds the row template too: skip it)
        shown = [unescape(p) for p in re.findall(r'<tr class="result" data-path="([^"$]*)"', dom)]
        assert len(shown) == k, dom[-2000:]
        assert shown == [w["path"] for w in want]
        assert re.search(r'<path id="querymark" d="M[-0-9]', dom)  # the query is on the map
    finally:
        proc.terminate()
        proc.wait(timeout=10)
