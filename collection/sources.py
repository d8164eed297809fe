"""Where a collection comes from: a folder tree, a CSV manifest, or a dataset through mirdata.

Every command that reads a collection (the comparison run, ``prepare``, ``train``, ``probe``)
takes the same choice of input, made in one place here:

- ``--dataset DIR``: the folder tree, ``DIR/<label>/.../<file>`` (:func:`~collection.scan.scan_dataset`);
- ``--manifest FILE.csv [--label-column NAME]``: a CSV listing ``path,label`` (and optionally
  ``pair_id``, ``split``, ``group``, more columns) (:mod:`collection.csv_manifest`);
- ``--mirdata NAME [--data-home DIR] [--label-field FIELD] [--mirdata-version V]
  [--download [all|index]] [--mirdata-validate] [--mirdata-index FILE]``: a standard MIR dataset
  whose index, paths and metadata mirdata owns (:mod:`collection.mirdata_source`).

Each gives the same :class:`~collection.scan.ScanResult` (items with labels, pairs and skip
reasons), so what happens downstream (hashing, the cache, the exports, the analysis) does not
depend on the input's form: the same files as a tree and as a manifest give the same cache keys
and the same metrics.

>>> import argparse
>>> from collection.sources import add_source_arguments, source_from_args
>>> p = argparse.ArgumentParser()
>>> add_source_arguments(p, dataset=True)
>>> source = source_from_args(p.parse_args(["--manifest", "songs.csv"]))
>>> source.kind, source.name
('manifest', 'songs')
>>> scan = source.scan()                                                # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .scan import ScanResult, SourceError  # noqa: F401 (re-exported: the sources' error)

__all__ = ["CollectionSource", "SourceError", "add_source_arguments", "scan_source",
           "source_from_args", "SOURCE_DESTS", "SOURCE_FLAGS"]

#: The flags :func:`add_source_arguments` adds (``--dataset`` only when asked to).
SOURCE_FLAGS = ("--manifest", "--label-column", "--mirdata", "--data-home", "--label-field",
                "--mirdata-version", "--download", "--mirdata-validate", "--mirdata-index",
                "--follow-symlinks")

#: Their ``argparse`` destinations (to drop from a command's saved configuration).
SOURCE_DESTS = ("manifest", "label_column", "mirdata", "data_home", "label_field",
                "mirdata_version", "download", "mirdata_validate", "mirdata_index",
                "follow_symlinks")

DATASET, MANIFEST, MIRDATA = "dataset", "manifest", "mirdata"





@dataclass(frozen=True)
class CollectionSource:
    """One collection input, as chosen on the command line.

    Attributes
    ----------
    kind : {"dataset", "manifest", "mirdata"}
    location : str
        The folder, the CSV file, or the mirdata dataset name.
    options : dict
        ``label_column`` for a manifest; ``data_home``, ``label_field``, ``version``,
        ``download``, ``validate``, ``index_file`` for mirdata (``None`` where not given).
    """

    kind: str
    location: str
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A short name for the default output folder: the folder's name, the CSV's stem, or
        the mirdata dataset's name."""
        if self.kind == MIRDATA:
            return self.location
        path = Path(self.location).expanduser().resolve()
        return (path.stem if self.kind == MANIFEST else path.name) or "dataset"

    def describe(self) -> str:
        """For reports and messages: ``manifest songs.csv (label column genre)``."""
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items() if v not in (None, False))
        return f"{self.kind} {self.location}" + (f" ({opts})" if opts else "")

    def to_config(self) -> str | dict:
        """JSON-able: a folder stays a plain path string (as run configs always held it)."""
        if self.kind == DATASET and not self.options:
            return self.location
        return {"kind": self.kind, "location": self.location,
                **{k: v for k, v in self.options.items() if v is not None}}

    @classmethod
    def from_config(cls, config: str | os.PathLike | dict) -> "CollectionSource":
        """The inverse of :meth:`to_config`; a plain path is a folder tree."""
        if isinstance(config, dict):
            rest = {k: v for k, v in config.items() if k not in ("kind", "location")}
            if config.get("kind") not in (DATASET, MANIFEST, MIRDATA) or not config.get("location"):
                raise SourceError(f"not a collection source: {config!r}")
            return cls(config["kind"], str(config["location"]), rest)
        return cls(DATASET, os.fspath(config))

    def scan(self, *, log: Callable[[str], None] | None = None) -> ScanResult:
        """The items of the collection.

        Raises
        ------
        SourceError
            The input cannot be read as given (one line; nothing has been computed).
        """
        if self.kind == MANIFEST:
            from .csv_manifest import read_manifest
            return read_manifest(self.location, label_column=self.options.get("label_column"))
        if self.kind == MIRDATA:
            from .mirdata_source import mirdata_scan
            opts = {k: v for k, v in self.options.items() if v is not None}
            return mirdata_scan(self.location, log=log, **opts)
        from .scan import scan_dataset
        try:
            return scan_dataset(self.location,
                                follow_symlinks=bool(self.options.get("follow_symlinks")))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise SourceError(str(exc)) from None

    @property
    def root(self) -> Path:
        """The folder paths are relative to (for checks such as "the output is not inside
        the input"): the tree, the CSV's folder, or the mirdata data home."""
        if self.kind == MANIFEST:
            return Path(self.location).expanduser().resolve().parent
        if self.kind == MIRDATA:
            from .mirdata_source import default_data_home
            home = self.options.get("data_home") or default_data_home(self.location)
            return Path(home).expanduser().resolve()
        return Path(self.location).expanduser().resolve()


def scan_source(config: str | os.PathLike | dict, *, log=None) -> ScanResult:
    """Scan a source given as :meth:`CollectionSource.to_config` holds it (a path or a dict)."""
    return CollectionSource.from_config(config).scan(log=log)


def add_source_arguments(parser, *, dataset: bool = False) -> None:
    """Add the manifest and mirdata flags (and ``--dataset DIR`` when ``dataset``) to an
    ``argparse`` parser or argument group.

    A command whose parser already has its own ``--dataset`` (or a positional folder) passes
    ``dataset=False`` and hands that value to :func:`source_from_args`.
    """
    g = parser
    if dataset:
        g.add_argument("--dataset", metavar="DIR",
                       help="collection folder: one sub-folder per class (label) holding audio "
                            "and/or MIDI files, deeper folders allowed")
    g.add_argument("--manifest", metavar="FILE.csv",
                   help="instead of a folder: a CSV with columns path,label (and optionally "
                        "pair_id, split, group, more); paths relative to the CSV's folder or "
                        "absolute; pairs from pair_id when that column exists, else an audio "
                        "and a MIDI file with the same folder and stem")
    g.add_argument("--label-column", metavar="NAME",
                   help="with --manifest: take the labels from this column instead of 'label'")
    g.add_argument("--mirdata", metavar="NAME",
                   help="instead of a folder: a dataset through mirdata, e.g. gtzan_genre, "
                        "maestro, groove_midi, slakh (nothing is downloaded without --download)")
    g.add_argument("--data-home", metavar="DIR",
                   help="with --mirdata: where the dataset lies (default ~/mir_datasets/NAME)")
    g.add_argument("--label-field", metavar="FIELD",
                   help="with --mirdata: the track attribute used as label (defaults: "
                        "gtzan_genre genre, maestro canonical_composer, groove_midi style, "
                        "slakh instrument)")
    g.add_argument("--mirdata-version", "--version", dest="mirdata_version", metavar="V",
                   help="with --mirdata: the dataset version (default: mirdata's default)")
    g.add_argument("--download", nargs="?", const="all", choices=("all", "index"),
                   help="with --mirdata: first download through mirdata (checksums checked): "
                        "'all' (the default) the index and the data, 'index' the index only")
    g.add_argument("--mirdata-validate", action="store_true",
                   help="with --mirdata: run mirdata's checksum validation first (one summary "
                        "line; files that fail are listed in the manifest and skipped)")
    g.add_argument("--follow-symlinks", action="store_true",
                   help="for a folder: also read files and folders behind symbolic links that "
                        "lead outside it (by default they are skipped, with the reason listed)")
    g.add_argument("--mirdata-index", metavar="FILE",
                   help="with --mirdata: an index JSON in mirdata's format to use instead of "
                        "the installed one (e.g. a subset, or a machine without network)")


def source_from_args(args: argparse.Namespace, *, dataset: str | None = None,
                     dataset_flag: str = "--dataset", required: bool = True
                     ) -> CollectionSource | None:
    """The one collection the flags name.

    ``dataset`` is the folder given by the command's own flag (default ``args.dataset``).

    Raises
    ------
    SourceError
        None or several of the inputs given (when ``required``), or an option of one input
        given with another.
    """
    dataset = dataset if dataset is not None else getattr(args, "dataset", None)
    given = [flag for flag, value in ((dataset_flag, dataset), ("--manifest", args.manifest),
                                      ("--mirdata", args.mirdata)) if value]
    if len(given) > 1:
        raise SourceError(f"give one collection, not {' and '.join(given)}")
    mirdata_only = {"--data-home": args.data_home, "--label-field": args.label_field,
                    "--mirdata-version": args.mirdata_version, "--download": args.download,
                    "--mirdata-validate": args.mirdata_validate,
                    "--mirdata-index": args.mirdata_index}
    stray = [flag for flag, value in mirdata_only.items() if value and not args.mirdata]
    if stray:
        raise SourceError(f"{', '.join(stray)} {'needs' if len(stray) == 1 else 'need'} "
                          "--mirdata NAME")
    if getattr(args, "follow_symlinks", False) and not dataset:
        raise SourceError(f"--follow-symlinks applies to a folder ({dataset_flag})")
    if args.label_column and not args.manifest:
        raise SourceError("--label-column needs --manifest FILE.csv (for --mirdata: "
                          "--label-field)")
    if not given:
        if required:
            raise SourceError(f"{dataset_flag} is required (or --manifest FILE.csv, or "
                              "--mirdata NAME)")
        return None
    if args.manifest:
        return CollectionSource(MANIFEST, args.manifest, {"label_column": args.label_column})
    if args.mirdata:
        return CollectionSource(MIRDATA, args.mirdata, {
            "data_home": args.data_home, "label_field": args.label_field,
            "version": args.mirdata_version, "download": args.download,
            "validate": bool(args.mirdata_validate), "index_file": args.mirdata_index})
    follow = getattr(args, "follow_symlinks", False)
    return CollectionSource(DATASET, dataset, {"follow_symlinks": True} if follow else {})
