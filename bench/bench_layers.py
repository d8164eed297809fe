"""Every layer of a 12-layer model from one forward pass vs one layer: time and memory.

The model is a wav2vec 2.0 with 12 transformer layers (13 hidden states) and random weights,
built here and saved to a temporary folder (nothing is downloaded); ``--width`` 768 is the base
size (transformers' default ``Wav2Vec2Config``). The audio is synthetic (noisy chords at 16 kHz,
no resampling timed). Side by side, alternately, ``--repeat`` times (the best run of each
counts: other jobs share the machine):

* model only: ``compute(path)`` with ``layer=6`` vs ``compute_spaces(path)`` with ``layer=all``;
* the whole embedding run (``embed_dataset``: cache writes of every layer, then the exports),
  each run into a fresh embeddings folder, so everything is computed and written.

Prints the ratios all/one (goal: <= 1.3) and checks that the all-layer run's layer 6 equals the
one-layer run's numbers. Memory: the peak of Python/numpy allocations (``tracemalloc``; torch's
own buffers are not traced) of a ``layer=all`` run at two collection sizes: flat (the ratio near
1) means frames of every layer stream to the cache and the exports, never gathered.

    python bench/bench_layers.py [--files 4] [--seconds 10] [--width 768] [--repeat 2]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import soundfile as sf
from machine import describe_cpu  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SR = 16000
ONE_LAYER = 6


def build_model(folder: Path, width: int) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(hidden_size=width, num_attention_heads=max(1, width // 64),
                                      intermediate_size=4 * width, num_hidden_layers=12)
    transformers.Wav2Vec2Model(cfg).eval().save_pretrained(str(folder))
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True,
                                          return_attention_mask=False).save_pretrained(str(folder))


def write_corpus(root: Path, n_files: int, seconds: float) -> list[Path]:
    """``n_files`` WAVs in two genre folders: chords with a little noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    paths = []
    for i in range(n_files):
        base = 220.0 * (1 + 0.1 * i)
        sig = sum(0.2 * np.sin(2 * np.pi * base * r * t) for r in (1.0, 1.26, 1.5))
        sig = (sig + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
        path = root / ("a" if i % 2 else "b") / f"f{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), sig, SR, subtype="FLOAT")
        paths.append(path)
    return paths


def time_model_only(model: Path, paths: list[Path], repeat: int) -> dict:
    """Best seconds of ``compute`` (one layer) and ``compute_spaces`` (all) over ``paths``."""
    from embedders import get_embedder

    one = get_embedder("hf-audio", model=str(model), layer=ONE_LAYER).load()
    every = get_embedder("hf-audio", model=str(model), layer="all").load()
    one.compute(paths[0]), every.compute_spaces(paths[0])  # warm-up
    best = {"one": np.inf, "all": np.inf}
    for _ in range(repeat):
        for label, run in (("one", lambda p: one.compute(p)),
                           ("all", lambda p: every.compute_spaces(p))):
            t0 = time.perf_counter()
            for p in paths:
                run(p)
            best[label] = min(best[label], time.perf_counter() - t0)
    a, b = one.compute(paths[0]), every.compute_spaces(paths[0])[f"hf-audio@{ONE_LAYER}"]
    best["same_numbers"] = bool(np.array_equal(a.frames, b.frames))
    return best


def run_pipeline(model: Path, data: Path, work: Path, layer) -> tuple[float, object]:
    from collection import embed_dataset
    from embedders import get_embedder

    emb = get_embedder("hf-audio", model=str(model), layer=layer).load()
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    res = embed_dataset(data, [emb], emb_dir=work / "emb", out_dir=work / "out",
                        progress=False)
    return time.perf_counter() - t0, res


def time_pipeline(model: Path, data: Path, work: Path, repeat: int) -> dict:
    best = {"one": np.inf, "all": np.inf}
    for _ in range(repeat):
        for label, layer in (("one", ONE_LAYER), ("all", "all")):
            seconds, res = run_pipeline(model, data, work / label, layer)
            best[label] = min(best[label], seconds)
            best[f"{label}_result"] = res
    one = best.pop("one_result").sets["hf-audio"].vectors
    every = best.pop("all_result")
    best["n_spaces"] = len(every.runs)
    best["same_numbers"] = bool(np.array_equal(one, every.sets[f"hf-audio@{ONE_LAYER}"].vectors))
    return best


def traced_peak(model: Path, data: Path, work: Path) -> float:
    """Peak MB of traced (Python/numpy) allocations of one ``layer=all`` run."""
    tracemalloc.start()
    try:
        run_pipeline(model, data, work, "all")
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4, help="files timed (default 4)")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per file (default 10)")
    ap.add_argument("--width", type=int, default=768, help="hidden size (768: base)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each mode (best counts)")
    ap.add_argument("--memory-files", type=int, nargs=2, default=(4, 12), metavar=("N1", "N2"),
                    help="collection sizes of the memory check (default 4 12)")
    args = ap.parse_args(argv)

    import torch

    print(f"CPU: {describe_cpu()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; wav2vec 2.0, 12 "
          f"layers, width {args.width}; {args.files} files x {args.seconds:g} s")
    with tempfile.TemporaryDirectory(prefix="bench_layers_") as tmp:
        tmp = Path(tmp)
        build_model(tmp / "model", args.width)
        paths = write_corpus(tmp / "data", args.files, args.seconds)
        model = time_model_only(tmp / "model", paths, args.repeat)
        pipe = time_pipeline(tmp / "model", tmp / "data", tmp / "work", args.repeat)
        print(f"\n{'':<34}{'layer=6 (s)':>12}{'layer=all (s)':>15}{'all/one':>9}")
        for label, r in (("model only (compute)", model), ("embedding run (cache + export)", pipe)):
            print(f"{label:<34}{r['one']:>12.2f}{r['all']:>15.2f}{r['all'] / r['one']:>9.2f}")
        print(f"layer=all gives {pipe['n_spaces']} spaces; its layer {ONE_LAYER} equals the "
              f"one-layer run: {model['same_numbers'] and pipe['same_numbers']}")
        peaks = []
        for n in args.memory_files:
            data = tmp / f"mem{n}"
            write_corpus(data, n, args.seconds)
            peaks.append(traced_peak(tmp / "model", data, tmp / f"memwork{n}"))
            shutil.rmtree(tmp / f"memwork{n}", ignore_errors=True)
        n1, n2 = args.memory_files
        print(f"traced peak of a layer=all run: {peaks[0]:.1f} MB ({n1} files), "
              f"{peaks[1]:.1f} MB ({n2} files): ratio {peaks[1] / peaks[0]:.2f}")
    ok = max(model["all"] / model["one"], pipe["all"] / pipe["one"]) <= 1.3
    return 0 if ok and model["same_numbers"] and pipe["same_numbers"] else 1


if __name__ == "__main__":
    sys.exit(main())
