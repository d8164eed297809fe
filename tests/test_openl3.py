"""OpenL3 port: parity with openl3 0.4.2 (random-weight fixtures), weights resolution, options.

The reference outputs in ``fixtures/openl3`` are a subset of the shared fixture set (see
``fixtures/openl3/build_fixtures.py``); the 18.8 MB random weight file is rebuilt once per session
by ``fixtures/openl3/make_weights.py`` and its tensors are checked against the SHA-256 of the
original file.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES

from embedders import ConfigurationError, InputError, WeightsError, get_embedder

FIX = FIXTURES / "openl3"
sys.path.insert(0, str(FIX))
import make_weights  # noqa: E402

DOC = json.loads((FIX / "cases_subset.json").read_text())
CASES = {c["id"]: c for c in DOC["cases"]}
FE_CASES = {c["key"]: c for c in DOC["frontend_cases"]}

#: Loose bound for precision="bfloat16" (random weights, mel128, 1 frame): measured mean |diff|
#: ~0.07 against float32 with mean |e| ~17 (about 0.5 %); cosine stays above 0.9999.
BF16_MEAN_REL = 0.02
BF16_MIN_COS = 0.999


@pytest.fixture(scope="session")
def expected():
    return np.load(FIX / "expected_subset.npz")


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    layers = make_weights.make_tensors()
    assert make_weights.tensor_sha256(layers) == make_weights.TENSOR_SHA256
    path = tmp_path_factory.mktemp("openl3_weights") / "openl3_audio_random_weights.h5"
    make_weights.write_h5(path, layers)
    assert make_weights.h5_tensor_sha256(path) == make_weights.TENSOR_SHA256
    return path


def metrics(got, ref):
    got = np.asarray(got, np.float64).reshape(len(got), -1)
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    d = np.abs(got - ref)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    return d.max(), d.mean(), cos.min()


def check(got, ref, tol):
    mx, mean, cos = metrics(got, ref)
    assert mx <= tol["max_abs"], (mx, tol)
    assert mean <= tol["mean_abs"], (mean, tol)
    assert cos >= tol["min_cos"], (cos, tol)


def run_case(weights_file, expected, cid, **extra):
    c = CASES[cid]
    emb = get_embedder("openl3", weights=str(weights_file), input_repr=c["input_repr"],
                       embedding_size=c["embedding_size"], hop_size=c["hop_size"],
                       center=c["center"], device="cpu", **extra)
    out = emb.compute(FIX / c["file"])
    assert out.frames.shape == (c["n_frames"], c["embedding_size"])
    assert out.frames.dtype == np.float32
    np.testing.assert_allclose(out.timestamps, np.arange(c["n_frames"]) * c["hop_size"],
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.clip, out.frames.astype(np.float64).mean(0), rtol=1e-5,
                               atol=1e-5)
    return c, out


# ------------------------------------------------------------------------------------------------
# parity with the reference
@pytest.mark.parametrize("cid", [
    "joplin_mapleleaf_48k_mono__mel256__6144__hop0.5__nocenter",
    "joplin_mapleleaf_48k_mono__mel256__512__hop0.5__nocenter",
    "joplin_mapleleaf_48k_mono__mel128__512__hop0.1__center",
    "joplin_mapleleaf_48k_mono__mel128__6144__hop0.1__center",
    "joplin_mapleleaf_48k_mono__linear__512__hop0.5__nocenter",
    "joplin_mapleleaf_48k_mono__linear__6144__hop0.5__nocenter",
    "corelli_op3no1_44k1_stereo__mel128__512__hop0.5__nocenter",
    "corelli_op3no1_44k1_stereo__mel128__6144__hop0.5__nocenter",
    "schubert_lindenbaum_22k05_mono__linear__512__hop0.5__nocenter",
    "handel_lascia_48k_stereo_short__mel256__6144__hop0.1__center",
    "handel_lascia_48k_stereo_short__mel128__512__hop0.1__center",
    "handel_lascia_48k_stereo_short__linear__512__hop0.5__nocenter",
])
def test_embedding_parity(weights_file, expected, cid):
    c, out = run_case(weights_file, expected, cid)
    check(out.frames[c["rows"]], expected[c["embedding_key"]], c["tolerance"])
    assert out.info["resampler"] == ("kaiser_best" if c["sr"] != 48000 else "none")


def test_soxr_within_any_resampler_bound(weights_file, expected):
    cid = "corelli_op3no1_44k1_stereo__mel128__512__hop0.5__nocenter"
    c, out = run_case(weights_file, expected, cid, resampler="soxr")
    check(out.frames[c["rows"]], expected[c["embedding_key"]], c["tolerance_any_resampler"])
    assert out.info["resampler"] == "soxr"


@pytest.mark.parametrize("key", list(FE_CASES))
def test_frontend_parity(weights_file, expected, key):
    import torch

    c = FE_CASES[key]
    emb = get_embedder("openl3", weights=str(weights_file), input_repr=c["input_repr"],
                       hop_size=c["hop_size"], center=c["center"], device="cpu").load()
    batches = list(emb.frame_batches(emb._iter_48k(str(FIX / c["file"]))))
    with torch.inference_mode():
        got = torch.cat([emb._frontend(torch.from_numpy(b)) for b in batches])[:, 0].numpy()
    assert got.shape == tuple(c["shape"])
    got = got[c["rows"]]
    ref = expected[key]
    check(got, ref, c["tolerance"])
    above = ref > -60
    assert np.abs(got - ref)[above].max() <= c["tolerance"]["max_abs_where_ref_above_-60dB"]
    assert got.max() == 0.0 and got.min() >= -80.0


def test_resampler_matches_resampy_022(expected):
    from embedders.lib.resample import KaiserBestResampler, resample

    x = expected["resampy022__input"]
    for sr in (44100, 22050, 96000):
        ref = expected[f"resampy022__{sr}"]
        got = resample(x, sr, 48000)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-12
        # streaming in uneven blocks gives the same samples
        r = KaiserBestResampler(sr, 48000)
        parts, i = [], 0
        for b in (1, 7, 300, 1000, 5000):
            parts.append(r.process(x[i:i + b]))
            i += b
        parts.append(r.flush())
        np.testing.assert_array_equal(np.concatenate(parts), got)


def test_soxr_stream_length():
    from embedders.lib.resample import SoxrResampler, output_length

    x = np.random.default_rng(1).standard_normal(44100 + 17)
    r = SoxrResampler(44100, 48000)
    y = np.concatenate([r.process(x[:1000]), r.process(x[1000:]), r.flush()])
    assert y.shape[0] == output_length(x.shape[0], 44100, 48000)


def test_mel_filterbank_matches_librosa():
    import librosa

    from embedders.lib.openl3_net import mel_filterbank

    for n_mels in (128, 256):
        ref = librosa.filters.mel(sr=48000, n_fft=2048, n_mels=n_mels, htk=False, norm="slaney")
        np.testing.assert_allclose(mel_filterbank(n_mels), ref, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# framing, streaming, batching
def test_frame_counts():
    from embedders.openl3 import n_frames_for

    assert n_frames_for(5 * 48000, 4800, True) == 46
    assert n_frames_for(5 * 48000, 4800, False) == 41
    assert n_frames_for(int(0.3 * 48000), 4800, True) == 1
    assert n_frames_for(48000, 4800, False) == 1


@pytest.mark.slow
def test_streaming_and_batching_do_not_change_results(weights_file, tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(5)
    sr = 44100
    x = 0.1 * rng.standard_normal((int(2.3 * sr), 2))
    path = tmp_path / "noise.wav"
    sf.write(str(path), x, sr, subtype="FLOAT")
    common = dict(weights=str(weights_file), input_repr="mel128", embedding_size=512,
                  hop_size=0.45, device="cpu")
    a = get_embedder("openl3", batch_size=32, **common)
    ref_frames, ref_ts = a.embed_array(sf.read(str(path))[0], sr)
    b = get_embedder("openl3", batch_size=2, **common).load()
    # small read blocks: the resampler and the framer are streamed
    b._iter_48k_orig = b._iter_48k
    b._iter_48k = lambda p: b._iter_48k_orig(p, block_seconds=0.37)
    got = b.compute(path)
    assert got.frames.shape == ref_frames.shape == (5, 512)  # 1 + ceil((110400+24000-48000)/21600)
    np.testing.assert_allclose(got.timestamps, ref_ts)
    assert np.abs(got.frames - ref_frames).max() < 1e-3


@pytest.mark.slow
def test_frame_count_hint_never_changes_the_output(weights_file):
    """The header's frame count only preallocates; a wrong one (a lying header) gives the same
    frames as none."""
    rng = np.random.default_rng(6)
    sig = 0.1 * rng.standard_normal(int(1.7 * 48000))
    emb = get_embedder("openl3", weights=str(weights_file), input_repr="mel128",
                       embedding_size=512, hop_size=0.25, batch_size=2, device="cpu")
    ref, ref_ts = emb.embed_signal([sig])
    assert ref.shape == (6, 512)  # 1 + ceil((81600 + 24000 - 48000) / 12000)
    for hint in (6, 3, 20):
        got, ts = emb.embed_signal([sig], n_frames_hint=hint)
        assert got.shape == ref.shape and got.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(ts, ref_ts)


def test_prefetch_keeps_order_forwards_errors_and_stops():
    """The background framing used on accelerators: same items, same errors, and an early exit
    stops the producer thread."""
    from embedders.openl3 import prefetch

    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise InputError("x.wav", "audio data cannot be decoded (test)")
    it = prefetch(failing())
    assert next(it) == 1
    with pytest.raises(InputError, match="cannot be decoded"):
        next(it)

    # an early exit stops the producer thread: it reads no further and is gone when close()
    # returns (without the stop signal it would wait forever on the full queue)
    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]
    before = set(threading.enumerate())
    gen = prefetch(endless(), depth=2)
    assert next(gen) == 0
    producers = [t for t in threading.enumerate()
                 if t not in before and t.name == "openl3-prefetch"]
    assert len(producers) == 1 and producers[0].is_alive()
    gen.close()
    assert not producers[0].is_alive()
    n_read = len(produced)
    time.sleep(0.3)
    assert len(produced) == n_read <= 4  # the item taken, two queued, at most one in flight


@pytest.mark.slow
def test_prefetch_gives_the_same_frames(weights_file, tmp_path):
    """The background framing used on accelerators, forced on here on CPU."""
    import soundfile as sf

    x = 0.1 * np.random.default_rng(8).standard_normal(int(2.2 * 44100))
    path = tmp_path / "a.wav"
    sf.write(str(path), x, 44100)
    common = dict(weights=str(weights_file), input_repr="mel128", embedding_size=512,
                  hop_size=0.3, batch_size=2, device="cpu")
    plain = get_embedder("openl3", **common).compute(path).frames
    emb = get_embedder("openl3", **common).load()
    emb._prefetch = True
    np.testing.assert_array_equal(emb.compute(path).frames, plain)


def test_bf16_runs_within_loose_bound(weights_file, expected):
    cid = "handel_lascia_48k_stereo_short__mel128__512__hop0.1__center"
    c, out = run_case(weights_file, expected, cid, precision="bfloat16")
    ref = expected[c["embedding_key"]].astype(np.float64)
    got = out.frames.astype(np.float64)
    assert np.abs(got - ref).mean() <= BF16_MEAN_REL * np.abs(ref).mean()
    assert metrics(got, ref)[2] >= BF16_MIN_COS


def test_bad_audio_raises_input_error(weights_file, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not a wav at all" * 10)
    emb = get_embedder("openl3", weights=str(weights_file), device="cpu")
    with pytest.raises(InputError):
        emb.compute(bad)


# ------------------------------------------------------------------------------------------------
# weights resolution and loading
def test_weights_explicit_folder_and_identity(weights_file, tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()
    os.symlink(weights_file, folder / "openl3_audio_mel128_env.h5")
    emb = get_embedder("openl3", weights=str(folder), input_repr="mel128", content_type="env",
                       embedding_size=512)
    assert emb.resolve_weights() == folder / "openl3_audio_mel128_env.h5"
    emb2 = get_embedder("openl3", weights=str(folder), input_repr="mel256")
    with pytest.raises(WeightsError, match="openl3_audio_mel256_music.h5"):
        emb2.resolve_weights()
    with pytest.raises(WeightsError, match="does not exist"):
        get_embedder("openl3", weights=str(tmp_path / "nope.h5")).resolve_weights()
    emb.load()
    ident = emb.weights_identity()
    assert ident.startswith("openl3_audio_mel128_env.h5:")
    assert str(os.path.getsize(weights_file)) in ident
    assert "weights_identity" in emb.cache_options()
    assert "weights" not in emb.cache_options()


def test_weights_from_cache_dir(weights_file, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "openl3").mkdir(parents=True)
    os.symlink(weights_file, cache / "openl3" / "openl3_audio_linear_music.h5")
    monkeypatch.setenv("EMBCOMPARE_CACHE_DIR", str(cache))
    emb = get_embedder("openl3", input_repr="linear")
    assert emb.resolve_weights() == cache / "openl3" / "openl3_audio_linear_music.h5"


def test_weights_from_installed_openl3_package_after_the_cache(weights_file, tmp_path,
                                                                monkeypatch):
    site = tmp_path / "site"
    (site / "openl3").mkdir(parents=True)
    (site / "openl3" / "__init__.py").write_text("")
    name = "openl3_audio_mel128_music.h5"
    os.symlink(weights_file, site / "openl3" / name)
    monkeypatch.syspath_prepend(str(site))
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMBCOMPARE_CACHE_DIR", str(cache))
    emb = get_embedder("openl3", input_repr="mel128")
    assert emb.resolve_weights() == site / "openl3" / name
    (cache / "openl3").mkdir(parents=True)  # the user cache comes before the package
    os.symlink(weights_file, cache / "openl3" / name)
    assert emb.resolve_weights() == cache / "openl3" / name
    # and an explicit path before both
    assert get_embedder("openl3", input_repr="mel128",
                        weights=str(weights_file)).resolve_weights() == Path(weights_file)


def test_weights_download_is_verified_and_atomic(weights_file, tmp_path, monkeypatch):
    """The download step, through a file:// URL the test builds (no network): gunzipped into the
    cache under the official name; a truncated or too small download leaves nothing behind."""
    import gzip

    import embedders.openl3 as o3

    served = tmp_path / "served"
    served.mkdir()
    raw = Path(weights_file).read_bytes()
    good = gzip.compress(raw, compresslevel=1)
    (served / "openl3_audio_linear_env-v0_4_0.h5.gz").write_bytes(good)
    (served / "openl3_audio_mel128_env-v0_4_0.h5.gz").write_bytes(good[:len(good) // 2])
    (served / "openl3_audio_mel256_env-v0_4_0.h5.gz").write_bytes(gzip.compress(b"x" * 1000))
    monkeypatch.setattr(o3, "WEIGHTS_URL",
                        served.as_uri() + "/openl3_audio_{input_repr}_{content_type}-v0_4_0.h5.gz")
    monkeypatch.delenv("EMBCOMPARE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMBCOMPARE_CACHE_DIR", str(cache))

    got = get_embedder("openl3", input_repr="linear", content_type="env").resolve_weights()
    assert got == cache / "openl3" / "openl3_audio_linear_env.h5"
    assert got.read_bytes() == raw
    for repr_, reason in (("mel128", "could not download"), ("mel256", "too small")):
        with pytest.raises(WeightsError, match=reason) as info:
            get_embedder("openl3", input_repr=repr_, content_type="env").resolve_weights()
        assert f"openl3_audio_{repr_}_env.h5" in str(info.value)
    assert sorted(p.name for p in (cache / "openl3").iterdir()) == ["openl3_audio_linear_env.h5"]


def test_weights_offline_error_names_file_and_url():
    emb = get_embedder("openl3", input_repr="mel256", content_type="env")
    with pytest.raises(WeightsError) as info:
        emb.load()
    msg = str(info.value)
    assert "openl3_audio_mel256_env.h5" in msg
    assert "https://github.com/marl/openl3/raw/models/openl3_audio_mel256_env-v0_4_0.h5.gz" in msg
    assert "--openl3-weights" in msg


def test_truncated_and_garbage_weights(weights_file, tmp_path):
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(Path(weights_file).read_bytes()[:1_000_000])
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(os.urandom(4096))
    for p in (trunc, garbage):
        with pytest.raises(WeightsError):
            get_embedder("openl3", weights=str(p), device="cpu").load()


def test_wrong_shapes_and_counts(tmp_path):
    from embedders.lib.openl3_net import read_weights

    layers = [(n, [(w, a.copy()) for w, a in arrs]) for n, arrs in make_weights.make_tensors(seed=1)]
    bad = [(n, list(arrs)) for n, arrs in layers]
    name, arrs = bad[3]  # conv2d_9 kernel (3,3,64,64) -> (3,3,64,32)
    bad[3] = (name, [(arrs[0][0], arrs[0][1][..., :32]), arrs[1]])
    p = make_weights.write_h5(tmp_path / "shape.h5", bad)
    with pytest.raises(WeightsError, match="weighted layer 3"):
        read_weights(p)
    # a file with only 15 weighted layers
    short = layers[:-1]
    p2 = tmp_path / "short.h5"
    import h5py

    make_weights.write_h5(p2, short)
    with pytest.raises(WeightsError, match="expected 16 weighted layers"):
        read_weights(p2)
    # a well-formed file loads, by order
    p3 = make_weights.write_h5(tmp_path / "ok.h5", layers)
    got = read_weights(p3)
    np.testing.assert_array_equal(got[15]["kernel"], layers[15][1][0][1])
    with h5py.File(p3, "r") as f:
        assert f.attrs["keras_version"] in (b"2.0.9", "2.0.9")


# ------------------------------------------------------------------------------------------------
# options and API
@pytest.mark.parametrize("opts, match", [
    ({"input_repr": "mel64"}, "input_repr"),
    ({"content_type": "speech"}, "content_type"),
    ({"embedding_size": 128}, "embedding_size"),
    ({"embedding_size": "big"}, "embedding_size"),
    ({"hop_size": 0}, "hop_size"),
    ({"hop_size": -0.1}, "hop_size"),
    ({"hop_size": "0.1"}, "hop_size"),
    ({"center": "yes"}, "center"),
    ({"batch_size": 0}, "batch_size"),
    ({"precision": "float16"}, "precision"),
    ({"resampler": "scipy"}, "resampler"),
    ({"tf32": 1}, "tf32"),
    ({"no_such_option": 1}, "no option"),
])
def test_option_validation(opts, match):
    with pytest.raises(ConfigurationError, match=match):
        get_embedder("openl3", **opts)


def test_api_defaults():
    from embedders import get_embedder_class
    from embedders.lib.audio_io import AUDIO_EXTENSIONS

    cls = get_embedder_class("openl3")
    assert cls.modality == "audio" and cls.parallel_files is False
    assert cls.extensions == AUDIO_EXTENSIONS
    assert cls.option_defaults == {
        "input_repr": "mel256", "content_type": "music", "embedding_size": 6144,
        "hop_size": 0.1, "center": True, "batch_size": 32, "device": None, "weights": None,
        "precision": "float32", "resampler": "kaiser_best", "tf32": False,
        "conv_algorithm": "auto"}
    emb = get_embedder("openl3", embedding_size=512)
    assert emb.dim == 512 and emb.accepts("x.FLAC") and not emb.accepts("x.mid")


def test_import_does_not_load_torch():
    code = ("import sys; import embedders.openl3; from embedders import get_embedder; "
            "e = get_embedder('openl3', input_repr='mel128'); e.validate_options(); "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'h5py' not in sys.modules, 'h5py imported'; print('ok')")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.slow
def test_winograd_matches_direct(weights_file, expected):
    """conv_algorithm is a run-time choice: Winograd and direct agree to fp32 round-off, the
    default (auto = Winograd on CPU) passes the fixtures, and the cache key ignores it."""
    import torch

    from embedders.lib.winograd import conv3x3_nhwc, transform_weights

    torch.manual_seed(0)
    for m in (2, 4):
        for cin, cout, h, w in ((64, 64, 13, 10), (128, 256, 8, 7), (3, 5, 5, 6)):
            x = torch.randn(2, cin, h, w)
            k = torch.randn(cout, cin, 3, 3) / (3 * cin ** 0.5)
            b = torch.randn(cout)
            ref = torch.relu(torch.nn.functional.conv2d(x, k, b, padding=1))
            got = conv3x3_nhwc(x.permute(0, 2, 3, 1).contiguous(),
                               transform_weights(k.numpy(), m), b, relu=True, m=m)
            assert got.shape == (2, h, w, cout)
            err = (got.permute(0, 3, 1, 2) - ref).abs().max().item()
            assert err <= 1e-4 * ref.abs().max().item(), (m, cin, err)

    cid = "joplin_mapleleaf_48k_mono__mel256__512__hop0.5__nocenter"
    outs = {}
    for alg in ("direct", "winograd", "auto"):
        c, out = run_case(weights_file, expected, cid, conv_algorithm=alg)
        check(out.frames[c["rows"]], expected[c["embedding_key"]], c["tolerance"])
        outs[alg] = out.frames
    scale = np.abs(outs["direct"]).max()
    assert np.abs(outs["winograd"] - outs["direct"]).max() <= 1e-4 * scale
    np.testing.assert_array_equal(outs["auto"], outs["winograd"])  # auto = Winograd on CPU
    a = get_embedder("openl3", conv_algorithm="direct", embedding_size=512,
                     weights=str(weights_file))  # the cache key names the weights: give them
    b = get_embedder("openl3", conv_algorithm="winograd", embedding_size=512,
                     weights=str(weights_file))
    assert a.cache_options() == b.cache_options()
    assert "conv_algorithm" not in a.cache_options()
