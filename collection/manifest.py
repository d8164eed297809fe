"""The manifest: one CSV row per (file, embedder) saying what happened to it.

Columns (:data:`~collection.scan.MANIFEST_FIELDS`): ``path, label, modality, pair_id,
content_hash, embedder, status, cached, reason, note``. Every file found appears at least once:
either ``embedded`` by an embedder (``cached`` says whether it came from the store) or
``skipped`` with its reason. ``note`` holds what the embedder noted about an embedded file that
is unusual but valid (e.g. CLaMP 2: "SMPTE time division"), several joined by ``"; "``.
"""
from __future__ import annotations

import os
from pathlib import Path

from common.csvfile import write_csv
from .scan import EMBEDDED, MANIFEST_FIELDS, SKIPPED, ScanResult
from .store import StoreError

__all__ = ["MANIFEST_FIELDS", "manifest_rows", "write_manifest"]


def manifest_rows(scan: ScanResult, runs: dict, computed_ids: dict[str, set[str]] | None = None
                  ) -> list[dict]:
    """One row per (file, embedder) that handled it; one row for files no embedder used.

    ``runs`` maps names to :class:`~collection.pipeline.EmbedderRun`. ``computed_ids`` (name ->
    ids computed in this run) overrides what the runs record.
    """
    rows = []
    by_item: dict[str, list[dict]] = {}
    for run in runs.values():
        computed = (computed_ids[run.name] if computed_ids and run.name in computed_ids
                    else {e.item.id for e in run.entries if e.computed})
        for entry in run.entries:
            by_item.setdefault(entry.item.id, []).append(
                {"embedder": run.name, "status": EMBEDDED,
                 "cached": "no" if entry.item.id in computed else "yes", "reason": "",
                 "note": "; ".join(entry.notes)})
        for it, reason in run.skipped:
            by_item.setdefault(it.id, []).append(
                {"embedder": run.name, "status": SKIPPED, "cached": "", "reason": reason})
    modalities = {run.modality for run in runs.values()}
    for it in scan.items:
        base = {**it.extra, "path": it.id, "label": it.label, "modality": it.modality,
                "pair_id": it.pair_id, "content_hash": it.content_hash}
        if it.skip_reason:
            rows.append({**base, "embedder": "", "status": SKIPPED, "cached": "",
                         "reason": it.skip_reason})
        elif it.id in by_item:
            rows.extend({**base, **r} for r in by_item[it.id])
        else:
            reason = (f"no selected embedder reads {it.modality} files"
                      if it.modality not in modalities else "not embedded")
            rows.append({**base, "embedder": "", "status": SKIPPED, "cached": "", "reason": reason})
    return rows


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write ``manifest.csv`` (:func:`common.csvfile.write_csv`); :class:`StoreError` if it
    cannot be written.

    Keys of the rows beyond :data:`MANIFEST_FIELDS` (the further columns of a CSV manifest or a
    mirdata index, :attr:`~collection.scan.Item.extra`) follow as more columns, in first-seen
    order.
    """
    header = list(MANIFEST_FIELDS)
    header += list(dict.fromkeys(k for row in rows for k in row if k not in set(header)))
    try:
        return write_csv(path, rows, header=header)
    except OSError as exc:
        raise StoreError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
