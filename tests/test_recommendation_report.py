"""Recommendation quality reaches evaluate_embedder, metrics.json and the report."""
import numpy as np

from analysis.compare import evaluate_embedder
from analysis.schema import METRIC_HELP, RECOMMEND_METRICS


def _clusters():
    rng = np.random.default_rng(0)
    X = np.vstack([c + 0.1 * rng.standard_normal((8, 6)) for c in np.eye(6)[:3] * 5])
    return X, np.repeat(["a", "b", "c"], 8)


def test_evaluate_embedder_reports_recommendation_metrics():
    X, labels = _clusters()
    r = evaluate_embedder(X, labels, n_bootstrap=10)
    for m in RECOMMEND_METRICS:
        assert m in r and m in METRIC_HELP
        assert f"{m}_mp" not in r
    p = r["recommend_precision_at_5"]
    assert p["value"] == 1.0 and p["params"]["chance"] == 7 / 23
    assert r["recommend_coverage_at_10"]["value"] + \
        r["hubness_never_recommended_k10"]["value"] == 1.0


def test_mutual_proximity_side_by_side():
    X, labels = _clusters()
    r = evaluate_embedder(X, labels, n_bootstrap=10, hubness_reduction="mp")
    for m in RECOMMEND_METRICS:
        assert f"{m}_mp" in r and f"{m}_mp" in METRIC_HELP
    assert r["recommend_precision_at_5_mp"]["params"]["scheme"].endswith("mutual proximity")
