"""Known answers: embedders whose invariances are known by construction must come out so.

A pitch-class histogram must be moved by a transposition and not by a tempo change or an
octave; an inter-onset-interval histogram the reverse; a random vector predicts no attribute;
the key is readable from the pitch-class histogram on a corpus whose keys are known.
"""
import json

import pytest

import probe_toys
from embedders import get_embedder
from probe import run_probes
from probe.attributes import CATEGORICAL

INTERVENTIONS = ["transpose:+2", "transpose:+12", "tempo:1.25", "noise:20db"]


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    base = tmp_path_factory.mktemp("known")
    keys = probe_toys.key_corpus(base / "corpus", per_key=8, n_notes=10)
    embedders = [get_embedder(n) for n in ("test-pc-hist", "test-ioi-hist", "test-random")]
    probe = run_probes(base / "corpus", embedders, out=base / "out", pieces=24,
                       interventions=INTERVENTIONS, progress=False)
    return probe, keys, base


def _sens(probe, emb, name):
    return probe["interventions"][emb][name]["sensitivity"]["value"]


def test_pitch_class_histogram_sees_transposition_not_tempo_or_octave(known):
    probe, _, _ = known
    assert _sens(probe, "test-pc-hist", "transpose:+2") > 0.8
    assert _sens(probe, "test-pc-hist", "tempo:1.25") < 0.02
    assert _sens(probe, "test-pc-hist", "transpose:+12") < 0.02
    # an octave keeps every piece recognisable; a whole tone makes it another key's piece
    ident = probe["interventions"]["test-pc-hist"]
    assert ident["transpose:+12"]["identity_recall_at_1"]["value"] == 1.0
    assert ident["transpose:+2"]["label_kept"]["value"] < 0.5


def test_inter_onset_histogram_sees_tempo_not_pitch(known):
    probe, _, _ = known
    assert _sens(probe, "test-ioi-hist", "tempo:1.25") > 0.8
    assert _sens(probe, "test-ioi-hist", "transpose:+2") < 0.02
    assert _sens(probe, "test-ioi-hist", "transpose:+12") < 0.02


def test_audio_deformations_are_not_applicable_to_symbolic_embedders(known):
    probe, _, _ = known
    for emb in ("test-pc-hist", "test-ioi-hist", "test-random"):
        r = probe["interventions"][emb]["noise:20db"]
        assert r["applicable"] is False and "symbolic" in r["reason"]


def test_random_embedder_is_at_chance_on_every_attribute(known):
    probe, _, _ = known
    got = probe["attributes"]["test-random"]
    assert set(CATEGORICAL) <= set(got)
    for name, r in got.items():
        if r["metric"] == "balanced_accuracy":
            assert r["ci95"][0] <= r["chance"] <= r["ci95"][1], (name, r)
        else:
            assert r["value"] < 0.15, (name, r)     # R² of noise: at or below 0


def test_key_probe_from_pitch_class_histogram_is_near_perfect(known):
    probe, keys, base = known
    r = probe["attributes"]["test-pc-hist"]["key"]
    assert r["value"] >= 0.95 and r["chance"] == pytest.approx(1 / 3) and r["n"] == 24
    # the extractor found the keys the corpus was written in
    rows = (base / "out" / "piece_attributes.csv").read_text().splitlines()
    names = {"c_major": "C major", "a_minor": "A minor", "fs_major": "F# major"}
    found = {line.split(",")[0]: line.split(",")[1] for line in rows[1:]}
    assert found == {k: names[k.split("/")[0]] for k in keys}


def test_constant_attribute_is_skipped_with_its_reason(known):
    probe, _, _ = known
    # every piece is a melody over a held triad: polyphony is 4 throughout
    reasons = [s["reason"] for s in probe["skipped"] if s["what"].endswith("/ polyphony")]
    assert len(reasons) == 3 and all("near-constant" in r for r in reasons)


def test_outputs_are_written(known):
    probe, _, base = known
    out = base / "out"
    data = json.loads((out / "probe.json").read_text())
    assert set(data) == {"attributes", "interventions", "skipped", "params"}
    r = data["interventions"]["test-pc-hist"]["transpose:+2"]
    assert set(r) == {"sensitivity", "identity_recall_at_1", "label_kept", "n"}
    assert r["identity_recall_at_1"]["chance"] == pytest.approx(1 / 24) and r["n"] == 24
    for name in ("probe_attributes.csv", "probe_interventions.csv", "probe_skipped.csv",
                 "probe_report.html", "probe_report.md"):
        assert (out / name).stat().st_size > 100, name
    for name in ("probe_attributes", "probe_interventions"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 10_000
        assert "test-pc-hist" in (out / "plots" / f"{name}.svg").read_text()
    md = (out / "probe_report.md").read_text()
    assert "| key | bal. acc. |" in md and "n/a (audio only)" in md
