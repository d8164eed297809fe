"""hf-audio: a tiny random wav2vec 2.0 built and saved here (nothing downloaded) must give
transformers' own hidden states; windows must tile the frame grid; weights resolve offline."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import save_tiny_wav2vec2, write_wav

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from embedders import ConfigurationError, InputError, WeightsError, get_embedder  # noqa: E402
from embedders.hf_audio import Window, conv_frames, conv_geometry, plan_windows  # noqa: E402

SR = 16000
FIELD, STRIDE = 400, 320  # wav2vec 2.0's front-end


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A wav2vec 2.0 with 2 layers of width 32 and random weights, as save_pretrained writes it."""
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("tiny_wav2vec2"), sr=SR)


@pytest.fixture(scope="module")
def reference(tiny_model):
    """transformers' own forward: hidden_states[layer] of one input, [shape=(n_frames, 32)]."""
    model = transformers.AutoModel.from_pretrained(str(tiny_model)).eval()
    extractor = transformers.AutoFeatureExtractor.from_pretrained(str(tiny_model))

    def forward(signal, layer=-1):
        inputs = extractor(signal, sampling_rate=SR, return_tensors="pt")
        with torch.inference_mode():
            return model(**inputs, output_hidden_states=True).hidden_states[layer][0].numpy()
    return forward


def noisy_tone(path, *, seconds, sr, seed=0):
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), 0.4 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size), sr)
    return path


# -- the model's numbers ----------------------------------------------------------------------

@pytest.mark.parametrize("layer", [-1, 0, 1])
def test_equals_transformers_forward_after_resampling(tiny_model, reference, tmp_path, layer):
    wav = noisy_tone(tmp_path / "a.wav", seconds=2.3, sr=22050)
    emb = get_embedder("hf-audio", model=str(tiny_model), layer=layer, window_seconds=30.0)
    signal, sr_in, _ = emb.load().read_signal(str(wav))
    assert sr_in == 22050 and signal.shape[0] == int(2.3 * 22050) * SR // 22050
    got = emb.compute(str(wav))
    want = reference(signal, layer)
    assert got.frames.shape == want.shape == (conv_frames(signal.shape[0], receptive_field=FIELD,
                                                          stride=STRIDE), 32)
    np.testing.assert_allclose(got.frames, want, atol=1e-5, rtol=0)
    assert got.info["resampler"] == "soxr" and got.info["model_rate"] == SR


def test_equals_transformers_forward_at_model_rate_stereo(tiny_model, reference, tmp_path):
    import soundfile as sf

    wav = write_wav(tmp_path / "s.wav", seconds=1.5, sr=SR, channels=2, subtype="FLOAT")
    mono = sf.read(str(wav), dtype="float64", always_2d=True)[0].mean(axis=1).astype(np.float32)
    got = get_embedder("hf-audio", model=str(tiny_model), window_seconds=30.0).compute(str(wav))
    np.testing.assert_allclose(got.frames, reference(mono), atol=1e-5, rtol=0)
    assert got.info["resampler"] == "none" and got.info["channels"] == 2


def test_clip_is_mean_and_timestamps_follow_the_grid(tiny_model, tmp_path):
    wav = noisy_tone(tmp_path / "b.wav", seconds=3.3, sr=SR)
    got = get_embedder("hf-audio", model=str(tiny_model), window_seconds=1.0).compute(str(wav))
    n = conv_frames(int(3.3 * SR), receptive_field=FIELD, stride=STRIDE)
    assert got.frames.shape == (n, 32)
    np.testing.assert_allclose(got.clip, got.frames.astype(np.float64).mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(got.timestamps, 0.0125 + 0.02 * np.arange(n))


@pytest.mark.parametrize("hop_seconds", [None, 0.5, 0.31])
def test_windowed_frames_are_each_windows_own_forward(tiny_model, reference, hop_seconds):
    signal = np.random.default_rng(1).standard_normal(int(2.7 * SR)).astype(np.float32)
    emb = get_embedder("hf-audio", model=str(tiny_model), window_seconds=1.0,
                       hop_seconds=hop_seconds)
    frames, times = emb.embed_signal(signal)
    plan = plan_windows(signal.shape[0], window=SR,
                        hop=None if hop_seconds is None else int(round(hop_seconds * SR)),
                        receptive_field=FIELD, stride=STRIDE)
    assert len(plan) > 2
    expected = np.concatenate([reference(signal[w.start:w.stop])[w.keep_start:w.keep_stop]
                               for w in plan])
    np.testing.assert_allclose(frames, expected, atol=1e-5, rtol=0)
    assert frames.shape[0] == conv_frames(signal.shape[0], receptive_field=FIELD, stride=STRIDE)


def test_batching_windows_does_not_change_results(tiny_model):
    signal = np.random.default_rng(2).standard_normal(int(4.2 * SR)).astype(np.float32)
    one = get_embedder("hf-audio", model=str(tiny_model), window_seconds=1.0, batch_size=1)
    many = get_embedder("hf-audio", model=str(tiny_model), window_seconds=1.0, batch_size=3)
    np.testing.assert_allclose(one.embed_signal(signal)[0], many.embed_signal(signal)[0],
                               atol=1e-5, rtol=0)


# -- windows on known inputs --------------------------------------------------------------------

def test_conv_geometry_of_wav2vec2():
    assert conv_geometry((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)) == (400, 320)
    assert conv_frames(399, receptive_field=400, stride=320) == 0
    assert conv_frames(400, receptive_field=400, stride=320) == 1
    assert conv_frames(16000, receptive_field=400, stride=320) == 49


def test_default_hop_makes_consecutive_blocks():
    # window 16000 samples = 49 frames; default hop = 49 frames = 15680 samples
    plan = plan_windows(40000, window=16000, hop=None, receptive_field=400, stride=320)
    assert plan == [Window(0, 16000, 0, 49, 0, 49), Window(15680, 31680, 49, 49, 0, 49),
                    Window(31360, 40000, 98, 26, 0, 26)]
    assert conv_frames(40000, receptive_field=400, stride=320) == 124 == 49 + 49 + 26


def test_a_hop_of_one_window_is_capped_so_no_frame_is_skipped():
    # hop = 16000 samples would be 50 frames, one more than a window computes
    assert plan_windows(40000, window=16000, hop=16000, receptive_field=400, stride=320) == \
        plan_windows(40000, window=16000, hop=None, receptive_field=400, stride=320)


def test_overlapping_windows_keep_the_frames_nearest_their_centre():
    # windows of 10 frames (stride 1, field 1) every 4 frames over 20 frames: centres 4.5, 8.5,
    # 12.5, then a last window of frames 12..19 (centre 15.5)
    plan = plan_windows(20, window=10, hop=4, receptive_field=1, stride=1)
    assert [(w.first_frame, w.n_frames) for w in plan] == [(0, 10), (4, 10), (8, 10), (12, 8)]
    kept = [(w.first_frame + w.keep_start, w.first_frame + w.keep_stop) for w in plan]
    # frame 6: |6-4.5| = 1.5 < |6-8.5| = 2.5, so the first window; frame 7 the second; frame 14
    # is 1.5 from both 12.5 and 15.5: a tie, so the earlier window
    assert kept == [(0, 7), (7, 11), (11, 15), (15, 20)]


def test_short_last_window_and_one_frame_signals():
    # one frame more than a window: the last window holds only that frame
    plan = plan_windows(16000 + 320, window=16000, hop=None, receptive_field=400, stride=320)
    assert [(w.start, w.stop, w.n_frames, w.keep_start, w.keep_stop) for w in plan] == \
        [(0, 16000, 49, 0, 49), (15680, 16320, 1, 0, 1)]
    assert plan_windows(399, window=16000, hop=None, receptive_field=400, stride=320) == []
    assert plan_windows(400, window=16000, hop=None, receptive_field=400, stride=320) == \
        [Window(0, 400, 0, 1, 0, 1)]
    with pytest.raises(ValueError, match="shorter than one frame"):
        plan_windows(4000, window=300, hop=None, receptive_field=400, stride=320)


@pytest.mark.parametrize("seed", range(20))
def test_kept_frames_tile_the_grid_exactly_once(seed):
    rng = np.random.default_rng(seed)
    stride = int(rng.integers(1, 8))
    field = stride + int(rng.integers(0, 12))
    window = field + int(rng.integers(0, 200))
    n = int(rng.integers(0, 2000))
    hop = None if seed % 3 == 0 else int(rng.integers(1, window + 1))
    plan = plan_windows(n, window=window, hop=hop, receptive_field=field, stride=stride)
    covered = []
    for w in plan:
        assert w.n_frames == conv_frames(w.stop - w.start, receptive_field=field, stride=stride)
        assert w.start == w.first_frame * stride and w.stop <= n
        covered += list(range(w.first_frame + w.keep_start, w.first_frame + w.keep_stop))
    assert covered == list(range(conv_frames(n, receptive_field=field, stride=stride)))


# -- weights, options, bad input ----------------------------------------------------------------

def test_offline_missing_model_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = get_embedder("hf-audio", model="someone/not-cached-model")
    with pytest.raises(WeightsError) as err:
        emb.load()
    msg = str(err.value)
    assert "someone/not-cached-model" in msg and "HF_HUB_OFFLINE" in msg
    assert str(tmp_path / "empty_hub") in msg and "hf download someone/not-cached-model" in msg
    assert "\n" not in msg


def test_missing_local_folder(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        get_embedder("hf-audio", model=str(tmp_path / "nowhere")).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no weight file"):
        get_embedder("hf-audio", model=str(tmp_path / "empty")).load()


def test_model_from_the_hf_cache_is_keyed_by_its_commit(tiny_model, tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-wav2vec2"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = get_embedder("hf-audio", model="someone/tiny-wav2vec2").load()
    assert emb.weights_identity() == f"someone/tiny-wav2vec2@{commit}"
    key = emb.cache_options()
    assert key["model"] == "someone/tiny-wav2vec2" and key["weights_identity"].endswith(commit)
    assert "trust_remote_code" not in key and "revision" not in key and "precision" not in key


def test_local_folder_is_keyed_by_its_files(tiny_model, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    a = get_embedder("hf-audio", model=str(tiny_model)).load().cache_options()
    b = get_embedder("hf-audio", model=str(copy)).load().cache_options()
    assert a == b and "model" not in a  # the path does not matter, the files do
    assert "model.safetensors:" in a["weights_identity"]
    cfg = json.loads((copy / "preprocessor_config.json").read_text())
    cfg["do_normalize"] = False  # changes the numbers, so it must change the key
    (copy / "preprocessor_config.json").write_text(json.dumps(cfg))
    c = get_embedder("hf-audio", model=str(copy)).load().cache_options()
    assert c != a


def test_remote_code_is_off_by_default(tmp_path):
    folder = tmp_path / "needs_code"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "mert_model",
        "auto_map": {"AutoConfig": "configuration_MERT.MERTConfig",
                     "AutoModel": "modeling_MERT.MERTModel"}}))
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    emb = get_embedder("hf-audio", model=str(folder))
    assert emb.options["trust_remote_code"] is False
    with pytest.raises(ConfigurationError, match=r"--set hf-audio\.trust_remote_code=true"):
        emb.load()


def test_options_and_text_values():
    from embedders import get_embedder_class

    cls = get_embedder_class("hf-audio")
    assert cls.coerce_option("trust_remote_code", "true") is True
    assert cls.coerce_option("layer", "-1") == -1
    assert cls.coerce_option("window_seconds", "5") == 5.0
    assert cls.coerce_option("hop_seconds", "none") is None
    for bad in ({"layer": 1.5}, {"window_seconds": 0}, {"batch_size": 0},
                {"precision": "float16"}, {"window_seconds": 2.0, "hop_seconds": 3.0},
                {"trust_remote_code": "yes"}):
        with pytest.raises(ConfigurationError):
            get_embedder("hf-audio", **bad)


def test_layer_out_of_range(tiny_model):
    with pytest.raises(ConfigurationError, match="3 hidden states"):
        get_embedder("hf-audio", model=str(tiny_model), layer=3).load()
    get_embedder("hf-audio", model=str(tiny_model), layer=-3).load()


def test_bad_and_too_short_audio_are_input_errors(tiny_model, tmp_path):
    emb = get_embedder("hf-audio", model=str(tiny_model))
    short = write_wav(tmp_path / "short.wav", seconds=0.02, sr=SR)  # 320 samples < 400
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    results = dict(emb.embed_many([str(short), str(junk)]))
    assert isinstance(results[str(short)], InputError)
    assert "shorter than one frame" in results[str(short)].reason
    assert isinstance(results[str(junk)], InputError)
    for exc in results.values():
        assert "\n" not in exc.reason


def test_bfloat16_is_opt_in_close_and_keyed(tiny_model):
    signal = np.random.default_rng(3).standard_normal(int(1.2 * SR)).astype(np.float32)
    f32 = get_embedder("hf-audio", model=str(tiny_model))
    bf16 = get_embedder("hf-audio", model=str(tiny_model), precision="bfloat16")
    a, b = f32.embed_signal(signal)[0], bf16.embed_signal(signal)[0]
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99
    assert "precision" not in f32.cache_options()
    assert bf16.cache_options()["precision"] == "bfloat16"


def test_a_subclass_names_itself_in_its_messages(tmp_path):
    """A project's own embedder built on hf-audio gives advice with its own name."""
    from embedders.hf_audio import HFAudioEmbedder

    class MyAudio(HFAudioEmbedder):  # not registered: a subclass as a project would write
        name = "my-audio"

    with pytest.raises(ConfigurationError, match="^my-audio layer must be an integer"):
        MyAudio(layer="x")
    with pytest.raises(WeightsError) as err:
        MyAudio(model=str(tmp_path / "no-such-model")).load()
    assert "my-audio" in str(err.value) and "hf-audio" not in str(err.value)
