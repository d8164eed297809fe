"""run_analysis end to end with two embedders: metrics.json["comparisons"], the findings paragraph
that opens the report's summary, and the side-by-side table on the shared items.

A planted difference (one space separates the classes, the other is mostly noise) must come out
Holm-significant and be stated; two spaces drawn alike must be reported as not differing."""
import json
from pathlib import Path

import numpy as np
import pytest

from analysis import run_analysis
from collection import EmbeddingSet
from common.csvfile import read_csv

CLASSES = ["blues", "jazz", "rock"]
N_PER = 15


def two_sets(separation_a: float, separation_b: float, *, seed: int, extra_b: int = 0):
    """Two audio/MIDI embedders of the same 45 pieces (pair ids = stems); ``extra_b`` unpaired
    MIDI items more for b. Both draw from the same class centres, scaled by ``separation``
    (in units of the item noise), with fresh noise: equal separations = the same distribution."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CLASSES), 8))
    labels = np.repeat(CLASSES, N_PER)
    cls = np.repeat(np.arange(len(CLASSES)), N_PER)
    stems = np.array([f"{c}/piece{i:02d}" for i, c in enumerate(labels)])
    out = []
    for name, mod, ext, sep, extra in (("emb-a", "audio", "wav", separation_a, 0),
                                       ("emb-b", "symbolic", "mid", separation_b, extra_b)):
        lab = np.concatenate([labels, np.array(CLASSES * extra)[:extra]])
        c = np.concatenate([cls, (np.arange(extra) % len(CLASSES))])
        ids = np.concatenate([stems, [f"{CLASSES[i % 3]}/solo{i}" for i in range(extra)]])
        pairs = np.concatenate([stems, [""] * extra])
        V = sep * centres[c] + rng.normal(size=(len(lab), 8))
        out.append(EmbeddingSet(name, mod, np.char.add(ids, f".{ext}"), lab, pairs,
                                V.astype(np.float32)))
    return out


def run(tmp: Path, sets) -> dict:
    return run_analysis(sets, tmp, plot_dir=tmp / "plots", cos_dir=tmp / "cos",
                        var_dir=tmp / "var", title="paired", methods=(), seed=0,
                        n_bootstrap=20, n_permutations=19)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    return out, run(out, two_sets(3.0, 0.15, seed=1, extra_b=4))


@pytest.mark.slow
def test_a_planted_difference_is_holm_significant_and_stated(planted):
    out, m = planted
    cmp = {c["metric"]: c for c in m["comparisons"]}
    assert set(cmp) == set(m["parameters"]["comparisons"]["metrics"])
    knn = cmp["knn_accuracy_k1"]
    assert (knn["a"], knn["b"], knn["on"]) == ("emb-a", "emb-b", "shared items")
    # compared on the 45 shared pieces, b's 4 unpaired MIDI items left out and counted
    assert (knn["n_items"], knn["n_items_a_all"], knn["n_items_b_all"]) == (45, 45, 49)
    assert knn["matched_by"] == "pair id"
    assert knn["difference"] > 0.4 and knn["p_holm"] < 0.05
    assert knn["ci95"][0] > 0
    probe = cmp["probe_accuracy"]
    assert probe["p_holm"] < 0.05 and probe["difference"] > 0.3
    # a's items are all shared: its own repeated probe is reused; b has more items: refitted
    assert probe["params"]["probe_fits"].startswith("reused for a:")
    assert probe["value_a"] == pytest.approx(m["embedders"]["emb-a"]["probe_accuracy"]["value"],
                                             abs=1e-12)
    md = (out / "report.md").read_text()
    summary = md.split("## Summary", 1)[1]
    assert summary.lstrip().startswith("**Findings.**")
    assert "On knn_accuracy_k1, emb-a scores higher than emb-b" in summary.split("###")[0]
    assert "emb-a on 45, emb-b on 49" in summary.split("###")[0]
    assert "Paired comparisons on shared items" in summary
    assert "45 shared items (matched by pair id; emb-a has 45, emb-b 49)" in summary
    html = (out / "report.html").read_text()
    assert "On knn_accuracy_k1, emb-a scores higher than emb-b" in html
    on_disk = json.loads((out / "metrics.json").read_text())
    assert len(on_disk["comparisons"]) == len(m["comparisons"])
    rows = read_csv(out / "metrics_comparisons.csv")
    assert [r["metric"] for r in rows] == [c["metric"] for c in m["comparisons"]]
    row = rows[[r["metric"] for r in rows].index("knn_accuracy_k1")]
    assert float(row["p_holm"]) == pytest.approx(knn["p_holm"], rel=1e-5)
    assert float(row["ci_lo"]) == pytest.approx(knn["ci95"][0], rel=1e-5)


@pytest.mark.slow
def test_no_difference_is_reported_as_none(tmp_path):
    m = run(tmp_path, two_sets(1.5, 1.5, seed=2))
    assert m["comparisons"] and all(c["p_holm"] >= 0.05 for c in m["comparisons"]
                                    if c["p_holm"] is not None)
    probe = next(c for c in m["comparisons"] if c["metric"] == "probe_accuracy")
    assert probe["params"]["probe_fits"].startswith("reused for a and b")
    md = (tmp_path / "report.md").read_text()
    findings = md.split("## Summary", 1)[1].split("###")[0]
    assert "No difference between embedders is significant at 5% after Holm correction" in findings
    assert "scores higher than" not in findings
    assert "Each of the 2 embedders was scored on 45 items." in findings


def test_reused_probe_gives_the_refitted_comparison():
    """Passing each embedder's own repeated probe (made on the same rows with the same
    settings) changes nothing but params.probe_fits; a probe of other settings is not used."""
    from analysis import separability
    from analysis.comparisons import compare_embedders
    rng = np.random.default_rng(5)
    labels = np.repeat(["x", "y", "z"], 8)
    Xa = rng.normal(size=(3, 4))[np.repeat(np.arange(3), 8)] + rng.normal(size=(24, 4))
    Xb = rng.normal(size=(24, 6))
    kw = dict(seed=4, probe_repeats=3, n_splits=3, families=("probe",))
    given = tuple(separability.repeated_linear_probe(X, labels, n_repeats=3, n_splits=3,
                                                     seed=4) for X in (Xa, Xb))
    refit = compare_embedders(Xa, Xb, labels, **kw)
    reused = compare_embedders(Xa, Xb, labels, probe_results=given, **kw)
    other = compare_embedders(Xa, Xb, labels, probe_results=given,
                              **{**kw, "seed": 5})
    assert [e["params"]["probe_fits"] for e in refit] == ["refitted on the shared items"] * 2
    assert reused[0]["params"]["probe_fits"].startswith("reused for a and b")
    assert other[0]["params"]["probe_fits"] == "refitted on the shared items"
    for r, u in zip(refit, reused):
        for key in ("value_a", "value_b", "difference", "ci95", "p_value"):
            assert u[key] == pytest.approx(r[key], abs=1e-12)
