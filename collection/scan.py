"""Folder tree → manifest of items.

Layout: ``ROOT/<label>/.../<file>``. The first folder level under ROOT is the class label;
deeper folders are allowed. Hidden files and folders (name starting with ``.``) are ignored.
Every other file found becomes an :class:`Item`: a usable one (audio or symbolic) or a skipped
one with its reason, so nothing silently vanishes.

An audio file and a symbolic file with the same stem in the same folder form a *pair* (the same
piece in two modalities); both carry the pair id ``<folder>/<stem>`` relative to ROOT.
"""
from __future__ import annotations

import json
import os
import stat
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from embedders.lib.audio_io import AUDIO_EXTENSIONS
from embedders import AUDIO, SYMBOLIC
from common.fsutil import atomic_write_text, sha256_file
from common.progress import track


class SourceError(ValueError):
    """A collection that cannot be read as given (a bad manifest, an unknown mirdata dataset, a
    missing index): one line naming the file and row or the flag; a usage error (exit 2),
    raised before anything is computed."""


SYMBOLIC_EXTENSIONS = (".mid", ".midi", ".mtf")

#: Manifest columns, in order.
MANIFEST_FIELDS = ("path", "label", "modality", "pair_id", "content_hash", "embedder", "status",
                   "cached", "reason", "note")

#: Files the tool itself writes at a collection's root (``prepare``'s manifest): not part of the
#: collection, so a scan neither embeds nor lists them.
ROOT_BOOKKEEPING_FILES = frozenset({"prepare_manifest.csv"})

SKIPPED = "skipped"
EMBEDDED = "embedded"


@dataclass
class Item:
    """One file found under the dataset root.

    Attributes
    ----------
    id : str
        Path relative to the root, with ``/`` separators; unique within a dataset.
    path : str
        Absolute path.
    label : str
        Class label (first folder level), ``""`` for files directly under the root.
    modality : str
        ``"audio"``, ``"symbolic"`` or ``""`` for unsupported files.
    pair_id : str
        Shared id of an audio/symbolic pair, ``""`` if unpaired.
    content_hash : str
        SHA-256 of the bytes (filled by :func:`hash_items`), ``""`` until then or if unreadable.
    skip_reason : str
        Why the file cannot be used at all (empty string for usable files).
    extra : dict of str to str
        Further columns of the item's source (a CSV manifest's ``split``, ``group`` and other
        columns, a mirdata track's id and split), written to ``manifest.csv`` after the fixed
        columns; empty for a folder scan.
    """

    id: str
    path: str
    label: str
    modality: str
    pair_id: str = ""
    content_hash: str = ""
    skip_reason: str = ""
    size: int = 0
    mtime_ns: int = 0
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class ScanResult:
    """Items found under a root plus warnings about the tree (empty classes, loops, ...)."""

    root: str
    items: list[Item] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> list[Item]:
        return [it for it in self.items if not it.skip_reason]

    @property
    def classes(self) -> list[str]:
        """Labels with at least one usable file, sorted."""
        return sorted({it.label for it in self.usable})

    def summary(self) -> dict:
        """Counts per class and modality, pairs, and skipped files — for the report."""
        counts: dict[str, dict[str, int]] = defaultdict(lambda: {AUDIO: 0, SYMBOLIC: 0})
        for it in self.usable:
            counts[it.label][it.modality] += 1
        pairs = {it.pair_id for it in self.usable if it.pair_id}
        return {
            "root": self.root,
            "classes": self.classes,
            "counts": {k: dict(v) for k, v in sorted(counts.items())},
            "n_files": len(self.items),
            "n_usable": len(self.usable),
            "n_pairs": len(pairs),
            "empty_classes": list(self.empty_classes),
            "unusable": [(it.id, it.skip_reason) for it in self.items if it.skip_reason],
            "warnings": list(self.warnings),
        }


def modality_of(path: str) -> str:
    """``"audio"``, ``"symbolic"`` or ``""`` from the file extension."""
    ext = os.path.splitext(path)[1].lower()
    if ext in AUDIO_EXTENSIONS:
        return AUDIO
    if ext in SYMBOLIC_EXTENSIONS:
        return SYMBOLIC
    return ""


def _hidden(name: str) -> bool:
    return name.startswith(".")


def scan_dataset(root: str | os.PathLike, *, follow_symlinks: bool = False) -> ScanResult:
    """Walk ``root`` and list every file as an :class:`Item`, with labels and pairs.

    Symbolic links that stay inside the collection are followed; one whose target lies outside
    ``root`` is not, unless ``follow_symlinks`` (a planted link must not make a run read, embed
    or serve files from elsewhere): a file is listed as skipped with the reason, a folder is
    not walked and named in ``warnings``. A folder reached twice (a symlink loop, or two links
    to the same place) is walked only once and reported in ``warnings``.

    Raises
    ------
    FileNotFoundError
        ``root`` does not exist.
    NotADirectoryError
        ``root`` is not a folder.
    """
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise FileNotFoundError(f"dataset folder {str(root)!r} does not exist")
    if not root_path.is_dir():
        raise NotADirectoryError(f"dataset path {str(root)!r} is not a folder")
    root_abs = os.path.abspath(root_path)
    root_real = os.path.realpath(root_abs)
    result = ScanResult(root=root_abs)
    seen_dirs: set[tuple[int, int]] = set()
    class_file_counts: Counter = Counter()
    class_dirs: list[str] = []

    def walk(folder: str, rel: str) -> None:
        entries = _list_folder(folder, rel, seen_dirs, result.warnings)
        for entry in entries:
            if _hidden(entry.name) or (not rel and entry.name in ROOT_BOOKKEEPING_FILES):
                continue
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            label = child_rel.split("/", 1)[0]
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            outside = (not follow_symlinks and entry.is_symlink()
                       and not _inside(os.path.realpath(entry.path), root_real))
            if outside and is_dir:
                result.warnings.append(f"{child_rel}: {LINK_LEAVES}; not walked "
                                       "(--follow-symlinks walks it)")
                continue
            if is_dir:
                if not rel:
                    class_dirs.append(entry.name)
                walk(entry.path, child_rel)
                continue
            item = _file_item(entry, child_rel, label if rel else "")
            if outside and not item.skip_reason:
                item.skip_reason = f"{LINK_LEAVES} (--follow-symlinks reads it)"
            result.items.append(item)
            if not item.skip_reason:
                class_file_counts[label] += 1

    walk(root_abs, "")
    result.empty_classes = sorted(c for c in set(class_dirs) if class_file_counts[c] == 0)
    for c in result.empty_classes:
        result.warnings.append(f"class folder {c!r} has no audio or MIDI files")
    _assign_pairs(result)
    return result


#: The skip reason of a symbolic link whose target lies outside the collection.
LINK_LEAVES = "symbolic link leaves the collection"


def _inside(path: str, root: str) -> bool:
    """Whether the resolved ``path`` is ``root`` or lies below it (both resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _list_folder(folder: str, rel: str, seen_dirs: set[tuple[int, int]],
                 warnings: list[str]) -> list[os.DirEntry]:
    """The entries of one folder, sorted by name; none (and a warning) if it cannot be read
    or was walked already (a symlink loop or a second link to it)."""
    try:
        st = os.stat(folder)
    except OSError as exc:
        warnings.append(f"{rel or '.'}: cannot read folder ({exc.strerror})")
        return []
    key = (st.st_dev, st.st_ino)
    if key in seen_dirs:
        warnings.append(f"{rel}: folder already visited (symlink loop or duplicate link); not "
                        "walked again")
        return []
    seen_dirs.add(key)
    try:
        return sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        warnings.append(f"{rel or '.'}: cannot list folder ({exc.strerror})")
        return []


def _file_item(entry: os.DirEntry, rel: str, label: str) -> Item:
    """The item of one file at ``rel`` (``label`` empty for a file directly under the root),
    with the reason it cannot be used, if any."""
    item = Item(id=rel, path=os.path.abspath(entry.path), label=label,
                modality=modality_of(entry.name))
    try:
        st_file = os.stat(entry.path)
        item.size, item.mtime_ns = st_file.st_size, st_file.st_mtime_ns
        if not stat.S_ISREG(st_file.st_mode):
            item.skip_reason = "not a regular file"
    except OSError as exc:  # a dangling symlink, or no permission
        item.skip_reason = f"cannot read file ({exc.strerror})"
    if not item.skip_reason:
        ext = os.path.splitext(entry.name)[1]
        if not label:
            item.skip_reason = "file directly under the dataset root has no class folder"
        elif not item.modality:
            item.skip_reason = f"unsupported file type {ext!r}" if ext else "file has no extension"
    return item


def _assign_pairs(result: ScanResult) -> None:
    """Give an audio and a symbolic file with the same folder and stem a shared pair id."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in result.usable:
        groups[os.path.splitext(it.id)[0]].append(it)
    for stem_id, members in groups.items():
        by_mod = Counter(it.modality for it in members)
        if by_mod[AUDIO] == 1 and by_mod[SYMBOLIC] == 1:
            for it in members:
                it.pair_id = stem_id
        elif by_mod[AUDIO] >= 1 and by_mod[SYMBOLIC] >= 1:
            names = ", ".join(sorted(it.id for it in members))
            result.warnings.append(f"{stem_id}: several files of one modality share this stem "
                                   f"({names}); not paired")


# -- content hashes -------------------------------------------------------------------------------

class HashIndex:
    """Remembers content hashes by (path, size, mtime) so unchanged files are not re-read.

    Only a shortcut: the cache key is always the content hash. Stored as JSON beside the
    embedding cache and written atomically.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self._entries: dict[str, list] = {}
        self._dirty = False
        if self.path and self.path.is_file():
            try:
                self._entries = json.loads(self.path.read_text("utf-8"))
                if not isinstance(self._entries, dict):
                    self._entries = {}
            except (OSError, ValueError):
                self._entries = {}  # a damaged index only costs re-hashing

    def get(self, item: Item) -> str | None:
        rec = self._entries.get(item.path)
        if rec and rec[0] == item.size and rec[1] == item.mtime_ns:
            return rec[2]
        return None

    def put(self, item: Item, digest: str) -> None:
        self._entries[item.path] = [item.size, item.mtime_ns, digest]
        self._dirty = True

    def save(self) -> None:
        if not (self.path and self._dirty):
            return
        atomic_write_text(self.path, json.dumps(self._entries))
        self._dirty = False


def hash_items(items: list[Item], *, index: HashIndex | None = None, progress: bool = False) -> None:
    """Fill ``content_hash`` of every usable item; unreadable files get a ``skip_reason``."""
    todo = track([it for it in items if not it.skip_reason], desc="hashing files", unit="file",
                 enabled=progress, leave=False)
    for it in todo:
        cached = index.get(it) if index else None
        if cached:
            it.content_hash = cached
            continue
        try:
            it.content_hash = sha256_file(it.path)
        except OSError as exc:
            it.skip_reason = f"cannot read file ({exc.strerror or exc})"
            continue
        if index:
            index.put(it, it.content_hash)
