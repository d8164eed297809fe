"""basic-pitch parity with the reference package's ``predict`` (lean copy of the shared
fixtures: tests/fixtures/basic_pitch). Network tests skip when the published model file is not
found (``pip install --no-deps basic-pitch==0.4.0`` as .ci/run does); the note-creation tests
need no model: they feed the reference's own model output."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FIXTURES
from prepare import basic_pitch as bp

FIX = FIXTURES / "basic_pitch"
CASES = json.loads((FIX / "cases.json").read_text())
EXPECTED = np.load(FIX / "expected.npz")
SHORT = "bach_bwv140_7_short_16k_mono"


def _model_or_skip():
    try:
        path = bp.resolve_model(allow_download=False)
    except bp.WeightsError as exc:
        pytest.skip(f"basic-pitch model not available offline: {exc}")
    return bp.BasicPitchModel(path)


def _options(case):
    return bp.NoteOptions(**case["params"])


def _check_events(events, case):
    pre = case["id"] + ".notes."
    assert len(events) == len(EXPECTED[pre + "start_s"]) == case["n_notes"]
    assert [e.start for e in events] == EXPECTED[pre + "start_s"].tolist()
    assert [e.end for e in events] == EXPECTED[pre + "end_s"].tolist()
    assert [e.pitch for e in events] == EXPECTED[pre + "pitch_midi"].tolist()
    flat = [b for e in events for b in e.bends]
    assert flat == EXPECTED[pre + "pitch_bends_flat"].tolist()
    offsets = np.cumsum([0] + [len(e.bends) for e in events])
    assert offsets.tolist() == EXPECTED[pre + "pitch_bends_offsets"].tolist()
    amp = np.array([e.amplitude for e in events], dtype=np.float64)
    assert np.all(np.abs(amp - EXPECTED[pre + "amplitude"]) <= CASES["tolerances"]["amplitude_abs"])


def _check_midi(pm, case, tmp_path):
    import pretty_midi
    out = tmp_path / "ours.mid"
    pm.write(str(out))
    ours = pretty_midi.PrettyMIDI(str(out))
    ref = pretty_midi.PrettyMIDI(str(FIX / case["expected_midi"]))
    assert [(i.program, len(i.notes)) for i in ours.instruments] == \
        [(i.program, len(i.notes)) for i in ref.instruments]
    for a, b in zip(ours.instruments, ref.instruments):
        for x, y in zip(a.notes, b.notes):
            assert x.pitch == y.pitch and abs(x.velocity - y.velocity) <= 1
            assert abs(x.start - y.start) <= 1e-6 and abs(x.end - y.end) <= 1e-6
        assert [p.pitch for p in a.pitch_bends] == [p.pitch for p in b.pitch_bends]
        assert np.allclose([p.time for p in a.pitch_bends], [p.time for p in b.pitch_bends],
                           atol=1e-6, rtol=0)
    assert ours.get_tempo_changes()[1].tolist() == \
        ref.get_tempo_changes()[1].tolist()
    assert ours.resolution == ref.resolution


@pytest.mark.parametrize("case", [c for c in CASES["cases"] if c["file"].startswith(SHORT)],
                         ids=lambda c: c["id"])
def test_note_creation_from_reference_model_output(case, tmp_path):
    output = {k: EXPECTED[f"{SHORT}.model_output.{k}"].copy() for k in ("note", "onset", "contour")}
    events = bp.model_output_to_notes(output, _options(case))
    _check_events(events, case)
    _check_midi(bp.notes_to_midi(events, multiple_pitch_bends=_options(case).multiple_pitch_bends),
                case, tmp_path)


def test_model_output_within_tolerance():
    model = _model_or_skip()
    got = model.predict_file(FIX / f"{SHORT}.wav")
    for key in ("note", "onset", "contour"):
        ref = EXPECTED[f"{SHORT}.model_output.{key}"]
        assert got[key].shape == ref.shape
        diff = np.abs(got[key].astype(np.float64) - ref)
        tol = CASES["tolerances"][key]
        assert diff.max() <= tol["max_abs"] and diff.mean() <= tol["mean_abs"], key


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda c: c["id"])
def test_predict_parity(case, tmp_path):
    model = _model_or_skip()
    output = model.predict_file(FIX / case["file"])
    events = bp.model_output_to_notes(output, _options(case))
    _check_events(events, case)
    _check_midi(bp.notes_to_midi(events, multiple_pitch_bends=_options(case).multiple_pitch_bends),
                case, tmp_path)


def test_silence_gives_no_notes_and_no_warning(recwarn):
    model = _model_or_skip()
    output = model.predict_audio(np.zeros(2 * bp.SAMPLE_RATE, np.float32))
    assert output["note"].shape == (172, 88) and np.all(np.isfinite(output["note"]))
    assert bp.model_output_to_notes(output) == []
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_options_validate():
    with pytest.raises(ValueError, match="onset_threshold"):
        bp.NoteOptions(onset_threshold=1.5).validate()
    with pytest.raises(ValueError, match="minimum_frequency must be below"):
        bp.NoteOptions(minimum_frequency=500, maximum_frequency=100).validate()
    assert bp.NoteOptions().minimum_note_frames == 11
    assert bp.NoteOptions(minimum_note_length=100).minimum_note_frames == 9


def test_frequency_limits_remove_notes_outside():
    output = {k: EXPECTED[f"{SHORT}.model_output.{k}"].copy() for k in ("note", "onset", "contour")}
    all_notes = bp.model_output_to_notes({k: v.copy() for k, v in output.items()})
    pitches = sorted(e.pitch for e in all_notes)
    cut = 440.0 * 2 ** ((pitches[-1] - 0.5 - 69) / 12)  # just below the highest note
    limited = bp.model_output_to_notes(output, bp.NoteOptions(maximum_frequency=cut))
    assert all(e.pitch < pitches[-1] for e in limited)


def test_explicit_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(bp.WeightsError, match="not found"):
        bp.resolve_model(tmp_path / "nope.onnx")


def _melodia_by_full_scans(note, onset, **kw):
    """The melodia step as the reference states it (argmax of the whole array while above the
    threshold), to check the sorted-candidates version against."""
    events = bp.output_to_note_frames(note.copy(), onset.copy(), melodia_trick=False, **kw)
    # rebuild the energy left after the onset pass, then scan
    energy = note.astype(np.float64).copy()
    for s, e, p, _ in events:
        energy[s:e, max(p - 21 - 1, 0):p - 21 + 2] = 0
    thr, n = kw["frame_threshold"], note.shape[0]
    while np.max(energy) > thr:
        t_mid, p = np.unravel_index(np.argmax(energy), energy.shape)
        energy[t_mid, p] = 0
        i, k = bp._extend(energy, t_mid + 1, p, 1, thr, n - 1, zero=True)
        end = i - 1 - k
        i, k = bp._extend(energy, t_mid - 1, p, -1, thr, 0, zero=True)
        start = i + 1 + k
        if end - start > kw["minimum_note_frames"]:
            events.append((int(start), int(end), int(p) + 21, np.mean(note[start:end, p])))
    return events


@pytest.mark.parametrize("seed", range(4))
def test_melodia_sorted_candidates_equal_full_scans(seed):
    import scipy.ndimage
    rng = np.random.default_rng(seed)
    raw = rng.random((400, 88))
    note = scipy.ndimage.uniform_filter(raw, size=(9, 1)).astype(np.float32)
    note = np.round(note * 20) / 20  # many exact ties
    onset = (rng.random((400, 88)) * 0.6).astype(np.float32)
    kw = dict(onset_threshold=0.5, frame_threshold=0.5, minimum_note_frames=3)
    fast = bp.output_to_note_frames(note.copy(), onset.copy(), **kw)
    assert fast == _melodia_by_full_scans(note, onset, **kw)
    assert len(fast) > 5
