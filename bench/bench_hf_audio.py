"""hf-audio frames/s with windows batched vs one window per forward pass (10-s windows).

The model is a wav2vec 2.0 *base*-sized network (768 wide, 12 layers, 512-channel front-end:
transformers' default ``Wav2Vec2Config``) with random weights, built here and saved to a
temporary folder: nothing is downloaded. The audio is synthetic (a noisy chord at 16 kHz, so
no resampling is timed). Both modes run alternately, ``--repeat`` times each; the best run of
each counts (other jobs share the machine). Also checks that both give the same frames.

    python bench/bench_hf_audio.py [--seconds 80] [--batch-size 8] [--repeat 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe_cpu  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_model(folder: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config()  # the base architecture (95 M parameters)
    transformers.Wav2Vec2Model(cfg).eval().save_pretrained(str(folder))
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True,
                                          return_attention_mask=False).save_pretrained(str(folder))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=80.0, help="audio length (default 80 s)")
    ap.add_argument("--window", type=float, default=10.0, help="window_seconds (default 10)")
    ap.add_argument("--batch-size", type=int, default=8, help="windows per batch when batched")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each mode (best counts)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch

    from embedders import get_embedder

    print(f"CPU: {describe_cpu()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    sr = 16000
    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * sr)) / sr
    signal = (sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
              + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="bench_hf_audio_") as tmp:
        build_model(Path(tmp))
        runs = {}
        for label, bs in (("one window per pass", 1), (f"batches of {args.batch_size}", args.batch_size)):
            emb = get_embedder("hf-audio", model=tmp, window_seconds=args.window,
                               batch_size=bs, device=args.device).load()
            emb.embed_signal(signal[:sr * 2])  # warm-up (first-call allocations)
            runs[label] = emb
        best = {label: float("inf") for label in runs}
        frames = {}
        for _ in range(args.repeat):
            for label, emb in runs.items():
                start = time.perf_counter()
                frames[label], _ = emb.embed_signal(signal)
                best[label] = min(best[label], time.perf_counter() - start)
    n = next(iter(frames.values())).shape[0]
    n_windows = int(np.ceil(args.seconds / args.window))
    print(f"{args.seconds:g} s of audio, {args.window:g}-s windows (~{n_windows}), {n} frames, "
          f"best of {args.repeat}:")
    for label, sec in best.items():
        print(f"  {label:>22}: {sec:7.2f} s  {n / sec:8.1f} frames/s  "
              f"({args.seconds / sec:5.2f}x real time)")
    one, many = best.values()
    a, b = frames.values()
    print(f"batched / unbatched speed: {one / many:.2f}x; max |frame difference| "
          f"{np.abs(a - b).max():.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
