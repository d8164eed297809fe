"""The files of a probe run: ``probe.json``, CSVs, two heatmaps, ``probe_report.html``/``.md``
(the probe section alone; a comparison run puts the same section into its own report).
Every file is written atomically."""
from __future__ import annotations

import json
from pathlib import Path

from analysis.probe_report import (plot_attribute_heatmap, plot_intervention_heatmap,
                                   render_probe_section)
from common.csvfile import write_csv
from common.fsutil import atomic_write_text
from .attributes import ATTRIBUTES

__all__ = ["attribute_rows", "intervention_rows", "write_outputs"]

ATTRIBUTE_FIELDS = ("embedder", "attribute", "metric", "value", "ci_low", "ci_high", "chance",
                    "n", "spearman")
INTERVENTION_FIELDS = ("embedder", "intervention", "applicable", "n", "sensitivity",
                       "sensitivity_ci_low", "sensitivity_ci_high", "identity_recall_at_1",
                       "identity_ci_low", "identity_ci_high", "identity_chance", "label_kept",
                       "label_kept_ci_low", "label_kept_ci_high", "label_kept_reference",
                       "reason")


def attribute_rows(probe: dict) -> list[dict]:
    rows = []
    for emb, attrs in probe["attributes"].items():
        for name, r in attrs.items():
            rows.append({"embedder": emb, "attribute": name, "metric": r["metric"],
                         "value": r["value"], "ci_low": r["ci95"][0], "ci_high": r["ci95"][1],
                         "chance": r["chance"], "n": r["n"], "spearman": r.get("spearman", "")})
    return rows


def intervention_rows(probe: dict) -> list[dict]:
    rows = []
    for emb, per in probe["interventions"].items():
        for name, r in per.items():
            row = {"embedder": emb, "intervention": name,
                   "applicable": r.get("applicable", True), "n": r.get("n", ""),
                   "reason": r.get("reason", "")}
            if "sensitivity" in r:
                s, i, k = r["sensitivity"], r["identity_recall_at_1"], r["label_kept"]
                row.update(sensitivity=s["value"], sensitivity_ci_low=s["ci95"][0],
                           sensitivity_ci_high=s["ci95"][1], identity_recall_at_1=i["value"],
                           identity_ci_low=i["ci95"][0], identity_ci_high=i["ci95"][1],
                           identity_chance=i["chance"], label_kept=k["value"],
                           label_kept_ci_low=k["ci95"][0], label_kept_ci_high=k["ci95"][1],
                           label_kept_reference=k["reference"])
            rows.append(row)
    return rows


def write_outputs(probe: dict, out: Path, *, attrs: dict[str, dict]) -> list[str]:
    """Write everything; returns the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in probe.items() if k != "files"}
    files = [atomic_write_text(out / "probe.json", json.dumps(data, indent=2, default=float))]
    files.append(write_csv(out / "probe_attributes.csv", attribute_rows(probe),
                           header=ATTRIBUTE_FIELDS))
    files.append(write_csv(out / "probe_interventions.csv", intervention_rows(probe),
                           header=INTERVENTION_FIELDS))
    pieces = [{"piece": p, **a} for p, a in sorted(attrs.items())]
    files.append(write_csv(out / "piece_attributes.csv", pieces,
                           header=("piece",) + tuple(ATTRIBUTES)))
    files.append(write_csv(out / "probe_skipped.csv", probe["skipped"],
                           header=("what", "reason")))
    images = {}
    plots = out / "plots"
    if any(probe["attributes"].values()):
        files += plot_attribute_heatmap(probe, plots / "probe_attributes")
        images["attributes"] = "plots/probe_attributes.png"
    if any(probe["interventions"].values()):
        files += plot_intervention_heatmap(probe, plots / "probe_interventions")
        images["interventions"] = "plots/probe_interventions.png"
    html, md = render_probe_section(probe, images)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Probes</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
            "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
            "padding:3px 6px}</style></head><body>\n" + html + "</body></html>\n")
    files.append(atomic_write_text(out / "probe_report.html", page))
    files.append(atomic_write_text(out / "probe_report.md", "# Probe report\n\n" + md))
    return [str(f) for f in files]
