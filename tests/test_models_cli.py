"""OpenL3 vs CLaMP 2 through the command line, as ex_params.txt runs it, with test weights."""
import json
import sys

import numpy as np
import pytest

import main
from conftest import FIXTURES
from collection.demo_corpus import build_demo_corpus
from collection.export import export_dir, load_export

sys.path.insert(0, str(FIXTURES / "openl3"))
import make_weights  # noqa: E402

#: The whole module shares one end-to-end run of both models (over 10 s on the shared 2 cores).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    weights = make_weights.write_h5(tmp / "openl3_random.h5", make_weights.make_tensors())
    data = tmp / "songs"
    build_demo_corpus(data, n_per_genre=3, genres=("rock", "chamber"), synth="builtin", bars=1)
    params = tmp / "params.txt"
    params.write_text(f"""\
# the issue's params file, pointed at test weights and a tiny corpus
--dataset {data}
--emb-methods both
--emb-dir {tmp / 'emb'}
--input-repr mel128
--embedding-size 512
--hop-size 0.5
--openl3-weights {weights}
--clamp2-weights {FIXTURES / 'clamp2' / 'tiny_clamp2.pth'}
--plot "Songs" both {tmp / 'plots'}
--calc-metrics {tmp / 'cos'} {tmp / 'var'}
--out {tmp / 'out'}
--bootstrap 20
--quiet
""")
    code = main.main(["--params-file", str(params)])
    return tmp, params, code


def test_openl3_and_clamp2_run_end_to_end(model_run):
    tmp, _, code = model_run
    assert code == 0
    ol3 = load_export(export_dir(tmp / "emb", "openl3"))
    cl2 = load_export(export_dir(tmp / "emb", "clamp2"))
    assert ol3.vectors.shape == (6, 512) and ol3.modality == "audio"
    assert cl2.vectors.shape[0] == 6 and cl2.modality == "symbolic"
    assert ol3.options["input_repr"] == "mel128" and ol3.options["hop_size"] == 0.5
    assert np.all(np.isfinite(ol3.vectors)) and np.all(np.isfinite(cl2.vectors))
    metrics = json.loads((tmp / "out" / "metrics.json").read_text())
    pair = metrics["pairs"]["openl3__vs__clamp2"]
    assert pair["matched_by"].startswith("pair") and pair["n_shared"] == 6
    for key in ("cka_linear", "rsa_spearman", "retrieval_recall_at_1", "retrieval_mrr"):
        assert key in pair
    assert (tmp / "plots" / "openl3_pca.png").stat().st_size > 5000
    assert (tmp / "cos" / "clamp2_centroid_cosine.csv").is_file()
    assert (tmp / "var" / "openl3_within_class_variance.csv").is_file()
    assert (tmp / "out" / "report.html").stat().st_size > 20000


def test_second_run_is_all_cached(model_run, capsys):
    tmp, params, _ = model_run
    capsys.readouterr()
    assert main.main(["--params-file", str(params), "--no-analysis"]) == 0
    out = capsys.readouterr().out
    for name in ("openl3", "clamp2"):
        row = next(line.split() for line in out.splitlines() if line.startswith(name))
        assert row[1:5] == ["6", "6", "0", "6"], row  # found, embedded, computed, cached
