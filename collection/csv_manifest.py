"""A collection listed in a CSV file instead of laid out as a folder tree.

Columns (a header row names them; their order is free):

``path`` (required)
    The file, relative to the CSV's folder or absolute.
``label`` (required unless ``label_column`` names another column)
    Its class label; an empty label is an error.
``pair_id`` (optional)
    Rows sharing a non-empty ``pair_id`` are one piece in two modalities: exactly one audio and
    one symbolic file with the same label. With this column pairs come only from it (an empty
    cell: unpaired); without it, an audio and a symbolic file with the same folder and stem form
    a pair, as in a folder tree.
``split``, ``group``, any other column (optional)
    Kept with the item and written to ``manifest.csv`` after the fixed columns; any of them can
    be the label (``label_column``).

Item ids are the paths relative to the CSV's folder (``/`` separators); a file outside that
folder keeps its absolute path as id. Items come in the folder scan's order (by path), not the
rows' order. So a CSV at the root of a folder tree listing its files
with their folder labels gives the same items as the folder scan: the same cache keys, the same
metrics.

Errors in the CSV itself (a missing column, an empty path or label, a duplicate path, a badly
formed pair, a row with too many cells) raise :class:`ManifestError` naming the line; nothing is
computed. A listed file that is missing or unreadable is not an error of the CSV: it becomes a
skipped item with its reason (as in a folder scan) and one warning sums them up.
"""
from __future__ import annotations

import csv
import os
import stat
from collections import defaultdict
from pathlib import Path

from embedders import AUDIO, SYMBOLIC
from .scan import MANIFEST_FIELDS, Item, ScanResult, modality_of
from .scan import SourceError

__all__ = ["ManifestError", "read_manifest", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS"]

REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("pair_id", "split", "group")

#: An input column whose name is also an output column of ``manifest.csv`` keeps its values
#: under this prefix (``label`` when another column is the label, ``status``, ``note`` ...).
COLLIDING_PREFIX = "csv_"


class ManifestError(SourceError):
    """The CSV cannot be used as a collection: one line naming the file, the line and why."""


def read_manifest(path: str | os.PathLike, *, label_column: str | None = None) -> ScanResult:
    """The items a CSV manifest lists, as :func:`~collection.scan.scan_dataset` gives a tree's.

    Parameters
    ----------
    path : str or Path
        The CSV file (UTF-8, a byte-order mark allowed).
    label_column : str, optional
        The column holding the labels (default ``"label"``).

    Returns
    -------
    ScanResult
        ``root`` is the CSV's folder; ``warnings`` says how many listed files are missing.

    Raises
    ------
    ManifestError
        The file cannot be read, lacks a column, or a row is malformed (see the module doc).
    """
    csv_path = Path(path).expanduser()
    header, rows = _read_rows(csv_path)
    label_column = label_column or "label"
    needed = ["path", label_column]
    missing = [c for c in needed if c not in header]
    if missing:
        raise ManifestError(f"{csv_path}: missing column{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(repr(c) for c in missing)} (header: {', '.join(header)})")
    root = os.path.abspath(csv_path.parent)
    result = ScanResult(root=root)
    seen: dict[str, int] = {}
    line_of: dict[str, int] = {}
    for line, row in rows:
        item = _row_item(csv_path, root, line, row, label_column)
        first = seen.setdefault(os.path.normcase(item.path), line)
        if first != line:
            raise ManifestError(f"{csv_path} line {line}: path {row['path']!r} is listed "
                                f"again (first on line {first})")
        line_of[item.id] = line
        result.items.append(item)
    if not result.items:
        raise ManifestError(f"{csv_path}: no rows below the header")
    # The folder scan's order (component by component): the same files give the same order of
    # vectors, hence the same seeded t-SNE, bootstraps and folds, whatever the rows' order.
    result.items.sort(key=lambda it: it.id.split("/"))
    _check_files(csv_path, result)
    if "pair_id" in header:
        _pairs_from_column(csv_path, result, line_of)
    else:
        _pairs_from_stems(result)
    return result


def _read_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """The header and ``(line number, row)`` of every non-blank row."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            if not any(header):
                raise ManifestError(f"{csv_path}: empty file (a header row path,label,... is "
                                    "expected)")
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                raise ManifestError(f"{csv_path} line 1: column {dupes[0]!r} appears twice")
            rows = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) > len(header):
                    raise ManifestError(f"{csv_path} line {reader.line_num}: {len(cells)} "
                                        f"cells, the header has {len(header)}")
                cells = cells + [""] * (len(header) - len(cells))
                rows.append((reader.line_num, dict(zip(header, (c.strip() for c in cells)))))
    except FileNotFoundError:
        raise ManifestError(f"manifest {str(csv_path)!r} does not exist") from None
    except IsADirectoryError:
        raise ManifestError(f"manifest {str(csv_path)!r} is a folder, not a CSV file "
                            "(for a folder tree use --dataset)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"cannot read manifest {str(csv_path)!r}: {exc}") from None
    return header, rows


def _row_item(csv_path: Path, root: str, line: int, row: dict, label_column: str) -> Item:
    """The item of one row (not yet checked on disk)."""
    raw = row["path"]
    if not raw:
        raise ManifestError(f"{csv_path} line {line}: empty path")
    label = row[label_column]
    if not label:
        raise ManifestError(f"{csv_path} line {line}: empty label (column {label_column!r}) "
                            f"for {raw!r}")
    full = os.path.normpath(os.path.join(root, os.path.expanduser(raw)))
    rel = os.path.relpath(full, root)
    item_id = Path(full).as_posix() if rel.startswith(os.pardir) else Path(rel).as_posix()
    extra = {}
    for column, value in row.items():
        if column in ("path", label_column) or (column == "pair_id"):
            continue
        extra[COLLIDING_PREFIX + column if column in MANIFEST_FIELDS else column] = value
    return Item(id=item_id, path=full, label=label, modality=modality_of(full),
                pair_id=row.get("pair_id", ""), extra=extra)


def _check_files(csv_path: Path, result: ScanResult) -> None:
    """Give every item that cannot be used its reason, as the folder scan does."""
    n_missing = 0
    for it in result.items:
        try:
            st = os.stat(it.path)
        except FileNotFoundError:
            it.skip_reason = "listed in the manifest but does not exist"
            n_missing += 1
            continue
        except OSError as exc:
            it.skip_reason = f"cannot read file ({exc.strerror})"
            continue
        it.size, it.mtime_ns = st.st_size, st.st_mtime_ns
        if not stat.S_ISREG(st.st_mode):
            it.skip_reason = "not a regular file"
        elif not it.modality:
            ext = os.path.splitext(it.path)[1]
            it.skip_reason = f"unsupported file type {ext!r}" if ext else "file has no extension"
    if n_missing == len(result.items):
        first = result.items[0]
        raise ManifestError(f"{csv_path}: none of the {n_missing} listed files exists (e.g. "
                            f"{first.id!r} -> {first.path}); paths are relative to the CSV's "
                            "folder")
    if n_missing:
        result.warnings.append(f"{n_missing} file(s) listed in {csv_path.name} do not exist; "
                               "skipped (listed in manifest.csv)")


def _pairs_from_column(csv_path: Path, result: ScanResult, line_of: dict[str, int]) -> None:
    """Check the ``pair_id`` groups (one audio and one symbolic file, one label) and keep the
    pair only where both files are usable."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in result.items:
        if it.pair_id:
            groups[it.pair_id].append(it)
    for pair_id, members in groups.items():
        members.sort(key=lambda it: line_of[it.id])  # messages in the file's order
        lines = ", ".join(str(line_of[it.id]) for it in members)
        mods = sorted(it.modality or "unsupported" for it in members)
        if mods != sorted([AUDIO, SYMBOLIC]):
            raise ManifestError(f"{csv_path} lines {lines}: pair_id {pair_id!r} has "
                                f"{' + '.join(mods)} files; a pair is one audio and one "
                                "symbolic (MIDI) file")
        if members[0].label != members[1].label:
            raise ManifestError(f"{csv_path} lines {lines}: pair_id {pair_id!r} joins labels "
                                f"{members[0].label!r} and {members[1].label!r}; the two "
                                "files of a piece need one label")
        if any(it.skip_reason for it in members):
            for it in members:
                it.pair_id = ""


def _pairs_from_stems(result: ScanResult) -> None:
    """The folder tree's rule: one audio and one symbolic usable file with the same folder and
    stem (and here, since labels are free, the same label) form a pair."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in result.usable:
        groups[os.path.splitext(it.id)[0]].append(it)
    for stem_id, members in groups.items():
        audio = [it for it in members if it.modality == AUDIO]
        symbolic = [it for it in members if it.modality == SYMBOLIC]
        if len(audio) == 1 and len(symbolic) == 1:
            if audio[0].label != symbolic[0].label:
                result.warnings.append(f"{stem_id}: audio and MIDI share the stem but have "
                                       f"labels {audio[0].label!r} and {symbolic[0].label!r}; "
                                       "not paired")
                continue
            audio[0].pair_id = symbolic[0].pair_id = stem_id
        elif audio and symbolic:
            names = ", ".join(sorted(it.id for it in members))
            result.warnings.append(f"{stem_id}: several files of one modality share this stem "
                                   f"({names}); not paired")
