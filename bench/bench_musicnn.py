"""Benchmark the musicnn network: our path vs a plain eager implementation of the same network.

Modes, all on the same random log-mel patches (3 s = 187 frames x 96 mel bands), float32 CPU:

(a) ``plain-1``: :class:`embedders.lib.musicnn_net.PlainMusicnn` (the layer table written out
    literally: NCHW 2-D convs, explicit ReLU and BatchNorm on every map), one patch per call, as
    the reference runs it, under ``torch.no_grad``;
(b) ``plain``: the same, ``--batch`` patches per call;
(c) ``ours``: :class:`embedders.lib.musicnn_net.Musicnn` (max/min over frequency taken before
    ReLU+BN via sign-flipped kernels, one merged 1-D conv for the three temporal filters, 1-D
    mid-end convs), ``--batch`` patches per call, ``torch.inference_mode`` (what the embedder runs);

then the ratios and the max |diff| of (c) against (b). The modes are interleaved over
``--rounds`` rounds and the best round of each is kept (this machine is shared: compare, don't
clock). Finally ``embed()`` of a synthetic ``--seconds`` long 44.1 kHz stereo file (decode,
resampling, log-mel and network) in patches/s.

Weights: the published MTT_musicnn checkpoint when it can be found the embedder's way
(``--weights DIR``, the cache, an installed ``musicnn`` package), else random tensors of the same
shapes (speed does not depend on the values). Nothing is downloaded.

    python bench/bench_musicnn.py                 # ~1-2 minutes on 2 cores
    python bench/bench_musicnn.py --batch 16 --rounds 5
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe_cpu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("EMBCOMPARE_OFFLINE", "1")  # never download from a benchmark


def load_tensors(weights: str | None):
    from embedders import WeightsError, get_embedder
    from embedders.lib import musicnn_net

    try:
        folder = get_embedder("musicnn", weights=weights).resolve_weights()
        return musicnn_net.load_tensors(str(folder) + os.sep), f"published ({folder})"
    except WeightsError:
        sys.path.insert(0, str(ROOT / "tests"))
        from tf_bundle_writer import random_musicnn_tensors

        return random_musicnn_tensors("musicnn"), "random (same shapes)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="patches per call for plain/ours")
    ap.add_argument("--patches", type=int, default=16, help="patches per timed run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the embed() file")
    ap.add_argument("--weights", help="musicnn package folder (else found the embedder's way)")
    args = ap.parse_args(argv)

    import torch
    from embedders.lib import musicnn_net as mn

    tensors, source = load_tensors(args.weights)
    print(f"CPU: {describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; weights: {source}")
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0, 3, (args.patches, 187, 96)).astype(np.float32))
    plain, ours = mn.PlainMusicnn(tensors).eval(), mn.Musicnn(tensors).eval()

    def run_plain(bs):
        with torch.no_grad():
            return [plain(x[i:i + bs]) for i in range(0, len(x), bs)]

    def run_ours(bs):
        with torch.inference_mode():
            return [ours(x[i:i + bs]) for i in range(0, len(x), bs)]

    modes = {"plain-1": lambda: run_plain(1), "plain": lambda: run_plain(args.batch),
             "ours": lambda: run_ours(args.batch)}
    for f in modes.values():  # warm-up
        f()
    best = {k: float("inf") for k in modes}
    per_round = []
    for _ in range(args.rounds):
        took = {}
        for name, f in modes.items():
            t0 = time.perf_counter()
            f()
            took[name] = time.perf_counter() - t0
            best[name] = min(best[name], took[name])
        per_round.append(took)
    rate = {k: args.patches / v for k, v in best.items()}
    for name in modes:
        print(f"{name:>8}: {rate[name]:7.2f} patches/s (best of {args.rounds} rounds)")

    def median_ratio(base):  # ratio within each round: robust to load that drifts between rounds
        return float(np.median([r[base] / r["ours"] for r in per_round]))

    print(f"ours / plain (batch {args.batch}): {rate['ours'] / rate['plain']:.2f}x best, "
          f"{median_ratio('plain'):.2f}x median per round; ours / plain-1: "
          f"{rate['ours'] / rate['plain-1']:.2f}x best, {median_ratio('plain-1'):.2f}x median")
    with torch.inference_mode():
        a, b = plain(x[:args.batch]), ours(x[:args.batch])
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"max |ours - plain| over all outputs: {diff:.2e}")

    # end to end: decode + soxr resampling + log-mel + network
    import soundfile as sf
    from embedders import get_embedder

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "noise.wav"
        sig = 0.1 * rng.standard_normal((int(args.seconds * 44100), 2))
        sf.write(str(path), sig, 44100, subtype="PCM_16")
        emb = get_embedder("musicnn", weights=args.weights, device="cpu",
                           batch_size=args.batch)
        try:
            emb.load()
        except Exception as exc:  # no published weights: random ones in the same layout
            sys.path.insert(0, str(ROOT / "tests"))
            from tf_bundle_writer import write_bundle

            (Path(tmp) / "MTT_musicnn").mkdir()
            write_bundle(str(Path(tmp) / "MTT_musicnn") + "/", tensors)
            emb = get_embedder("musicnn", weights=tmp, device="cpu", batch_size=args.batch)
            print(f"(embed() with random weights: {type(exc).__name__})")
        emb.load()
        emb.compute(path)
        t0 = time.perf_counter()
        out = emb.compute(path)
        dt = time.perf_counter() - t0
    print(f"embed() of a {args.seconds:.0f}-s 44.1 kHz stereo file: {out.frames.shape[0]} patches "
          f"in {dt:.2f} s = {out.frames.shape[0] / dt:.2f} patches/s "
          f"({args.seconds / dt:.1f}x real time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
