import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
# Never touch the network or the user's real cache from a test.
os.environ.setdefault("EMBCOMPARE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EMBCOMPARE_CACHE_DIR", str(tmp_path_factory.mktemp("user_cache")))


def write_wav(path, *, seconds=0.5, sr=22050, freq=440.0, channels=1, subtype="PCM_16"):
    import soundfile as sf
    t = np.arange(int(seconds * sr)) / sr
    sig = 0.5 * np.sin(2 * np.pi * freq * t)
    data = np.stack([sig] * channels, axis=1) if channels > 1 else sig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def write_midi(path, *, pitches=(60, 64, 67), tempo_bpm=120.0, program=0, is_drum=False,
               note_seconds=0.25):
    import pretty_midi
    pm = pretty_midi.PrettyMIDI(initial_tempo=tempo_bpm)
    inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
    t = 0.0
    for p in pitches:
        inst.notes.append(pretty_midi.Note(velocity=90, pitch=int(p), start=t, end=t + note_seconds))
        t += note_seconds
    pm.instruments.append(inst)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path


def save_tiny_wav2vec2(folder, *, seed: int = 0, sr: int = 16000, **config) -> Path:
    """A wav2vec 2.0 with 2 layers of width 32 and random weights (seeded), saved with its
    feature extractor as ``save_pretrained`` writes them: a local stand-in for published
    weights (nothing downloaded). ``config`` overrides settings of its ``Wav2Vec2Config``.
    Returns ``folder``."""
    import torch
    import transformers

    cfg = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        **{"conv_dim": (8,) * 7, "num_conv_pos_embeddings": 16,
           "num_conv_pos_embedding_groups": 2, **config})
    torch.manual_seed(seed)
    folder = Path(folder)
    transformers.Wav2Vec2Model(cfg).eval().save_pretrained(str(folder))
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=sr, do_normalize=True,
                                          return_attention_mask=False).save_pretrained(str(folder))
    return folder


def indexed_demo_corpus(base: Path, *, extra=()) -> tuple[Path, Path]:
    """A small paired demo corpus (5 genres x 2 pieces, audio + MIDI) under ``base``, embedded
    with the two baselines (and the embedders in ``extra``, constructed) and indexed:
    ``(corpus folder, embeddings folder)``."""
    from collection import embed_dataset
    from collection.demo_corpus import build_demo_corpus
    from embedders import get_embedder
    from search import build_indexes

    root, emb = base / "corpus", base / "emb"
    build_demo_corpus(root, n_per_genre=2, synth="builtin")
    embed_dataset(root, [get_embedder("audio-stats"), get_embedder("midi-stats"), *extra],
                  emb_dir=emb, out_dir=base / "out", progress=False)
    build_indexes(emb)
    return root, emb
