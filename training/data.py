"""From a collection to training examples: audio items, cached features, the seeded split.

Features are computed once per file and cached by content hash (SHA-256 of the file's bytes)
in the user cache (``<cache>/train_features/``): the log-mel of the shared front end for the
mel methods, the 16 kHz mono signal for CPC and finetune. A re-run, another method with the
same front end, or a resumed run reads them back instead of decoding audio again.

Supervised methods split by *pair id* (a piece's audio and MIDI are always on the same side),
stratified by label, seeded; ``split.csv`` lists every item of the collection (MIDI twins
included) with its side, so an analysis can leave out whatever the training saw.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collection.scan import Item, hash_items
from collection.sources import scan_source
from common.csvfile import write_csv
from common.fsutil import atomic_path
from common.progress import track
from embedders import AUDIO, InputError
from embedders.lib import trained_nets as tn
from embedders.lib.weights import cache_dir

SPLIT_FIELDS = ("id", "pair_id", "label", "modality", "content_hash", "split")
TRAIN, VAL, TEST, UNUSED = "train", "val", "test", "unused"
#: A collection's own split names (manifest column, dataset metadata) -> the sides here.
GIVEN_SPLITS = {"train": TRAIN, "training": TRAIN, "val": VAL, "valid": VAL,
                "validation": VAL, "dev": VAL, "test": TEST, "omitted": UNUSED}


class TrainingUsageError(Exception):
    """The collection or the settings cannot give a training run (one line, exit status 2)."""


@dataclass
class Example:
    """One audio file ready for training: its item and its cached feature array."""

    item: Item
    features: np.ndarray  # (n_mels, T) log-mel or (n_samples,) 16 kHz audio


def feature_kind(method: str) -> str:
    return "logmel" if method in tn.MEL_METHODS else "wave16k"


def _cache_file(kind: str, content_hash: str) -> Path:
    recipe = json.dumps({"kind": kind, "front": tn.FRONTEND if kind == "logmel" else tn.SR},
                        sort_keys=True)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    return cache_dir("train_features") / f"{kind}-{key}" / content_hash[:2] / f"{content_hash}.npy"


def compute_features(path: str, kind: str) -> np.ndarray:
    """The features of one file (uncached). :class:`InputError` for a bad file."""
    y = tn.load_audio_16k(path)
    return tn.log_mel(y) if kind == "logmel" else y


def cached_features(item: Item, kind: str) -> np.ndarray:
    """Features of one item, from the cache or computed and cached (atomically)."""
    dest = _cache_file(kind, item.content_hash)
    if dest.is_file():
        try:
            return np.load(dest)
        except (OSError, ValueError):
            pass  # a damaged cache entry only costs recomputing it
    feats = compute_features(item.path, kind)
    with atomic_path(dest, suffix=".tmp.npy") as tmp:
        np.save(tmp, feats)
    return feats


def load_examples(dataset: str | dict, *, method: str, workers: int = 1, progress: bool = True
                  ) -> tuple[list[Item], list[Example], list[tuple[str, str]]]:
    """Scan ``dataset``, hash its files and load (or compute) the features of the audio.

    ``dataset`` is a folder, or a manifest or mirdata source as
    :meth:`collection.sources.CollectionSource.to_config` holds it.

    Returns
    -------
    items : list of Item
        Every usable item of the collection (audio and symbolic): what ``split.csv`` lists.
    examples : list of Example
        The audio items whose features could be computed, sorted by id.
    skipped : list of (item id, reason)
        Files left out, with the reason.
    """
    try:
        scan = scan_source(dataset)
    except (OSError, ValueError) as exc:  # a SourceError is a ValueError
        raise TrainingUsageError(f"cannot read dataset {dataset!r}: {exc}") from None
    hash_items(scan.items, progress=progress)
    skipped = [(it.id, it.skip_reason) for it in scan.items if it.skip_reason]
    items = sorted(scan.usable, key=lambda it: it.id)
    audio = [it for it in items if it.modality == AUDIO and it.label]
    kind = feature_kind(method)

    def one(it: Item):
        try:
            return it, cached_features(it, kind)
        except InputError as exc:
            return it, exc

    examples = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for it, result in track(pool.map(one, audio), total=len(audio),
                                desc=f"features ({kind})", unit="file", enabled=progress):
            if isinstance(result, Exception):
                skipped.append((it.id, result.reason))
            else:
                examples.append(Example(it, result))
    return items, examples, skipped


def split_by_pair(items: list[Item], *, seed: int, val_fraction: float = 0.15,
                  test_fraction: float = 0.15) -> dict[str, str]:
    """Seeded split of pieces (pair ids), stratified by label.

    Items sharing a pair id are one piece; an unpaired item is a piece by itself. Within each
    label the pieces are shuffled with ``seed`` and cut into test, val and train; every label
    with at least 3 pieces gets at least one test and one val piece.

    When every item carries a split of its own (a manifest's ``split`` column, MAESTRO's or
    Groove's split through mirdata: ``train``, ``val``/``valid``/``validation``, ``test``, or
    ``omitted``, which leaves the item out), that split is kept and the fractions are unused:
    published splits are what results are compared on.

    Returns
    -------
    dict
        Item id -> ``"train"``, ``"val"`` or ``"test"``.
    """
    given = {it.id: GIVEN_SPLITS.get(it.extra.get("split", "").strip().lower()) for it in items}
    if items and all(given.values()):
        return {item_id: s for item_id, s in given.items() if s != UNUSED}
    pieces: dict[str, dict[str, list[Item]]] = defaultdict(lambda: defaultdict(list))
    for it in items:
        pieces[it.label][it.pair_id or it.id].append(it)
    rng = np.random.default_rng(seed)
    side: dict[str, str] = {}
    for label in sorted(pieces):
        keys = sorted(pieces[label])
        keys = [keys[i] for i in rng.permutation(len(keys))]
        n = len(keys)
        n_test = max(1, int(round(test_fraction * n))) if n >= 3 else 0
        n_val = max(1, int(round(val_fraction * n))) if n >= 3 else 0
        for j, key in enumerate(keys):
            s = TEST if j < n_test else VAL if j < n_test + n_val else TRAIN
            for it in pieces[label][key]:
                side[it.id] = s
    return side


def write_split(path: str | Path, items: list[Item], side: dict[str, str]) -> None:
    """``split.csv``: every usable item of the collection with its side (``unused`` if none)."""
    write_csv(path, ([it.id, it.pair_id, it.label, it.modality, it.content_hash,
                      side.get(it.id, UNUSED)] for it in items), header=SPLIT_FIELDS)


def crop(features: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` frames (or samples) from ``start`` along the last axis; short ones are
    padded by repeating the signal (a silence pad would be an easy cue)."""
    n = features.shape[-1]
    if n < length:
        reps = -(-length // n)
        features = np.concatenate([features] * reps, axis=-1)
        n = features.shape[-1]
    return features[..., start:start + length] if start + length <= n else features[..., -length:]


def windows(features: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping windows covering the whole signal (the last one aligned to the end).

    Returns
    -------
    np.ndarray [shape=(n_windows, ..., length)]
    """
    n = features.shape[-1]
    if n <= length:
        return crop(features, 0, length)[None]
    starts = list(range(0, n - length + 1, length))
    if starts[-1] + length < n:
        starts.append(n - length)
    return np.stack([features[..., s:s + length] for s in starts])
