"""Symbolic links in a collection folder: inside ones followed, ones leaving it refused unless
--follow-symlinks (issue 25: a planted link made runs embed and serve files from elsewhere)."""
import argparse
import os

import pytest
from conftest import write_midi, write_wav

from collection.scan import LINK_LEAVES, scan_dataset
from collection.sources import (CollectionSource, SourceError, add_source_arguments,
                                source_from_args)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data"
    write_wav(root / "jazz" / "a.wav")
    write_midi(root / "jazz" / "a.mid")
    outside = tmp_path / "elsewhere"
    write_wav(outside / "secret.wav")
    write_wav(outside / "folder" / "b.wav")
    os.symlink(root / "jazz" / "a.wav", root / "jazz" / "inside_link.wav")
    os.symlink(outside / "secret.wav", root / "jazz" / "secret.wav")
    os.symlink(outside / "folder", root / "rock")  # a class folder that leaves the collection
    return root


def test_links_leaving_the_collection_are_refused_by_default(tree):
    scan = scan_dataset(tree)
    by_id = {it.id: it for it in scan.items}
    assert by_id["jazz/inside_link.wav"].skip_reason == ""
    assert by_id["jazz/secret.wav"].skip_reason.startswith(LINK_LEAVES)
    assert "--follow-symlinks" in by_id["jazz/secret.wav"].skip_reason
    assert not any(i.startswith("rock/") for i in by_id)
    assert any(w.startswith("rock: " + LINK_LEAVES) for w in scan.warnings), scan.warnings
    assert scan.classes == ["jazz"]


def test_follow_symlinks_reads_them(tree):
    scan = scan_dataset(tree, follow_symlinks=True)
    usable = {it.id for it in scan.usable}
    assert {"jazz/secret.wav", "rock/b.wav", "jazz/inside_link.wav"} <= usable


def test_a_collection_reached_through_a_link_is_inside_itself(tree, tmp_path):
    os.symlink(tree, tmp_path / "data_link")  # the root itself a link: its files are inside
    scan = scan_dataset(tmp_path / "data_link")
    assert {it.id for it in scan.usable} == {"jazz/a.wav", "jazz/a.mid", "jazz/inside_link.wav"}


def test_the_flag_reaches_the_scan_and_the_saved_config(tree):
    p = argparse.ArgumentParser()
    add_source_arguments(p, dataset=True)
    src = source_from_args(p.parse_args(["--dataset", str(tree), "--follow-symlinks"]))
    assert "rock/b.wav" in {it.id for it in src.scan().usable}
    assert CollectionSource.from_config(src.to_config()) == src
    assert source_from_args(p.parse_args(["--dataset", str(tree)])).to_config() == str(tree)
    with pytest.raises(SourceError, match="--follow-symlinks applies to a folder"):
        source_from_args(p.parse_args(["--manifest", "x.csv", "--follow-symlinks"]))
