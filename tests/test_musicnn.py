"""musicnn port: checkpoint reader, networks, options, weights resolution, parity.

Without the published weights everything but the parity tests runs on random checkpoints
written by ``tf_bundle_writer``. The parity tests use the real weights, found the way the
embedder finds them (``pip install --no-deps musicnn==0.1.0`` is what CI does), against the lean
fixtures in ``fixtures/musicnn`` (7 cases); the full shared set (21 cases + the error case) is
checked too when ``../shared/fixtures/musicnn`` exists next to the repository.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, ROOT
from embedders import ConfigurationError, InputError, WeightsError, get_embedder
from embedders import musicnn as mmod
from embedders.lib import tf_checkpoint as tfc
from musicnn_parity import compare_case
from tf_bundle_writer import random_musicnn_tensors, write_bundle

FIX = FIXTURES / "musicnn"
#: The full fixture set: ``../shared`` next to the repository, or ``$EMBCOMPARE_SHARED_DIR``.
SHARED = Path(os.environ.get("EMBCOMPARE_SHARED_DIR", ROOT.parent / "shared")) / "fixtures" / "musicnn"
HOW_TO_GET = ("musicnn weights not found: run `pip install --no-deps musicnn==0.1.0` (only the "
              "package's checkpoint files are read) or pass them with --musicnn-weights DIR")


# ------------------------------------------------------------------------------------------------
# helpers
@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A folder laid out like the musicnn package, with random checkpoints for all four models."""
    root = tmp_path_factory.mktemp("musicnn_random")
    for model in mmod.MODELS:
        (root / model).mkdir()
        fam = "vgg" if model.endswith("vgg") else "musicnn"
        write_bundle(str(root / model) + "/", random_musicnn_tensors(fam, seed=len(model)))
    return root


def real_weights_dir(model: str = "MTT_musicnn") -> Path | None:
    try:
        return get_embedder("musicnn", model=model).resolve_weights()
    except WeightsError:
        return None


def need_real_weights(model: str = "MTT_musicnn") -> Path:
    path = real_weights_dir(model)
    if path is None:
        pytest.skip(HOW_TO_GET)
    return path


def write_silence(path: Path) -> Path:
    import soundfile as sf
    sf.write(str(path), np.zeros(56000, dtype=np.int16), 16000, subtype="PCM_16")
    return path


# ------------------------------------------------------------------------------------------------
# the checkpoint reader
def test_reader_reads_what_the_writer_wrote(tmp_path):
    tensors = random_musicnn_tensors("musicnn")
    tensors["scalar_f64"] = np.array(2.5, dtype=np.float64)
    tensors["ints"] = np.arange(12, dtype=np.int64).reshape(3, 4)
    write_bundle(tmp_path / "ckpt", tensors, entries_per_block=3)  # many blocks, shared prefixes
    reader = tfc.CheckpointReader(tmp_path / "ckpt")
    assert set(reader.entries) == set(tensors)
    for name, arr in tensors.items():
        got = reader.get(name, verify=True)
        assert got.dtype == arr.dtype and got.shape == arr.shape, name
        np.testing.assert_array_equal(got, arr)
    assert reader.shapes()["conv2d_1/kernel"] == (7, 67, 1, 204)


def test_reader_rejects_corrupt_files(tmp_path):
    tensors = {"a/kernel": np.ones((4, 3), np.float32), "b": np.zeros(5, np.float32)}
    write_bundle(tmp_path / "c", tensors)
    index = tmp_path / "c.index"
    data = tmp_path / "c.data-00000-of-00001"
    good_index = index.read_bytes()
    # a flipped byte in a tensor: caught by its checksum when verified
    raw = bytearray(data.read_bytes())
    raw[3] ^= 0xFF
    data.write_bytes(bytes(raw))
    reader = tfc.CheckpointReader(tmp_path / "c")
    with pytest.raises(tfc.CheckpointError, match="checksum"):
        reader.get("a/kernel", verify=True)
    reader.get("a/kernel")  # unverified read still works
    # a flipped byte in the index's first block: the block checksum
    bad = bytearray(good_index)
    bad[2] ^= 0x01
    index.write_bytes(bytes(bad))
    with pytest.raises(tfc.CheckpointError, match="checksum|corrupt"):
        tfc.CheckpointReader(tmp_path / "c")
    index.write_bytes(good_index[:-1] + b"\0")
    with pytest.raises(tfc.CheckpointError, match="magic"):
        tfc.CheckpointReader(tmp_path / "c")
    index.write_bytes(good_index)
    data.write_bytes(b"\0" * 10)  # truncated data file
    with pytest.raises(tfc.CheckpointError, match="past the end"):
        tfc.CheckpointReader(tmp_path / "c").get("b")
    with pytest.raises(tfc.CheckpointError, match="no checkpoint index"):
        tfc.CheckpointReader(tmp_path / "missing")


def test_crc32c_known_value():
    assert tfc.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert tfc.unmask_crc(tfc.mask_crc(0x12345678)) == 0x12345678


def test_reader_on_the_published_checkpoints():
    for model, n_params, n_vars in (("MTT_musicnn", 792_079, 66), ("MSD_vgg", 607_030, 38)):
        folder = need_real_weights(model)
        reader = tfc.CheckpointReader(str(folder) + "/")
        model_vars = {k: s for k, s in reader.shapes().items()
                      if not k.endswith(("/Adam", "/Adam_1"))}
        assert len(model_vars) == n_vars
        learned = sum(int(np.prod(s)) for k, s in model_vars.items()
                      if not k.endswith(("moving_mean", "moving_variance", "_power")))
        stats = sum(int(np.prod(s)) for k, s in model_vars.items()
                    if k.endswith(("moving_mean", "moving_variance")))
        assert learned + stats == n_params, (model, learned, stats)
        for name, e in reader.entries.items():
            if e["size"] <= 1 << 18:
                reader.get(name, verify=True)  # checksums of everything but the big kernels


# ------------------------------------------------------------------------------------------------
# networks
def test_fast_network_equals_the_literal_one():
    import torch
    from embedders.lib import musicnn_net as mn

    t = random_musicnn_tensors("musicnn", seed=3)
    assert (t["batch_normalization_1/gamma"] < 0).any()  # the min-over-frequency branch is used
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 3, (3, 100, 96)).astype(np.float32))
    with torch.inference_mode():
        ref = mn.PlainMusicnn(t)(x)
        got = mn.Musicnn(t)(x)
        only = mn.Musicnn(t)(x, outputs=("timbral",))
    assert set(got) == set(ref) == set(mn.MUSICNN_OUTPUTS) and set(only) == {"timbral"}
    for name in ref:
        scale = float(ref[name].abs().max()) + 1e-6
        assert float((got[name] - ref[name]).abs().max()) <= 1e-5 * scale + 1e-6, name
    tv = random_musicnn_tensors("vgg", seed=4)
    x = x[:, :, :].repeat(1, 2, 1)[:, :187]
    with torch.inference_mode():
        a, b = mn.Vgg(tv, fast=True)(x), mn.Vgg(tv, fast=False)(x)
    assert a["pool1"].shape == (3, 92, 48, 128) and a["pool4"].shape == (3, 11, 6, 128)
    assert a["pool5"].shape == (3, 2, 128) and a["taggram"].shape == (3, 50)
    for name in a:
        assert float((a[name] - b[name]).abs().max()) <= 1e-4, name


# ------------------------------------------------------------------------------------------------
# options and geometry
def test_patch_geometry_as_the_reference():
    assert [mmod.patch_geometry(L, False)[0] for L in (3, 2.5, 1)] == [187, 156, 62]
    assert [mmod.patch_geometry(3, O)[1] for O in (1, 1.5, 2)] == [61, 92, 124]
    assert mmod.patch_geometry(1, 1) == (62, 61)
    assert list(mmod.patch_starts(438, 187, 187)) == [0, 187]
    assert list(mmod.patch_starts(186, 187, 187)) == []


def test_options_are_checked():
    with pytest.raises(ValueError, match="input_length=3"):
        get_embedder("musicnn", model="MTT_vgg", input_length=2)
    with pytest.raises(ConfigurationError, match="input_length=3"):
        get_embedder("musicnn", model="MSD_vgg", input_length=3.5)
    with pytest.raises(ConfigurationError, match="MSD_musicnn_big"):
        get_embedder("musicnn", model="MSD_musicnn_big")
    with pytest.raises(ConfigurationError, match="layer"):
        get_embedder("musicnn", layer="pool1")
    with pytest.raises(ConfigurationError, match="input_overlap"):
        get_embedder("musicnn", input_overlap=0.01)
    with pytest.raises(ConfigurationError, match="batch_size"):
        get_embedder("musicnn", batch_size=0)
    e = get_embedder("musicnn")
    assert e.options["layer"] == "penultimate" and e.dim == 200
    v = get_embedder("musicnn", model="MSD_vgg")
    assert v.options["layer"] == "pool5" and v.dim == 128 and v.tag_names[0] == "rock"
    assert get_embedder("musicnn", layer="timbral").dim == 408
    assert get_embedder("musicnn", input_overlap=0).options["input_overlap"] is False


# ------------------------------------------------------------------------------------------------
# the embedder on random weights (no real weights needed)
def test_embed_features_tags_on_random_weights(random_weights):
    wav = FIX / "mozart_k545_16k_mono.wav"  # 7 s: 438 frames, 2 patches of 187
    e = get_embedder("musicnn", weights=str(random_weights), device="cpu")
    out = e.compute(wav)
    assert out.frames.shape == (2, 200) and out.frames.dtype == np.float32
    np.testing.assert_allclose(out.timestamps, [0.0, 187 * 256 / 16000])
    np.testing.assert_allclose(out.clip, out.frames.mean(0), rtol=1e-6, atol=1e-6)
    assert e.weights_identity().startswith("MTT_musicnn:")
    feats = e.features(wav)
    shapes = {k: v.shape for k, v in feats.items()}
    assert shapes == {"timbral": (374, 408), "temporal": (374, 153), "cnn1": (374, 64),
                      "cnn2": (374, 64), "cnn3": (374, 64), "mean_pool": (2, 753),
                      "max_pool": (2, 753), "penultimate": (2, 200)}
    np.testing.assert_allclose(feats["penultimate"], out.frames, atol=1e-5)
    # true per-patch values (the reference would repeat patch 0 for cnn1-3/penultimate)
    assert not np.allclose(feats["cnn1"][:187], feats["cnn1"][187:])
    taggram, names = e.tags(wav)
    assert taggram.shape == (2, 50) and names == mmod.MTT_LABELS
    assert np.all((taggram >= 0) & (taggram <= 1))
    # a map layer is pooled over each patch's time axis
    t = get_embedder("musicnn", weights=str(random_weights), layer="timbral").compute(wav)
    np.testing.assert_allclose(t.frames, feats["timbral"].reshape(2, 187, 408).mean(1), atol=1e-4)
    # 1-s patches every 61 frames; batching does not change the numbers
    a = get_embedder("musicnn", weights=str(random_weights), input_length=1, input_overlap=1,
                     batch_size=3).embed(wav)
    b = get_embedder("musicnn", weights=str(random_weights), input_length=1, input_overlap=1,
                     batch_size=64).embed(wav)
    assert a.shape == (7, 200)
    np.testing.assert_allclose(a, b, atol=1e-4)  # float32 round-off of other batch shapes


def test_vgg_on_random_weights(random_weights):
    wav = FIX / "mozart_k545_16k_mono.wav"
    e = get_embedder("musicnn", model="MSD_vgg", weights=str(random_weights))
    assert e.embed(wav).shape == (2, 128)
    feats = e.features(wav)
    assert {k: v.shape for k, v in feats.items()} == {
        "pool1": (184, 48, 128), "pool2": (92, 24, 128), "pool3": (46, 12, 128),
        "pool4": (22, 6, 128), "pool5": (4, 128)}
    taggram, names = e.tags(wav)
    assert taggram.shape == (2, 50) and names == mmod.MSD_LABELS


def test_short_clip_is_skipped_with_its_reason(random_weights):
    e = get_embedder("musicnn", weights=str(random_weights))
    short = FIX / "mozart_k545_short_22k05_mono.wav"
    with pytest.raises(InputError, match="shorter than one musicnn patch"):
        e.compute(short)
    with pytest.raises(InputError, match="shorter than one musicnn patch"):
        e.tags(short)
    [(path, result)] = list(e.embed_many([str(short)]))
    assert isinstance(result, InputError)


def test_unreadable_checkpoint_is_a_weights_error(tmp_path):
    (tmp_path / "MTT_musicnn").mkdir()
    for f in mmod.CHECKPOINT_FILES:
        (tmp_path / "MTT_musicnn" / f).write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read the MTT_musicnn checkpoint"):
        get_embedder("musicnn", weights=str(tmp_path)).load()


# ------------------------------------------------------------------------------------------------
# weights resolution
def _fake_ckpt(folder: Path, model: str = "MTT_musicnn") -> Path:
    (folder / model).mkdir(parents=True, exist_ok=True)
    for f in mmod.CHECKPOINT_FILES:
        (folder / model / f).write_bytes(b"x")
    return folder / model


def test_weights_resolution_order(tmp_path, monkeypatch):
    explicit, pkg = tmp_path / "explicit", tmp_path / "site" / "musicnn"
    cache = mmod.wts.cache_dir("musicnn")
    monkeypatch.setattr(mmod, "installed_package_dir", lambda: pkg)
    monkeypatch.setattr(mmod, "fetch_checkpoints", lambda *a: pytest.fail("no download"))
    _fake_ckpt(pkg)
    e = get_embedder("musicnn")
    assert e.resolve_weights() == pkg / "MTT_musicnn"
    _fake_ckpt(cache)
    assert e.resolve_weights() == cache / "MTT_musicnn"
    _fake_ckpt(explicit)
    assert get_embedder("musicnn", weights=str(explicit)).resolve_weights() == explicit / "MTT_musicnn"
    # the model folder itself is accepted too
    assert get_embedder("musicnn", weights=str(explicit / "MTT_musicnn")).resolve_weights() == \
        explicit / "MTT_musicnn"
    with pytest.raises(WeightsError, match="--musicnn-weights"):
        get_embedder("musicnn", model="MSD_vgg", weights=str(explicit)).resolve_weights()


def test_offline_without_weights_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(mmod, "installed_package_dir", lambda: None)
    with pytest.raises(WeightsError) as info:
        get_embedder("musicnn").load()
    msg = str(info.value)
    assert "musicnn weights not found" in msg and "downloads are off" in msg
    assert "--musicnn-weights" in msg and "pip install --no-deps musicnn==0.1.0" in msg


def _fake_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("musicnn/__init__.py", "")
        zf.writestr("musicnn/extractor.py", "import tensorflow\n")
        for model in mmod.MODELS:
            for f in mmod.CHECKPOINT_FILES + (".meta", "checkpoint", "config.json"):
                zf.writestr(f"musicnn/{model}/{f}", f"{model}{f}")
    return path


def test_fetch_extracts_only_the_checkpoints_once(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, dest, *, sha256=None, **kw):
        calls.append((url, sha256))
        return _fake_wheel(Path(dest))

    monkeypatch.setattr(mmod, "installed_package_dir", lambda: None)
    monkeypatch.setattr(mmod.wts, "offline", lambda: False)
    monkeypatch.setattr(mmod.wts, "download", fake_download)
    folder = get_embedder("musicnn", model="MSD_vgg").resolve_weights()
    cache = mmod.wts.cache_dir("musicnn")
    assert folder == cache / "MSD_vgg"
    assert calls == [(mmod.WHEEL_URL, mmod.WHEEL_SHA256)]
    files = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert files == sorted(f"{m}/{f}" for m in mmod.MODELS for f in mmod.CHECKPOINT_FILES)
    assert [p.name for p in cache.parent.iterdir() if p.name.startswith(".musicnn")] == []
    assert get_embedder("musicnn").resolve_weights() == cache / "MTT_musicnn"
    assert len(calls) == 1  # fetched once for all four models


def test_failed_fetch_says_how_to_provide(monkeypatch):
    def failing(url, dest, **kw):
        raise WeightsError(f"could not download {url}: no network. {kw.get('how_to_provide')}")

    monkeypatch.setattr(mmod, "installed_package_dir", lambda: None)
    monkeypatch.setattr(mmod.wts, "offline", lambda: False)
    monkeypatch.setattr(mmod.wts, "download", failing)
    with pytest.raises(WeightsError, match="could not be fetched.*--musicnn-weights"):
        get_embedder("musicnn").resolve_weights()
    assert not (mmod.wts.cache_dir("musicnn")).exists()


# ------------------------------------------------------------------------------------------------
# parity with the reference (published weights)
SUBSET = json.loads((FIX / "cases_subset.json").read_text())


def _run_parity(doc, expected, case, wav_dir: Path, level: str):
    need_real_weights(case["model"])
    e = get_embedder("musicnn", model=case["model"], input_length=case["input_length"],
                     input_overlap=case["input_overlap"], device="cpu")
    wav = wav_dir / case["file"]
    if level == "network":
        batch, own = expected[case["arrays"]["input_batch"]["key"]], None
    else:
        batch, _ = e.input_patches(str(wav))
        own = batch
    feats = e.features_from_patches(batch)
    taggram = e.run_network(batch, outputs=("taggram",))["taggram"]
    rows = compare_case(case, doc, expected, feats, taggram, level, own)
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad
    return rows


@pytest.mark.parametrize("cid", [c["id"] for c in SUBSET["cases"]])
def test_parity_end_to_end_lean_fixtures(cid, tmp_path):
    case = next(c for c in SUBSET["cases"] if c["id"] == cid)
    wav_dir = FIX
    if case["file"].startswith("silence"):
        write_silence(tmp_path / case["file"])
        wav_dir = tmp_path
    expected = np.load(FIX / "expected_subset.npz")
    rows = _run_parity(SUBSET, expected, case, wav_dir, "end_to_end")
    assert any(r["name"] == "taggram" for r in rows)


def test_embed_matches_reference_penultimate():
    need_real_weights()
    case = next(c for c in SUBSET["cases"] if c["id"].endswith("MTT_musicnn__L3_O0")
                and c["file"].startswith("mozart"))
    expected = np.load(FIX / "expected_subset.npz")
    ref = expected[case["arrays"]["per_patch.penultimate"]["key"]]
    e = get_embedder("musicnn")
    got = e.embed(FIX / case["file"])
    assert np.abs(got - ref).max() <= 1.7e-4
    np.testing.assert_allclose(e.embed_clip(FIX / case["file"]), got.mean(0), atol=1e-6)
    taggram, names = e.tags(FIX / case["file"])
    ref_tags = expected[case["arrays"]["taggram"]["key"]]
    assert np.abs(taggram - ref_tags).max() <= 2.3e-5 and names == SUBSET["labels"]["MTT"]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "cases.json").is_file(),
                    reason="the full musicnn fixture set (../shared/fixtures/musicnn) is not here")
@pytest.mark.parametrize("level", ["network", "end_to_end"])
def test_parity_full_shared_set(level):
    need_real_weights()
    doc = json.loads((SHARED / "cases.json").read_text())
    expected = np.load(SHARED / "expected.npz")
    worst = 0.0
    for case in doc["cases"]:
        for r in _run_parity(doc, expected, case, SHARED, level):
            worst = max(worst, r["max_abs"] / r["tol_max"], r["mean_abs"] / r["tol_mean"])
    assert len(doc["cases"]) == 21 and worst <= 1.0
    for err in doc["error_cases"]:
        with pytest.raises(InputError, match="shorter than one musicnn patch"):
            get_embedder("musicnn", model=err["model"]).compute(SHARED / err["file"])


# ------------------------------------------------------------------------------------------------
# command line
def test_cli_flag_and_optional_embedder(tmp_path, monkeypatch, capsys):
    import main
    from cli import compare as cmd
    from collection.demo_corpus import build_demo_corpus

    args = cmd.parse_args(["--dataset", "d", "--embedders", "audio-stats", "--optional-embedders",
                           "musicnn", "--musicnn-weights", "/w"])
    assert cmd.selected_embedders(args) == ["audio-stats", "musicnn"]
    assert cmd.embedder_options(args, ["musicnn"])["musicnn"]["weights"] == "/w"
    # weights missing: one line, and the run goes on with the others
    monkeypatch.setattr(mmod, "installed_package_dir", lambda: None)
    data = tmp_path / "data"
    build_demo_corpus(data, n_per_genre=2, genres=("rock", "chamber"), synth="builtin", bars=1)
    code = main.main(["--dataset", str(data), "--embedders", "audio-stats", "--optional-embedders",
                      "musicnn", "--emb-dir", str(tmp_path / "emb"), "--out", str(tmp_path / "out"),
                      "--no-analysis", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0
    notes = [line for line in err.splitlines() if "musicnn weights not found" in line]
    assert len(notes) == 1 and "running the other embedders without musicnn" in notes[0]
    assert (tmp_path / "emb" / "export" / "audio-stats" / "clip.npy").is_file()
    assert not (tmp_path / "emb" / "musicnn.npz").exists()
