"""Every layer as its own space (``layer=all`` or a list): hf-audio, musicnn, clamp2.

One forward pass per file gives every layer; each layer's space is cached under the key of the
single-layer run that would compute it alone, exported under ``NAME@LAYER``, listed in order in
``metrics.json`` and drawn as "metric by layer". Known answers: each layer's numbers equal a
separate single-layer run (bit for bit), and the calls into the network are counted.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cli
from analysis import layers as layer_plots
from collection import embed_dataset, export_dir, read_export
from conftest import FIXTURES, save_tiny_wav2vec2, write_midi, write_wav
from embedders import ConfigurationError, get_embedder, get_embedder_class
from embedders.lib.layers import parse_layers

SR = 16000
TINY_CLAMP2 = FIXTURES / "clamp2" / "tiny_clamp2.pth"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """wav2vec 2.0, 2 layers (3 hidden states), width 32, random weights."""
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("tiny_w2v2") / "model")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two genres x three pieces, audio (16 kHz, 0.6 s) and MIDI paired by stem."""
    root = tmp_path_factory.mktemp("layers_corpus")
    for g, (freq, shift) in {"low": (220.0, 0), "high": (880.0, 7)}.items():
        for i in range(3):
            write_wav(root / g / f"p{i}.wav", seconds=0.6, sr=SR, freq=freq * (1 + 0.05 * i))
            write_midi(root / g / f"p{i}.mid", pitches=(60 + shift + i, 64 + shift, 67 + shift))
    return root


def count_forward_calls(module) -> list:
    """A list that grows by one on every forward call of a torch module."""
    calls: list = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def _export_arrays(emb_dir: Path, name: str) -> dict:
    ex = read_export(export_dir(emb_dir, name))
    return {"ids": ex.ids.tolist(), "clip": np.array(ex.clip), "frames": np.array(ex.frames),
            "timestamps": np.array(ex.timestamps), "offsets": np.array(ex.frame_offsets),
            "meta": ex.meta}


# -- the option ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("all", "all"), ("ALL", "all"), ("6", 6), ("-1", -1), ("2,4,6", (2, 4, 6)),
    (" 0 , penultimate ", (0, "penultimate")), ([1, 3], (1, 3)), (5, 5), (None, None)])
def test_layer_values_parse(value, expected):
    assert parse_layers(value) == expected


@pytest.mark.parametrize("value", ["2,,4", "2,2", [], "4,4,proj"])
def test_bad_layer_lists_are_refused(value):
    with pytest.raises(ConfigurationError):
        parse_layers(value)


def test_text_values_of_the_layer_option():
    hf = get_embedder_class("hf-audio")
    assert hf.coerce_option("layer", "all") == "all"
    assert hf.coerce_option("layer", "2,4,6") == (2, 4, 6)
    assert hf.coerce_option("layer", "-1") == -1
    assert get_embedder_class("clamp2").coerce_option("layer", "none") is None
    assert get_embedder_class("musicnn").coerce_option("layer", "cnn1,taggram") == ("cnn1",
                                                                                    "taggram")
    with pytest.raises(ConfigurationError, match="layer must be an integer"):
        get_embedder("hf-audio", layer="2,x")
    with pytest.raises(ConfigurationError, match="layer must be one of"):
        get_embedder("musicnn", layer="penultimate,pool1")
    with pytest.raises(ConfigurationError, match="clamp2 layer must be"):
        get_embedder("clamp2", layer="2,last")


# -- hf-audio ------------------------------------------------------------------------------------

def test_hf_audio_all_layers_equal_each_single_layer_run(tiny_model, corpus, tmp_path):
    """``layer=all`` in one run gives, per layer, the very numbers of a run with that layer
    alone (each run in its own embeddings folder, so both really compute)."""
    res = embed_dataset(corpus, [get_embedder("hf-audio", model=str(tiny_model), layer="all")],
                        emb_dir=tmp_path / "all", out_dir=tmp_path / "o", progress=False)
    assert list(res.runs) == ["hf-audio@0", "hf-audio@1", "hf-audio@2"]
    assert res.layers == {"hf-audio": ["hf-audio@0", "hf-audio@1", "hf-audio@2"]}
    for layer in range(3):
        alone = embed_dataset(corpus, [get_embedder("hf-audio", model=str(tiny_model),
                                                    layer=layer)],
                              emb_dir=tmp_path / f"one{layer}", out_dir=tmp_path / "o",
                              progress=False)
        assert alone.runs["hf-audio"].n_computed == 6
        got = _export_arrays(tmp_path / "all", f"hf-audio@{layer}")
        want = _export_arrays(tmp_path / f"one{layer}", "hf-audio")
        for key in ("ids", "offsets"):
            assert np.array_equal(got[key], want[key])
        for key in ("clip", "frames", "timestamps"):
            np.testing.assert_array_equal(got[key], want[key])
        assert got["frames"].shape[1] == 32
        # the same cache key: the entry one run wrote is the one the other looks up
        assert ([e.key for e in res.runs[f"hf-audio@{layer}"].entries]
                == [e.key for e in alone.runs["hf-audio"].entries])
        assert got["meta"]["embedder"] == f"hf-audio@{layer}"
        assert got["meta"]["layer_of"] == "hf-audio" and got["meta"]["layer"] == layer
        assert got["meta"]["options"] == want["meta"]["options"]
    # layers differ from each other (the test would pass trivially otherwise)
    assert not np.allclose(_export_arrays(tmp_path / "all", "hf-audio@0")["clip"],
                           _export_arrays(tmp_path / "all", "hf-audio@2")["clip"])


def test_hf_audio_one_forward_pass_for_every_layer(tiny_model, tmp_path):
    wav = write_wav(tmp_path / "x.wav", seconds=2.0, sr=SR, freq=330.0)
    opts = dict(model=str(tiny_model), window_seconds=0.5, batch_size=1)  # a call per window
    single = get_embedder("hf-audio", layer=1, **opts).load()
    several = get_embedder("hf-audio", layer="0,2", **opts).load()
    calls_single = count_forward_calls(single._model)
    calls_several = count_forward_calls(several._model)
    one = single.compute(wav)
    spaces = several.compute_spaces(wav)
    from embedders.hf_audio import plan_windows
    n_windows = len(plan_windows(2 * SR, window=SR // 2, hop=None, receptive_field=400,
                                 stride=320))
    assert n_windows == 5 and len(calls_single) == len(calls_several) == n_windows
    assert list(spaces) == ["hf-audio@0", "hf-audio@2"]
    for layer in (0, 2):
        alone = get_embedder("hf-audio", layer=layer, **opts).compute(wav)
        np.testing.assert_array_equal(spaces[f"hf-audio@{layer}"].frames, alone.frames)
        np.testing.assert_array_equal(spaces[f"hf-audio@{layer}"].timestamps, alone.timestamps)
    assert one.frames.shape == spaces["hf-audio@0"].frames.shape
    with pytest.raises(ConfigurationError, match="compute_spaces"):
        several.compute(wav)


def test_a_second_run_computes_nothing(tiny_model, corpus, tmp_path):
    emb = tmp_path / "emb"

    def run(layer):
        embedder = get_embedder("hf-audio", model=str(tiny_model), layer=layer).load()
        calls = count_forward_calls(embedder._model)
        res = embed_dataset(corpus, [embedder], emb_dir=emb, out_dir=tmp_path / "o",
                            progress=False)
        return res, calls

    first, calls = run("all")
    assert all(r.n_computed == 6 for r in first.runs.values()) and len(calls) == 6
    again, calls = run("all")
    assert len(calls) == 0
    assert all(r.n_computed == 0 and r.n_cached == 6 for r in again.runs.values())
    for name in first.runs:
        np.testing.assert_array_equal(again.sets[name].vectors, first.sets[name].vectors)
    # a single-layer run finds the entries the all-layer run wrote
    alone, calls = run(1)
    assert len(calls) == 0 and alone.runs["hf-audio"].n_cached == 6
    np.testing.assert_array_equal(alone.sets["hf-audio"].vectors,
                                  first.sets["hf-audio@1"].vectors)
    # one layer's entry lost: every layer of that file is computed again, in one pass
    entry = first.runs["hf-audio@2"].entries[0]
    (emb / "cache" / "hf-audio" / entry.key[:2] / f"{entry.key}.npz").unlink()
    partial, calls = run("all")
    assert len(calls) == 1
    assert all(r.n_computed == 1 for r in partial.runs.values())


def test_layer_out_of_range_is_one_line_exit_2_before_audio(tiny_model, corpus, tmp_path,
                                                            capsys, monkeypatch):
    from embedders.lib import audio_io

    def no_audio(*args, **kwargs):
        raise AssertionError("audio was read")

    monkeypatch.setattr(audio_io, "iter_audio_blocks", no_audio)
    monkeypatch.setattr(audio_io, "read_audio", no_audio)
    for value in ("7", "0,3", "-4"):
        code = cli.main(["--dataset", str(corpus), "--embedders", "hf-audio",
                         "--set", f"hf-audio.model={tiny_model}", "--set",
                         f"hf-audio.layer={value}", "--out", str(tmp_path / "o"),
                         "--emb-dir", str(tmp_path / "emb"), "--quiet", "--no-index"])
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert len(err.splitlines()) == 1 and "out of range" in err and "3 hidden states" in err
    assert not (tmp_path / "emb" / "cache").exists()
    code = cli.main(["--dataset", str(corpus), "--embedders", "musicnn", "--set",
                     "musicnn.layer=penultimate,pool5", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "pool5" in err


# -- search ---------------------------------------------------------------------------------------

def test_a_layer_space_is_queried_with_the_base_embedder_at_that_layer(tiny_model, corpus,
                                                                       tmp_path, capsys):
    """``recommend --embedder hf-audio@1`` (issue 28's gap): the query is embedded by hf-audio at
    layer 1, so an outside file's vector equals that single-layer embedder's; the CLI gives the
    API's results, same- and cross-modal; a local model folder is given with --set."""
    pytest.importorskip("qdrant_edge")
    from search import Recommender, build_indexes

    emb = tmp_path / "emb"
    embed_dataset(corpus, [get_embedder("hf-audio", model=str(tiny_model), layer="all"),
                           get_embedder("midi-stats")], emb_dir=emb, out_dir=tmp_path / "o",
                  progress=False)
    build_indexes(emb)
    query = write_wav(tmp_path / "q.wav", seconds=0.6, sr=SR, freq=300.0)
    rec = Recommender(emb, embedder="hf-audio@1", options={"model": str(tiny_model)})
    vector, _, _ = rec.query_vector(query)
    alone = get_embedder("hf-audio", model=str(tiny_model), layer=1).compute(str(query)).clip
    np.testing.assert_allclose(vector, alone, rtol=1e-5, atol=1e-6)
    other = get_embedder("hf-audio", model=str(tiny_model), layer=2).compute(str(query)).clip
    assert not np.allclose(vector, other, atol=1e-3)  # the layer matters
    args = ["recommend", str(query), "--emb-dir", str(emb), "--embedder", "hf-audio@1", "-k",
            "3", "--set", f"hf-audio.model={tiny_model}", "--json"]
    assert cli.main(args) == 0
    got = json.loads(capsys.readouterr().out)
    assert [(r["path"], r["score"]) for r in got] == [(r.path, r.score)
                                                      for r in rec.recommend(query, k=3)]
    assert cli.main(args + ["--cross-modal"]) == 0
    assert all(r["path"].endswith(".mid") for r in json.loads(capsys.readouterr().out))
    assert cli.main(args[:-1] + ["--set", "midi-stats.x=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not selected (selected: hf-audio)" in err


def test_probe_gives_each_layer_space_the_numbers_of_its_single_layer_run(tiny_model, corpus,
                                                                         tmp_path):
    """``probe`` with ``layer=all`` probes every layer space (attributes and interventions);
    each equals a probe run of that layer alone (separate folders: both compute)."""
    from probe import run_probes

    kw = dict(pieces=6, interventions=["transpose:+2", "gain:-12db"], synth="builtin",
              progress=False)
    every = run_probes(corpus, [get_embedder("hf-audio", model=str(tiny_model), layer="all")],
                       out=tmp_path / "all", **kw)
    layers = ["hf-audio@0", "hf-audio@1", "hf-audio@2"]
    assert every["params"]["embedders"] == layers
    assert every["params"]["modalities"] == {s: "audio" for s in layers}
    assert list(every["interventions"]) == layers and list(every["attributes"]) == layers
    alone = run_probes(corpus, [get_embedder("hf-audio", model=str(tiny_model), layer=1)],
                       out=tmp_path / "one", **kw)
    assert every["interventions"]["hf-audio@1"] == alone["interventions"]["hf-audio"]
    assert every["attributes"]["hf-audio@1"] == alone["attributes"]["hf-audio"]
    sens = [every["interventions"][s]["transpose:+2"]["sensitivity"]["value"] for s in layers]
    assert len(set(sens)) == 3  # the layers differ: the test would pass trivially otherwise


# -- the report ----------------------------------------------------------------------------------

def test_metrics_json_lists_layers_in_order_and_the_report_draws_them(tiny_model, corpus,
                                                                      tmp_path):
    out = tmp_path / "out"
    code = cli.main(["--dataset", str(corpus), "--embedders", "hf-audio", "midi-stats",
                     "--set", f"hf-audio.model={tiny_model}", "--set", "hf-audio.layer=all",
                     "--out", str(out), "--emb-dir", str(tmp_path / "emb"), "--quiet",
                     "--bootstrap", "20", "--plot", "T", "pca", str(out / "plots")])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    layers = ["hf-audio@0", "hf-audio@1", "hf-audio@2"]
    assert metrics["layers"] == {"hf-audio": layers}
    assert list(metrics["embedders"]) == layers + ["midi-stats"]
    assert [metrics["embedders"][s]["options"]["layer"] for s in layers] == [0, 1, 2]
    assert "hf-audio@1__vs__midi-stats" in metrics["pairs"]
    png, svg = (Path(p) for p in metrics["files"]["images"]["layers_hf-audio"])
    assert png.name == "metric_by_layer_hf-audio.png" and png.stat().st_size > 20_000
    from matplotlib.image import imread
    pixels = imread(png)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 1000 and pixels.std() > 0.05
    text = svg.read_text()
    for label in ("knn_balanced_accuracy_k5", "probe_balanced_accuracy", "silhouette_cosine",
                  "cka_linear vs midi-stats", "retrieval_mrr vs midi-stats", "layer of hf-audio"):
        assert label in text
    html = (out / "report.html").read_text()
    assert "Metric by layer" in html and "metric by layer: hf-audio" in html
    assert "plots/metric_by_layer_hf-audio.png" in (out / "report.md").read_text()
    # every layer is its own export and index, named like an embedder
    assert {p.name for p in (tmp_path / "emb" / "export").iterdir()
            if not p.name.startswith(".")} == set(layers) | {"midi-stats"}
    assert (tmp_path / "emb" / "index" / "hf-audio@2" / "index.json").is_file()


def _toy_metrics() -> dict:
    spaces = ["m@a", "m@b", "m@c"]
    emb = {s: {"modality": "audio", "chance": {"uniform": 0.25},
               "knn_balanced_accuracy_k5": {"value": v, "ci95": [v - 0.1, v + 0.1]},
               "probe_balanced_accuracy": {"value": v + 0.05, "ci95": None},
               "silhouette_cosine": {"value": None}}
           for s, v in zip(spaces, (0.3, 0.6, 0.5))}
    emb["sym"] = {"modality": "symbolic"}
    emb["aud"] = {"modality": "audio"}
    pairs = {f"{s}__vs__sym": {"a": s, "b": "sym", "cka_linear": {"value": c, "ci95": [c, c]},
                               "retrieval_mrr": {"value": 0.2}}
             for s, c in zip(spaces, (0.1, 0.4, 0.9))}
    return {"embedders": emb, "pairs": pairs, "layers": {"m": spaces}, "files": {}, "notes": []}


def test_metric_by_layer_reads_the_values_metrics_json_holds(tmp_path):
    m = _toy_metrics()
    spaces = m["layers"]["m"]
    knn = layer_plots.metric_by_layer(m, spaces, "knn_balanced_accuracy_k5")
    np.testing.assert_allclose(knn, [[0.3, 0.6, 0.5], [0.2, 0.5, 0.4], [0.4, 0.7, 0.6]])
    probe = layer_plots.metric_by_layer(m, spaces, "probe_balanced_accuracy")
    assert np.allclose(probe[0], [0.35, 0.65, 0.55]) and np.isnan(probe[1:]).all()
    assert np.isnan(layer_plots.metric_by_layer(m, spaces, "silhouette_cosine")).all()
    cka = layer_plots.pair_metric_by_layer(m, spaces, "sym", "cka_linear")
    np.testing.assert_allclose(cka[0], [0.1, 0.4, 0.9])
    assert np.isnan(layer_plots.pair_metric_by_layer(m, spaces, "aud", "cka_linear")).all()
    assert layer_plots.layer_others(m, spaces) == ["sym", "aud"]  # other modality first
    assert [layer_plots.layer_label(s) for s in spaces] == ["a", "b", "c"]
    assert layer_plots.layer_lists({"m": spaces, "n": ["n@1"]}, ["m@c", "m@a", "x"]) == \
        {"m": ["m@a", "m@c"]}
    images = {}
    layer_plots.add_layer_figures(m, images, tmp_path, prefix="T: ")
    png, svg = images["layers_m"]
    assert png.stat().st_size > 10_000 and "T: metric by layer: m" in svg.read_text()
    assert m["files"]["images"]["layers_m"] == [str(png), str(svg)]
    section = layer_plots.report_section(images, heading=lambda t: f"# {t}",
                                         figure=lambda k, c: [f"[{k}] {c}"])
    assert section[0] == "# Metric by layer" and section[1].startswith("[layers_m] metric by")
    assert layer_plots.report_section({"all_pca": []}, heading=str, figure=None) == []


# -- musicnn and CLaMP 2 -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def musicnn_weights(tmp_path_factory):
    from embedders import musicnn as mmod
    from tf_bundle_writer import random_musicnn_tensors, write_bundle

    root = tmp_path_factory.mktemp("musicnn_random")
    for model in ("MTT_musicnn", "MSD_vgg"):
        (root / model).mkdir()
        fam = "vgg" if model.endswith("vgg") else "musicnn"
        write_bundle(str(root / model) + "/", random_musicnn_tensors(fam, seed=len(model)))
    assert set(mmod.MODELS) >= {"MTT_musicnn", "MSD_vgg"}
    return root


@pytest.mark.parametrize("model", ["MTT_musicnn", "MSD_vgg"])
def test_musicnn_all_layers_from_one_pass_equal_single_layers(musicnn_weights, model, tmp_path):
    wav = write_wav(tmp_path / "x.wav", seconds=7.0, sr=SR, freq=440.0)
    several = get_embedder("musicnn", model=model, weights=str(musicnn_weights),
                           layer="all").load()
    calls = count_forward_calls(several._net)
    spaces = several.compute_spaces(wav)
    assert len(calls) == 1  # 2 patches, one batch
    names = list(several.layers())
    assert list(spaces) == [f"musicnn@{n}" for n in names]
    assert several.space_layers() == {f"musicnn@{n}": n for n in names}
    for name in names:
        alone = get_embedder("musicnn", model=model, weights=str(musicnn_weights), layer=name)
        want = alone.compute(wav)
        got = spaces[f"musicnn@{name}"]
        np.testing.assert_array_equal(got.frames, want.frames)
        np.testing.assert_array_equal(got.clip, want.clip)
        assert got.frames.shape == (2, alone.dim)
        assert several.spaces()[f"musicnn@{name}"] == alone.cache_options()


def test_clamp2_layers_equal_single_layers_and_proj_is_the_default(tmp_path):
    midis = [str(write_midi(tmp_path / f"{i}.mid", pitches=range(50 + i, 90 + i)))
             for i in range(3)]
    opts = dict(weights=str(TINY_CLAMP2), device="cpu", batch_size=4)
    several = get_embedder("clamp2", layer="all", **opts).load()
    assert list(several.spaces()) == ["clamp2@0", "clamp2@1", "clamp2@2", "clamp2@proj"]
    calls = count_forward_calls(several._model.layers[0])
    got = dict(several.embed_many_spaces(midis))
    default = get_embedder("clamp2", **opts).load()
    calls_default = count_forward_calls(default._model.layers[0])
    dict(default.embed_many(midis))
    assert len(calls) == len(calls_default) >= 1  # one pass for all layers, as for one
    assert several.spaces()["clamp2@proj"] == default.cache_options()
    assert "layer" not in default.cache_options()
    for layer, single in ((0, get_embedder("clamp2", layer=0, **opts)),
                          (2, get_embedder("clamp2", layer="2", **opts)),
                          ("proj", default)):
        want = dict(single.embed_many(midis))
        assert several.spaces()[f"clamp2@{layer}"] == single.cache_options()
        for path in midis:
            np.testing.assert_array_equal(got[path][f"clamp2@{layer}"].frames, want[path].frames)
            np.testing.assert_array_equal(got[path][f"clamp2@{layer}"].clip, want[path].clip)
    assert got[midis[0]]["clamp2@1"].frames.shape[1] == several._model.cfg["hidden_size"]
    with pytest.raises(ConfigurationError, match="out of range"):
        get_embedder("clamp2", layer=3, **opts).load()


@pytest.mark.slow
def test_ray_engine_gives_every_layer_as_the_local_engine(tiny_model, corpus, tmp_path):
    """The Ray actors compute every layer of a file at once and cache each like the local
    engine (same keys, same numbers)."""
    import logging
    import os

    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                                       "EMBCOMPARE_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}})
    try:
        results = {}
        for engine in ("local", "ray"):
            emb = get_embedder("hf-audio", model=str(tiny_model), layer="0,2")
            results[engine] = embed_dataset(corpus, [emb], emb_dir=tmp_path / engine,
                                            out_dir=tmp_path / f"o{engine}", progress=False,
                                            engine=engine, workers=2 if engine == "ray" else 1)
    finally:
        ray.shutdown()
    local, remote = results["local"], results["ray"]
    assert list(remote.runs) == list(local.runs) == ["hf-audio@0", "hf-audio@2"]
    for name in local.runs:
        assert remote.runs[name].n_computed == local.runs[name].n_computed == 6
        assert ([e.key for e in remote.runs[name].entries]
                == [e.key for e in local.runs[name].entries])
        np.testing.assert_allclose(remote.sets[name].vectors, local.sets[name].vectors,
                                   rtol=0, atol=1e-6)
    assert os.path.isdir(tmp_path / "ray" / "export" / "hf-audio@2")
