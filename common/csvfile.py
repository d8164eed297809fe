"""The one way this tool writes and reads CSV tables.

:func:`write_csv` quotes with the :mod:`csv` module (a field holding a comma, a quote or a line
break reads back unchanged), writes UTF-8 with ``\\n`` line ends, and replaces the file
atomically (:func:`common.fsutil.atomic_path`): a reader sees the old table or the new one, never
half of one. :func:`read_csv` reads such a file back as one dict per row.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .fsutil import atomic_write_text


def repr_float(value: float) -> str:
    """A float as the shortest text that reads back as the same float (``repr``); NaN and
    infinities as an empty cell."""
    value = float(value)
    return repr(value) if math.isfinite(value) else ""


def _cell(value: Any, float_format: Callable[[float], str]) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "")
                                    == "f"):
        return float_format(value)
    return value


def write_csv(path: str | os.PathLike, rows: Iterable[Sequence | Mapping], *,
              header: Sequence[str] | None = None,
              float_format: Callable[[float], str] = repr_float) -> Path:
    """Write a table to ``path`` atomically.

    Parameters
    ----------
    path : path
        The destination; its folder is created if needed.
    rows : iterable of sequences or of mappings
        One row each: the values in column order, or a mapping from column name to value (then
        ``header`` is required; missing columns are empty, other keys ignored).
    header : sequence of str, optional
        The first row (column names); none if omitted.
    float_format : callable, optional
        Text of a float cell (Python or numpy float); default :func:`repr_float`, full precision.
        ``None`` is an empty cell, ints and text are written as they are.

    Returns
    -------
    Path
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    # The writer quotes a field holding "\n" (the line end here) but not a lone "\r", which a
    # reader also takes for a line end: a row with one is written with every field quoted.
    quoting_all = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    if header is not None:
        writer.writerow(header)
    for row in rows:
        if isinstance(row, Mapping):
            if header is None:
                raise ValueError("rows given as mappings need a header (the column order)")
            row = [row.get(col) for col in header]
        cells = [_cell(v, float_format) for v in row]
        lone_cr = any(isinstance(c, str) and "\r" in c for c in cells)
        (quoting_all if lone_cr else writer).writerow(cells)
    return atomic_write_text(path, buf.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a table with a header line, as dicts of text (empty cells are ``""``)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


__all__ = ["read_csv", "repr_float", "write_csv"]
