"""Text queries (issue 28): a tiny randomly initialised AudioLDM pipeline (``audioldm_toys``,
nothing downloaded) stands in for ``cvssp/audioldm-s-full-v2``; the command runs end to end on an
indexed demo corpus."""
import json

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("qdrant_edge")

import soundfile as sf

import cli
from audioldm_toys import SR, build_tiny_audioldm
from conftest import indexed_demo_corpus
from search import Recommender
from search import text_query as tq


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_audioldm(tmp_path_factory.mktemp("tiny_audioldm") / "pipe")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return indexed_demo_corpus(tmp_path_factory.mktemp("text_search"))


def _recommend(emb, *extra):
    return ["recommend", "--emb-dir", str(emb), "--embedder", "audio-stats", *extra]


def test_command_runs_end_to_end_same_and_cross_modal(tiny_model, corpus, tmp_path, capsys):
    _, emb = corpus
    saved = tmp_path / "heard.wav"
    request = ["--text", "calm solo piano, slow", "--text-model", str(tiny_model),
               "--text-seconds", "1.5", "--text-steps", "2", "--text-seed", "7", "--device", "cpu"]
    assert cli.main(_recommend(emb, *request, "--save-query", str(saved), "-k", "3",
                               "--json")) == 0
    out = capsys.readouterr()
    results = json.loads(out.out)
    info = sf.info(str(saved))
    assert (info.samplerate, info.frames, info.channels) == (SR, 24000, 1)
    assert str(saved) in out.err
    # searched exactly as the saved file would be as a file query
    api = Recommender(emb, embedder="audio-stats").recommend(saved, k=3)
    assert [(r["path"], r["score"]) for r in results] == [(r.path, r.score) for r in api]
    assert len(results) == 3 and all(r["path"].endswith(".wav") for r in results)
    assert cli.main(_recommend(emb, *request, "--cross-modal", "-k", "2", "--json")) == 0
    cross = json.loads(capsys.readouterr().out)
    assert len(cross) == 2 and all(r["path"].endswith(".mid") for r in cross)


def test_requested_length_and_rate_and_cache_hit_skips_the_pipeline(tiny_model, monkeypatch):
    calls = []
    real = tq.load_pipeline
    monkeypatch.setattr(tq, "load_pipeline", lambda *a, **k: calls.append(a) or real(*a, **k))
    kw = dict(model=str(tiny_model), seconds=1.0, steps=1, seed=1, device="cpu")
    first = tq.text_query_audio("a bright bell", **kw)
    # the pipeline makes 62 frames x 256 = 15872 samples for 1 s; the file has exactly 16000
    assert (sf.info(str(first)).frames, sf.info(str(first)).samplerate) == (16000, SR)
    assert json.loads(first.with_suffix(".json").read_text())["text"] == "a bright bell"
    before = first.read_bytes()
    assert tq.text_query_audio("a bright bell", **kw) == first and len(calls) == 1
    assert first.read_bytes() == before
    for change in ({"seed": 2}, {"steps": 2}, {"seconds": 0.5}):
        other = tq.text_query_audio("a bright bell", **{**kw, **change})
        assert other != first
    assert tq.text_query_audio("a dark bell", **{**kw, "seconds": 0.25}) != first
    assert len(calls) == 5


def test_seeds_reproduce_the_same_audio(tiny_model):
    pipe = tq.load_pipeline(tiny_model, "cpu")
    a, sr = tq.generate_waveform(pipe, "rain on a roof", seconds=0.5, steps=1, seed=3)
    b, _ = tq.generate_waveform(pipe, "rain on a roof", seconds=0.5, steps=1, seed=3)
    c, _ = tq.generate_waveform(pipe, "rain on a roof", seconds=0.5, steps=1, seed=4)
    assert sr == SR and a.shape == (8000,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() > 0 and not np.array_equal(a, c)


def test_local_identity_follows_the_weights(tiny_model, tmp_path):
    import shutil

    folder, identity = tq.resolve_text_model(str(tiny_model))
    assert folder == tiny_model and identity.startswith("local:") and "unet/" in identity
    copy = shutil.copytree(tiny_model, tmp_path / "copy")
    assert tq.resolve_text_model(str(copy))[1] == identity  # same content, same identity
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert tq.resolve_text_model(str(copy))[1] != identity
    (copy / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(tq.TextModelError, match="not a text-to-audio pipeline"):
        tq.resolve_text_model(str(copy))


@pytest.mark.parametrize("model", ["nobody/absent-audio-model", tq.DEFAULT_TEXT_MODEL])
def test_offline_absent_model_is_one_line_exit_2(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = tmp_path / "emb"
    assert cli.main(_recommend(emb, "--text", "a drum loop", "--text-model", model)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert repr(model) in err and "hf download" in err and "--text-model PATH" in err


@pytest.mark.parametrize("args, message", [
    ([], "exactly one"),
    (["song.wav", "--text", "x"], "exactly one"),
    (["song.wav", "--save-query", "q.wav"], "needs --text"),
    (["--text", "x", "--save-query", "q.mp3"], "WAV"),
    (["--text", "  "], "empty"),
    (["--text", "x", "--text-steps", "0"], "--text-steps"),
    (["--text", "x", "--text-seconds", "-1"], "--text-seconds"),
    (["--text", "x", "--text-seconds", "nan"], "--text-seconds"),
])
def test_bad_requests_are_usage_errors(args, message, tmp_path, capsys):
    assert cli.main(_recommend(tmp_path / "emb", *args)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
