"""A collection listed in a CSV manifest (``--manifest``) instead of a folder tree: renamed
pairs, labels that are not folder names, the same cache keys and metrics as the tree, and bad
manifests stopped in one line before anything is computed."""
import csv
import json
import random
from pathlib import Path

import pytest

import cli
import toy_embedders  # noqa: F401 (registers toy-audio / toy-midi)
from conftest import write_midi, write_wav
from collection.csv_manifest import ManifestError, read_manifest

BASE_FIELDS = ["path", "label", "modality", "pair_id", "content_hash", "embedder", "status",
               "cached", "reason", "note"]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _renamed_collection(base: Path) -> Path:
    """Recordings and scores kept apart, named differently, labels in the CSV only."""
    write_wav(base / "recordings" / "take_017.wav", freq=220)
    write_midi(base / "scores" / "bach_bwv846.mid", pitches=(60, 64, 67))
    write_wav(base / "recordings" / "take_018.wav", freq=330)
    write_midi(base / "scores" / "chopin_op28_4.mid", pitches=(59, 62, 66))
    write_wav(base / "recordings" / "lonely.wav", freq=440)
    return _write_csv(base / "pieces.csv", ["path", "label", "pair_id", "split", "composer"], [
        ["recordings/take_017.wav", "baroque", "p1", "train", "Bach"],
        ["scores/bach_bwv846.mid", "baroque", "p1", "train", "Bach"],
        ["recordings/take_018.wav", "romantic", "p2", "test", "Chopin"],
        ["scores/chopin_op28_4.mid", "romantic", "p2", "test", "Chopin"],
        ["recordings/lonely.wav", "romantic", "", "test", "Chopin"]])


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# -- reading -----------------------------------------------------------------------------------

def test_renamed_pairs_and_labels_from_the_csv(tmp_path):
    scan = read_manifest(_renamed_collection(tmp_path))
    by_id = {it.id: it for it in scan.items}
    assert sorted(by_id) == ["recordings/lonely.wav", "recordings/take_017.wav",
                             "recordings/take_018.wav", "scores/bach_bwv846.mid",
                             "scores/chopin_op28_4.mid"]
    assert by_id["recordings/take_017.wav"].pair_id == by_id["scores/bach_bwv846.mid"].pair_id == "p1"
    assert by_id["recordings/take_018.wav"].pair_id == by_id["scores/chopin_op28_4.mid"].pair_id == "p2"
    assert by_id["recordings/lonely.wav"].pair_id == ""
    assert {it.label for it in scan.usable} == {"baroque", "romantic"}  # not "recordings"
    assert by_id["scores/bach_bwv846.mid"].extra == {"split": "train", "composer": "Bach"}
    assert scan.summary()["n_pairs"] == 2 and scan.root == str(tmp_path.resolve())


def test_label_column_picks_another_column(tmp_path):
    scan = read_manifest(_renamed_collection(tmp_path), label_column="composer")
    assert sorted({it.label for it in scan.usable}) == ["Bach", "Chopin"]
    assert scan.items[0].extra["csv_label"] in ("baroque", "romantic")  # kept, renamed


def test_stem_rule_without_pair_id_and_absolute_paths(tmp_path):
    data = tmp_path / "elsewhere"
    write_wav(data / "a" / "x.wav")
    write_midi(data / "a" / "x.mid")
    write_midi(data / "b" / "x.mid")  # same stem, other folder: not a pair
    path = _write_csv(tmp_path / "lists" / "m.csv", ["label", "path"],
                      [["jazz", str(data / "a" / "x.wav")], ["jazz", str(data / "a" / "x.mid")],
                       ["jazz", str(data / "b" / "x.mid")]])
    scan = read_manifest(path)
    pairs = {it.id: it.pair_id for it in scan.items}
    assert pairs[(data / "a" / "x.wav").as_posix()] == pairs[(data / "a" / "x.mid").as_posix()] != ""
    assert pairs[(data / "b" / "x.mid").as_posix()] == ""


def test_stem_pair_with_two_labels_is_not_a_pair_and_a_half_pair_is_dropped(tmp_path):
    write_wav(tmp_path / "s" / "x.wav")
    write_midi(tmp_path / "s" / "x.mid")
    scan = read_manifest(_write_csv(tmp_path / "m.csv", ["path", "label"],
                                    [["s/x.wav", "rock"], ["s/x.mid", "jazz"]]))
    assert [it.pair_id for it in scan.items] == ["", ""]
    assert scan.warnings == ["s/x: audio and MIDI share the stem but have labels 'rock' and "
                             "'jazz'; not paired"]
    scan = read_manifest(_write_csv(tmp_path / "p.csv", ["path", "label", "pair_id"],
                                    [["s/x.wav", "rock", "p"], ["s/gone.mid", "rock", "p"]]))
    assert [(it.id, it.pair_id, bool(it.skip_reason)) for it in scan.items] == [
        ("s/gone.mid", "", True), ("s/x.wav", "", False)]


def test_missing_files_are_listed_and_skipped(tmp_path):
    write_wav(tmp_path / "here.wav")
    path = _write_csv(tmp_path / "m.csv", ["path", "label"],
                      [["here.wav", "x"], ["gone.wav", "x"], ["notes.txt", "x"]])
    (tmp_path / "notes.txt").write_text("not music")
    scan = read_manifest(path)
    reasons = {it.id: it.skip_reason for it in scan.items}
    assert reasons == {"gone.wav": "listed in the manifest but does not exist",
                       "here.wav": "", "notes.txt": "unsupported file type '.txt'"}
    assert len(scan.warnings) == 1 and "1 file(s)" in scan.warnings[0]


@pytest.mark.parametrize("header, rows, message", [
    (["path", "genre"], [["a.wav", "x"]], r"m\.csv: missing column 'label' \(header: path, genre\)"),
    (["file", "label"], [["a.wav", "x"]], r"missing column 'path'"),
    (["path", "label"], [["a.wav", "x"], ["b.wav", ""]], r"m\.csv line 3: empty label .*'b\.wav'"),
    (["path", "label"], [["a.wav", "x"], ["", "x"]], r"m\.csv line 3: empty path"),
    (["path", "label"], [["a.wav", "x"], ["b.wav", "y"], ["./a.wav", "y"]],
     r"m\.csv line 4: path './a\.wav' is listed again \(first on line 2\)"),
    (["path", "label"], [["nope.wav", "x"], ["nada.mid", "x"]],
     r"none of the 2 listed files exists"),
    (["path", "label", "pair_id"], [["a.wav", "x", "p"], ["b.wav", "x", "p"]],
     r"m\.csv lines 2, 3: pair_id 'p' has audio \+ audio files"),
    (["path", "label", "pair_id"], [["a.wav", "x", "p"], ["a.mid", "y", "p"]],
     r"m\.csv lines 2, 3: pair_id 'p' joins labels 'x' and 'y'"),
    (["path", "label"], [["a.wav", "x", "extra"]], r"m\.csv line 2: 3 cells, the header has 2"),
    (["path", "label"], [], r"no rows below the header"),
])
def test_bad_manifests_name_the_row(tmp_path, header, rows, message):
    write_wav(tmp_path / "a.wav")
    write_wav(tmp_path / "b.wav")
    write_midi(tmp_path / "a.mid")
    with pytest.raises(ManifestError, match=message):
        read_manifest(_write_csv(tmp_path / "m.csv", header, rows))


def test_byte_order_mark_and_blank_lines_are_fine(tmp_path):
    write_wav(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("\ufeffpath,label\n\na.wav,x\n\n", encoding="utf-8")
    assert [it.id for it in read_manifest(tmp_path / "m.csv").usable] == ["a.wav"]


# -- the command line --------------------------------------------------------------------------

def _cli(tmp_path, *flags, out="out", emb="emb"):
    return cli.main([*flags, "--out", str(tmp_path / out), "--emb-dir", str(tmp_path / emb),
                     "--no-index", "--quiet"])


@pytest.mark.parametrize("header, rows, message", [
    (["path", "genre"], [["a.wav", "x"]], "missing column 'label'"),
    (["path", "label"], [["a.wav", "x"], ["a.wav", "x"]], "line 3: path 'a.wav' is listed again"),
    (["path", "label"], [["a.wav", ""]], "line 2: empty label"),
    (["path", "label"], [["gone.wav", "x"]], "none of the 1 listed files exists"),
])
def test_bad_manifest_is_one_line_exit_2_nothing_computed(tmp_path, capsys, header, rows,
                                                         message):
    write_wav(tmp_path / "a.wav")
    m = _write_csv(tmp_path / "m.csv", header, rows)
    assert _cli(tmp_path, "--manifest", str(m), "--embedders", "toy-audio") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(m) in err
    assert not (tmp_path / "out" / "manifest.csv").exists()
    assert not list((tmp_path / "emb").rglob("*.npz"))


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "d", "--manifest", "m.csv"], "give one collection, not --dataset and --manifest"),
    (["--manifest", "m.csv", "--mirdata", "gtzan_genre"], "not --manifest and --mirdata"),
    (["--dataset", "d", "--label-column", "genre"], "--label-column needs --manifest"),
    (["--manifest", "m.csv", "--data-home", "h"], "--data-home needs --mirdata"),
    (["--embedders", "toy-audio"], "--dataset is required (or --manifest FILE.csv, or --mirdata"),
    (["--manifest", "m.csv", "--make-demo-corpus"], "--make-demo-corpus needs --dataset"),
])
def test_input_flags_are_checked(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_run_from_a_manifest_keeps_pairs_labels_and_extra_columns(tmp_path, capsys):
    m = _renamed_collection(tmp_path / "c")
    params = tmp_path / "run.params"
    params.write_text(f"--manifest {m}\n--embedders toy-audio toy-midi\n--no-analysis\n")
    assert _cli(tmp_path, "--params-file", str(params)) == 0
    rows = _rows(tmp_path / "out" / "manifest.csv")
    assert list(rows[0]) == BASE_FIELDS + ["split", "composer"]
    by_path = {r["path"]: r for r in rows}
    assert by_path["scores/chopin_op28_4.mid"]["pair_id"] == "p2"
    assert by_path["scores/chopin_op28_4.mid"]["label"] == "romantic"
    assert by_path["scores/chopin_op28_4.mid"]["status"] == "embedded"
    assert by_path["recordings/lonely.wav"]["composer"] == "Chopin"
    assert "2 audio/MIDI pairs" in capsys.readouterr().out


def _strip_run_details(metrics: dict) -> dict:
    """What may differ between two runs on the same files: paths, timings, the title, and
    whether a vector came from the cache."""
    out = {k: v for k, v in metrics.items() if k not in ("files", "parameters", "software")}
    for emb in out.get("dataset", {}).get("embedders", {}).values():
        for key in ("seconds", "cached", "computed"):
            emb.pop(key, None)
    out.get("dataset", {}).pop("root", None)
    return out


@pytest.mark.slow  # two comparison runs (~40 s on the shared machine)
def test_folder_tree_and_its_manifest_give_the_same_cache_keys_and_metrics(tmp_path):
    from collection.demo_corpus import build_demo_corpus

    corpus = tmp_path / "corpus"
    build_demo_corpus(corpus, n_per_genre=2, synth="builtin")
    common = ["--embedders", "audio-stats", "midi-stats", "--plot", "t", "pca",
              str(tmp_path / "plots"), "--bootstrap", "20"]
    assert _cli(tmp_path, "--dataset", str(corpus), *common, out="tree") == 0
    keys_tree = sorted(p.name for p in (tmp_path / "emb").rglob("*.npz"))
    files = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*")
                   if p.is_file() and not p.name.startswith("."))
    rows = [[f, f.split("/")[0]] for f in files]
    random.Random(3).shuffle(rows)  # the rows' order must not matter
    m = _write_csv(corpus / "listing.csv", ["path", "label"], rows)
    assert _cli(tmp_path, "--manifest", str(m), *common, out="listed") == 0
    assert sorted(p.name for p in (tmp_path / "emb").rglob("*.npz")) == keys_tree
    assert len(keys_tree) == 20
    tree, listed = _rows(tmp_path / "tree" / "manifest.csv"), _rows(tmp_path / "listed" / "manifest.csv")
    assert {r["cached"] for r in listed} == {"yes"}  # every vector found under the same key
    assert ([{**r, "cached": ""} for r in tree] == [{**r, "cached": ""} for r in listed])
    a = json.loads((tmp_path / "tree" / "metrics.json").read_text())
    b = json.loads((tmp_path / "listed" / "metrics.json").read_text())
    assert a["embedders"] and _strip_run_details(a) == _strip_run_details(b)


# -- train -------------------------------------------------------------------------------------

@pytest.mark.slow  # torch and the features of 8 files (~15 s on the shared machine)
def test_train_from_a_manifest_keeps_its_split(tmp_path, capsys):
    rows = []
    for label, base in (("calm", 220), ("busy", 330)):
        for i, split in enumerate(("train", "validation", "test", "train")):
            write_wav(tmp_path / "c" / "audio" / f"{label}{i}.wav", seconds=1.0, freq=base + 20 * i)
            write_midi(tmp_path / "c" / "midi" / f"{label}_{i}.mid", pitches=(60 + i, 64))
            rows += [[f"audio/{label}{i}.wav", label, f"{label}-{i}", split],
                     [f"midi/{label}_{i}.mid", label, f"{label}-{i}", split]]
    m = _write_csv(tmp_path / "c" / "m.csv", ["path", "label", "pair_id", "split"], rows)
    run = tmp_path / "run"
    code = cli.main(["train", "--method", "crnn", "--manifest", str(m), "--out", str(run),
                     "--epochs", "0", "--width", "2", "--depth", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    split = {r["id"]: r["split"] for r in _rows(run / "split.csv")}
    assert split["audio/busy1.wav"] == split["midi/busy_1.mid"] == "val"
    assert split["audio/calm2.wav"] == "test" and split["audio/calm3.wav"] == "train"
    assert json.loads((run / "config.json").read_text())["dataset"] == {
        "kind": "manifest", "location": str(m)}
    assert cli.main(["train", "--method", "crnn", "--out", str(run)]) == 2
    assert "--dataset is required (or --manifest" in capsys.readouterr().err


# -- prepare -----------------------------------------------------------------------------------

def test_prepare_lays_listed_files_out_by_label_with_pairs_under_one_stem(tmp_path):
    from prepare.jobs import listed_sources

    m = _renamed_collection(tmp_path / "c")
    write_wav(tmp_path / "c" / "more" / "lonely.wav", freq=500)  # same name, same label
    with open(m, "a", newline="") as fh:
        csv.writer(fh).writerow(["more/lonely.wav", "romantic", "", "", ""])
    listed = listed_sources(read_manifest(m))
    assert {s.rel: s.listed_as for s in listed.files} == {
        "baroque/take_017.wav": "recordings/take_017.wav",
        "baroque/take_017.mid": "scores/bach_bwv846.mid",  # the pair keeps one stem
        "romantic/take_018.wav": "recordings/take_018.wav",
        "romantic/take_018.mid": "scores/chopin_op28_4.mid",
        "romantic/recordings/lonely.wav": "recordings/lonely.wav",  # names clash: full path
        "romantic/more/lonely.wav": "more/lonely.wav"}


def test_prepare_crop_from_a_manifest_keeps_renamed_pairs(tmp_path, capsys):
    m = _renamed_collection(tmp_path / "c")
    dst = tmp_path / "cropped"
    assert cli.main(["prepare", "crop", "--manifest", str(m), "--out", str(dst),
                     "--seconds", "0.2", "--quiet"]) == 0
    made = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.*")
                  if not p.relative_to(dst).as_posix().startswith("."))
    assert "baroque/take_017__t0000000ms.wav" in made and "baroque/take_017__t0000000ms.mid" in made
    rows = _rows(dst / "prepare_manifest.csv")
    assert {r["source"] for r in rows} >= {"scores/bach_bwv846.mid", "recordings/take_017.wav"}
    assert cli.main(["prepare", "crop", "--manifest", str(m), "--out",
                     str(tmp_path / "c" / "scores")]) == 2  # DST would hold a listed file
    assert "holds a listed source file" in capsys.readouterr().err
