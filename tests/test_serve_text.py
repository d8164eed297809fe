"""The ``serve`` page's text queries (issue 28), through Starlette's TestClient with the tiny
random AudioLDM pipeline of ``audioldm_toys``: a description gives results and a playable tune
that is exactly what was searched with; the same request twice generates once; bad input, a
symbolic space, a missing model and a stuck generation are each a 4xx/5xx JSON answer that blocks
no other query; only tunes this server answered with are served back."""
import json
import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("qdrant_edge")
pytest.importorskip("starlette")

import soundfile as sf

from audioldm_toys import SR, build_tiny_audioldm
from conftest import indexed_demo_corpus
from search import Recommender
from search.serve import MAX_TEXT_CHARS, close, generate_text_query, make_app

BASE = "http://127.0.0.1:8501"
REQUEST = {"embedder": "audio-stats", "k": 3, "text": "calm solo piano, slow", "seconds": 1.0,
           "steps": 2, "seed": 7}


def counting_generate(*args):
    """``generate_text_query`` that also appends a line to ``<dest>.calls`` (args[1] is dest):
    the test counts generations, which run in a child process."""
    os.makedirs(os.path.dirname(args[1]), exist_ok=True)
    with open(f"{args[1]}.calls", "a") as fh:
        fh.write("1\n")
    return generate_text_query(*args)


def _slow_generate(*args):
    time.sleep(60)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_audioldm(tmp_path_factory.mktemp("tiny_audioldm") / "pipe")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return indexed_demo_corpus(tmp_path_factory.mktemp("serve_text"))


@pytest.fixture
def app_for(corpus):
    apps = []

    def make(**options):
        apps.append(make_app(corpus[1], **options))
        return apps[-1]
    yield make
    for app in apps:
        close(app)


def _client(app):
    from starlette.testclient import TestClient

    return TestClient(app, base_url=BASE)


@pytest.mark.slow  # two child processes load torch and diffusers: ~12 s here
def test_text_query_answers_a_playable_tune_searched_as_a_file_and_generates_once(
        corpus, tiny_model, app_for, tmp_path):
    _, emb = corpus
    app = app_for(text_model=str(tiny_model), device="cpu", generate=counting_generate)
    with _client(app) as c:
        info = c.get("/api/text").json()
        assert info["available"] and info["model"] == str(tiny_model)
        r = c.post("/api/text", json=REQUEST)
        assert r.status_code == 200, r.text
        first = r.json()
        q = first["query"]
        assert q["generated"] is True and q["name"] == REQUEST["text"] and len(q["xy"]) == 2
        tune = c.get(q["audio"])
        assert tune.status_code == 200 and tune.headers["content-type"] == "audio/wav"
        heard = tmp_path / "heard.wav"
        heard.write_bytes(tune.content)
        assert (sf.info(str(heard)).samplerate, sf.info(str(heard)).frames) == (SR, SR)
        # the results are those of the served tune as a file query
        want = Recommender(emb, embedder="audio-stats").recommend(heard, k=3)
        assert [x["path"] for x in first["results"]] == [w.path for w in want]
        np.testing.assert_allclose([x["score"] for x in first["results"]],
                                   [w.score for w in want], rtol=1e-5)
        again = c.post("/api/text", json=REQUEST).json()
        assert again["query"]["generated"] is False and again["query"]["audio"] == q["audio"]
        assert again["results"] == first["results"]
        cross = c.post("/api/text", json={**REQUEST, "cross_modal": True, "k": 2})
        assert cross.status_code == 200, cross.text
        assert [x["path"][-4:] for x in cross.json()["results"]] == [".mid", ".mid"]
        assert cross.json()["query"]["generated"] is False
        calls = list(app.state.text.cache.glob("*.calls"))
        assert len(calls) == 1 and calls[0].read_text() == "1\n"  # three answers, one generation


def test_only_tunes_this_server_answered_with_are_served(tiny_model, app_for):
    app = app_for(text_model=str(tiny_model), device="cpu")
    stranger = app.state.text.cache / ("ab" * 16 + ".wav")  # in the cache, never answered
    stranger.parent.mkdir(parents=True, exist_ok=True)
    sf.write(stranger, np.zeros(1600, dtype=np.float32), SR)
    with _client(app) as c:
        for key in ("ab" * 16, "ab" * 32, "../../../etc/passwd", str(stranger), ""):
            r = c.get("/api/text-audio", params={"key": key})
            assert (r.status_code, r.json()) == (404, {"error": "not found"})
        assert c.get("/api/text-audio").status_code == 404


@pytest.mark.parametrize("change, status, message", [
    ({"text": ""}, 400, "text"),
    ({"text": "   "}, 400, "text"),
    ({"text": None}, 400, "text"),
    ({"text": ["a"]}, 400, "text"),
    ({"text": "x" * (MAX_TEXT_CHARS + 1)}, 400, "over 500 characters"),
    ({"seconds": 0}, 400, "seconds"),
    ({"seconds": 31}, 400, "seconds"),
    ({"seconds": "5"}, 400, "seconds"),
    ({"seconds": True}, 400, "seconds"),
    ({"steps": 0}, 400, "steps"),
    ({"steps": 201}, 400, "steps"),
    ({"steps": 2.5}, 400, "steps"),
    ({"seed": -1}, 400, "seed"),
    ({"seed": 2 ** 64}, 400, "seed"),
    ({"k": 0}, 400, "k must be"),
    ({"cross_modal": "yes"}, 400, "cross_modal"),
    ({"embedder": "midi-stats"}, 400, "audio space"),
    ({"embedder": "../index"}, 404, "not found"),
])
def test_bad_text_queries_are_4xx_json_and_generate_nothing(tiny_model, app_for, change, status,
                                                            message):
    app = app_for(text_model=str(tiny_model), device="cpu", generate=_slow_generate)
    with _client(app) as c:
        r = c.post("/api/text", json={**REQUEST, **change})
        assert r.status_code == status and message in r.json()["error"], r.text
    assert not list(app.state.text.cache.glob("*.wav"))


def test_text_bodies_and_origins_are_checked(tiny_model, app_for):
    app = app_for(text_model=str(tiny_model), device="cpu", generate=_slow_generate)
    with _client(app) as c:
        for body in (b"{not json", b"[1]", b"null", b'{"seconds": NaN, "text": "a", '
                                                    b'"embedder": "audio-stats"}'):
            r = c.post("/api/text", content=body, headers={"Content-Type": "application/json"})
            assert 400 <= r.status_code < 500 and "error" in r.json(), body
        r = c.post("/api/text", content=json.dumps({**REQUEST, "pad": "x" * 20000}),
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        r = c.post("/api/text", json=REQUEST, headers={"Origin": "http://attacker.example"})
        assert r.status_code == 403
        r = c.post("/api/text", content=json.dumps(REQUEST),
                   headers={"Content-Type": "text/plain"})
        assert r.status_code == 415


@pytest.mark.parametrize("offline_env", [True, False])
def test_no_text_model_is_a_4xx_with_the_one_line_reason(app_for, tmp_path, monkeypatch,
                                                         offline_env):
    model = "nobody/absent-audio-model"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    if not offline_env:  # online: the server still looks in the cache only
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("EMBCOMPARE_OFFLINE", "0")
    app = app_for(text_model=model, generate=_slow_generate)
    with _client(app) as c:
        info = c.get("/api/text").json()
        assert info["available"] is False and len(info["message"].splitlines()) == 1
        assert repr(model) in info["message"] and "hf download" in info["message"]
        if not offline_env:
            assert "the server does not download models" in info["message"]
        r = c.post("/api/text", json=REQUEST)
        assert (r.status_code, r.json()) == (409, {"error": info["message"]})
    off = app_for(text_model=None)
    with _client(off) as c:
        assert "off" in c.get("/api/text").json()["message"]
        assert c.post("/api/text", json=REQUEST).status_code == 409


def test_a_stuck_generation_is_cut_off_and_blocks_no_other_query(tiny_model, app_for):
    app = app_for(text_model=str(tiny_model), generate=_slow_generate, text_timeout_s=4)
    with _client(app) as c:
        answers = {}
        t = threading.Thread(target=lambda: answers.setdefault(
            "text", c.post("/api/text", json=REQUEST).status_code))
        t0 = time.monotonic()
        t.start()
        time.sleep(0.5)
        r = c.post("/api/recommend", json={"embedder": "midi-stats", "k": 2,
                                           "item": "rock/rock_00.mid"})
        assert r.status_code == 200 and time.monotonic() - t0 < 3.5  # before the cut-off
        busy = c.post("/api/text", json={**REQUEST, "seed": 99})
        assert busy.status_code == 503 and "try again" in busy.json()["error"]
        t.join(60)
        assert answers["text"] == 504 and time.monotonic() - t0 < 30
    assert not list(app.state.text.cache.glob("*.wav"))


@pytest.mark.slow
def test_the_page_queries_with_a_text_in_chromium(corpus, tiny_model, tmp_path):
    """The text box in headless Chromium: a description typed (auto=1 clicks the button) lists
    neighbours and puts the generated tune in the player, served back by the server."""
    import re
    import subprocess
    import sys
    import urllib.request

    from conftest import ROOT
    from test_serve import _chromium, _free_port

    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium on this machine: the browser test of the text box is skipped")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "main.py", "serve", "--emb-dir", str(corpus[1]),
                             "--port", str(port), "--text-model", str(tiny_model), "--device",
                             "cpu"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        t_end = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/text", timeout=5) as r:
                    assert json.loads(r.read())["available"]
                    break
            except OSError:
                assert time.monotonic() < t_end and proc.poll() is None, "serve did not come up"
                time.sleep(0.2)
        page = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=60000",
             "--dump-dom", f"http://127.0.0.1:{port}/?embedder=audio-stats&k=3&seconds=1&"
                           f"steps=1&auto=1&text=a%20bright%20bell"],
            capture_output=True, text=True, timeout=180).stdout
        assert re.search(r'<body[^>]*data-text="ready"', page), page[:600]
        assert len(re.findall(r'<tr class="result"', page)) == 3, page[-2000:]
        assert re.search(r'<audio id="player" controls="" src="/api/text-audio\?key=[0-9a-f]{64}"',
                         page), page[:1500]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
    assert "Traceback" not in out and "text queries: " in out, out
