"""Benchmark the OpenL3 embedder: plain eager PyTorch vs our optimised path vs bfloat16.

Weights: the fixture file ``/work/shared/fixtures/openl3/openl3_audio_random_weights.h5`` if
present (or ``--weights``), else regenerated from ``tests/fixtures/openl3/make_weights.py``
(random weights, same shapes as the official files). Nothing is downloaded.

For each input representation (mel256/6144, mel128/512, linear/6144 by default) and each mode:

(a) ``plain``: a reference-style eager float32 PyTorch run of the same network: explicit
    BatchNorm layers, NCHW memory, ``torch.no_grad``;
(b) ``direct``: the embedder's path with ``conv_algorithm="direct"`` (BN folded into the convs,
    channels-last oneDNN convolutions, inference_mode);
(c) ``winograd``: the embedder's default path (``conv_algorithm="auto"``: Winograd F(4x4,3x3)
    for the convs with >= 64 input channels on CPU);
(d) ``bf16``: (b) under ``precision="bfloat16"`` autocast (opt-in: ``--modes ...,bf16``);

frames/s (batch 32, front-end included, frames from ``--seconds`` of synthetic 48 kHz audio at
hop 0.1) are measured in a fresh subprocess each, then the speed-up ratios and the max |diff| of
(b) and (c) against (a) are printed. Finally the peak RSS of embedding a ``--mem-seconds`` long
synthetic file (44.1 kHz stereo, so the streaming resampler and downmix are exercised) with our
path, in its own subprocess.

    python bench/bench_openl3.py                       # ~4-5 minutes on 2 cores
    python bench/bench_openl3.py --seconds 4 --mem-seconds 120 --reprs mel128/512
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURE_WEIGHTS = Path("/work/shared/fixtures/openl3/openl3_audio_random_weights.h5")


def ensure_weights(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if FIXTURE_WEIGHTS.is_file():
        return FIXTURE_WEIGHTS
    dest = Path(tempfile.gettempdir()) / "embcompare_bench_openl3" / "openl3_audio_random_weights.h5"
    if not dest.is_file():
        sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "openl3"))
        import make_weights

        make_weights.write_h5(dest)
    return dest


def synth(seconds: float, sr: int = 48000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    sig = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t * (1 + 0.1 * t))
    return (sig + 0.05 * rng.standard_normal(t.shape[0])).astype(np.float64)


def rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident set size now (MB; Linux), else the peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return rss_mb()


# ------------------------------------------------------------------------------------------------
def plain_network(layers, input_repr: str, embedding_size: int):
    """The reference-style graph of the same network, for the ``plain`` baseline: explicit
    BatchNorm layers (not folded), NCHW, no Winograd. (B, 1, F, T) dB -> (B, dim)."""
    import torch
    from torch import nn

    from embedders.lib.openl3_net import BN_EPS, FINAL_POOL, POOL_AFTER, pool_map

    def batch_norm(b):
        m = nn.BatchNorm2d(b["gamma"].shape[0], eps=BN_EPS)
        m.weight.data = torch.from_numpy(b["gamma"].copy())
        m.bias.data = torch.from_numpy(b["beta"].copy())
        m.running_mean.data = torch.from_numpy(b["mean"].copy())
        m.running_var.data = torch.from_numpy(b["var"].copy())
        return m

    class PlainNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            convs = []
            for k in range(8):
                w = layers[2 * k + 1]
                conv = nn.Conv2d(*w["kernel"].shape[2:], 3, padding=1)
                conv.weight.data = torch.from_numpy(
                    np.ascontiguousarray(w["kernel"].transpose(3, 2, 0, 1)))
                conv.bias.data = torch.from_numpy(w["bias"].copy())
                convs.append(conv)
            self.convs = nn.ModuleList(convs)
            self.bns = nn.ModuleList(batch_norm(layers[2 * k]) for k in range(8))  # bns[k] precedes convs[k]
            self.pool = FINAL_POOL[(input_repr, embedding_size)]

        def forward(self, x):
            F = nn.functional
            x = self.bns[0](x)
            for k, conv in enumerate(self.convs):
                x = conv(x)
                if k < 7:
                    x = F.relu(self.bns[k + 1](x))
                if k in POOL_AFTER:
                    x = F.max_pool2d(x, 2)
            return pool_map(x, self.pool)

    return PlainNetwork()


def worker_speed(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from embedders import get_embedder
    from embedders.lib.openl3_net import Frontend, read_weights

    repr_, size = args.repr.split("/")
    size = int(size)
    mode = args.mode
    emb = get_embedder("openl3", weights=str(args.weights_path), input_repr=repr_,
                       embedding_size=size, hop_size=0.1, batch_size=args.batch_size,
                       device="cpu", precision="bfloat16" if mode == "bf16" else "float32",
                       conv_algorithm="auto" if mode in ("winograd", "ours") else "direct").load()
    audio = synth(args.seconds)
    batches = list(emb.frame_batches([audio]))
    n_frames = sum(b.shape[0] for b in batches)

    if mode == "plain":
        layers = read_weights(args.weights_path)
        fe = Frontend(repr_).eval()
        net = plain_network(layers, repr_, size).eval()

        def run(b):
            with torch.no_grad():
                return net(fe(torch.from_numpy(b))).numpy()
    else:
        def run(b):
            return emb._embed_frames(b)

    run(batches[0][:2])  # warm-up (allocator, oneDNN primitive cache)
    t0 = time.perf_counter()
    outs = [run(b) for b in batches]
    dt = time.perf_counter() - t0
    out = np.concatenate(outs)
    ref_path = Path(args.tmpdir) / f"{args.repr.replace('/', '_')}_plain.npy"
    result = {"mode": mode, "repr": args.repr, "frames": n_frames, "seconds": dt,
              "fps": n_frames / dt, "peak_rss_mb": rss_mb()}
    if mode == "plain":
        np.save(ref_path, out)
    elif ref_path.is_file():
        ref = np.load(ref_path)
        # compare only frames lying wholly inside the shorter synthetic signal (same prefix)
        n_cmp = max(1, min(len(out), len(ref), int((args.seconds * 48000 - 24000) // 4800) + 1))
        out, ref = out[:n_cmp], ref[:n_cmp]
        result["max_abs_vs_plain"] = float(np.abs(out - ref).max())
        result["mean_abs_vs_plain"] = float(np.abs(out - ref).mean())
        result["mean_abs_ref"] = float(np.abs(ref).mean())
    return result


def worker_memory(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from embedders import get_embedder

    repr_, size = args.repr.split("/")
    emb = get_embedder("openl3", weights=str(args.weights_path), input_repr=repr_,
                       embedding_size=int(size), hop_size=args.mem_hop, device="cpu",
                       resampler=args.resampler).load()
    after_load = current_rss_mb()
    t0 = time.perf_counter()
    out = emb.compute(args.mem_file)
    dt = time.perf_counter() - t0
    return {"mode": "memory", "repr": args.repr, "frames": int(out.frames.shape[0]),
            "seconds": dt, "rss_after_load_mb": after_load, "peak_rss_mb": rss_mb(),
            "audio_seconds": args.mem_seconds, "hop": args.mem_hop, "resampler": args.resampler}


def write_long_file(path: Path, seconds: float, sr: int = 44100) -> None:
    import soundfile as sf

    with sf.SoundFile(str(path), "w", samplerate=sr, channels=2, subtype="PCM_16") as f:
        done, block = 0, 60 * sr
        total = int(seconds * sr)
        while done < total:
            n = min(block, total - done)
            x = synth(n / sr, sr, seed=done)[:n]
            f.write(np.stack([x, 0.5 * x], axis=1))
            done += n


def spawn(args, **over) -> dict:
    cmd = [sys.executable, __file__, "--worker"]
    opts = {**vars(args), **over}
    for k, v in opts.items():
        if k in ("worker", "reprs", "modes") or v is None:
            continue
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed", **over}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="synthetic audio per speed run")
    ap.add_argument("--bf16-seconds", type=float, default=2.0,
                    help="synthetic audio for the (slow on CPUs without bf16 units) bf16 runs")
    ap.add_argument("--reprs", default="mel256/6144,mel128/512,linear/6144")
    ap.add_argument("--modes", default="plain,direct,winograd",
                    help="comma list of plain, direct, winograd, bf16")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--mem-seconds", type=float, default=600.0, help="length of the memory file")
    ap.add_argument("--mem-hop", type=float, default=5.0,
                    help="hop for the memory run (large, to keep it short; memory does not "
                         "depend on the hop with streaming)")
    ap.add_argument("--mem-repr", default="mel128/512")
    ap.add_argument("--resampler", default="kaiser_best")
    # worker-only
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--repr", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--weights-path", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmpdir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mem-file", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        res = worker_memory(args) if args.mode == "memory" else worker_speed(args)
        print(json.dumps(res))
        return

    import torch

    wpath = ensure_weights(args.weights)
    print(f"torch {torch.__version__}, threads {args.threads}, batch {args.batch_size}, "
          f"{args.seconds:g} s synthetic audio at hop 0.1 per run, weights {wpath}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for rep in args.reprs.split(","):
            for mode in args.modes.split(","):
                secs = args.bf16_seconds if mode == "bf16" else args.seconds
                r = spawn(args, worker=None, mode=mode, repr=rep, weights_path=wpath, tmpdir=tmp,
                          weights=None, mem_file=None, seconds=secs)
                rows.append(r)
                if "error" in r:
                    print(f"  {rep:12s} {mode:6s} ERROR {r['error']}")
                    continue
                extra = ""
                if "max_abs_vs_plain" in r:
                    extra = (f"  max|d| vs plain {r['max_abs_vs_plain']:.3g}, mean|d| "
                             f"{r['mean_abs_vs_plain']:.3g} (mean|e| {r['mean_abs_ref']:.3g})")
                print(f"  {rep:12s} {mode:6s} {r['fps']:7.2f} frames/s  ({r['frames']} frames "
                      f"in {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB){extra}",
                      flush=True)
        print("\nspeed-up vs plain eager float32:")
        for rep in args.reprs.split(","):
            by = {r["mode"]: r for r in rows if r.get("repr") == rep and "fps" in r}
            if "plain" in by:
                line = ", ".join(f"{m} x{by[m]['fps'] / by['plain']['fps']:.2f}"
                                 for m in by if m != "plain")
                if "direct" in by and "winograd" in by:
                    line += f"; winograd vs direct x{by['winograd']['fps'] / by['direct']['fps']:.2f}"
                print(f"  {rep:12s} {line}")
        if args.mem_seconds > 0:
            mem_file = Path(tmp) / "long.wav"
            write_long_file(mem_file, args.mem_seconds)
            r = spawn(args, worker=None, mode="memory", repr=args.mem_repr, weights_path=wpath,
                      tmpdir=tmp, weights=None, mem_file=mem_file)
            if "error" in r:
                print(f"\nmemory run ERROR {r['error']}")
            else:
                print(f"\nmemory: {r['audio_seconds']:g} s 44.1 kHz stereo file, {r['repr']}, hop "
                      f"{r['hop']:g} ({r['frames']} frames, {r['resampler']}): {r['seconds']:.1f} s, "
                      f"RSS after load {r['rss_after_load_mb']:.0f} MB, peak RSS "
                      f"{r['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
