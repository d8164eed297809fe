"""Benchmark the ``crepe`` embedder's network path against ``torchcrepe.embed``, side by side.

Both run CREPE (``--model``, default full) on the same ``--seconds`` of 16 kHz audio at a 10 ms
hop, float32 CPU, and both produce the same numbers (max |diff| printed). Modes:

(a) ``torchcrepe``: ``torchcrepe.embed(audio, 16000, hop_length=160, model=...)`` under
    ``torch.no_grad`` (its default: all frames in one batch);
(b) ``ours``: :meth:`embedders.crepe.Crepe.embed_signal` (framing in numpy, 1-D convolutions,
    ``batch_size`` frames per call: 64 for full, 256 for tiny by default,
    ``torch.inference_mode``).

The modes are interleaved over ``--rounds`` rounds and the best round of each is kept (the
machine is shared: compare, don't clock); frames/s and the ratio are printed with the CPU.
torchcrepe is imported with empty stand-ins for torchaudio and resampy, which its ``__init__``
imports but the embedding path at 16 kHz never calls.

    python bench/bench_crepe.py                   # ~1 minute on 2 cores
    python bench/bench_crepe.py --model tiny --seconds 10 --rounds 5
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
from machine import describe_cpu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("EMBCOMPARE_OFFLINE", "1")


def import_torchcrepe():
    for name in ("torchaudio", "resampy"):
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                sys.modules[name] = types.ModuleType(name)
    import torchcrepe
    return torchcrepe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="full", choices=("full", "tiny"))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="ours: frames per call (default: the embedder's, 64 full / 256 tiny)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)

    import torch

    from embedders import get_embedder

    if args.threads:
        torch.set_num_threads(args.threads)
    torchcrepe = import_torchcrepe()
    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * 16000)) / 16000
    y = (0.4 * np.sin(2 * np.pi * 196 * t * (1 + 0.1 * t)) + 0.05 * rng.standard_normal(t.size)
         ).astype(np.float32)
    ours_emb = get_embedder("crepe", model=args.model, batch_size=args.batch_size, device="cpu")
    ours_emb.load()

    def run_ref():
        with torch.no_grad():
            out = torchcrepe.embed(torch.from_numpy(y)[None], 16000, hop_length=160,
                                   model=args.model, device="cpu")
        return out.reshape(out.shape[1], -1).numpy()

    def run_ours():
        return ours_emb.embed_signal(y)

    a, b = run_ref(), run_ours()  # warm up (torchcrepe loads its weights here)
    n = a.shape[0]
    best = {"torchcrepe": np.inf, "ours": np.inf}
    for _ in range(args.rounds):
        for name, fn in (("torchcrepe", run_ref), ("ours", run_ours)):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    print(f"CPU: {describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"CREPE {args.model}, {args.seconds:g} s at 16 kHz, hop 10 ms = {n} frames; "
          f"best of {args.rounds} interleaved rounds")
    for name, sec in best.items():
        print(f"  {name:<11} {sec:7.3f} s  {n / sec:8.1f} frames/s")
    print(f"  ours / torchcrepe speed: {best['torchcrepe'] / best['ours']:.2f}x")
    print(f"  max |ours - torchcrepe| = {np.abs(a - b).max():.2e} (max |e| {np.abs(a).max():.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
