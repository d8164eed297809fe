"""The probe run: variants cached (a re-run renders nothing), a killed run resumes, bad input,
the command line, the pure metrics' validation and answers."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import probe_toys
import toy_embedders  # noqa: F401 (registers toy-audio)
from conftest import ROOT
from analysis import probing
from embedders import get_embedder
from probe import run_probes
from probe.interventions import (INTERVENTIONS, apply_audio, apply_midi, intervention_rng)
from probe.run import sample_pieces


def _corpus(root, per_key=2, n_notes=6):
    probe_toys.key_corpus(root, per_key=per_key, n_notes=n_notes)
    return root


#: ``main.py probe ARGS`` in a fresh process that has the test embedders registered.
LAUNCH = ("import sys; sys.path[:0] = [{root!r}, {tests!r}]; import toy_embedders, probe_toys; "
          "from cli import main; sys.exit(main(['probe'] + sys.argv[1:]))")


def _command(*args):
    code = LAUNCH.format(root=str(ROOT), tests=str(ROOT / "tests"))
    return [sys.executable, "-c", code, *map(str, args)]


def _main(capsys, *args):
    """``main.py probe ARGS`` in this process: (exit status, stderr lines)."""
    from cli import main
    capsys.readouterr()
    code = main(["probe", *map(str, args)])
    return code, capsys.readouterr().err.strip().splitlines()


def test_rerun_renders_nothing_and_gives_the_same_numbers(tmp_path):
    corpus = _corpus(tmp_path / "c")
    kw = dict(out=tmp_path / "out", emb_dir=tmp_path / "emb", pieces=6, synth="builtin",
              interventions=["transpose:+2", "gain:-12db"], progress=False)
    embs = lambda: [get_embedder("toy-audio"), get_embedder("test-pc-hist")]  # noqa: E731
    first = run_probes(corpus, embs(), **kw)
    assert first["params"]["variants_made"] == 6 * 3          # original, transposed, gain
    wavs = sorted((tmp_path / "emb" / "probe_variants").rglob("*.wav"))
    assert len(wavs) == 18
    mtimes = [w.stat().st_mtime_ns for w in wavs]
    second = run_probes(corpus, embs(), **kw)
    assert second["params"]["variants_made"] == 0
    assert [w.stat().st_mtime_ns for w in wavs] == mtimes
    assert second["interventions"] == first["interventions"]
    gain = first["interventions"]["toy-audio"]["gain:-12db"]
    assert gain["n"] == 6 and "sensitivity" in gain
    assert first["interventions"]["test-pc-hist"]["gain:-12db"]["applicable"] is False


@pytest.mark.slow
def test_killed_run_resumes(tmp_path, capsys):
    corpus = _corpus(tmp_path / "c", per_key=3, n_notes=10)
    args = ["--dataset", corpus, "--embedders", "toy-audio", "--out", tmp_path / "out",
            "--emb-dir", tmp_path / "emb", "--synth", "builtin", "--pieces", 9, "--quiet",
            "--interventions", "transpose:+1", "transpose:+5", "tempo:0.8", "velocity:0.5"]
    proc = subprocess.Popen(_command(*args), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    variants = tmp_path / "emb" / "probe_variants"

    def finished():  # not the temporary files of writes in flight
        return [p for p in variants.rglob("*.wav") if not p.name.startswith(".")]
    deadline = time.time() + 120
    while time.time() < deadline and len(finished()) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(finished())
    assert 5 <= done_before < 45, "the kill must land while variants are being made"
    for wav in finished():  # every file there is whole (atomic writes)
        assert sf.info(str(wav)).frames > 0
    code, err = _main(capsys, *args)
    assert code == 0, err
    probe = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert probe["params"]["variants_made"] == 45 - done_before
    assert len(finished()) == 45
    assert probe["interventions"]["toy-audio"]["tempo:0.8"]["n"] == 9


def test_unknown_names_are_one_line_and_nothing_is_computed(tmp_path, capsys):
    corpus = _corpus(tmp_path / "c", per_key=1)
    for flag, bad in (("--interventions", "transpose:+3"), ("--attributes", "loudness")):
        code, lines = _main(capsys, "--dataset", corpus, "--embedders", "test-pc-hist",
                            "--out", tmp_path / "out", flag, bad)
        assert code == 2
        assert len(lines) == 1 and bad in lines[0] and "known:" in lines[0]
        assert ("transpose:+2" if flag == "--interventions" else "pitch_range") in lines[0]
        assert not (tmp_path / "out").exists()
    code, lines = _main(capsys, "--dataset", corpus, "--embedders", "no-such-model", "--out",
                        tmp_path / "out")
    assert code == 2 and len(lines) == 1 and "no-such-model" in lines[0]
    assert not (tmp_path / "out").exists()


def test_no_midi_is_exit_2(tmp_path, capsys):
    from conftest import write_wav
    write_wav(tmp_path / "c" / "a" / "x.wav")
    write_wav(tmp_path / "c" / "b" / "y.wav")
    code, lines = _main(capsys, "--dataset", tmp_path / "c", "--embedders", "toy-audio",
                        "--out", tmp_path / "out", "--quiet")
    assert code == 2 and len(lines) == 1 and "no MIDI" in lines[0]


def test_unreadable_midi_is_listed_and_the_rest_goes_on(tmp_path):
    corpus = _corpus(tmp_path / "c", per_key=2)
    (corpus / "c_major" / "broken.mid").write_bytes(b"MThd garbage")
    probe = run_probes(corpus, [get_embedder("test-pc-hist")], out=tmp_path / "out",
                       pieces=10, interventions=["transpose:+2"], progress=False)
    reasons = {s["what"]: s["reason"] for s in probe["skipped"]}
    assert "cannot read MIDI" in reasons["c_major/broken.mid"]
    assert probe["interventions"]["test-pc-hist"]["transpose:+2"]["n"] == 6


def test_a_variant_that_cannot_be_made_is_listed(tmp_path):
    import pretty_midi
    corpus = _corpus(tmp_path / "c", per_key=2)
    one = pretty_midi.PrettyMIDI(initial_tempo=120)  # a single note: dropout:0.3 keeps it...
    inst = pretty_midi.Instrument(0)
    inst.notes = [pretty_midi.Note(80, 127, 0.0, 1.0)]  # ...but transpose:+1 pushes it off
    one.instruments.append(inst)
    one.write(str(corpus / "a_minor" / "top.mid"))
    probe = run_probes(corpus, [get_embedder("test-pc-hist")], out=tmp_path / "out",
                       pieces=7, interventions=["transpose:+1"], progress=False)
    failed = [s for s in probe["skipped"] if s["what"].endswith("/ transpose:+1")]
    assert len(failed) == 1 and "no notes left" in failed[0]["reason"]
    assert probe["interventions"]["test-pc-hist"]["transpose:+1"]["n"] == 6


def test_midi_interventions_change_one_thing():
    import pretty_midi
    pm = pretty_midi.PrettyMIDI(initial_tempo=100)
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(100, 60 + i, i * 0.5, i * 0.5 + 0.4) for i in range(20)]
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    drums.notes = [pretty_midi.Note(100, 36, 0.0, 0.1)]
    pm.instruments += [inst, drums]

    def copy():
        import copy as c
        return c.deepcopy(pm)
    rng = lambda name: intervention_rng(0, "abc", name)  # noqa: E731
    t = apply_midi(copy(), "transpose:+7", rng("t"))
    assert [n.pitch for n in t.instruments[0].notes] == [67 + i for i in range(20)]
    assert t.instruments[1].notes[0].pitch == 36                       # drums stay
    f = apply_midi(copy(), "tempo:1.25", rng("f"))
    assert f.instruments[0].notes[-1].end == pytest.approx(9.9 / 1.25)
    s = apply_midi(copy(), "instrument:swap", rng("s"))
    assert s.instruments[0].program // 8 != 0
    d = apply_midi(copy(), "dropout:0.3", rng("d"))
    assert sum(len(i.notes) for i in d.instruments) == 21 - round(0.3 * 21)
    j = apply_midi(copy(), "jitter:0.03", rng("j"))
    moved = [a.start - b.start for a, b in zip(j.instruments[0].notes, inst.notes)]
    assert 0 < max(map(abs, moved)) <= 0.03
    v = apply_midi(copy(), "velocity:0.5", rng("v"))
    assert {n.velocity for n in v.instruments[0].notes} == {50}


def test_audio_deformations():
    sr = 22050
    t = np.arange(sr) / sr
    y = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 8000 * t)).astype(np.float32)
    g = apply_audio(y, sr, "gain:-12db", np.random.default_rng(0))
    assert np.sqrt(np.mean(g ** 2)) / np.sqrt(np.mean(y ** 2)) == pytest.approx(10 ** (-12 / 20),
                                                                                rel=0.01)
    n = apply_audio(y, sr, "noise:20db", np.random.default_rng(0))
    snr = 10 * np.log10(np.mean(y.astype(float) ** 2) / np.mean((n - y).astype(float) ** 2))
    assert snr == pytest.approx(20, abs=0.2)
    lp = apply_audio(y, sr, "lowpass:4000", np.random.default_rng(0))
    spec_in, spec_out = np.abs(np.fft.rfft(y)), np.abs(np.fft.rfft(lp))
    assert spec_out[8000] < 0.5 * spec_in[8000] and spec_out[440] > 0.9 * spec_in[440]


def test_sampling_is_stratified_and_seeded(tmp_path):
    from collection import scan_dataset
    corpus = _corpus(tmp_path / "c", per_key=4)
    items = scan_dataset(corpus).usable
    pick = sample_pieces(items, 6, seed=1)
    assert sorted({it.label for it in pick}) == sorted(probe_toys.KEYS)
    assert all(sum(it.label == k for it in pick) == 2 for k in probe_toys.KEYS)
    assert [it.id for it in pick] == [it.id for it in sample_pieces(items, 6, seed=1)]
    assert [it.id for it in pick] != [it.id for it in sample_pieces(items, 6, seed=2)]


def test_metrics_known_answers_and_validation():
    rng = np.random.default_rng(0)
    O = rng.standard_normal((10, 8))
    same = probing.sensitivity(O, O.copy())
    assert same["value"] == pytest.approx(0.0, abs=1e-9)
    assert probing.identity_recall_at_1(O, O * 3.0)["value"] == 1.0    # cosine: scale-free
    shuffled = probing.identity_recall_at_1(O, np.roll(O, 1, axis=0))
    assert shuffled["value"] == 0.0 and shuffled["chance"] == pytest.approx(0.1)
    assert probing.sensitivity(O, np.roll(O, 1, axis=0))["value"] == pytest.approx(1.0, abs=0.35)
    labels = ["a"] * 5 + ["b"] * 5
    clustered = np.repeat(np.eye(8)[:2], 5, axis=0) + 0.01 * rng.standard_normal((10, 8))
    kept = probing.label_kept(clustered, clustered, labels, k=3)
    assert kept["value"] == 1.0 and kept["reference"] == 1.0
    swapped = probing.label_kept(clustered, clustered[::-1], labels, k=3)
    assert swapped["value"] == 0.0
    with pytest.raises(ValueError, match="same shape|one shape"):
        probing.sensitivity(O, O[:5])
    with pytest.raises(ValueError, match="2-d"):
        probing.category_probe(np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        probing.category_probe(rng.standard_normal((12, 3)), ["a"] * 8 + ["b"] * 4)
    with pytest.raises(ValueError, match="near-constant"):
        probing.continuous_probe(rng.standard_normal((12, 3)), np.full(12, 3.0))


def test_continuous_probe_reads_a_linear_value():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    y = 3 * X[:, 0] - X[:, 1] + 0.05 * rng.standard_normal(40)
    r = probing.continuous_probe(X, y, np.repeat(np.arange(20), 2))
    assert r["value"] > 0.95 and r["spearman"] > 0.95 and r["ci95"][0] <= r["value"]
    noise = probing.continuous_probe(X, rng.standard_normal(40))
    assert noise["value"] < 0.1


def test_report_section_renders_every_measure():
    from analysis.probe_report import HOW_TO_READ, render_probe_section
    probe = {"attributes": {"e": {"tempo": {"value": 0.5, "ci95": [0.4, 0.6], "metric": "r2",
                                            "chance": 0.0, "n": 10, "spearman": 0.7}}},
             "interventions": {"e": {"tempo:0.8": {
                 "sensitivity": {"value": 0.3, "ci95": [0.2, 0.4]},
                 "identity_recall_at_1": {"value": 0.9, "ci95": [0.6, 1.0], "chance": 0.1},
                 "label_kept": {"value": 0.8, "ci95": [0.5, 0.9], "reference": 0.9}, "n": 10}}},
             "skipped": [{"what": "x.mid", "reason": "cannot read <MIDI>"}],
             "params": {"embedders": ["e"], "interventions": ["tempo:0.8"]}}
    html, md = render_probe_section(probe, {"attributes": "plots/a.png"})
    for sentence in HOW_TO_READ.values():
        assert sentence in md
    assert "0.50 [0.40, 0.60], ρ 0.70" in md and "0.30 [0.20, 0.40]; id@1 0.90" in md
    assert "cannot read &lt;MIDI&gt;" in html and '<img src="plots/a.png"' in html
    assert len(INTERVENTIONS) == 15


@pytest.mark.slow
def test_comparison_run_with_probes(tmp_path, capsys):
    from cli import main
    from conftest import write_wav
    corpus = _corpus(tmp_path / "c", per_key=2)
    code = main(["--dataset", str(corpus), "--embedders", "test-pc-hist", "--out",
                 str(tmp_path / "out"), "--emb-dir", str(tmp_path / "emb"), "--probes",
                 "--no-analysis", "--no-index", "--quiet"])
    assert code == 0
    probe = json.loads((tmp_path / "out" / "probes" / "probe.json").read_text())
    assert probe["interventions"]["test-pc-hist"]["transpose:+12"]["sensitivity"]["value"] < 0.01
    # no MIDI: the comparison goes on, the probes are skipped with one line
    write_wav(tmp_path / "w" / "a" / "x.wav")
    write_wav(tmp_path / "w" / "b" / "y.wav", freq=220.0)
    capsys.readouterr()
    code = main(["--dataset", str(tmp_path / "w"), "--embedders", "toy-audio", "--out",
                 str(tmp_path / "out2"), "--emb-dir", str(tmp_path / "emb"), "--probes",
                 "--no-analysis", "--no-index", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0 and "probes skipped" in err and "no MIDI" in err


def test_comparison_report_carries_the_probe_section(tmp_path):
    """run_analysis(probe_dir=...) puts the probes' section (and its heatmaps, linked) into the
    comparison's report.html and report.md, and lists probe.json among the files."""
    from analysis import run_analysis
    from golden_corpus import golden_sets
    from probe.run import run_probes
    from embedders import get_embedder
    corpus = _corpus(tmp_path / "c", per_key=2)
    probe_dir = tmp_path / "out" / "probes"
    run_probes(corpus, [get_embedder("test-pc-hist")], out=probe_dir, emb_dir=tmp_path / "emb",
               interventions=["transpose:+12"], seed=0, progress=False)
    out = tmp_path / "out"
    metrics = run_analysis(golden_sets()[:1], out, plot_dir=out / "plots", cos_dir=out / "cos",
                           var_dir=out / "var", methods=(), n_bootstrap=10, n_permutations=9,
                           probe_dir=probe_dir)
    html = (out / "report.html").read_text(encoding="utf-8")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "What each embedding captures" in html and "What each embedding captures" in md
    assert "test-pc-hist" in html and "transpose:+12" in md
    assert metrics["files"]["probe_json"] == str(probe_dir / "probe.json")
    if (probe_dir / "plots" / "probe_interventions.png").is_file():
        assert "probes/plots/probe_interventions.png" in md
