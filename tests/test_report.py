"""run_analysis end to end on synthetic EmbeddingSets: files, metrics.json schema, plots, report."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from analysis.compare import run_analysis
from collection import EmbeddingSet
from analysis.schema import EMBEDDER_METRICS, PAIR_METRICS

CLASSES = ["blues", "classical", "jazz", "rock"]
SKIPPED = [("rock/broken.wav", "cannot decode audio"), ("jazz/empty.mid", "no notes")]


def synthetic_sets(n_per=8, seed=0, classes=CLASSES, with_pairs=True):
    rng = np.random.default_rng(seed)
    k = len(classes)
    labels = np.repeat(classes, n_per)
    n = len(labels)
    stems = [f"{c}/piece{i:02d}" for i, c in enumerate(labels)]
    pair = np.array(stems if with_pairs else [""] * n)
    latent = rng.normal(size=(k, 6))[np.repeat(np.arange(k), n_per)] * 2 + rng.normal(size=(n, 6))
    sets = []
    for name, mod, dim, ext in (("audio-a", "audio", 12, "wav"), ("audio-stats", "audio", 9, "wav"),
                                ("midi-a", "symbolic", 10, "mid"),
                                ("midi-stats", "symbolic", 7, "mid")):
        V = latent @ rng.normal(size=(6, dim)) + 0.5 * rng.normal(size=(n, dim))
        ids = [f"{s}.{ext}" for s in stems]
        sets.append(EmbeddingSet(name, mod, ids, labels, pair, V.astype(np.float32)))
    return sets


def summary(sets):
    return {"root": "/data/genres", "classes": CLASSES,
            "counts": {c: {"audio": 8, "symbolic": 8} for c in CLASSES}, "n_files": 66,
            "n_usable": 64, "n_pairs": 32, "empty_classes": [], "unusable": SKIPPED,
            "skipped": SKIPPED, "warnings": ["demo warning"],
            "embedders": {s.name: {"found": 32, "embedded": 32, "computed": 32, "cached": 0,
                                   "skipped": 0, "seconds": 0.1} for s in sets},
            "damaged_cache_entries": [],
            "note_counts": {"midi-stats": {"SMPTE time division (25 fps, 40 ticks/frame)": 2}}}


def run(tmp, sets, methods=("pca", "tsne"), **kw):
    out = Path(tmp)
    return run_analysis(sets, out, plot_dir=out / "plots", cos_dir=out / "cos",
                        var_dir=out / "var", title="Synthetic test", methods=methods, seed=0,
                        dataset_summary=kw.pop("dataset_summary", summary(sets)),
                        run_config={"dataset": "/data/genres", "seed": 0},
                        n_bootstrap=kw.pop("n_bootstrap", 10), n_permutations=19, **kw)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis_out")
    sets = synthetic_sets()
    metrics = run(out, sets)
    return out, sets, metrics


def test_all_files_written(full_run):
    out, sets, _ = full_run
    for f in ("metrics.json", "metrics_embedders.csv", "metrics_pairs.csv", "neighbours.csv",
              "report.html", "report.md"):
        assert (out / f).stat().st_size > 0, f
    for s in sets:
        assert (out / f"confusion_{s.name}.csv").exists()
        assert (out / "cos" / f"{s.name}_centroid_cosine.csv").exists()
        var = (out / "var" / f"{s.name}_within_class_variance.csv").read_text().splitlines()
        assert var[0].startswith("class,n,raw_variance") and len(var) == 1 + len(CLASSES)
        for base in (out / "plots" / f"{s.name}_pca", out / "plots" / f"{s.name}_tsne",
                     out / "cos" / f"{s.name}_centroid_cosine",
                     out / "plots" / f"{s.name}_confusion"):
            assert base.with_name(base.name + ".png").exists(), base
            assert base.with_name(base.name + ".svg").exists(), base
    for name in ("all_embedders_pca", "all_embedders_tsne", "separability_metrics"):
        assert (out / "plots" / f"{name}.png").exists()
        assert (out / "plots" / f"{name}.svg").exists()
    cos = (out / "cos" / "audio-a_centroid_cosine.csv").read_text().splitlines()
    assert cos[0] == "," + ",".join(CLASSES)
    assert not list(out.rglob("*.tmp"))


def test_metrics_json_schema(full_run):
    out, sets, returned = full_run
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) >= {"embedders", "pairs", "notes", "parameters"}
    assert list(m["embedders"]) == [s.name for s in sets]
    for name, r in m["embedders"].items():
        assert r["n_items"] == 32 and r["n_classes"] == 4 and r["dim"] == sets[
            [s.name for s in sets].index(name)].dim
        for k in EMBEDDER_METRICS:
            e = r[k]
            assert set(e) >= {"value", "ci95", "params"}, (name, k)
            assert isinstance(e["value"], float), (name, k, e)
            assert len(e["ci95"]) == 2
    assert len(m["pairs"]) == 6
    assert m["pairs"]["audio-a__vs__midi-a"]["matched_by"] == "pair id"
    assert m["pairs"]["audio-a__vs__audio-stats"]["matched_by"] == "item id"
    for key, r in m["pairs"].items():
        assert r["n_shared"] == 32
        for k in PAIR_METRICS:
            assert isinstance(r[k]["value"], float), (key, k, r[k])
            assert "params" in r[k]
        assert set(r["retrieval_chance"]) == {"recall_at_1", "recall_at_5", "recall_at_10",
                                              "mrr"}
    assert not [n for n in m["notes"] if "error" in n], m["notes"]
    assert m["parameters"]["n_bootstrap"] == 10
    assert m["parameters"]["run_config"]["dataset"] == "/data/genres"
    assert returned["embedders"].keys() == m["embedders"].keys()
    assert "NaN" not in (out / "metrics.json").read_text()


def _check_png(path, min_kb=8):
    import matplotlib.image as mpimg
    assert path.stat().st_size > min_kb * 1024, path
    img = mpimg.imread(str(path))
    h, w = img.shape[:2]
    assert 200 <= h <= 5000 and 200 <= w <= 8000, (path, img.shape)
    q = np.round(np.asarray(img[..., :3], dtype=float) * 255).astype(np.int64).reshape(-1, 3)
    codes = q[:, 0] * 65536 + q[:, 1] * 256 + q[:, 2]
    assert len(np.unique(codes)) > 5, f"{path} is (nearly) a single colour"


def test_pngs_and_svgs_non_trivial(full_run):
    out, sets, _ = full_run
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) >= 4 * 4 + 3
    for p in pngs:
        _check_png(p)
        svg = p.with_suffix(".svg").read_text()
        assert "<svg" in svg


def test_report_html_self_contained(full_run):
    out, sets, _ = full_run
    html = (out / "report.html").read_text()
    # the bundled plotly.js holds URLs in strings it never fetches for these maps (checked in
    # Chromium by tests/test_interactive_report.py): the check is on the page's own markup
    html = re.sub(r"<script>.*?</script>", "", html, flags=re.S)
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', html, re.I)
    assert "http://" not in html and "https://" not in html.replace("http://www.w3.org", "")
    assert html.count("data:image/png;base64,") >= 4 * 4 + 3
    for m in EMBEDDER_METRICS + PAIR_METRICS:
        assert m in html, m
    for f, reason in SKIPPED:
        assert f in html and reason in html
    for s in sets:
        assert s.name in html
    assert "Software" in html and "numpy" in html and "Run configuration" in html
    assert "piece" in html  # nearest-neighbour file names


def test_report_counts_files_embedded_with_a_note(full_run):
    out = full_run[0]
    for name in ("report.html", "report.md"):
        text = (out / name).read_text()
        assert "Embedded with a note" in text
        assert "SMPTE time division (25 fps, 40 ticks/frame)" in text


def test_report_md_links_pngs(full_run):
    out, _, _ = full_run
    md = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert len(links) >= 4 * 4 + 3
    for rel in links:
        assert not rel.startswith("/") and (out / rel).exists(), rel
    for m in EMBEDDER_METRICS + PAIR_METRICS:
        assert m in md


def test_issue11_tables_heatmaps_and_help(full_run):
    """Every metric key in the CSVs, the uncentred centroid matrix written and labelled, the
    chance levels and each metric's how-to-read sentence in the report."""
    from analysis.schema import METRIC_HELP
    out, sets, m = full_run
    emb = (out / "metrics_embedders.csv").read_text().splitlines()[0].split(",")
    pairs = (out / "metrics_pairs.csv").read_text().splitlines()[0].split(",")
    for k in EMBEDDER_METRICS:
        assert {k, f"{k}_ci_lo", f"{k}_ci_hi"} <= set(emb), k
    for k in PAIR_METRICS:
        assert {k, f"{k}_ci_lo", f"{k}_ci_hi"} <= set(pairs), k
    assert {"chance_majority_rate", "chance_uniform"} <= set(emb)
    assert {"cka_null_q95", "knn_jaccard_k10_chance"} <= set(pairs)
    for s in sets:
        assert (out / "cos" / f"{s.name}_centroid_cosine_uncentered.csv").exists()
        assert (out / "cos" / f"{s.name}_centroid_cosine_uncentered.png").exists()
        r = m["embedders"][s.name]
        assert r["centroid_cosine"]["params"]["centered"] is True
        assert r["centroid_cosine_uncentered"]["params"]["centered"] is False
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "uncentred" in md and "uncentred" in html
    assert "Chance: accuracy" in md and "Chance: accuracy" in html
    for k in EMBEDDER_METRICS + PAIR_METRICS:
        assert METRIC_HELP[k] in md, k


def _notes(m):
    return " | ".join(m["notes"])


def test_degenerate_one_class(tmp_path):
    sets = [s for s in synthetic_sets(n_per=5, classes=["only"])][:2]
    m = run(tmp_path, sets, methods=("pca",))
    assert "one class" in _notes(m)
    r = m["embedders"]["audio-a"]
    assert r["silhouette_cosine"]["value"] is None and r["silhouette_cosine"]["note"]
    assert r["within_total_variance_ratio"]["value"] == pytest.approx(1.0)
    assert "one class" in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "metrics.json").read_text())["notes"]


def test_degenerate_one_item_per_class(tmp_path):
    sets = synthetic_sets(n_per=1)[1:3]
    m = run(tmp_path, sets, methods=("pca", "tsne"))
    assert "one item per class" in _notes(m)
    r = m["embedders"]["midi-a"]
    assert r["probe_accuracy"]["value"] is None and r["probe_accuracy"]["note"]
    assert r["knn_accuracy_k5"]["value"] is None
    assert "no tsne map" in _notes(m)
    assert (tmp_path / "report.html").exists()


def test_degenerate_no_pairs(tmp_path):
    sets = synthetic_sets(n_per=4, with_pairs=False)[:3]
    m = run(tmp_path, sets, methods=("pca",))
    r = m["pairs"]["audio-a__vs__midi-a"]
    assert r["n_shared"] == 0 and "no shared items" in " ".join(r["notes"])
    assert all(r[k]["value"] is None for k in PAIR_METRICS)
    # same-modality pair still matched by id
    assert m["pairs"]["audio-a__vs__audio-stats"]["n_shared"] == 16
    assert "no shared items" in (tmp_path / "report.html").read_text()


def test_degenerate_empty_and_no_sets(tmp_path):
    empty = EmbeddingSet("empty-emb", "audio", [], [], [], np.zeros((0, 5)))
    sets = [empty] + synthetic_sets(n_per=3)[2:3]
    m = run(tmp_path / "a", sets, methods=("pca", "tsne"), dataset_summary={})
    assert "empty-emb: no items" in _notes(m)
    assert m["embedders"]["empty-emb"]["n_items"] == 0
    assert (tmp_path / "a" / "report.html").exists()
    m = run(tmp_path / "b", [], methods=("pca",), dataset_summary=None)
    assert "no embedding sets" in _notes(m)
    assert (tmp_path / "b" / "report.html").exists()
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["embedders"] == {}


def _chromium():
    for c in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(c) or (c if Path(c).is_file() else None)
        if p:
            return p
    return None


def test_report_renders_in_headless_browser(full_run, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium/google-chrome on this machine: headless render check skipped")
    out, _, _ = full_run
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1280,2000", (out / "report.html").resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.exists(), "chromium wrote no screenshot"
    _check_png(shot, min_kb=5)
