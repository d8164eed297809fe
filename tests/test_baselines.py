"""The weight-free baseline embedders: audio-stats and midi-stats, checked on known signals."""
import struct

import mido
import numpy as np
import pytest
import soundfile as sf

from conftest import write_midi, write_wav
from embedders import ConfigurationError, InputError, get_embedder
from embedders.midi_stats import feature_names, read_notes


def _feature(emb, vec, name):
    return float(vec[emb.feature_names.index(name)])


# -- audio-stats --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def audio_stats():
    return get_embedder("audio-stats").load()


def test_audio_stats_pure_tone(tmp_path, audio_stats):
    path = write_wav(tmp_path / "a440.wav", seconds=3.0, sr=22050, freq=440.0)
    emb = audio_stats.compute(path)
    assert emb.frames.shape == (2, audio_stats.dim) == (2, len(audio_stats.feature_names))
    chroma = [_feature(audio_stats, emb.clip, f"mean_chroma_{i}") for i in range(12)]
    assert int(np.argmax(chroma)) == 9  # A
    assert _feature(audio_stats, emb.clip, "mean_spectral_centroid_khz") == pytest.approx(0.44, abs=0.03)
    # RMS of a 0.5-amplitude sine is 0.5 / sqrt(2)
    assert _feature(audio_stats, emb.clip, "mean_rms") == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    np.testing.assert_allclose(emb.timestamps, [0.0, 2.0])
    np.testing.assert_allclose(emb.clip, emb.frames.mean(axis=0), rtol=1e-5, atol=1e-5)


def test_audio_stats_sample_rate_and_channels_do_not_matter(tmp_path, audio_stats):
    ref = audio_stats.embed_clip(write_wav(tmp_path / "ref.wav", seconds=2.0, sr=22050))
    hi = audio_stats.embed_clip(write_wav(tmp_path / "hi.wav", seconds=2.0, sr=48000, channels=2))
    cos = ref @ hi / np.linalg.norm(ref) / np.linalg.norm(hi)
    assert cos > 0.999
    assert _feature(audio_stats, hi, "mean_rms") == pytest.approx(
        _feature(audio_stats, ref, "mean_rms"), rel=0.02)


def test_audio_stats_windows_and_short_tail(tmp_path, audio_stats):
    # 5 s at 2 s windows: two full windows plus a 1 s tail (>= half a window) = 3
    assert audio_stats.embed(write_wav(tmp_path / "5s.wav", seconds=5.0)).shape[0] == 3
    # 4.5 s: the 0.5 s tail is under half a window and is dropped
    assert audio_stats.embed(write_wav(tmp_path / "4s5.wav", seconds=4.5)).shape[0] == 2


@pytest.mark.parametrize("seconds,sr", [(0.05, 22050), (0.3, 8000), (0.2, 192000)])
def test_audio_stats_tiny_and_extreme_rates(tmp_path, audio_stats, seconds, sr):
    vec = audio_stats.embed_clip(write_wav(tmp_path / "x.wav", seconds=seconds, sr=sr))
    assert vec.shape == (audio_stats.dim,) and np.all(np.isfinite(vec))


def test_audio_stats_silence_is_finite(tmp_path, audio_stats):
    p = tmp_path / "silence.wav"
    sf.write(p, np.zeros(22050), 22050)
    frames = audio_stats.embed(p)
    assert np.all(np.isfinite(frames))
    assert _feature(audio_stats, frames[0], "mean_rms") == 0.0


def test_audio_stats_streams_long_files_like_one_piece(tmp_path, audio_stats):
    """A file longer than one read block (30 s) gives the same windows as a fresh computation."""
    import soxr
    sr = 44100
    rng = np.random.default_rng(0)
    sig = 0.1 * rng.standard_normal(int(65 * sr))
    p = tmp_path / "long.wav"
    sf.write(p, sig, sr, subtype="FLOAT")
    frames = audio_stats.embed(p)
    assert frames.shape[0] == 33  # 32 full 2-s windows + a 1-s tail
    whole = soxr.resample(sig.astype(np.float32), sr, 22050, quality="VHQ")
    w = 2 * 22050
    k = 20  # a window after two block boundaries
    np.testing.assert_allclose(frames[k], audio_stats._window_vector(whole[k * w:(k + 1) * w]),
                               rtol=1e-3, atol=1e-3)


def test_audio_stats_bad_files(tmp_path, audio_stats):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(np.random.default_rng(1).bytes(4000))
    with pytest.raises(InputError, match="not a readable audio file"):
        audio_stats.embed(bad)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.0, np.nan, 0.1] * 100), 22050, subtype="FLOAT")
    with pytest.raises(InputError, match="NaN"):
        audio_stats.embed(nan)


def test_audio_stats_options_are_checked():
    with pytest.raises(ConfigurationError, match="window_seconds"):
        get_embedder("audio-stats", window_seconds=0)
    with pytest.raises(ConfigurationError, match="n_mfcc"):
        get_embedder("audio-stats", n_mfcc=80, n_mels=40)
    with pytest.raises(ConfigurationError, match="no option"):
        get_embedder("audio-stats", hop=3)


# -- midi-stats ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def midi_stats():
    return get_embedder("midi-stats").load()


def test_midi_stats_scale_known_values(tmp_path, midi_stats):
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    vec = midi_stats.embed_clip(write_midi(tmp_path / "c.mid", pitches=scale, tempo_bpm=120.0))
    assert vec.shape == (len(feature_names()),)
    f = dict(zip(feature_names(), vec))
    pcs = np.array([f[f"pitch_class_{i}"] for i in range(12)])
    np.testing.assert_allclose(pcs[[0, 2, 4, 5, 7, 9, 11]], [2 / 8] + [1 / 8] * 6, rtol=1e-5)
    assert pcs[[1, 3, 6, 8, 10]].sum() == 0
    assert f["pitch_min"] * 127 == pytest.approx(60) and f["pitch_max"] * 127 == pytest.approx(72)
    assert f["log2_tempo_over_120"] == pytest.approx(0.0, abs=1e-6)
    # steps of 2,2,1,2,2,2,1 semitones
    assert f["interval_2"] == pytest.approx(5 / 7) and f["interval_1"] == pytest.approx(2 / 7)
    assert f["family_piano"] == pytest.approx(1.0) and f["drum_share"] == 0.0
    assert f["log_polyphony_max"] == pytest.approx(np.log1p(1))
    assert f["log2_duration_mean"] == pytest.approx(np.log2(0.25), abs=1e-3)


def test_midi_stats_tempo_chord_and_drums(tmp_path, midi_stats):
    import pretty_midi
    pm = pretty_midi.PrettyMIDI(initial_tempo=60.0)
    keys, drums = pretty_midi.Instrument(program=33), pretty_midi.Instrument(0, is_drum=True)
    for p in (48, 52, 55):  # one chord on a bass (family 4)
        keys.notes.append(pretty_midi.Note(velocity=100, pitch=p, start=0.0, end=1.0))
    for t in range(4):
        drums.notes.append(pretty_midi.Note(velocity=80, pitch=36, start=float(t), end=t + 0.1))
    pm.instruments += [keys, drums]
    path = tmp_path / "mix.mid"
    pm.write(str(path))
    f = dict(zip(feature_names(), midi_stats.embed_clip(path)))
    assert f["log2_tempo_over_120"] == pytest.approx(-1.0, abs=1e-3)
    assert f["log_polyphony_max"] == pytest.approx(np.log1p(4))  # 3 chord notes + kick
    assert f["family_bass"] == pytest.approx(1.0)
    assert f["drum_share"] == pytest.approx(4 / 7)
    assert f["drum_kick"] == pytest.approx(1.0)
    assert f["velocity_mean"] == pytest.approx((3 * 100 + 4 * 80) / 7 / 127)


def test_midi_stats_windows_skip_silence(tmp_path, midi_stats):
    """A giant delta time costs nothing: only windows where notes start become frames."""
    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    tr += [mido.Message("note_on", note=60, velocity=90, time=0),
           mido.Message("note_off", note=60, velocity=0, time=480),
           mido.Message("note_on", note=64, velocity=90, time=2 ** 27),  # ~33 hours later
           mido.Message("note_off", note=64, velocity=0, time=480)]
    mid.tracks.append(tr)
    path = tmp_path / "gap.mid"
    mid.save(path)
    emb = midi_stats.compute(path)
    assert emb.frames.shape[0] == 2
    assert emb.timestamps[1] > 3600 and np.all(np.isfinite(emb.frames))


def _raw_midi(header_division: int, track_bytes: bytes, midi_type: int = 0) -> bytes:
    return (b"MThd" + struct.pack(">IHHH", 6, midi_type, 1, header_division)
            + b"MTrk" + struct.pack(">I", len(track_bytes)) + track_bytes)


def test_midi_stats_smpte_division(tmp_path):
    # 25 fps x 40 ticks per frame = 1000 ticks per second: a note from tick 1000 to 3000
    track = (bytes([0x87, 0x68, 0x90, 60, 64])            # delta 1000, note on
             + bytes([0x8F, 0x50, 0x80, 60, 0])           # delta 2000, note off
             + b"\x00\xff\x2f\x00")
    path = tmp_path / "smpte.mid"
    path.write_bytes(_raw_midi((256 - 25) << 8 | 40, track))
    notes = read_notes(str(path))
    np.testing.assert_allclose([notes.start[0], notes.end[0]], [1.0, 3.0])


@pytest.mark.parametrize("make,reason", [
    (lambda p: p.write_bytes(np.random.default_rng(2).bytes(500)), "not a readable MIDI"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(_raw_midi(480, b"\x00\xff\x2f\x00", midi_type=2)), "type 2"),
    (lambda p: p.write_bytes(_raw_midi(480, b"\x00\xff\x2f\x00")), "no notes"),
    (lambda p: p.write_bytes(_raw_midi(480, b"\x00\x90\x3c\x40\x83")[:-3]), "not a readable MIDI"),
])
def test_midi_stats_bad_files(tmp_path, midi_stats, make, reason):
    path = tmp_path / "bad.mid"
    make(path)
    with pytest.raises(InputError, match=reason) as info:
        midi_stats.embed(path)
    assert info.value.path == str(path)


def test_midi_stats_many_tracks_and_odd_text(tmp_path, midi_stats):
    mid = mido.MidiFile(type=1, ticks_per_beat=96)
    for k in range(300):
        tr = mido.MidiTrack()
        tr.append(mido.MetaMessage("track_name", name="piste \u00e9t\u00e9 \u00ff", time=0))
        tr.append(mido.Message("note_on", channel=k % 16, note=40 + k % 40, velocity=70, time=k))
        tr.append(mido.Message("note_off", channel=k % 16, note=40 + k % 40, velocity=0, time=96))
        mid.tracks.append(tr)
    path = tmp_path / "many.mid"
    mid.save(path)
    vec = midi_stats.embed_clip(path)
    assert np.all(np.isfinite(vec))
    assert read_notes(str(path)).pitch.size == 300


def test_midi_stats_agrees_with_pretty_midi_note_times(tmp_path):
    import pretty_midi
    pm = pretty_midi.PrettyMIDI(initial_tempo=90.0)
    inst = pretty_midi.Instrument(program=0)
    for k in range(20):
        inst.notes.append(pretty_midi.Note(velocity=80, pitch=50 + k, start=k * 0.37,
                                           end=k * 0.37 + 0.3))
    pm.instruments.append(inst)
    path = tmp_path / "t.mid"
    pm.write(str(path))
    # add a tempo change mid-way with mido, then compare with pretty_midi's reading
    mid = mido.MidiFile(path)
    mid.tracks[0].insert(1, mido.MetaMessage("set_tempo", tempo=400000, time=700))
    mid.tracks[0][2].time = max(0, mid.tracks[0][2].time - 700)
    mid.save(path)
    ref = pretty_midi.PrettyMIDI(str(path))
    ours = read_notes(str(path))
    ref_starts = np.sort([n.start for i in ref.instruments for n in i.notes])
    np.testing.assert_allclose(np.sort(ours.start), ref_starts, atol=1e-6)
