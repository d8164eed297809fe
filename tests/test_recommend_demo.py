"""The ``recommend`` command the offline demo prints works for every embedder the demo indexes:
the baselines always, musicnn when its published weights are installed. A regression test for a
query check that compared a fresh (unloaded) musicnn, whose options lacked the weights identity,
with the index's options, which carry it, and so refused every musicnn query."""
import json
import shutil

import pytest

pytest.importorskip("qdrant_edge")

import cli
from conftest import indexed_demo_corpus
from embedders import WeightsError, get_embedder


def _musicnn_or_none():
    emb = get_embedder("musicnn")
    try:
        emb.resolve_weights()
    except WeightsError:
        return None
    return emb


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's embedders: the baselines, and musicnn when its weights are installed."""
    musicnn = _musicnn_or_none()
    root, emb = indexed_demo_corpus(tmp_path_factory.mktemp("recdemo"),
                                    extra=[musicnn] if musicnn is not None else [])
    return root, emb, musicnn is not None


def _recommend(capsys, query, emb, embedder, *extra):
    capsys.readouterr()
    rc = cli.main(["recommend", str(query), "--emb-dir", str(emb), "--embedder", embedder,
                   "-k", "3", "--json", *extra])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


CASES = [("audio-stats", "wav"), ("midi-stats", "mid"), ("musicnn", "wav")]


@pytest.mark.parametrize("embedder,ext", CASES, ids=[c[0] for c in CASES])
def test_demo_recommend_command_same_and_cross_modal(demo, capsys, tmp_path, embedder, ext):
    root, emb, have_musicnn = demo
    if embedder == "musicnn" and not have_musicnn:
        pytest.skip("musicnn weights not installed (pip install --no-deps musicnn==0.1.0)")
    query = root / "ballad" / f"ballad_00.{ext}"
    same = _recommend(capsys, query, emb, embedder)
    # the query's own content is never a result; the rest are of its modality
    assert len(same) == 3 and all(r["item_id"].endswith(f".{ext}") for r in same)
    assert f"ballad/ballad_00.{ext}" not in [r["item_id"] for r in same]
    other = "mid" if ext == "wav" else "wav"
    targets = (["audio-stats", "musicnn"] if have_musicnn else ["audio-stats"]) \
        if ext == "mid" else ["midi-stats"]
    for target in targets:
        cross = _recommend(capsys, query, emb, embedder, "--cross-modal", "-k", "10",
                           "--target-embedder", target)
        # all 10 items of the other modality, the query's own pair partner among them
        assert len(cross) == 10 and all(r["item_id"].endswith(f".{other}") for r in cross)
        assert f"ballad/ballad_00.{other}" in [r["item_id"] for r in cross]
    # a file outside the collection goes through the query embedder itself (the check that
    # used to refuse musicnn): a copy of the item gets the item's own neighbours
    outside = tmp_path / f"copy_of_ballad.{ext}"
    shutil.copyfile(query, outside)
    again = _recommend(capsys, outside, emb, embedder)
    assert [r["item_id"] for r in again] == [r["item_id"] for r in same]
    assert [r["score"] for r in again] == pytest.approx([r["score"] for r in same], abs=1e-4)
