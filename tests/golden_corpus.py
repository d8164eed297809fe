"""A small fixed corpus for the before/after comparison of ``metrics.json``
(tests/test_metrics_unchanged.py).

Three embedders on 4 imbalanced classes with audio/MIDI pair ids (the symbolic set has four extra
unpaired items, so the pair is matched on a subset), seeded; the analysis runs without maps and
with small resampling counts so it takes a few seconds.

``python -m tests.golden_corpus OUT.json`` writes the comparable part of a run's metrics.json.
Only do that when an intended change has been reviewed: the fixture is the record of what the
analysis computed *before* a refactoring, and the test exists to notice that it moved.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

CLASSES = ["blues", "classical", "jazz", "rock"]
SIZES = [10, 7, 6, 5]
RUN_OPTIONS = {"seed": 3, "n_bootstrap": 20, "n_permutations": 19, "hubness_reduction": "mp"}
FIXTURE = Path(__file__).parent / "fixtures" / "metrics_golden" / "metrics_before.json"


def golden_sets():
    """Three EmbeddingSets (two audio, one symbolic), seeded."""
    from collection import EmbeddingSet
    rng = np.random.default_rng(20261202)
    labels = np.repeat(CLASSES, SIZES)
    n = len(labels)
    cls = np.repeat(np.arange(len(CLASSES)), SIZES)
    stems = np.array([f"{c}/piece{i:02d}" for i, c in enumerate(labels)])
    latent = rng.normal(size=(len(CLASSES), 5))[cls] * 1.5 + rng.normal(size=(n, 5))
    sets = []
    for name, dim in (("audio-stats", 9), ("audio-b", 14)):
        V = latent @ rng.normal(size=(5, dim)) + 0.6 * rng.normal(size=(n, dim)) + 2.0
        sets.append(EmbeddingSet(name, "audio", np.char.add(stems, ".wav"), labels, stems,
                                 V.astype(np.float32)))
    extra = np.array([f"{c}/solo{i}" for i, c in enumerate(CLASSES)])
    lab_m = np.concatenate([labels, CLASSES])
    lat_m = np.concatenate([latent, rng.normal(size=(len(CLASSES), 5))])
    V = lat_m @ rng.normal(size=(5, 7)) + 0.8 * rng.normal(size=(n + len(CLASSES), 7))
    sets.append(EmbeddingSet("midi-stats", "symbolic",
                             np.char.add(np.concatenate([stems, extra]), ".mid"), lab_m,
                             np.concatenate([stems, [""] * len(CLASSES)]),
                             V.astype(np.float32)))
    return sets


def golden_run(out: Path) -> dict:
    """run_analysis on :func:`golden_sets` into ``out``; the metrics dict."""
    from analysis import run_analysis
    out = Path(out)
    return run_analysis(golden_sets(), out, plot_dir=out / "plots", cos_dir=out / "cos",
                        var_dir=out / "var", title="golden", methods=(),
                        dataset_summary={"classes": CLASSES}, run_config={"golden": True},
                        **RUN_OPTIONS)


def comparable(metrics: dict) -> dict:
    """The part of metrics.json that must not move: no timing, software versions or paths."""
    keep = {k: metrics[k] for k in ("embedders", "pairs", "notes", "parameters", "dataset")
            if k in metrics}
    keep["parameters"] = {k: v for k, v in keep["parameters"].items()
                          if not k.startswith("seconds_")}
    return json.loads(json.dumps(keep))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        data = comparable(golden_run(Path(tmp)))
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURE
    target.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    print(f"wrote {target} ({target.stat().st_size} bytes)")
