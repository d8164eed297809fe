"""The analysis outputs are unchanged except where a change is intended (issue 21).

tests/fixtures/metrics_golden/metrics_before.json is ``metrics.json`` of the fixed corpus in
tests/golden_corpus.py as computed *before* the metric registry refactoring (commit 18df82b),
without timing, software versions and paths. This test recomputes it with the current code and
compares every entry -- values, intervals, params, notes, descriptives -- to 1e-12.

An intended change is one line in CHANGED below: a path pattern (fnmatch, ``/``-separated, as
printed by a failure) and why it changed. Old key names are read through
:func:`analysis.io.upgrade_metrics`, the same mapping that lets the tool read old files.
"""
import fnmatch
import json
import math

import pytest

from tests.golden_corpus import FIXTURE, comparable, golden_run

#: path pattern -> why the value there is allowed to differ (or be new / gone). One line each.
CHANGED = {
    # issue 21: every cosine-based entry records whether its vectors were centred
    "embedders/*/recommend_*/params/centered": "issue 21: params.centered recorded",
    "embedders/*/hubness_*/params/centered": "issue 21: params.centered recorded",
    "pairs/*/retrieval_*/params/centered": "issue 21: params.centered recorded",
    "pairs/*/rsa_mantel_p/params/centered": "issue 21: params.centered recorded",
    # (issue 21 renamed centroid_cosine_uncentred and params.centring: upgrade_metrics maps
    # the fixture's old names, so they need no line here)
    # issue 21: Frechet distances added (new entries, new descriptives, new run parameters)
    "embedders/*/frechet*": "issue 21: Frechet metrics and the frechet descriptive added",
    "parameters/frechet*": "issue 21: Frechet parameters recorded",
    "parameters/cosine_centering": "issue 21: generated from the registry (lists every entry)",
    # issue 21 (validity): the probe is the mean over 10 seeded grouped splits, Rubin interval
    "embedders/*/probe_accuracy": "issue 21: mean over 10 seeded splits, Rubin interval",
    "embedders/*/probe_balanced_accuracy": "issue 21: mean over 10 seeded splits, Rubin interval",
    "embedders/*/probe_macro_f1": "issue 21: mean over 10 seeded splits, Rubin interval",
    # issue 21 (validity): k-means agreement averaged over 10 seeds, centred Rubin interval
    "embedders/*/v_measure": "issue 21: mean over 10 k-means seeds, centred Rubin interval",
    "embedders/*/adjusted_rand": "issue 21: mean over 10 k-means seeds, centred Rubin interval",
    "embedders/*/adjusted_mutual_info": "issue 21: new metric (chance-corrected v_measure)",
    "parameters/probe_repeats": "issue 21: the probe's number of seeded splits recorded",
    "parameters/kmeans_seeds": "issue 21: the number of k-means seeds recorded",
    "parameters/comparisons": "issue 21: what metrics.json comparisons compares, on which items",
    "pairs/*/retrieval_*/params/n_queries": "issue 27: the held-out pairs queried per split "
                                            "recorded (all of them up to 3,000)",
}
TOL = 1e-12
#: path pattern -> (relative tolerance, why): values computed in float32 on purpose, whose
#: round-off depends on the CPU's BLAS kernels (AVX2 vs AVX-512 gave 7e-8 relative apart)
FLOAT32 = {
    "pairs/*/cka_permutation_p/params/*": (1e-5, "the permutation null's Gram products are "
                                           "float32 (analysis.cka._permuted_trace)"),
}


def _exempt(path: str) -> str | None:
    for pattern, why in CHANGED.items():
        if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + "/*"):
            return why
    return None


def _tolerance(path: str) -> float:
    for pattern, (tol, _why) in FLOAT32.items():
        if fnmatch.fnmatchcase(path, pattern):
            return tol
    return TOL


def differences(old, new, path: str = "") -> list[str]:
    """Every place where ``new`` differs from ``old`` (numbers to TOL, or to the FLOAT32
    tolerance of their path), as ``path: what``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in old:
            sub = f"{path}/{k}" if path else str(k)
            out += [f"{sub}: gone"] if k not in new else differences(old[k], new[k], sub)
        out += [f"{path}/{k}: new" if path else f"{k}: new" for k in new if k not in old]
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path}: length {len(old)} -> {len(new)}"]
        return [d for i, (a, b) in enumerate(zip(old, new))
                for d in differences(a, b, f"{path}/{i}")]
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) \
            and not isinstance(old, bool) and not isinstance(new, bool):
        tol = _tolerance(path)
        if math.isclose(old, new, rel_tol=tol, abs_tol=TOL):
            return []
        return [f"{path}: {old!r} -> {new!r}"]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


@pytest.fixture(scope="module")
def before_after(tmp_path_factory):
    from analysis.io import upgrade_metrics
    old = upgrade_metrics(json.loads(FIXTURE.read_text()))
    new = comparable(golden_run(tmp_path_factory.mktemp("golden")))
    return old, new


def test_metrics_json_unchanged_except_where_intended(before_after):
    old, new = before_after
    unexpected = [d for d in differences(old, new) if not _exempt(d.split(":")[0])]
    assert not unexpected, ("metrics.json moved where no change was intended (add a line to "
                            "CHANGED with the reason if it is intended):\n"
                            + "\n".join(unexpected[:40]))


def test_every_exemption_is_still_needed(before_after):
    """An exemption that matches nothing is stale: remove it so it cannot hide a change."""
    old, new = before_after
    paths = [d.split(":")[0] for d in differences(old, new)]
    stale = [p for p in CHANGED
             if not any(fnmatch.fnmatchcase(x, p) or fnmatch.fnmatchcase(x, p + "/*")
                        for x in paths)]
    assert not stale, f"exemptions that match no difference: {stale}"


def test_the_comparison_notices_a_change():
    old = {"embedders": {"a": {"knn_accuracy_k1": {"value": 0.5, "ci95": [0.4, 0.6]}}}}
    new = json.loads(json.dumps(old))
    assert differences(old, new) == []
    new["embedders"]["a"]["knn_accuracy_k1"]["ci95"][1] = 0.6 + 1e-9
    assert differences(old, new) == ["embedders/a/knn_accuracy_k1/ci95/1: 0.6 -> 0.600000001"]
    new["embedders"]["a"]["extra"] = 1
    assert "embedders/a/extra: new" in differences(old, new)


def test_float32_tolerance_applies_only_where_listed():
    def entry(name, v):
        return {"pairs": {"a__vs__b": {name: {"params": {"observed": v}}}}}
    assert differences(entry("cka_permutation_p", 0.5), entry("cka_permutation_p", 0.5 + 4e-8)) == []
    assert differences(entry("cka_debiased", 0.5), entry("cka_debiased", 0.5 + 4e-8))
    assert differences(entry("cka_permutation_p", 0.5), entry("cka_permutation_p", 0.5001))
