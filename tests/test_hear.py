"""The ``hear`` adapter against direct calls of a HEAR-API module (tests/hear_toy.py), its cache
identity (module, version, model file) and its one-line errors before any audio is read."""
import numpy as np
import pytest

import main
from conftest import write_wav
from embedders import ConfigurationError, get_embedder
from embedders.lib.audio_io import read_audio, to_mono
from embedders.lib.resample import resample

import hear_toy


def test_adapter_matches_direct_calls(tmp_path):
    import torch

    path = write_wav(tmp_path / "a.wav", seconds=0.6, sr=22050, freq=330.0, channels=2)
    out = get_embedder("hear", module="hear_toy").compute(path)
    audio, sr = read_audio(path)
    y = torch.from_numpy(resample(to_mono(audio), sr, 16000, "soxr").astype(np.float32))[None]
    model = hear_toy.load_model()
    frames, stamps = hear_toy.get_timestamp_embeddings(y, model)
    scene = hear_toy.get_scene_embeddings(y, model)
    np.testing.assert_array_equal(out.frames, frames[0].numpy())
    np.testing.assert_allclose(out.timestamps, stamps[0].numpy() / 1000.0)  # ms -> s
    np.testing.assert_array_equal(out.clip, scene[0].numpy())
    n = int(0.6 * 16000)
    assert out.frames.shape == (1 + n // 160, 6) and out.timestamps[1] == pytest.approx(0.01)
    mean = get_embedder("hear", module="hear_toy", clip="mean").compute(path)
    np.testing.assert_allclose(mean.clip, frames[0].numpy().mean(0), rtol=1e-5, atol=1e-7)


def test_model_file_and_cache_identity(tmp_path):
    w = np.random.default_rng(1).standard_normal((400, 6)).astype(np.float32) / 20
    model_file = tmp_path / "toy.npy"
    np.save(model_file, w)
    path = write_wav(tmp_path / "b.wav", seconds=0.3, sr=16000)
    emb = get_embedder("hear", module="hear_toy", model_path=str(model_file))
    ident = emb.cache_options()["weights_identity"]  # before load: module imported, no model
    assert ident.startswith("hear_toy:0.3.1|toy.npy:") and "model_path" not in emb.cache_options()
    out = emb.compute(path)
    y = torch_signal(path)
    ref, _ = hear_toy.get_timestamp_embeddings(y, hear_toy.load_model(str(model_file)))
    np.testing.assert_array_equal(out.frames, ref[0].numpy())
    assert emb.cache_options()["weights_identity"] == ident
    np.save(model_file, w * 2)  # another model file: another cache key
    other = get_embedder("hear", module="hear_toy", model_path=str(model_file))
    assert other.cache_options()["weights_identity"] != ident


def torch_signal(path):
    import torch

    audio, _ = read_audio(path)
    return torch.from_numpy(to_mono(audio).astype(np.float32))[None]


@pytest.mark.parametrize("module,message", [
    ("no_such_hear_module", "cannot import HEAR module 'no_such_hear_module'"),
    ("hear_not_an_api", "not a HEAR-API module: no get_scene_embeddings"),
    ("bad name!", "must be a Python module name"),
])
def test_bad_module_one_line_exit_2_before_audio(tmp_path, capsys, module, message):
    data = tmp_path / "data" / "g"
    data.mkdir(parents=True)
    write_wav(data / "a.wav", seconds=0.3)
    code = main.main(["--dataset", str(tmp_path / "data"), "--embedders", "hear",
                      "--set", f"hear.module={module}", "--emb-dir", str(tmp_path / "emb"),
                      "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not list((tmp_path).rglob("*.npz"))  # nothing embedded


def test_no_module_set():
    with pytest.raises(ConfigurationError, match="set the HEAR module"):
        get_embedder("hear").load()
