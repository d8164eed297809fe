"""The Ray engine (``--engine ray``) against the in-process engine, on a local Ray instance.

One Ray instance (2 CPUs, bound to 127.0.0.1, no dashboard) serves the whole module and is shut
down at its end; starting it alone takes ~10 s on the shared 2-core machine, hence ``slow``.
Skipped only when the ``ray`` package is absent (CI installs it).
"""
import os
import sys
import logging

import numpy as np
import pytest

import cli
import ray_toys
import toy_embedders  # noqa: F401  (registers toy-audio / toy-midi)
from conftest import ROOT, write_midi, write_wav
from collection import ray_engine
from collection.export import export_dir, read_export
from collection.pipeline import embed_dataset, embed_items
from collection.scan import hash_items, scan_dataset
from collection.store import EmbeddingStore, read_meta
from embedders import get_embedder

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    ray = pytest.importorskip("ray")
    crash_dir = tmp_path_factory.mktemp("crash_markers")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT), TESTS]),
                                       ray_toys.CRASH_DIR_ENV: str(crash_dir)}})
    yield ray
    ray.shutdown()


def _data(root, n=3, crash=0):
    for genre in ("rock", "jazz"):
        for i in range(n):
            write_wav(root / genre / f"p{i}.wav", freq=200 + 50 * i + (genre == "jazz") * 13)
            write_midi(root / genre / f"p{i}.mid", pitches=(60 + i, 64, 67 + (genre == "jazz")))
    for i in range(crash):
        write_wav(root / "rock" / f"crash{i}.wav", freq=300 + 7 * i)
    return root


def _embed(tmp, data, names, **kwargs):
    return embed_dataset(data, [get_embedder(n) for n in names], emb_dir=tmp / "emb",
                         out_dir=tmp / "out", progress=False, **kwargs)


def _cache_entries(emb_dir):
    """Every cache entry as its arrays and meta, less the time it was written."""
    root = emb_dir / "cache"
    entries = {}
    for path in sorted(root.rglob("*.npz")):
        with np.load(path) as npz:
            meta = read_meta(npz)
            meta.pop("written")
            entries[str(path.relative_to(root))] = (
                meta, *(npz[k].tobytes() for k in ("frames", "clip", "timestamps")))
    return entries


@pytest.mark.slow
def test_ray_engine_matches_in_process_engine(tmp_path, ray_local):
    data = _data(tmp_path / "data", n=2)
    (data / "rock" / "bad.wav").write_bytes(b"BAD!" + bytes(100))   # skipped by both, same reason
    names = ["toy-audio", "toy-midi", "audio-stats"]
    # in this process: a process pool forked from a Ray driver breaks (Ray's threads and
    # signal handlers do not survive fork); the pool's numbers are the same (test_pipeline)
    local = _embed(tmp_path / "local", data, names, workers=1)
    remote = _embed(tmp_path / "ray", data, names, workers=2, engine="ray")
    assert ((tmp_path / "local/out/manifest.csv").read_text()
            == (tmp_path / "ray/out/manifest.csv").read_text())
    # the same entries, bit for bit (actors take the driver's BLAS threads: same float sums)
    assert _cache_entries(tmp_path / "local/emb") == _cache_entries(tmp_path / "ray/emb")
    for name in names:
        assert remote.runs[name].n_computed == local.runs[name].n_computed > 0
        np.testing.assert_array_equal(remote.sets[name].vectors, local.sets[name].vectors)
        a = read_export(export_dir(tmp_path / "local/emb", name))
        b = read_export(export_dir(tmp_path / "ray/emb", name))
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.frames, b.frames)
    assert remote.summary()["skipped"] == local.summary()["skipped"]
    # a rerun finds everything in the store
    again = _embed(tmp_path / "ray", data, names, workers=2, engine="ray")
    assert all(r.n_computed == 0 for r in again.runs.values())


@pytest.mark.slow
def test_worker_killed_mid_run_is_restarted_and_its_files_retried(tmp_path, ray_local):
    data = _data(tmp_path / "data", crash=2)
    result = _embed(tmp_path, data, ["toy-crash-audio"], workers=2, engine="ray")
    run = result.runs["toy-crash-audio"]
    assert not run.skipped and run.n_computed == 8   # the killed tasks ran again
    store = EmbeddingStore(tmp_path / "emb")
    assert all(store.peek("toy-crash-audio", e.key) is not None for e in run.entries)
    assert not list((tmp_path / "emb").rglob("*.tmp*"))


@pytest.mark.slow
def test_worker_lost_past_its_restarts_leaves_files_for_the_next_run(tmp_path, ray_local,
                                                                        monkeypatch):
    monkeypatch.setattr(ray_engine, "RETRIES", 0)
    data = _data(tmp_path / "data", n=2, crash=1)
    (data / "rock" / "crash0.wav").rename(data / "rock" / "crash_lost.wav")
    first = _embed(tmp_path, data, ["toy-crash-audio"], workers=2, engine="ray")
    lost = first.runs["toy-crash-audio"].skipped
    assert lost and all("Ray worker lost" in reason for _, reason in lost)
    assert any(it.path.endswith("crash_lost.wav") for it, _ in lost)
    store = EmbeddingStore(tmp_path / "emb")   # what was written is whole
    assert all(store.peek("toy-crash-audio", e.key) is not None
               for e in first.runs["toy-crash-audio"].entries)
    second = _embed(tmp_path, data, ["toy-crash-audio"], workers=2, engine="ray")
    run = second.runs["toy-crash-audio"]
    assert not run.skipped and run.n_computed == len(lost) and run.n_embedded == 5


@pytest.mark.slow
def test_interrupted_driver_leaves_a_valid_store_and_frees_its_workers(tmp_path, ray_local):
    data = _data(tmp_path / "data", n=4)
    scan = scan_dataset(data)
    hash_items(scan.items, progress=False)
    store = EmbeddingStore(tmp_path / "emb")

    def stop(item, status):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_items(scan.usable, get_embedder("toy-audio"), store, workers=2, engine="ray",
                    progress=False, on_result=stop)
    cache = tmp_path / "emb" / "cache" / "toy-audio"
    for entry in cache.rglob("*.npz"):       # whatever finished is a whole entry
        assert store.peek("toy-audio", entry.stem) is not None
    result = _embed(tmp_path, data, ["toy-audio"], workers=2, engine="ray")
    assert result.runs["toy-audio"].n_embedded == 8 and not result.runs["toy-audio"].skipped


@pytest.mark.slow
def test_cli_engine_ray_runs_end_to_end(tmp_path, ray_local, capsys):
    data = _data(tmp_path / "data")
    common = ["--dataset", str(data), "--embedders", "toy-audio", "toy-midi", "--no-analysis",
              "--quiet", "--emb-dir"]
    assert cli.main(common + [str(tmp_path / "e1"), "--out", str(tmp_path / "o1")]) == 0
    assert cli.main(common + [str(tmp_path / "e2"), "--out", str(tmp_path / "o2"),
                              "--engine", "ray", "--workers", "2"]) == 0
    assert (tmp_path / "o1/manifest.csv").read_text() == (tmp_path / "o2/manifest.csv").read_text()


def test_engine_ray_without_ray_is_a_one_line_usage_error(tmp_path, monkeypatch, capsys):
    write_midi(tmp_path / "data" / "a" / "x.mid")
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` now fails as if absent
    code = cli.main(["--dataset", str(tmp_path / "data"), "--embedders", "toy-midi",
                     "--engine", "ray", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "pip install" in err and "ray" in err
    assert not (tmp_path / "o" / "manifest.csv").exists()


def test_ray_flags_need_engine_ray(tmp_path, capsys):
    write_midi(tmp_path / "data" / "a" / "x.mid")
    assert cli.main(["--dataset", str(tmp_path / "data"), "--embedders", "toy-midi",
                     "--ray-address", "auto", "--out", str(tmp_path / "o")]) == 2
    assert "need --engine ray" in capsys.readouterr().err
