"""A probe run: attributes from the MIDI, probes per embedder, variants made, rendered,
embedded and measured; then probe.json, CSVs, heatmaps and the report section.

>>> from embedders import get_embedder
>>> from probe import run_probes
>>> probe = run_probes("dataset", [get_embedder("audio-stats"), get_embedder("midi-stats")],
...                    out="results/probe", pieces=20)                     # doctest: +SKIP
>>> probe["interventions"]["audio-stats"]["transpose:+2"]["sensitivity"]   # doctest: +SKIP

A comparison run that has already embedded the collection passes its ``sets`` so the
collection is not embedded twice.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from analysis import probing
from collection import EmbeddingStore, Item, scan_dataset
from collection.pipeline import embed_dataset, embed_spaces
from collection.scan import hash_items
from common.progress import progress_bar
from embedders import AUDIO, SYMBOLIC
from prepare.commands import Renderer
from .attributes import ATTRIBUTES, KEY_SOURCES, MidiReadError, ProbeError, midi_attributes
from .interventions import (INTERVENTIONS, clean_stale_temp, ORIGINAL, VariantTask, is_audio_only, make_variant,
                            remove_failure_marks, variant_key)

__all__ = ["MIDI_EXTENSIONS", "NoMidiError", "UnknownNameError", "check_names", "run_probes",
           "sample_pieces"]

MIDI_EXTENSIONS = (".mid", ".midi")
#: Neighbours of the label_kept vote.
LABEL_K = 5


class UnknownNameError(ProbeError, ValueError):
    """An intervention or attribute name that does not exist (a usage error)."""


class NoMidiError(ProbeError):
    """The collection holds no readable MIDI file: there is nothing to probe."""


def check_names(interventions=None, attributes=None, *, key_source: str = "profile") -> None:
    """Raise :class:`UnknownNameError` (one line listing the known names) on a bad name."""
    for given, known, what in ((interventions, INTERVENTIONS, "intervention"),
                               (attributes, tuple(ATTRIBUTES), "attribute")):
        bad = [n for n in (given or ()) if n not in known]
        if bad:
            raise UnknownNameError(f"unknown {what}{'s' if len(bad) > 1 else ''} "
                                   f"{', '.join(bad)}; known: {' '.join(known)}")
    if key_source not in KEY_SOURCES:
        raise UnknownNameError(f"unknown key source {key_source}; known: {' '.join(KEY_SOURCES)}")


def sample_pieces(items: list[Item], n: int, *, seed: int) -> list[Item]:
    """Up to ``n`` items, stratified by label: each label's items shuffled (seeded), then
    taken round-robin over the labels, so classes are as equal as their sizes allow."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[Item]] = {}
    for it in sorted(items, key=lambda it: it.id):
        by_label.setdefault(it.label, []).append(it)
    queues = [[group[i] for i in rng.permutation(len(group))] for _, group in
              sorted(by_label.items())]
    chosen: list[Item] = []
    while len(chosen) < n and any(queues):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop(0))
    return sorted(chosen, key=lambda it: it.id)


def _midi_items(scan) -> list[Item]:
    return [it for it in scan.usable if it.modality == SYMBOLIC
            and os.path.splitext(it.path)[1].lower() in MIDI_EXTENSIONS]


def _piece_id(it: Item) -> str:
    return it.pair_id or it.id


def read_attributes(midi: list[Item], *, key_source: str, skipped: list) -> dict[str, dict]:
    """Attributes of every MIDI item by piece id; unreadable files go to ``skipped``."""
    out = {}
    for it in midi:
        try:
            out[_piece_id(it)] = midi_attributes(it.path, key_source=key_source)
        except MidiReadError as exc:
            skipped.append({"what": it.id, "reason": exc.reason})
    return out


def attribute_probes(sets: dict, attrs: dict[str, dict], names: list[str], *, seed: int,
                     skipped: list) -> dict:
    """``{embedder: {attribute: result}}`` for every set and attribute that can be probed."""
    results: dict = {}
    for emb, es in sets.items():
        pieces = np.array([p or i for p, i in zip(es.pair_ids, es.ids)]).astype(str)
        rows = [k for k, p in enumerate(pieces) if p in attrs]
        results[emb] = {}
        for name in names:
            have = [k for k in rows if name in attrs[pieces[k]]]
            if len(have) < 4:
                skipped.append({"what": f"{emb} / {name}",
                                "reason": f"only {len(have)} items with a known {name}"})
                continue
            y = np.array([attrs[pieces[k]][name] for k in have])
            X, g = np.asarray(es.vectors)[have], pieces[have]
            kind = ATTRIBUTES[name]
            problem = probing.variation_problem(y, g, kind=kind)
            if problem:
                skipped.append({"what": f"{emb} / {name}", "reason": problem})
                continue
            probe = (probing.category_probe if kind == "category"
                     else probing.continuous_probe)(X, y, g, seed=seed)
            results[emb][name] = {k: probe[k] for k in ("value", "ci95", "metric", "chance", "n")}
            if "spearman" in probe:
                results[emb][name]["spearman"] = probe["spearman"]
            if probe.get("dropped_classes"):
                results[emb][name]["dropped_classes"] = probe["dropped_classes"]
    return results


def plan_variants(pieces: list[Item], names: list[str], *, variant_dir: Path,
                  renderer: Renderer, seed: int, render: bool = True
                  ) -> dict[tuple[str, str], VariantTask]:
    """The variant files of every (piece, intervention), the original included.

    ``render=False`` (no audio embedder in the run): MIDI files only, no audio deformations.
    """
    ident = renderer.identity()
    tasks = {}
    for it in pieces:
        pid = _piece_id(it)
        original = None
        for name in [ORIGINAL] + [n for n in names if render or not is_audio_only(n)]:
            key = variant_key(it.content_hash, name, ident, seed)
            task = VariantTask(pid, it.path, it.content_hash, name, key,
                               base=str(variant_dir / key[:2] / key), render=render,
                               original_wav=original.wav if original else None)
            original = original or task
            tasks[(pid, name)] = task
    return tasks


def make_variants(tasks: list[VariantTask], renderer: Renderer, *, seed: int, workers: int,
                  progress: bool) -> tuple[dict[str, str], int]:
    """Make every missing variant (originals first: the audio deformations read them).

    Returns
    -------
    (failures {task key: reason}, number made now)
    """
    failures = {t.key: t.failure() for t in tasks if t.failure()}
    todo = [t for t in tasks if not t.done() and t.key not in failures]
    made = 0
    bar = progress_bar(len(todo), desc="making variants", unit="file",
                       enabled=progress and bool(todo))
    with bar:
        for phase in (False, True):  # MIDI changes and originals, then audio deformations
            batch = [t for t in todo if is_audio_only(t.name) == phase]
            if phase:  # a deformation of an original that could not be rendered
                for t in [t for t in batch if not Path(t.original_wav).is_file()]:
                    batch.remove(t)
                    failures[t.key] = "its original could not be rendered"
                    bar.update(1)
            if workers > 1 and len(batch) > 1:
                with ProcessPoolExecutor(max_workers=workers) as pool:
                    futures = {pool.submit(make_variant, t, renderer, seed): t for t in batch}
                    results = ((futures[f], f.result()) for f in as_completed(futures))
                    made += _collect(results, failures, bar)
            else:
                made += _collect(((t, make_variant(t, renderer, seed)) for t in batch),
                                 failures, bar)
    return failures, made


def _collect(results, failures: dict, bar) -> int:
    made = 0
    for task, reason in results:
        bar.update(1)
        if reason:
            failures[task.key] = reason
        else:
            made += 1
    return made


def _variant_items(tasks: dict, labels: dict[str, str], failures: dict) -> list[Item]:
    """Items (audio and MIDI) for every made variant, the piece id as their pair id."""
    items = []
    for (pid, name), t in tasks.items():
        if t.key in failures or not t.done():
            continue
        for path, modality in ((t.wav, AUDIO), (t.midi, SYMBOLIC)):
            if path is None:
                continue
            st = os.stat(path)
            items.append(Item(id=f"{pid}::{name}::{modality}", path=path, label=labels[pid],
                              modality=modality, pair_id=pid, size=st.st_size,
                              mtime_ns=st.st_mtime_ns))
    hash_items(items)
    return items


def intervention_metrics(clips: dict[str, dict], modality: str, names: list[str],
                         labels: dict[str, str], *, seed: int) -> dict:
    """Sensitivity, identity recall@1 and label kept of one embedder.

    ``clips``: ``{intervention (or ORIGINAL): {piece id: clip vector}}``.
    """
    out = {}
    originals = clips.get(ORIGINAL, {})
    for name in names:
        if is_audio_only(name) and modality == SYMBOLIC:
            out[name] = {"applicable": False,
                         "reason": "audio-only deformation: a symbolic embedder never sees it"}
            continue
        got = clips.get(name, {})
        pids = sorted(p for p in got if p in originals)
        if len(pids) < 3:
            out[name] = {"applicable": True, "n": len(pids),
                         "reason": f"only {len(pids)} pieces with original and variant embedded"}
            continue
        O = np.stack([originals[p] for p in pids])
        V = np.stack([got[p] for p in pids])
        sens = probing.sensitivity(O, V, seed=seed)
        ident = probing.identity_recall_at_1(O, V)
        piece_labels = [labels[p] for p in pids]
        smallest = min(piece_labels.count(lab) for lab in set(piece_labels))
        # a majority of k needs k - 1 other pieces of the class: k shrinks with the classes
        kept = probing.label_kept(O, V, piece_labels,
                                  k=max(1, min(LABEL_K, smallest - 1)))
        out[name] = {"sensitivity": {"value": sens["value"], "ci95": sens["ci95"]},
                     "identity_recall_at_1": {k: ident[k] for k in ("value", "ci95", "chance")},
                     "label_kept": {k: kept[k] for k in ("value", "ci95", "reference", "k")},
                     "n": len(pids)}
    return out


def measure_interventions(tasks: dict, failures: dict, labels: dict[str, str], embedders: list,
                          names: list[str], *, store: EmbeddingStore, seed: int, skipped: list,
                          workers: int, progress: bool, engine: str,
                          engine_options: dict | None) -> dict:
    """Embed every made variant (through the cache) with every embedder, and measure.

    Returns ``{space: {intervention: result}}`` (:func:`intervention_metrics`): a space per
    embedder, or one per layer (``NAME@LAYER``) for an embedder asked for several
    (``layer=all``), all from one forward pass per file.
    """
    items = _variant_items(tasks, labels, failures)
    by_path = {}
    for (pid, name), t in tasks.items():
        for path in (t.wav, t.midi):
            if path:
                by_path[path] = (pid, name)
    out: dict = {}
    for emb in embedders:
        runs = embed_spaces(items, emb, store, workers=workers, progress=progress,
                            engine=engine, engine_options=engine_options)
        # a file that cannot be embedded fails for every space alike: listed once
        for it, reason in next(iter(runs.values())).skipped:
            skipped.append({"what": f"{emb.name} / {it.id}", "reason": reason})
        for space, run in runs.items():
            clips: dict[str, dict] = {}
            for e in run.entries:
                pid, name = by_path[e.item.path]
                clips.setdefault(name, {})[pid] = e.clip
            out[space] = intervention_metrics(clips, emb.modality, names, labels, seed=seed)
    return out


def run_probes(dataset, embedders: list, *, out, emb_dir=None, variant_dir=None,
               pieces: int = 100, interventions=None, attributes=None, seed: int = 0,
               synth: str = "auto", soundfont=None, key_source: str = "profile",
               workers: int = 1, engine: str = "local", engine_options: dict | None = None,
               sets: dict | None = None, retry_failed: bool = False,
               progress: bool = True) -> dict:
    """Run every probe and write ``out/probe.json``, CSVs, heatmaps, report section.

    Long (mostly this docstring) because it is the one place that says the order of a probe
    run; each step is a function of this module or of :mod:`analysis.probing`.

    Parameters
    ----------
    dataset : path
        The collection (``ROOT/<label>/...``), with MIDI files (paired or not).
    embedders : list of Embedder
    out : path
        Where the outputs go.
    emb_dir, variant_dir : path, optional
        Embedding cache (default ``out/embeddings``) and variant files (default
        ``emb_dir/probe_variants``).
    pieces : int
        Pieces (with MIDI) for the interventions, stratified by label, seeded.
    interventions, attributes : list of str, optional
        Default: all.
    sets : dict of EmbeddingSet, optional
        The collection already embedded (a comparison run's): not embedded again.

    Returns
    -------
    dict: what ``probe.json`` holds, plus ``"files"`` (written paths).

    Raises
    ------
    UnknownNameError
        Before any work.
    NoMidiError
        The collection holds no readable MIDI.
    """
    from .outputs import write_outputs

    check_names(interventions, attributes, key_source=key_source)
    names = list(interventions) if interventions else list(INTERVENTIONS)
    attr_names = list(attributes) if attributes else list(ATTRIBUTES)
    out = Path(out)
    emb_dir = Path(emb_dir) if emb_dir else out / "embeddings"
    variant_dir = Path(variant_dir) if variant_dir else emb_dir / "probe_variants"
    renderer = Renderer(synth=synth, soundfont=soundfont, verbose=progress)
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    skipped: list[dict] = []

    t0 = time.perf_counter()
    scan = scan_dataset(dataset)
    hash_items(scan.items)
    midi = _midi_items(scan)
    if not midi:
        raise NoMidiError(f"{dataset}: no MIDI files (.mid, .midi): nothing to probe")
    attrs = read_attributes(midi, key_source=key_source, skipped=skipped)
    if not attrs:
        raise NoMidiError(f"{dataset}: none of its {len(midi)} MIDI files can be read")
    seconds["attributes"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if sets is None:
        result = embed_dataset(dataset, embedders, emb_dir=emb_dir, out_dir=out, workers=workers,
                               progress=progress, scan=scan, engine=engine,
                               engine_options=engine_options)
        sets = result.analysis_sets()
    seconds["embedding_collection"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    attr_results = attribute_probes(sets, attrs, attr_names, seed=seed, skipped=skipped)
    seconds["attribute_probes"] = time.perf_counter() - t0

    readable = [it for it in midi if _piece_id(it) in attrs]
    chosen = sample_pieces(readable, pieces, seed=seed)
    labels = {_piece_id(it): it.label for it in chosen}
    render = any(e.modality == AUDIO for e in embedders)
    tasks = plan_variants(chosen, names, variant_dir=variant_dir, renderer=renderer, seed=seed,
                          render=render)
    if retry_failed:
        remove_failure_marks(tasks.values())
    clean_stale_temp(variant_dir)
    t0 = time.perf_counter()
    failures, made = make_variants(list(tasks.values()), renderer, seed=seed, workers=workers,
                                   progress=progress)
    seconds["variants"] = time.perf_counter() - t0
    for (pid, name), t in tasks.items():
        if t.key in failures:
            skipped.append({"what": f"{pid} / {name}", "reason": failures[t.key]})

    t0 = time.perf_counter()
    interventions_out = measure_interventions(
        tasks, failures, labels, embedders, names, store=EmbeddingStore(emb_dir), seed=seed,
        skipped=skipped, workers=workers, progress=progress, engine=engine,
        engine_options=engine_options)
    seconds["embedding_variants"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    # the spaces in order: an embedder's, or each of its layers' (the models are loaded by now)
    modalities = {space: e.modality for e in embedders for space in e.spaces()}

    probe = {"attributes": attr_results, "interventions": interventions_out,
             "skipped": skipped,
             "params": {"dataset": str(dataset), "embedders": list(modalities),
                        "modalities": modalities,
                        "pieces_requested": int(pieces), "pieces": len(chosen),
                        "interventions": names, "attributes": attr_names, "seed": int(seed),
                        "renderer": renderer.identity(), "key_source": key_source,
                        "key_profiles": "Krumhansl-Kessler (Krumhansl 1990)",
                        "cv_folds": 5, "label_kept_k": LABEL_K,
                        "variants_made": made, "variants_failed": len(failures),
                        "variant_dir": str(variant_dir), "emb_dir": str(emb_dir),
                        "seconds": {k: round(v, 3) for k, v in seconds.items()}}}
    probe["files"] = write_outputs(probe, out, attrs=attrs)
    return probe

