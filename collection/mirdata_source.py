"""A standard MIR dataset as a collection, through mirdata (which owns each dataset's index,
file paths and metadata).

Loaders with a ready default (any other mirdata loader works with ``label_field`` given):

============  =====================  =================  ===================================
name          files                  pairs              label (default ``label_field``)
============  =====================  =================  ===================================
gtzan_genre   audio                  none               ``genre``
maestro       audio + MIDI           per performance    ``canonical_composer``
groove_midi   audio + MIDI           per performance    ``style``: the main style, the part
                                                        before ``/`` (``funk/groove1`` ->
                                                        ``funk``; the full one stays in the
                                                        manifest's ``style`` column)
slakh         stem audio + stem MIDI per stem           ``instrument`` (the stem's class in
                                                        its ``metadata.yaml``)
============  =====================  =================  ===================================

A ``label_field`` written ``multitrack:FIELD`` takes the dataset's multitracks instead of its
tracks: for Slakh the mixture audio and the whole MIDI file of each song, labelled by a field of
the song's metadata (``multitrack:split``, ``multitrack:uuid``, ...).

Nothing is downloaded unless ``download`` is given (then by mirdata, which checks its
checksums). mirdata 1.0 ships no index in its package: each is fetched on download (``"index"``
fetches only the index) or can be given as a file (``index_file``), e.g. a subset of the
published index. Files the index lists but that are missing on disk become skipped items, summed
up in one warning; the rest goes on.

Item ids are paths relative to the data home; extra manifest columns: ``track_id``, ``split``
where the dataset has one, and the raw value where the label is derived from it.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .scan import Item, ScanResult, modality_of
from .scan import SourceError

__all__ = ["LOADERS", "MULTITRACK_PREFIX", "MirdataError", "default_data_home", "mirdata_scan"]

MULTITRACK_PREFIX = "multitrack:"

#: The skip reason of a file the index lists that is not on disk.
MISSING = "listed by the mirdata index but missing on disk"


class MirdataError(SourceError):
    """The dataset cannot be opened as asked (unknown name or version, no index, no metadata,
    an unknown label field): one line, before anything is computed."""


def _main_style(style: str) -> str:
    return style.split("/", 1)[0]


@dataclass(frozen=True)
class Loader:
    """How a mirdata loader's tracks become items: the attribute holding the audio path, the
    one holding the MIDI path, the default label field and a function deriving the label."""

    label_field: str | None
    audio_attr: str | None = "audio_path"
    midi_attr: str | None = "midi_path"
    label_of: Callable[[str], str] | None = None


#: The loaders with a default label; others need ``label_field``.
LOADERS: dict[str, Loader] = {
    "gtzan_genre": Loader("genre", midi_attr=None),
    "maestro": Loader("canonical_composer"),
    "groove_midi": Loader("style", label_of=_main_style),
    "slakh": Loader("instrument"),
}
#: Multitrack units: the mixture and the MIDI file of the whole song.
MULTITRACK_LOADER = Loader(None, audio_attr="mix_path", midi_attr="midi_path")

#: Extra manifest columns copied from a unit when it has them.
EXTRA_ATTRS = ("split",)


def default_data_home(name: str) -> str:
    """mirdata's default: ``~/mir_datasets/NAME``."""
    return os.path.join(os.getenv("HOME", "/tmp"), "mir_datasets", name)


def _open_dataset(name: str, data_home: str | None, version: str | None,
                  index_file: str | None):
    try:
        import mirdata
    except ImportError:
        raise MirdataError("--mirdata needs the mirdata package: pip install 'mirdata==1.0.0'"
                           ) from None
    if name not in mirdata.list_datasets():
        known = ", ".join(sorted(LOADERS))
        raise MirdataError(f"mirdata has no dataset {name!r} (ready here: {known}; all: "
                           "mirdata.list_datasets())")
    try:
        ds = mirdata.initialize(name, data_home=data_home, version=version or "default")
    except ValueError as exc:  # an unknown version, with mirdata's list of them
        raise MirdataError(f"mirdata {name}: {exc}") from None
    if index_file:
        if not os.path.isfile(index_file):
            raise MirdataError(f"--mirdata-index {index_file!r} does not exist")
        ds.index_path = os.path.abspath(index_file)  # mirdata reads the index from here
    return ds


def _load_index(ds, name: str, version: str | None) -> None:
    """Read the index now, so a missing one is one clear line."""
    try:
        if not (_has(ds, "tracks") or _has(ds, "multitracks")):
            raise MirdataError(f"mirdata {name}: the index {ds.index_path} lists no tracks")
    except FileNotFoundError:
        raise MirdataError(
            f"mirdata {name} (version {ds.version}): its index {os.path.basename(ds.index_path)} "
            f"is not installed (mirdata {_mirdata_version()} fetches indexes when downloading); "
            "run with '--download index' (index only) or '--download', or give "
            "--mirdata-index FILE") from None
    except ValueError as exc:  # a damaged index file
        raise MirdataError(f"mirdata {name}: cannot read the index {ds.index_path}: "
                           f"{exc}") from None


def _has(ds, part: str) -> bool:
    """Whether the index lists tracks (``part="tracks"``) or multitracks."""
    try:
        return bool(ds.track_ids if part == "tracks" else ds.mtrack_ids)
    except AttributeError:  # mirdata: "This dataset does not have tracks"
        return False


def _mirdata_version() -> str:
    import mirdata
    return getattr(mirdata, "__version__", "?")


def mirdata_scan(name: str, *, data_home: str | None = None, label_field: str | None = None,
                 version: str | None = None, download: str | None = None,
                 validate: bool = False, index_file: str | None = None,
                 log: Callable[[str], None] | None = None) -> ScanResult:
    """The items of a mirdata dataset: audio and MIDI files, labels, pairs, skip reasons.

    Parameters
    ----------
    name : str
        A mirdata loader (``mirdata.list_datasets()``).
    data_home : str, optional
        Where the dataset lies (default ``~/mir_datasets/NAME``).
    label_field : str, optional
        The track attribute used as label (defaults in :data:`LOADERS`); ``multitrack:FIELD``
        uses the multitracks (mixtures) instead.
    version : str, optional
        The dataset version (default: mirdata's default).
    download : {None, "all", "index"}
        Download first through mirdata: everything, or the index only. ``None``: never.
    validate : bool
        Run mirdata's checksum validation first; files failing it are skipped.
    index_file : str, optional
        An index JSON in mirdata's format used instead of the installed one.

    Raises
    ------
    MirdataError
        As :class:`MirdataError` says, or when none of the listed files is on disk.
    """
    log = log or (lambda msg: None)
    data_home = os.path.abspath(os.path.expanduser(data_home or default_data_home(name)))
    ds = _open_dataset(name, data_home, version, index_file)
    if download:
        log(f"mirdata {name}: downloading {'the index' if download == 'index' else 'the data'}"
            f" into {data_home if download != 'index' else os.path.dirname(ds.index_path)}")
        try:
            ds.download(partial_download=["index"] if download == "index" else None)
        except Exception as exc:  # network, checksum or disk: mirdata's own message
            raise MirdataError(f"mirdata {name}: download failed: {exc}") from None
    _load_index(ds, name, version)
    loader, field, multitrack = _loader_for(ds, name, label_field)
    units = ([(mid, ds.multitrack(mid)) for mid in ds.mtrack_ids] if multitrack
             else [(tid, ds.track(tid)) for tid in ds.track_ids])
    result = ScanResult(root=data_home)
    no_label = _add_units(result, units, loader, field, data_home)
    if no_label == len(units) and units:
        raise MirdataError(f"mirdata {name}: no unit has a {field!r} ({result.items[0].skip_reason}"
                           f"); --download fetches the metadata, --label-field picks another field")
    _summarise_missing(result, name, ds.version, data_home)
    if validate:
        _apply_validation(ds, result, name, log)
    return result


def _loader_for(ds, name: str, label_field: str | None) -> tuple[Loader, str, bool]:
    """The loader, the label attribute, and whether the units are multitracks."""
    multitrack = bool(label_field) and label_field.startswith(MULTITRACK_PREFIX)
    if multitrack:
        field = label_field[len(MULTITRACK_PREFIX):]
        if not _has(ds, "multitracks"):
            raise MirdataError(f"mirdata {name} has no multitracks (use --label-field FIELD)")
        probe = ds.multitrack(ds.mtrack_ids[0])
        loader = MULTITRACK_LOADER
    else:
        known = LOADERS.get(name)
        field = label_field or (known.label_field if known else None)
        if not field:
            raise MirdataError(f"mirdata {name}: no default label; give --label-field FIELD "
                               f"(a track attribute, see the dataset's Track in mirdata's docs)")
        if not _has(ds, "tracks"):
            raise MirdataError(f"mirdata {name} has no tracks, only multitracks: use "
                               f"--label-field {MULTITRACK_PREFIX}FIELD")
        probe = ds.track(ds.track_ids[0])
        loader = known or Loader(field)
        if loader.label_field != field:  # another field: no derivation of the default's
            loader = Loader(field, loader.audio_attr, loader.midi_attr)
    if not hasattr(type(probe), field) and field not in vars(probe):
        attrs = sorted(a for a in set(dir(type(probe))) | set(vars(probe))
                       if not a.startswith("_") and not callable(getattr(type(probe), a, None)))
        raise MirdataError(f"mirdata {name}: no field {field!r} (fields: {', '.join(attrs)})")
    return loader, field, multitrack


def _add_units(result: ScanResult, units: list, loader: Loader, field: str,
               data_home: str) -> int:
    """One item per audio / MIDI file of each unit; returns how many units had no label."""
    no_label = 0
    for unit_id, unit in units:
        label, extra, reason = _label_of(unit, loader, field)
        no_label += bool(reason)
        extra = {"track_id": unit_id, **extra}
        members = []
        for attr in (loader.audio_attr, loader.midi_attr):
            path = getattr(unit, attr, None) if attr else None
            if path:
                members.append(_item(path, data_home, label, dict(extra), reason))
        usable = [it for it in members if not it.skip_reason]
        if len(usable) == 2 and {it.modality for it in usable} == {"audio", "symbolic"}:
            for it in usable:
                it.pair_id = unit_id
        result.items.extend(members)
    result.items.sort(key=lambda it: it.id.split("/"))
    return no_label


def _label_of(unit, loader: Loader, field: str) -> tuple[str, dict, str]:
    """``(label, extra columns, skip reason)`` of one track or multitrack."""
    extra = {}
    for attr in EXTRA_ATTRS:
        try:
            value = getattr(unit, attr, None)
        except (FileNotFoundError, OSError, KeyError):
            value = None
        if value is not None and attr != field:
            extra[attr] = str(value)
    try:
        raw = getattr(unit, field)
    except FileNotFoundError as exc:  # the metadata file is missing
        return "", extra, f"no {field}: {' '.join(str(exc).split())}"
    except (OSError, KeyError, AttributeError, ValueError) as exc:
        return "", extra, f"no {field}: cannot read the metadata ({exc})"
    if raw is None or str(raw).strip() == "":
        return "", extra, f"no {field} in the dataset's metadata"
    label = str(raw).strip()
    if loader.label_of:
        extra[field] = label
        label = loader.label_of(label)
    return label, extra, ""


def _item(path: str, data_home: str, label: str, extra: dict, reason: str) -> Item:
    full = os.path.normpath(path)
    rel = os.path.relpath(full, data_home)
    item = Item(id=Path(rel).as_posix() if not rel.startswith(os.pardir) else Path(full).as_posix(),
                path=full, label=label, modality=modality_of(full), extra=extra,
                skip_reason=reason)
    try:
        st = os.stat(full)
    except FileNotFoundError:
        item.skip_reason = item.skip_reason or MISSING
        return item
    except OSError as exc:
        item.skip_reason = item.skip_reason or f"cannot read file ({exc.strerror})"
        return item
    item.size, item.mtime_ns = st.st_size, st.st_mtime_ns
    if not item.skip_reason and not stat.S_ISREG(st.st_mode):
        item.skip_reason = "not a regular file"
    elif not item.skip_reason and not item.modality:
        item.skip_reason = f"unsupported file type {os.path.splitext(full)[1]!r}"
    return item



def _summarise_missing(result: ScanResult, name: str, version: str, data_home: str) -> None:
    missing = sum(it.skip_reason == MISSING for it in result.items)
    if result.items and missing == len(result.items):
        raise MirdataError(f"mirdata {name} (version {version}): none of the "
                           f"{missing} files its index lists is under {data_home} (--data-home "
                           "DIR points elsewhere; --download fetches the data)")
    if missing:
        result.warnings.append(f"mirdata {name} (version {version}): {missing} of "
                               f"{len(result.items)} files the index lists are missing under "
                               f"{data_home}; skipped (listed in manifest.csv; --download "
                               "fetches them)")


def _apply_validation(ds, result: ScanResult, name: str, log) -> None:
    """mirdata's checksum check: files whose MD5 differs from the index are skipped."""
    log(f"mirdata {name}: validating checksums")
    _, invalid = ds.validate(verbose=False)
    bad = {os.path.normpath(p) for part in invalid.values() for paths in part.values()
           for p in paths}
    n = 0
    for it in result.items:
        if not it.skip_reason and it.path in bad:
            it.skip_reason = "checksum differs from mirdata's index (--mirdata-validate)"
            n += 1
    if n:
        result.warnings.append(f"mirdata {name}: {n} file(s) fail mirdata's checksum "
                               "validation; skipped (listed in manifest.csv)")
