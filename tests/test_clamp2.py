"""CLaMP 2 symbolic embedder: MIDI→MTF text, patches and embeddings against reference fixtures.

The fixtures in ``tests/fixtures/clamp2`` are a subset of reference outputs (sanderwood/clamp2 @
a3ebc75, mido 1.3.0, transformers 4.40.0) computed with a tiny random checkpoint that uses the
official key names (hidden 96, 2 layers, 12 heads).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
from conftest import FIXTURES, ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedders import InputError, WeightsError, get_embedder
from embedders import clamp2 as C
from embedders.lib import mtf as M

FIX = FIXTURES / "clamp2"
META = json.loads((FIX / "cases.json").read_text(encoding="utf-8"))
CASES = META["cases"]
NAMES = [c["name"] for c in CASES]
BY_NAME = {c["name"]: c for c in CASES}
TOL_SEG = META["tolerances"]["segments"]
TOL_GLOBAL = META["tolerances"]["global"]
TINY = FIX / "tiny_clamp2.pth"


@pytest.fixture(scope="module")
def expected():
    with np.load(FIX / "expected_small.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def embedder():
    return get_embedder("clamp2", weights=str(TINY), device="cpu", batch_size=4).load()


@pytest.fixture(scope="module")
def batched(embedder):
    paths = [str(FIX / c["midi"]) for c in CASES]
    out = dict(embedder.embed_many(paths))
    assert set(out) == set(paths)
    return {c["name"]: out[str(FIX / c["midi"])] for c in CASES}


def _mtf_ref(name: str) -> str:
    return (FIX / BY_NAME[name]["mtf"]).read_bytes().decode("utf-8")


# --------------------------------------------------------------------------------- MIDI → MTF
@pytest.mark.parametrize("name", NAMES)
def test_mtf_text_is_byte_identical(name):
    text = M.midi_to_mtf(FIX / BY_NAME[name]["midi"])
    assert text == _mtf_ref(name)
    assert not text.endswith("\n")
    assert len(text.split("\n")) == BY_NAME[name]["n_mtf_lines"]


def test_mtf_from_bytes_equals_from_path():
    data = (FIX / "midi" / "multi.mid").read_bytes()
    assert M.midi_to_mtf(data) == _mtf_ref("multi")


@pytest.mark.parametrize("name", NAMES)
def test_patch_ids_and_segments_identical(name, expected):
    ids = M.patchilize(_mtf_ref(name))
    want = expected[f"{name}.patch_ids"].astype(np.int64)
    assert ids.shape == want.shape == (BY_NAME[name]["n_patches"], 64)
    assert np.array_equal(ids, want)
    assert [list(b) for b in M.segment_bounds(len(ids))] == expected[f"{name}.segment_bounds"].tolist()
    assert M.segment_weights(len(ids)) == expected[f"{name}.segment_weights"].tolist()


def test_special_patches():
    ids = M.patchilize(_mtf_ref("one_note"))
    assert ids[0].tolist() == [1] * 64
    assert ids[-1].tolist() == [1] + [2] * 63


# --------------------------------------------------------------------------------- embeddings
@pytest.mark.parametrize("name", NAMES)
def test_embeddings_match_reference(name, batched, expected):
    emb = batched[name]
    seg, glob = expected[f"{name}.segments"], expected[f"{name}.global"][0]
    assert emb.frames.shape == seg.shape and emb.frames.dtype == np.float32
    assert np.abs(emb.frames - seg).max() <= TOL_SEG
    assert np.abs(emb.clip - glob).max() <= TOL_GLOBAL
    assert emb.info["n_patches"] == BY_NAME[name]["n_patches"]


def test_clip_is_weighted_mean_not_plain_mean(batched, expected):
    emb = batched["synth_513_patches"]
    assert np.allclose(emb.clip, (512 * emb.frames[0] + 1 * emb.frames[1]) / 513, atol=1e-6)
    assert np.abs(emb.clip - emb.frames.mean(0)).max() > 1e-3
    assert abs(float(np.linalg.norm(emb.clip)) - 1.0) > 1e-3  # not L2-normalised


def test_embed_and_embed_clip_single_file(embedder, expected):
    path = FIX / "midi" / "handel_lascia_chio_pianga.mid"
    frames = embedder.embed(path)
    clip = embedder.embed_clip(path)
    assert np.abs(frames - expected["handel_lascia_chio_pianga.segments"]).max() <= TOL_SEG
    assert np.abs(clip - expected["handel_lascia_chio_pianga.global"][0]).max() <= TOL_GLOBAL


def test_batched_equals_one_at_a_time(embedder, batched):
    for name in NAMES:
        single = embedder.compute(FIX / BY_NAME[name]["midi"])
        assert np.abs(single.frames - batched[name].frames).max() < 1e-5
        assert np.abs(single.clip - batched[name].clip).max() < 1e-5


def test_batch_size_does_not_change_results(batched):
    e1 = get_embedder("clamp2", weights=str(TINY), device="cpu", batch_size=1)
    paths = [str(FIX / BY_NAME[n]["midi"]) for n in ("scale", "synth_513_patches", "multi")]
    for path, emb in e1.embed_many(paths):
        name = Path(path).stem
        assert np.abs(emb.frames - batched[name].frames).max() < 1e-5


def test_mtf_input(embedder, batched, tmp_path):
    emb = embedder.compute(FIX / "mtf" / "multi.mtf")
    assert np.abs(emb.frames - batched["multi"].frames).max() < 1e-5
    crlf = tmp_path / "multi_crlf.mtf"  # read in universal-newline mode like the reference
    crlf.write_bytes(_mtf_ref("multi").replace("\n", "\r\n").encode("utf-8"))
    assert np.abs(embedder.embed_clip(crlf) - batched["multi"].clip).max() < 1e-5
    bad = tmp_path / "notmtf.mtf"
    bad.write_text("X:1\nK:C\nabc|", encoding="utf-8")
    with pytest.raises(InputError, match="ticks_per_beat"):
        embedder.compute(bad)


def test_registry_and_options():
    cls = type(get_embedder("clamp2"))
    assert cls.modality == "symbolic"
    assert set(cls.extensions) == {".mid", ".midi", ".mtf"}
    assert cls.option_defaults["weights"] is None and cls.option_defaults["device"] is None
    from embedders import ConfigurationError
    with pytest.raises(ConfigurationError):
        get_embedder("clamp2", batch_size=0)
    with pytest.raises(ConfigurationError):
        get_embedder("clamp2", nonsense=1)


def test_precision_option_validation():
    from embedders import ConfigurationError
    assert get_embedder("clamp2").options["precision"] == "float32"
    with pytest.raises(ConfigurationError, match="float16 is not available on device 'cpu'") as info:
        get_embedder("clamp2", device="cpu", precision="float16")
    assert "cuda only" in str(info.value) and "use bfloat16 on CPU" in str(info.value)
    with pytest.raises(ConfigurationError, match="precision must be one of float32, bfloat16, float16"):
        get_embedder("clamp2", precision="fp8")
    with pytest.raises(ConfigurationError, match="bfloat16 is not available on device 'mps'"):
        get_embedder("clamp2", device="mps", precision="bfloat16")
    # an automatic device is checked once resolved (here: CPU unless CUDA is present)
    import torch
    if not torch.cuda.is_available():
        auto = get_embedder("clamp2", weights=str(TINY), precision="float16")
        with pytest.raises(ConfigurationError, match="float16"):
            auto.load()
        with pytest.raises(ConfigurationError, match="float16"):
            C.CLaMP2Embedder.from_state_dict(_fake_state(), precision="float16")


def test_precision_in_cache_key_only_when_reduced(embedder):
    assert "precision" not in embedder.cache_options()  # float32 keys are unchanged
    bf = get_embedder("clamp2", weights=str(TINY), device="cpu", precision="bfloat16")
    opts = bf.cache_options()
    assert opts["precision"] == "bfloat16"
    assert {k: v for k, v in opts.items() if k != "precision"} == embedder.cache_options()


def test_bfloat16_close_to_float32(batched, expected):
    bf = get_embedder("clamp2", weights=str(TINY), device="cpu", precision="bfloat16")
    names = ("handel_lascia_chio_pianga", "synth_513_patches", "one_note")
    out = dict(bf.embed_many([str(FIX / BY_NAME[n]["midi"]) for n in names]))
    for n in names:
        got, ref = out[str(FIX / BY_NAME[n]["midi"])], batched[n]
        assert got.frames.dtype == np.float32 and got.frames.shape == ref.frames.shape
        cos = float(got.clip @ ref.clip / np.linalg.norm(got.clip) / np.linalg.norm(ref.clip))
        assert cos > 0.99
        diff = np.abs(got.clip - ref.clip).max()
        assert 0 < diff < 0.05  # really reduced (not float32), but close


def test_weights_identity(embedder):
    ident = embedder.weights_identity()
    assert ident.startswith("tiny_clamp2.pth:4328678:")
    assert META["checkpoint_sha256"].startswith(ident.rsplit(":", 1)[1])
    assert embedder.weights_identity() == ident
    assert embedder.cache_options()["weights_identity"] == ident


# --------------------------------------------------------------------------------- config
def test_config_inferred_from_tiny_checkpoint(embedder):
    cfg = embedder.config
    assert cfg == {"hidden_size": 96, "patch_size": 64, "num_layers": 2, "intermediate_size": 384,
                   "max_positions": 512, "type_vocab_size": 2, "output_size": 96, "num_heads": 12}
    assert embedder.dim == 96


def _fake_state(hidden=24, layers=3, inter=40, positions=512, out=16, patch=64):
    import torch
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    s = {"music_model.patch_embedding.weight": r(hidden, patch * 128),
         "music_model.patch_embedding.bias": r(hidden),
         "music_model.base.embeddings.word_embeddings.weight": r(1, hidden),
         "music_model.base.embeddings.position_embeddings.weight": r(positions, hidden),
         "music_model.base.embeddings.token_type_embeddings.weight": r(2, hidden),
         "music_model.base.embeddings.LayerNorm.weight": 1 + r(hidden),
         "music_model.base.embeddings.LayerNorm.bias": r(hidden),
         "music_model.base.pooler.dense.weight": r(hidden, hidden),
         "music_model.base.pooler.dense.bias": r(hidden),
         "music_proj.weight": r(out, hidden), "music_proj.bias": r(out),
         "text_proj.weight": r(4, 4)}
    for i in range(layers):
        p = f"music_model.base.encoder.layer.{i}."
        for n in ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense"):
            s[p + n + ".weight"], s[p + n + ".bias"] = r(hidden, hidden), r(hidden)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            s[p + n + ".weight"], s[p + n + ".bias"] = 1 + r(hidden), r(hidden)
        s[p + "intermediate.dense.weight"], s[p + "intermediate.dense.bias"] = r(inter, hidden), r(inter)
        s[p + "output.dense.weight"], s[p + "output.dense.bias"] = r(hidden, inter), r(hidden)
    return s


def test_config_inferred_from_other_shapes(tmp_path):
    import torch

    from embedders.lib.clamp2_net import infer_config

    state = _fake_state()
    cfg = infer_config(state)
    assert cfg == {"hidden_size": 24, "patch_size": 64, "num_layers": 3, "intermediate_size": 40,
                   "max_positions": 512, "type_vocab_size": 2, "output_size": 16, "num_heads": 12}
    # bare state dict (no "model" wrapper), with a text-side key that must be ignored
    path = tmp_path / "bare.pth"
    torch.save(state, path)
    e = get_embedder("clamp2", weights=str(path), device="cpu")
    emb = e.compute(FIX / "midi" / "scale.mid")
    assert emb.frames.shape == (1, 16) and np.isfinite(emb.frames).all()


# --------------------------------------------------------------------------------- weights
def _hf_snapshot(root: Path, content: Path) -> Path:
    repo = root / "models--sander-wood--clamp2"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    shutil.copyfile(content, snap / C.HF_FILENAME)
    return snap / C.HF_FILENAME


def test_weights_explicit_path_missing(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        C.resolve_weights(tmp_path / "nope.pth")


def test_weights_from_hf_cache(tmp_path, monkeypatch, expected):
    hub = tmp_path / "hf_home" / "hub"
    target = _hf_snapshot(hub, TINY)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    assert C.resolve_weights(None).resolve() == target.resolve()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    e = get_embedder("clamp2", device="cpu")
    clip = e.embed_clip(FIX / "midi" / "one_note.mid")
    assert np.abs(clip - expected["one_note.global"][0]).max() <= TOL_GLOBAL
    assert e.weights_identity().startswith(C.HF_FILENAME + ":4328678:")


def test_weights_offline_not_cached_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        get_embedder("clamp2", device="cpu").load()
    msg = str(info.value)
    assert "sander-wood/clamp2" in msg and C.HF_FILENAME in msg and "--clamp2-weights" in msg


def test_truncated_or_foreign_checkpoint(tmp_path):
    data = TINY.read_bytes()
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cannot read"):
        get_embedder("clamp2", weights=str(trunc), device="cpu").load()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError):
        get_embedder("clamp2", weights=str(junk), device="cpu").load()
    import torch
    other = tmp_path / "clamp3_like.pth"
    torch.save({"model": {"symbolic_model.x": torch.zeros(2)}}, other)
    with pytest.raises(WeightsError, match="music_model"):
        get_embedder("clamp2", weights=str(other), device="cpu").load()
    half = {k: v for k, v in _fake_state().items() if "layer.1." not in k or "output.dense" not in k}
    broken = tmp_path / "missing.pth"
    torch.save({"model": half}, broken)
    with pytest.raises(WeightsError, match="lacks"):
        get_embedder("clamp2", weights=str(broken), device="cpu").load()


# --------------------------------------------------------------------------------- bad MIDI
def _midi_bytes(mid: mido.MidiFile) -> bytes:
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def _simple_track(notes=True):
    tr = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000, time=0)])
    if notes:
        tr += [mido.Message("note_on", note=60, velocity=80, time=0),
               mido.Message("note_off", note=60, velocity=0, time=240)]
    return tr


def _bad_midis(tmp_path: Path) -> dict[str, Path]:
    good = (FIX / "midi" / "one_note.mid").read_bytes()
    files = {
        "random": os.urandom(2000),
        "truncated": good[: len(good) - 12],
        "type2": _midi_bytes(mido.MidiFile(type=2, tracks=[_simple_track(), _simple_track()])),
        "no_notes": _midi_bytes(mido.MidiFile(type=0, tracks=[_simple_track(notes=False)])),
        "empty": b"",
        "varint_bomb": (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk\x00\x01\x00\x00"
                        + b"\xff" * 40000 + b"\x00\xff\x2f\x00"),
    }
    smpte = bytearray(_midi_bytes(mido.MidiFile(type=0, tracks=[_simple_track()])))
    smpte[12:14] = (-(25 << 8) + 40).to_bytes(2, "big", signed=True)  # 25 fps, 40 ticks/frame
    files["smpte"] = bytes(smpte)
    out = {}
    for name, data in files.items():
        p = tmp_path / f"{name}.mid"
        p.write_bytes(data)
        out[name] = p
    return out


def test_bad_midi_raise_input_error_with_reason(tmp_path):
    expect = {"random": "not a MIDI", "truncated": "truncated|readable", "type2": "type 2",
              "empty": "empty", "varint_bomb": "consecutive bytes"}
    accepted = {"no_notes": ["no sounding notes"],
                "smpte": ["SMPTE time division (25 fps, 40 ticks/frame)"]}
    for name, path in _bad_midis(tmp_path).items():
        if name in accepted:  # the reference embeds these: so do we, with a note
            text, notes = M.midi_to_mtf_and_notes(path)
            assert text == _oracle_mtf(path.read_bytes()) and notes == accepted[name]
            continue
        with pytest.raises(InputError, match=expect[name]) as info:
            M.midi_to_mtf(path)
        assert info.value.path == str(path) and info.value.reason


def test_oversized_midi_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "MAX_FILE_BYTES", 100)
    with pytest.raises(InputError, match="limit"):
        M.midi_to_mtf(FIX / "midi" / "schubert_lindenbaum.mid")
    monkeypatch.setattr(M, "MAX_FILE_BYTES", 4 * 2 ** 20)
    monkeypatch.setattr(M, "MAX_MESSAGES", 10)
    with pytest.raises(InputError, match="messages"):
        M.midi_to_mtf(FIX / "midi" / "schubert_lindenbaum.mid")


def test_many_tracks_and_huge_ticks():
    tracks = []
    for i in range(300):
        tracks.append(mido.MidiTrack([
            mido.Message("note_on", channel=i % 16, note=40 + i % 40, velocity=64, time=0x0FFFFFFF - i),
            mido.Message("note_off", channel=i % 16, note=40 + i % 40, velocity=0, time=0x0FFFFFFF)]))
    data = _midi_bytes(mido.MidiFile(type=1, tracks=tracks))
    text = M.midi_to_mtf(data)
    lines = text.split("\n")
    assert len(lines) == 1 + 600 + 1 and text == _oracle_mtf(data)
    assert lines[1] == "note_on 268435156 11 59 64"  # the earliest onset (track 299) comes first
    ids = M.patchilize(text)
    assert ids.shape[1] == 64 and int(ids.max()) < 128


def test_non_ascii_mtf_is_transliterated_or_refused():
    ids = M.patchilize("ticks_per_beat 480\nkey_signature C 0\nmarker caf\u00e9 0")
    assert "cafe" in "".join(chr(i) for i in ids[3] if i > 3)


def test_embed_many_bad_files_do_not_stop_others(embedder, batched, tmp_path):
    bad = _bad_midis(tmp_path)
    paths = [str(bad["random"]), str(FIX / "midi" / "multi.mid"), str(bad["smpte"]),
             str(tmp_path / "missing.mid"), str(FIX / "midi" / "scale.mid")]
    out = dict(embedder.embed_many(paths))
    assert set(out) == set(paths)
    for p in (paths[0], paths[3]):
        assert isinstance(out[p], InputError)
    assert out[paths[2]].info["notes"] == ["SMPTE time division (25 fps, 40 ticks/frame)"]
    assert np.abs(out[paths[1]].clip - batched["multi"].clip).max() < 1e-5
    assert np.abs(out[paths[4]].clip - batched["scale"].clip).max() < 1e-5


# --------------------------------------------------------------------------------- edge inputs
EDGE = json.loads((FIX / "edge_cases.json").read_text(encoding="utf-8"))
EDGE_CASES = {c["name"]: c for c in EDGE["cases"]}
EDGE_OK = [n for n, c in EDGE_CASES.items() if c["status"] == "embedded"]


@pytest.fixture(scope="module")
def expected_edge():
    with np.load(FIX / "expected_edge.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def edge_batched(embedder):
    paths = [str(FIX / c["midi"]) for c in EDGE_CASES.values()]
    out = dict(embedder.embed_many(paths))
    assert set(out) == set(paths)
    return {n: out[str(FIX / c["midi"])] for n, c in EDGE_CASES.items()}


def test_edge_generator_reproduces_the_committed_bytes():
    import hashlib
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_edge_midis", FIX / "make_edge_midis.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    built = mod.build()
    assert set(built) == set(EDGE_CASES)
    for name, data in built.items():
        assert data == (FIX / EDGE_CASES[name]["midi"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == EDGE_CASES[name]["midi_sha256"]


@pytest.mark.parametrize("name", EDGE_OK)
def test_edge_mtf_patches_and_notes_match_reference(name, expected_edge):
    case = EDGE_CASES[name]
    text, notes = M.midi_to_mtf_and_notes(FIX / case["midi"])
    assert text == (FIX / case["mtf"]).read_bytes().decode("utf-8")
    assert notes == case["notes"]
    ids = M.patchilize(text)
    assert ids.shape == (case["n_patches"], 64)
    assert np.array_equal(ids, expected_edge[f"{name}.patch_ids"])


@pytest.mark.parametrize("name", EDGE_OK)
def test_edge_embeddings_match_reference(name, edge_batched, expected_edge):
    emb = edge_batched[name]
    assert not isinstance(emb, Exception), emb
    assert np.abs(emb.frames - expected_edge[f"{name}.segments"]).max() <= EDGE["tolerances"]["segments"]
    assert np.abs(emb.clip - expected_edge[f"{name}.global"][0]).max() <= EDGE["tolerances"]["global"]
    assert emb.info["notes"] == EDGE_CASES[name]["notes"]
    assert emb.info["n_patches"] == EDGE_CASES[name]["n_patches"]


def test_edge_files_the_reference_cannot_convert_are_skipped_with_reason(edge_batched):
    skipped = [n for n, c in EDGE_CASES.items() if c["status"] == "skipped"]
    assert skipped == ["type2_two_tracks"]
    err = edge_batched["type2_two_tracks"]
    assert isinstance(err, InputError) and "type 2" in err.reason
    assert "merged_track" in EDGE_CASES["type2_two_tracks"]["reference_error"]


def test_ordinary_files_carry_no_notes(batched):
    assert all("notes" not in emb.info for emb in batched.values())


def test_no_torch_at_import():
    code = ("import sys; import embedders.clamp2, embedders.lib.mtf; "
            "from embedders import get_embedder; get_embedder('clamp2'); "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


# --------------------------------------------------------------------------------- properties
def _oracle_mtf(data: bytes) -> str:
    """The CLaMP 2 conversion written directly on mido's merged_track (spec §1.2)."""
    mid = mido.MidiFile(file=io.BytesIO(data))
    drop_meta = {"text", "copyright", "track_name", "instrument_name", "lyrics", "marker",
                 "cue_marker", "device_name", "sequencer_specific"}
    lines = [f"ticks_per_beat {mid.ticks_per_beat}"]
    for msg in mid.merged_track:
        if (msg.is_meta and msg.type in drop_meta) or (not msg.is_meta and msg.type == "sysex"):
            continue
        line = " ".join(str(v) for v in msg.dict().values()).strip()
        lines.append(line.encode("unicode_escape").decode("utf-8"))
    return "\n".join(lines)


_note = st.tuples(st.integers(0, 15), st.integers(0, 127), st.integers(1, 127),
                  st.integers(0, 5000), st.integers(0, 2000))
_extra = st.tuples(st.sampled_from(["marker", "text", "sysex", "cc", "tempo", "pitchwheel"]),
                   st.integers(0, 6000))


@st.composite
def _midi_files(draw):
    n_tracks = draw(st.integers(1, 4))
    tpb = draw(st.sampled_from([96, 120, 384, 480, 960, 10080]))
    tracks, n_notes = [], 0
    for _ in range(n_tracks):
        notes = draw(st.lists(_note, min_size=0, max_size=25))
        extras = draw(st.lists(_extra, max_size=6))
        events = []  # (abs tick, order, message)
        for ch, pitch, vel, start, dur in notes:
            events.append((start, 1, mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
            events.append((start + dur, 0, mido.Message("note_off", channel=ch, note=pitch)))
        for kind, tick in extras:
            msg = {"marker": mido.MetaMessage("marker", text="mé"),
                   "text": mido.MetaMessage("text", text="x"),
                   "sysex": mido.Message("sysex", data=[1, 2, 3]),
                   "cc": mido.Message("control_change", control=7, value=100),
                   "tempo": mido.MetaMessage("set_tempo", tempo=400000),
                   "pitchwheel": mido.Message("pitchwheel", pitch=-1000)}[kind]
            events.append((tick, 2, msg))
        events.sort(key=lambda e: (e[0], e[1]))
        tr, now = mido.MidiTrack(), 0
        for tick, _, msg in events:
            tr.append(msg.copy(time=tick - now))
            now = tick
        tr.append(mido.MetaMessage("end_of_track", time=draw(st.integers(0, 50))))
        tracks.append(tr)
        n_notes += len(notes)
    n_offs = n_notes
    if n_notes == 0:
        tracks[0].insert(0, mido.Message("note_on", note=60, velocity=1, time=0))
        n_notes = 1
    mid = mido.MidiFile(type=1 if n_tracks > 1 else 0, ticks_per_beat=tpb, tracks=tracks)
    return _midi_bytes(mid), n_notes, n_offs, tpb


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_midi_files())
def test_property_midi_to_mtf(case):
    data, n_notes, n_offs, tpb = case
    text = M.midi_to_mtf(data)
    assert text == _oracle_mtf(data)  # mido merged_track semantics + CLaMP 2 filter
    assert text == M.midi_to_mtf(data)  # deterministic
    lines = text.split("\n")
    assert lines[0] == f"ticks_per_beat {tpb}" and not text.endswith("\n")
    assert lines[-1].startswith("end_of_track ")
    kinds = [line.split(" ")[0] for line in lines[1:]]
    note_on = [line for line in lines if line.startswith("note_on ")]
    assert len(note_on) == n_notes
    assert kinds.count("note_off") == n_offs
    assert "marker" not in kinds and "text" not in kinds and "sysex" not in kinds
    for line in lines[1:]:
        fields = line.split(" ")
        assert fields[0] in {"note_on", "note_off", "control_change", "set_tempo", "pitchwheel",
                             "end_of_track"}
        assert all(f.lstrip("-").isdigit() for f in fields[1:])
    ids = M.patchilize(text)
    assert ids.shape[1] == 64 and ids.shape[0] >= 3 and int(ids.max()) < 128
    # every line is inside a patch: strip the ids back to text and count the line separators
    joined = "".join("".join(chr(i) for i in row if i > 3) for row in ids[1:-1])
    assert joined.count("\n") + joined.count("\t") == len(lines) - 1
