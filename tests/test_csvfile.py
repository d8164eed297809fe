"""The one CSV writer and reader (common/csvfile.py), and the tables written through them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from common.csvfile import read_csv, repr_float, write_csv

#: Any text a reason or a file name may hold: quotes, commas, line breaks, non-ASCII (UTF-8
#: cannot hold a lone surrogate, so none is drawn).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.lists(TEXT, min_size=3, max_size=3), max_size=6))
def test_any_text_round_trips(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    write_csv(path, rows, header=("id", "reason", "note"))
    assert read_csv(path) == [dict(zip(("id", "reason", "note"), r)) for r in rows]


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=5))
def test_floats_keep_every_digit(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("csv") / "f.csv"
    write_csv(path, [[v, np.float32(v) if abs(v) < 1e38 else 0.0] for v in values],
              header=("f64", "f32"))
    back = read_csv(path)
    assert [float(r["f64"]) for r in back] == values
    assert [float(r["f32"]) for r in back] == [
        float(np.float32(v)) if abs(v) < 1e38 else 0.0 for v in values]


def test_cells_none_nan_bool_int_and_mappings(tmp_path):
    path = write_csv(tmp_path / "sub" / "m.csv",
                     [{"a": None, "b": float("nan"), "c": True, "extra": 1},
                      {"a": np.int64(3), "c": ""}, [1, 2.5, "x"]],
                     header=("a", "b", "c"))
    assert path.read_text(encoding="utf-8") == "a,b,c\n,,True\n3,,\n1,2.5,x\n"
    assert repr_float(0.1) == "0.1" and repr_float(float("inf")) == ""
    with pytest.raises(ValueError, match="need a header"):
        write_csv(tmp_path / "x.csv", [{"a": 1}])
    six = write_csv(tmp_path / "g.csv", [[1 / 3]], float_format=lambda v: f"{v:.6g}")
    assert six.read_text() == "0.333333\n"


def test_a_failed_write_keeps_the_old_table(tmp_path):
    path = write_csv(tmp_path / "t.csv", [["old"]], header=("v",))

    def rows():
        yield ["new"]
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        write_csv(path, rows(), header=("v",))
    assert read_csv(path) == [{"v": "old"}]
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary file left


@settings(max_examples=60, deadline=None)
@given(reason=TEXT, note=TEXT, name=TEXT.filter(lambda s: s.strip() != ""))
def test_the_manifest_round_trips_any_reason(tmp_path_factory, reason, note, name):
    from collection.manifest import MANIFEST_FIELDS, write_manifest

    path = tmp_path_factory.mktemp("m") / "manifest.csv"
    row = {"path": f"a/{name}.wav", "label": "a", "modality": "audio", "pair_id": None,
           "content_hash": "ab" * 32, "embedder": "toy", "status": "skipped", "cached": "",
           "reason": reason, "note": note}
    write_manifest(path, [row])
    assert read_csv(path) == [{k: "" if row[k] is None else row[k] for k in MANIFEST_FIELDS}]


def test_the_prepare_manifest_round_trips_any_reason(tmp_path):
    from prepare.jobs import SKIPPED, Job, Outcome, SourceFile, read_manifest, write_manifest

    reason = 'bad header: "RIFF" missing,\nsecond line \u266a'
    src = SourceFile(path=Path("/x/a/b,\"c\".wav"), rel='a/b,"c".wav', label="a")
    write_manifest(tmp_path, [Outcome(Job([src]), SKIPPED, ["a/x;1.mid"], reason)])
    assert read_manifest(tmp_path) == [{"source": 'a/b,"c".wav', "label": "a",
                                        "status": SKIPPED, "outputs": "a/x;1.mid",
                                        "reason": reason}]
