"""Writing the analysis outputs: JSON and CSV, atomically, with numpy values made plain.

``metrics.json`` goes through here (NaN becomes ``null``), every table through the project's one
CSV writer, :func:`common.csvfile.write_csv` with :func:`six_digits` (None becomes an empty
cell); both replace their file atomically, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from common.fsutil import atomic_write_text

from ._common import finite_or_none


def six_digits(value: float) -> str:
    """A float cell of the analysis tables (``common.csvfile.write_csv(float_format=...)``): 6
    significant digits, what the tables have always had."""
    return f"{value:.6g}"


def jsonable(obj: Any) -> Any:
    """Recursively convert numpy types / NaN to JSON-safe values (NaN, inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return finite_or_none(obj)
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int)):
        return obj
    return str(obj)


def write_json_atomic(obj: Any, path: Path) -> Path:
    """Write ``obj`` as JSON (NaN/inf -> null) via a temp file and os.replace."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


#: metrics.json keys renamed in issue 21 (old -> new), read by :func:`upgrade_metrics`
RENAMED_KEYS = {"centroid_cosine_uncentred": "centroid_cosine_uncentered"}
#: params keys renamed in issue 21 (old -> new)
RENAMED_PARAMS = {"centring": "centering"}


def upgrade_metrics(metrics: dict) -> dict:
    """A metrics dict written by an earlier version, with the keys renamed since (issue 21:
    :data:`RENAMED_KEYS`, :data:`RENAMED_PARAMS`); a current one is returned unchanged.

    Old files stay readable for one version; the mapping then goes."""
    out = dict(metrics)
    embedders = {}
    for name, r in (metrics.get("embedders") or {}).items():
        r = {RENAMED_KEYS.get(k, k): v for k, v in r.items()}
        for k, v in list(r.items()):
            if isinstance(v, dict) and isinstance(v.get("params"), dict):
                r[k] = {**v, "params": {RENAMED_PARAMS.get(pk, pk): pv
                                        for pk, pv in v["params"].items()}}
        embedders[name] = r
    if "embedders" in metrics:
        out["embedders"] = embedders
    return out


def read_metrics(path: Path) -> dict:
    """Read a metrics.json (any version since issue 11) with today's key names."""
    return upgrade_metrics(json.loads(Path(path).read_text(encoding="utf-8")))
