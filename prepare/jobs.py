"""What every ``prepare`` subcommand shares: checking SRC and DST, listing source files, the
content-hash cache of finished work, running jobs with progress and workers, and
``DST/prepare_manifest.csv``.

A job turns one source file into output files under DST. Its cache key is the SHA-256 of the
subcommand, its version, the options that change the outputs, and the source file's path and
content hash. When a job finishes, a small record ``DST/.prepare/<key[:2]>/<key>.json``
(listing its outputs) is written atomically, after the outputs themselves, which are written
atomically too.
A re-run skips a job whose record exists and whose outputs are all present, so a killed run
resumes where it stopped and a changed file or option redoes only what changed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from common.csvfile import read_csv, write_csv
from common.fsutil import atomic_write_text, ensure_writable_folder, sha256_file
from common.progress import progress_bar
from embedders.base import InputError

MANIFEST_NAME = "prepare_manifest.csv"
RECORDS_DIR = ".prepare"
MANIFEST_FIELDS = ("source", "label", "status", "outputs", "reason")
MADE, CACHED, SKIPPED = "made", "cached", "skipped"


class PrepareError(Exception):
    """A problem with the whole run (bad SRC or DST): one line, exit status 2."""


@dataclasses.dataclass
class SourceFile:
    """One file under SRC. ``rel`` is its path relative to SRC (POSIX separators), ``label`` the
    first folder level (the class), ``""`` for a file directly in SRC."""

    path: Path
    rel: str
    label: str
    #: Where the file was listed (a manifest's or mirdata's id), when SRC is not a folder tree;
    #: ``rel`` is then the path its outputs get in DST (``<label>/<name>``).
    listed_as: str = ""


@dataclasses.dataclass
class ListedSources:
    """SRC given as a list of files (a CSV manifest or a mirdata dataset, see
    :func:`listed_sources`) instead of a folder tree. ``root`` is the folder they are listed
    relative to; DST may not hold any of them."""

    root: Path
    files: list[SourceFile]


def _label_folder(label: str) -> str:
    """A label as one folder name (a composer "A / B" must not become two folders)."""
    name = label.replace("/", "-").replace("\\", "-").strip().lstrip(".")
    return name or "_"


def listed_sources(scan) -> ListedSources:
    """The usable items of a :class:`collection.scan.ScanResult` as source files whose outputs
    form a genre-labelled tree: ``<label>/<file name>``; the two files of a pair get the audio
    file's stem, so the pair survives in DST by the folder tree's stem rule; two files that
    would land on one name keep their listed path under the label instead."""
    items = [it for it in scan.usable if it.label]
    stems = {it.pair_id: Path(it.id).stem for it in items if it.pair_id and it.modality == "audio"}

    def out_name(it) -> str:
        stem = stems.get(it.pair_id, Path(it.id).stem) if it.pair_id else Path(it.id).stem
        return f"{_label_folder(it.label)}/{stem}{Path(it.id).suffix}"

    names = [out_name(it) for it in items]
    clash = {n for n in names if names.count(n) > 1}
    files = [SourceFile(Path(it.path), n if n not in clash else
                        f"{_label_folder(it.label)}/{it.id.lstrip('/')}", it.label, it.id)
             for it, n in zip(items, names)]
    return ListedSources(Path(scan.root), sorted(files, key=lambda s: s.rel))


@dataclasses.dataclass
class Job:
    """Work on one source file (or an audio/MIDI pair: ``sources`` holds both)."""

    sources: list[SourceFile]
    kind: str = ""  # what the subcommand does with it, e.g. "audio", "midi", "pair"

    @property
    def main(self) -> SourceFile:
        return self.sources[0]


@dataclasses.dataclass
class Outcome:
    job: Job
    status: str
    outputs: list[str] = dataclasses.field(default_factory=list)
    reason: str = ""


def check_dirs(src: str | os.PathLike, dst: str | os.PathLike) -> tuple[Path, Path]:
    """Resolve SRC and DST; raise :class:`PrepareError` when SRC is not a folder, DST is SRC or
    inside it (SRC is never modified, and a re-run would read its own outputs), SRC is inside
    DST, or DST cannot be written."""
    if isinstance(src, ListedSources):
        dst_r = Path(dst).expanduser().resolve()
        inside = next((f for f in src.files if dst_r in f.path.resolve().parents), None)
        if inside is not None:  # outputs could overwrite a source, a re-run read its outputs
            raise PrepareError(f"output folder {dst} holds a listed source file "
                               f"({inside.listed_as}); choose a folder outside the collection")
        return src, _writable(dst_r, dst)
    src_p, dst_p = Path(src).expanduser(), Path(dst).expanduser()
    if not src_p.is_dir():
        raise PrepareError(f"source folder {src} does not exist or is not a folder")
    src_r, dst_r = src_p.resolve(), dst_p.resolve()
    if dst_r == src_r or src_r in dst_r.parents:
        raise PrepareError(f"output folder {dst} is inside the source folder {src}; "
                           "choose a folder outside it (SRC is never modified)")
    if dst_r in src_r.parents:
        raise PrepareError(f"source folder {src} is inside the output folder {dst}")
    return src_r, _writable(dst_r, dst)


def _writable(dst_r: Path, dst) -> Path:
    try:
        ensure_writable_folder(dst_r)
    except OSError as exc:
        raise PrepareError(f"output folder {dst} cannot be written: "
                           f"{exc.strerror or exc}") from exc
    return dst_r.resolve()


def list_sources(src: Path) -> list[SourceFile]:
    """Every non-hidden file under ``src``, sorted by relative path (or the listed files)."""
    if isinstance(src, ListedSources):
        return list(src.files)
    found = []
    for folder, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder) / name
            rel = path.relative_to(src).as_posix()
            found.append(SourceFile(path, rel, rel.split("/")[0] if "/" in rel else ""))
    return sorted(found, key=lambda s: s.rel)


def job_key(command: str, version: int, options: dict, inputs: list) -> str:
    """SHA-256 of what decides a job's outputs (``inputs``: source paths and content hashes)."""
    blob = json.dumps([command, version, options, inputs], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Runner:
    """Runs the jobs of one subcommand into DST and writes the manifest.

    Parameters
    ----------
    dst : Path
    command : str
        The subcommand's name (part of every cache key).
    version : int
        Bump when the subcommand's outputs change for the same inputs.
    options : dict
        The options that change the outputs (part of every cache key).
    workers : int
        Jobs run in this many threads (the heavy parts, ONNX Runtime, soundfile, soxr and the
        FluidSynth process, release the GIL).
    progress : bool
    """

    def __init__(self, dst: Path, command: str, version: int, options: dict, *,
                 workers: int = 1, progress: bool = True):
        self.dst, self.command, self.version, self.options = dst, command, version, options
        self.workers, self.progress = max(1, int(workers)), progress
        self._lock = threading.Lock()

    def _record_path(self, key: str) -> Path:
        return self.dst / RECORDS_DIR / key[:2] / f"{key}.json"

    def _run_one(self, job: Job, work: Callable[[Job, Path], list[Path]]) -> Outcome:
        """One job: its cached outcome if its record and outputs are there, else the work
        done now (or the reason it is skipped), recorded."""
        try:
            hashes = [sha256_file(s.path) for s in job.sources]
        except OSError as exc:
            return Outcome(job, SKIPPED, reason=f"cannot read file: {exc.strerror or exc}")
        # the paths are part of the key: outputs are named after them, and two copies of
        # one recording in two folders must each get their own outputs
        key = job_key(self.command, self.version, self.options,
                      [[s.rel for s in job.sources], hashes])
        record = self._record_path(key)
        if record.is_file():
            try:
                done = json.loads(record.read_text())
                if all((self.dst / o).exists() for o in done["outputs"]):
                    status = SKIPPED if done.get("status") == SKIPPED else CACHED
                    return Outcome(job, status, done["outputs"], done.get("reason", ""))
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable record: redo the job
        try:
            outputs = [Path(p).relative_to(self.dst).as_posix() for p in work(job, self.dst)]
            status, reason = MADE, ""
        except InputError as exc:
            outputs, status = [], SKIPPED
            # in a pair, say which of the two files failed
            reason = exc.reason if len(job.sources) == 1 else \
                f"{Path(exc.path).name}: {exc.reason}"
        # a skip is remembered too, so a re-run does not retry a bad file that did not change
        atomic_write_text(record, json.dumps({"sources": [s.rel for s in job.sources],
                                              "outputs": outputs, "status": status,
                                              "reason": reason}))
        return Outcome(job, status, outputs, reason)

    def run(self, jobs: list[Job], work: Callable[[Job, Path], list[Path]],
            skipped: list[Outcome] = (), *, desc: str = "") -> list[Outcome]:
        """Run ``work(job, dst) -> output paths`` for each job not cached; an
        :class:`~embedders.base.InputError` (or a file that cannot be read) skips the job with
        its reason. Writes the manifest (``skipped`` outcomes included) and returns every
        outcome in the order of the jobs."""

        def one(job: Job) -> Outcome:
            return self._run_one(job, work)

        outcomes: list[Outcome | None] = [None] * len(jobs)
        bar = progress_bar(len(jobs), desc=desc or f"prepare {self.command}", unit="file",
                           enabled=self.progress)
        try:
            if self.workers == 1:
                for i, job in enumerate(jobs):
                    outcomes[i] = one(job)
                    bar.update(1)
            else:
                with ThreadPoolExecutor(self.workers) as pool:
                    futures = {pool.submit(one, job): i for i, job in enumerate(jobs)}
                    try:
                        for fut in _as_completed(futures):
                            outcomes[futures[fut]] = fut.result()
                            bar.update(1)
                    except BaseException:
                        for fut in futures:
                            fut.cancel()
                        raise
        finally:
            bar.close()
        result = list(skipped) + [o for o in outcomes if o is not None]
        write_manifest(self.dst, result)
        if self.progress:
            # a file that failed gets its own line; files of a kind this subcommand does not
            # use (MIDI for transcribe, ...) only a count: the manifest lists them all
            for o in outcomes:
                if o is not None and o.status == SKIPPED:
                    print(f"skipped {o.job.main.rel}: {o.reason}", flush=True)
            if skipped:
                print(f"{len(skipped)} file(s) not used by prepare {self.command} "
                      f"(reasons in {MANIFEST_NAME})", flush=True)
        return result


def _as_completed(futures):
    from concurrent.futures import as_completed
    return as_completed(futures)


def write_manifest(dst: Path, outcomes: list[Outcome]) -> Path:
    """``DST/prepare_manifest.csv``: one row per source file (a pair gives two rows), what was
    made from it (outputs relative to DST, ``;``-separated) or why it was skipped."""
    rows = []
    for o in outcomes:
        for s in o.job.sources:
            rows.append({"source": s.listed_as or s.rel, "label": s.label, "status": o.status,
                         "outputs": ";".join(o.outputs), "reason": o.reason})
    return write_csv(dst / MANIFEST_NAME, sorted(rows, key=lambda r: r["source"]),
                     header=MANIFEST_FIELDS)


def read_manifest(dst: str | os.PathLike) -> list[dict]:
    return read_csv(Path(dst) / MANIFEST_NAME)
