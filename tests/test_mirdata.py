"""Standard MIR datasets through mirdata: a data home built here for a small subset of each
dataset, with an index in mirdata's own format (mirdata 1.0 ships no index in its package: it
fetches them on download, so the tests give theirs with ``index_file``), the files synthesised
in place. Nothing touches the network."""
import hashlib
import json
from pathlib import Path

import pytest

from conftest import write_midi, write_wav

mirdata = pytest.importorskip("mirdata")

from collection.mirdata_source import MISSING, MirdataError, mirdata_scan  # noqa: E402


@pytest.fixture(autouse=True)
def _no_download(monkeypatch):
    """Every test here: mirdata's downloader must not be reached unless a test stubs it."""
    import mirdata.download_utils as du

    def refuse(*args, **kwargs):
        raise AssertionError("mirdata downloader called without --download")
    monkeypatch.setattr(du, "downloader", refuse)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _entry(home: Path, rel: str | None, *, make=None) -> list:
    """An index entry ``[relative path, md5]``; ``make(path)`` writes the file (else the
    entry lists a file that is not on disk, with a made-up checksum)."""
    if rel is None:
        return [None, None]
    if make is None:
        return [rel, "0" * 32]
    make(home / rel)
    return [rel, _md5(home / rel)]


def _wav(freq):
    return lambda p: write_wav(p, seconds=0.3, freq=freq)


def _mid(*pitches, **kw):
    return lambda p: write_midi(p, pitches=pitches, **kw)


def _write_index(tmp_path: Path, name: str, index: dict) -> Path:
    path = tmp_path / f"{name}_index.json"
    path.write_text(json.dumps(index), encoding="utf-8")
    return path


def gtzan_home(tmp_path: Path, *, missing=("rock.00001",)) -> tuple[Path, Path]:
    """GTZAN's layout: ``gtzan_genre/genres/<genre>/<genre>.NNNNN.wav``."""
    home = tmp_path / "gtzan"
    tracks = {}
    for i, tid in enumerate(["blues.00000", "blues.00001", "hiphop.00000", "rock.00000",
                             "rock.00001"]):
        genre = tid.split(".")[0]
        rel = f"gtzan_genre/genres/{genre}/{tid}.wav"
        tracks[tid] = {"audio": _entry(home, rel, make=None if tid in missing else _wav(200 + 40 * i)),
                       "beats": [None, None], "tempo": [None, None]}
    return home, _write_index(tmp_path, "gtzan", {"version": "1.0", "tracks": tracks})


def maestro_home(tmp_path: Path) -> tuple[Path, Path]:
    """MAESTRO v2's layout: ``<year>/<name>.wav`` and ``.midi``, metadata in
    ``maestro-v2.0.0.json`` (one record per performance)."""
    home = tmp_path / "maestro"
    pieces = [("2004/MIDI-Unprocessed_SMF_02_R1_2004_01-05_ORIG_MID--AUDIO_02_R1_2004_05_Track05_wav",
               "Frédéric Chopin", "train"),
              ("2006/MIDI-Unprocessed_08_R1_2006_01-04_ORIG_MID--AUDIO_08_R1_2006_Disk1_Track04_wav",
               "Johann Sebastian Bach", "test"),
              ("2008/MIDI-Unprocessed_11_R2_2008_01-05_ORIG_MID--AUDIO_11_R2_2008_wav--1",
               "Frédéric Chopin", "validation")]
    tracks, records = {}, []
    for i, (tid, composer, split) in enumerate(pieces):
        tracks[tid] = {"audio": _entry(home, tid + ".wav", make=_wav(300 + 50 * i)),
                       "midi": _entry(home, tid + ".midi", make=_mid(60 + i, 64, 67))}
        records.append({"canonical_composer": composer, "canonical_title": f"Piece {i}",
                        "split": split, "year": int(tid[:4]), "midi_filename": tid + ".midi",
                        "audio_filename": tid + ".wav", "duration": 0.3})
    (home / "maestro-v2.0.0.json").write_text(json.dumps(records), encoding="utf-8")
    return home, _write_index(tmp_path, "maestro", {"version": "2.0.0", "tracks": tracks})


def groove_home(tmp_path: Path) -> tuple[Path, Path]:
    """Groove MIDI's layout: ``drummerN/<session>/<id>_<style>_<bpm>_<type>_<sig>.mid/.wav``,
    metadata in ``info.csv``; one performance has no audio (as in the real dataset)."""
    home = tmp_path / "groove"
    rows = [("drummer1/eval_session/1", "funk/groove1", True),
            ("drummer1/eval_session/2", "funk/groove2", True),
            ("drummer7/session2/3", "rock", False)]
    tracks, lines = {}, ["drummer,session,id,style,bpm,beat_type,time_signature,midi_filename,"
                         "audio_filename,duration,split"]
    for i, (tid, style, has_audio) in enumerate(rows):
        stem = f"{tid}_{style.replace('/', '-')}_100_beat_4-4"
        tracks[tid] = {"midi": _entry(home, stem + ".mid", make=_mid(36, 38, 42, is_drum=True)),
                       "audio": _entry(home, stem + ".wav" if has_audio else None,
                                       make=_wav(150 + 30 * i))}
        lines.append(f"{tid.split('/')[0]},{tid.split('/')[0]}/{tid.split('/')[1]},{tid},"
                     f"{style},100,beat,4-4,{stem}.mid,{stem + '.wav' if has_audio else ''},"
                     f"0.3,train")
    (home / "info.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return home, _write_index(tmp_path, "groove", {"version": "1.0.0", "tracks": tracks})


def slakh_home(tmp_path: Path) -> tuple[Path, Path]:
    """Slakh2100-redux's layout: ``slakh2100_flac_redux/<split>/TrackNNNNN/`` with ``mix``,
    ``all_src.mid``, ``stems/SNN``, ``MIDI/SNN.mid`` and ``metadata.yaml``."""
    home = tmp_path / "slakh"
    tracks, multitracks = {}, {}
    songs = [("Track00001", "train", {"S00": ("Piano", 0), "S01": ("Bass", 33)}),
             ("Track01501", "test", {"S00": ("Guitar", 25), "S01": ("Piano", 1)})]
    for k, (mid, split, stems) in enumerate(songs):
        base = f"slakh2100_flac_redux/{split}/{mid}"
        meta_lines = [f"UUID: uuid{k}", "normalized: true", "overall_gain: 0.5", "stems:"]
        for s, (inst, program) in stems.items():
            meta_lines += [f"  {s}:", f"    inst_class: {inst}", "    is_drum: false",
                           f"    program_num: {program}", "    plugin_name: synth.nkm"]
        (home / base).mkdir(parents=True, exist_ok=True)
        (home / base / "metadata.yaml").write_text("\n".join(meta_lines) + "\n", "utf-8")
        meta = [f"{base}/metadata.yaml", _md5(home / base / "metadata.yaml")]
        for j, s in enumerate(stems):
            tracks[f"{mid}-{s}"] = {
                "audio": _entry(home, f"{base}/stems/{s}.flac",
                                make=lambda p, f=200 + 60 * j + k: write_wav(p, seconds=0.3, freq=f)),
                "midi": _entry(home, f"{base}/MIDI/{s}.mid", make=_mid(48 + 5 * j, 55)),
                "metadata": meta}
        multitracks[mid] = {"tracks": [f"{mid}-{s}" for s in stems],
                            "mix": _entry(home, f"{base}/mix.flac", make=_wav(500 + k)),
                            "midi": _entry(home, f"{base}/all_src.mid", make=_mid(48, 53, 55)),
                            "metadata": meta}
    return home, _write_index(tmp_path, "slakh", {"version": "2100-redux", "tracks": tracks,
                                                 "multitracks": multitracks})


def _by_id(scan):
    return {it.id: it for it in scan.items}


def test_loader_names_and_fields_exist_in_mirdata():
    assert {"gtzan_genre", "maestro", "groove_midi", "slakh"} <= set(mirdata.list_datasets())
    from mirdata.datasets import groove_midi, maestro, slakh
    assert isinstance(maestro.Track.canonical_composer, property)
    assert isinstance(groove_midi.Track.style, property)
    assert isinstance(slakh.Track.instrument, property)


def test_gtzan_labels_and_missing_files(tmp_path):
    home, index = gtzan_home(tmp_path)
    scan = mirdata_scan("gtzan_genre", data_home=str(home), index_file=str(index))
    items = _by_id(scan)
    assert sorted(items) == sorted(f"gtzan_genre/genres/{g}/{t}.wav" for g, t in [
        ("blues", "blues.00000"), ("blues", "blues.00001"), ("hiphop", "hiphop.00000"),
        ("rock", "rock.00000"), ("rock", "rock.00001")])
    assert items["gtzan_genre/genres/hiphop/hiphop.00000.wav"].label == "hip-hop"  # mirdata's
    assert {it.label for it in scan.usable} == {"blues", "hip-hop", "rock"}
    assert items["gtzan_genre/genres/rock/rock.00001.wav"].skip_reason == MISSING
    assert len(scan.usable) == 4 and not any(it.pair_id for it in scan.items)
    assert len(scan.warnings) == 1 and "1 of 5 files" in scan.warnings[0]
    assert items["gtzan_genre/genres/blues/blues.00000.wav"].extra["track_id"] == "blues.00000"
    assert scan.root == str(home.resolve())


def test_maestro_pairs_and_composer_labels(tmp_path):
    home, index = maestro_home(tmp_path)
    scan = mirdata_scan("maestro", data_home=str(home), index_file=str(index))
    assert len(scan.usable) == 6 and not scan.warnings
    pairs = {}
    for it in scan.usable:
        pairs.setdefault(it.pair_id, []).append(it)
    assert len(pairs) == 3
    for pair_id, members in pairs.items():
        assert sorted(it.modality for it in members) == ["audio", "symbolic"]
        assert members[0].label == members[1].label
        assert members[0].extra["split"] in ("train", "test", "validation")
    labels = {pid: ms[0].label for pid, ms in pairs.items()}
    assert sorted(labels.values()) == ["Frédéric Chopin", "Frédéric Chopin",
                                       "Johann Sebastian Bach"]
    assert labels[next(p for p in labels if p.startswith("2006/"))] == "Johann Sebastian Bach"
    by_year = mirdata_scan("maestro", data_home=str(home), index_file=str(index),
                           label_field="year")
    assert sorted({it.label for it in by_year.usable}) == ["2004", "2006", "2008"]


def test_maestro_without_metadata_is_one_clear_error(tmp_path):
    home, index = maestro_home(tmp_path)
    (home / "maestro-v2.0.0.json").unlink()
    with pytest.raises(MirdataError, match="canonical_composer.*--download"):
        mirdata_scan("maestro", data_home=str(home), index_file=str(index))


def test_groove_main_style_labels_and_audio_less_performance(tmp_path):
    home, index = groove_home(tmp_path)
    scan = mirdata_scan("groove_midi", data_home=str(home), index_file=str(index))
    usable = scan.usable
    assert len(usable) == 5  # 3 MIDI + 2 audio
    assert {it.label for it in usable} == {"funk", "rock"}
    funk = [it for it in usable if it.extra["track_id"] == "drummer1/eval_session/2"]
    assert {it.pair_id for it in funk} == {"drummer1/eval_session/2"}
    assert funk[0].extra["style"] == "funk/groove2"
    rock = [it for it in usable if it.label == "rock"]
    assert len(rock) == 1 and rock[0].modality == "symbolic" and rock[0].pair_id == ""


def test_slakh_stems_by_instrument_and_mixtures(tmp_path):
    home, index = slakh_home(tmp_path)
    stems = mirdata_scan("slakh", data_home=str(home), index_file=str(index))
    assert len(stems.usable) == 8
    piano = sorted(it.id for it in stems.usable if it.label == "Piano")
    assert piano == ["slakh2100_flac_redux/test/Track01501/MIDI/S01.mid",
                     "slakh2100_flac_redux/test/Track01501/stems/S01.flac",
                     "slakh2100_flac_redux/train/Track00001/MIDI/S00.mid",
                     "slakh2100_flac_redux/train/Track00001/stems/S00.flac"]
    by_id = _by_id(stems)
    assert (by_id["slakh2100_flac_redux/train/Track00001/stems/S01.flac"].pair_id
            == by_id["slakh2100_flac_redux/train/Track00001/MIDI/S01.mid"].pair_id
            == "Track00001-S01")
    assert by_id["slakh2100_flac_redux/test/Track01501/MIDI/S00.mid"].extra["split"] == "test"
    mixes = mirdata_scan("slakh", data_home=str(home), index_file=str(index),
                         label_field="multitrack:split")
    assert sorted((it.id, it.label, it.pair_id) for it in mixes.usable) == [
        ("slakh2100_flac_redux/test/Track01501/all_src.mid", "test", "Track01501"),
        ("slakh2100_flac_redux/test/Track01501/mix.flac", "test", "Track01501"),
        ("slakh2100_flac_redux/train/Track00001/all_src.mid", "train", "Track00001"),
        ("slakh2100_flac_redux/train/Track00001/mix.flac", "train", "Track00001")]


def test_usage_errors_name_the_problem(tmp_path):
    home, index = gtzan_home(tmp_path)
    with pytest.raises(MirdataError, match="no dataset 'gtzan'"):
        mirdata_scan("gtzan", data_home=str(home), index_file=str(index))
    with pytest.raises(MirdataError, match="no field 'composer'.*genre"):
        mirdata_scan("gtzan_genre", data_home=str(home), index_file=str(index),
                     label_field="composer")
    with pytest.raises(MirdataError, match="Invalid version"):
        mirdata_scan("gtzan_genre", data_home=str(home), version="9.9")
    with pytest.raises(MirdataError, match="none of the 5 files"):
        mirdata_scan("gtzan_genre", data_home=str(tmp_path / "elsewhere"),
                     index_file=str(index))


def test_missing_index_says_how_to_get_it_and_downloads_nothing(tmp_path):
    ds = mirdata.initialize("gtzan_genre")
    if Path(ds.index_path).exists():
        pytest.skip("this mirdata has the GTZAN index installed")
    with pytest.raises(MirdataError, match="not installed.*--download index.*--mirdata-index"):
        mirdata_scan("gtzan_genre", data_home=str(tmp_path))


def test_download_goes_through_mirdata_only_when_asked(tmp_path, monkeypatch):
    import mirdata.download_utils as du

    home, index = gtzan_home(tmp_path)
    calls = []
    monkeypatch.setattr(du, "downloader", lambda save_dir, **kw: calls.append((save_dir, kw)))
    mirdata_scan("gtzan_genre", data_home=str(home), index_file=str(index), download="index")
    assert len(calls) == 1 and calls[0][0] == str(home)
    assert calls[0][1]["partial_download"] == ["index"]
    assert calls[0][1]["index"].remote.checksum  # mirdata checks what it fetches
    mirdata_scan("gtzan_genre", data_home=str(home), index_file=str(index), download="all")
    assert len(calls) == 2 and calls[1][1]["partial_download"] is None
    mirdata_scan("gtzan_genre", data_home=str(home), index_file=str(index))
    assert len(calls) == 2


def test_validate_skips_files_whose_checksum_differs(tmp_path):
    home, index = gtzan_home(tmp_path, missing=())
    write_wav(home / "gtzan_genre/genres/blues/blues.00001.wav", seconds=0.3, freq=999)
    scan = mirdata_scan("gtzan_genre", data_home=str(home), index_file=str(index),
                        validate=True)
    bad = [it.id for it in scan.items if it.skip_reason]
    assert bad == ["gtzan_genre/genres/blues/blues.00001.wav"]
    assert any("checksum" in w for w in scan.warnings)


# -- the command line --------------------------------------------------------------------------

def test_comparison_run_from_mirdata_lists_missing_files(tmp_path, capsys):
    import cli
    import toy_embedders  # noqa: F401 (registers toy-audio)

    home, index = gtzan_home(tmp_path)
    code = cli.main(["--mirdata", "gtzan_genre", "--data-home", str(home), "--mirdata-index",
                     str(index), "--embedders", "toy-audio", "--no-analysis", "--no-index",
                     "--quiet", "--out", str(tmp_path / "out"), "--emb-dir", str(tmp_path / "emb")])
    assert code == 0
    out = capsys.readouterr().out
    assert "4 usable, 3 classes" in out
    assert sum("missing under" in line for line in out.splitlines()) == 1
    import csv
    with open(tmp_path / "out" / "manifest.csv", newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    gone = rows["gtzan_genre/genres/rock/rock.00001.wav"]
    assert (gone["status"], gone["reason"], gone["track_id"]) == ("skipped", MISSING, "rock.00001")
    assert rows["gtzan_genre/genres/hiphop/hiphop.00000.wav"]["label"] == "hip-hop"


def test_mirdata_usage_errors_exit_2_before_work(tmp_path, capsys):
    import cli

    home, index = gtzan_home(tmp_path)
    argv = ["--data-home", str(home), "--mirdata-index", str(index), "--embedders", "audio-stats",
            "--out", str(tmp_path / "out"), "--emb-dir", str(tmp_path / "emb")]
    assert cli.main(["--mirdata", "gtzan_genre", "--label-field", "mood", *argv]) == 2
    assert "no field 'mood'" in capsys.readouterr().err
    assert cli.main(["--mirdata", "no_such_set", *argv]) == 2
    assert "no dataset 'no_such_set'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.csv").exists()


@pytest.mark.slow  # transcription and embedding (~20 s on the shared machine)
def test_recipe_gtzan_transcribed_then_compared(tmp_path, capsys):
    """The recipe of docs/datasets.md: GTZAN through mirdata -> prepare transcribe -> a paired tree ->
    the comparison run (heuristic transcription: no model weights needed)."""
    import cli

    home, index = gtzan_home(tmp_path)
    paired = tmp_path / "gtzan_paired"
    code = cli.main(["prepare", "transcribe", "--mirdata", "gtzan_genre", "--data-home",
                     str(home), "--mirdata-index", str(index), "--method", "heuristic",
                     "--out", str(paired), "--quiet"])
    assert code == 0
    made = sorted(p.relative_to(paired).as_posix() for p in paired.rglob("*")
                  if p.is_file() and not p.relative_to(paired).as_posix().startswith("."))
    assert made == ["blues/blues.00000.mid", "blues/blues.00000.wav", "blues/blues.00001.mid",
                    "blues/blues.00001.wav", "hip-hop/hiphop.00000.mid",
                    "hip-hop/hiphop.00000.wav", "prepare_manifest.csv", "rock/rock.00000.mid",
                    "rock/rock.00000.wav"]
    manifest = (paired / "prepare_manifest.csv").read_text()
    assert "gtzan_genre/genres/blues/blues.00000.wav,blues,made" in manifest
    code = cli.main(["--dataset", str(paired), "--embedders", "audio-stats", "midi-stats",
                     "--no-analysis", "--no-index", "--quiet", "--out", str(tmp_path / "out"),
                     "--emb-dir", str(tmp_path / "emb")])
    assert code == 0
    assert "3 classes, 4 audio/MIDI pairs" in capsys.readouterr().out
