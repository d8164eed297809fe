"""Benchmark the CLaMP 2 embedder against a straightforward reference-style implementation.

Builds a full-size CLaMP 2 music model (official shapes: hidden 768, 12 layers, 12 heads,
intermediate 3072, 512 positions, patch 64 × 128 characters, projection 768) with random weights in
memory (nothing is downloaded), writes synthetic MIDI files whose patch counts spread from
``--min-patches`` to ``--max-patches`` (geometric spacing), and measures in one run:

(a) baseline: the reference's way of computing the same numbers: one file and one segment at a
    time (batch size 1), every segment zero-padded to 512 patches, one-hot (… × 8192) patch
    embedding through a dense Linear, eager attention with an additive mask;
(b) ours: ``CLaMP2Embedder.embed_many`` (segments of all files batched, sorted by length, padded
    only to the longest in the batch, gather patch embedding, SDPA).

Prints files/s, real patches/s, the speed-up and the max |difference| of clip and segment vectors
between (a) and (b). MIDI → MTF → patch time is measured separately (same code for both).

With ``--precision bfloat16`` (or ``float16`` on CUDA) the same corpus is also embedded with that
``precision`` option and the float32 and reduced-precision paths are timed side by side (model
only, best of ``--repeat`` runs each, alternating), with the parity cost of the reduced path:
max and mean |diff| of the clip vectors and their cosine to the float32 vectors.

    python bench/bench_clamp2.py                 # default: 20 files, 25..3000 patches
    python bench/bench_clamp2.py --files 8 --max-patches 1200 --threads 2
    python bench/bench_clamp2.py --skip-baseline --precision bfloat16 --repeat 2
"""
from __future__ import annotations

import argparse
import io
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OFFICIAL = {"hidden": 768, "layers": 12, "inter": 3072, "positions": 512, "out": 768, "patch": 64}


def official_state(seed: int = 0, **over) -> dict:
    """Random tensors with the official music-side key names and shapes."""
    import torch

    cfg = {**OFFICIAL, **over}
    h, inter = cfg["hidden"], cfg["inter"]
    g = torch.Generator().manual_seed(seed)

    def w(*shape, std=None):
        std = std if std is not None else 1.0 / math.sqrt(shape[-1])
        return torch.randn(*shape, generator=g) * std

    def ln():
        return 1 + 0.1 * torch.randn(h, generator=g), 0.05 * torch.randn(h, generator=g)

    s = {"music_model.patch_embedding.weight": w(h, cfg["patch"] * 128, std=0.02),
         "music_model.patch_embedding.bias": w(h, std=0.02),
         "music_model.base.embeddings.word_embeddings.weight": w(1, h, std=0.02),
         "music_model.base.embeddings.position_embeddings.weight": w(cfg["positions"], h, std=0.1),
         "music_model.base.embeddings.token_type_embeddings.weight": w(2, h, std=0.1),
         "music_proj.weight": w(cfg["out"], h), "music_proj.bias": w(cfg["out"], std=0.05)}
    s["music_model.base.embeddings.LayerNorm.weight"], s["music_model.base.embeddings.LayerNorm.bias"] = ln()
    for i in range(cfg["layers"]):
        p = f"music_model.base.encoder.layer.{i}."
        for n in ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense"):
            s[p + n + ".weight"], s[p + n + ".bias"] = w(h, h), w(h, std=0.05)
        s[p + "attention.output.LayerNorm.weight"], s[p + "attention.output.LayerNorm.bias"] = ln()
        s[p + "intermediate.dense.weight"], s[p + "intermediate.dense.bias"] = w(inter, h), w(inter, std=0.05)
        s[p + "output.dense.weight"], s[p + "output.dense.bias"] = w(h, inter), w(h, std=0.05)
        s[p + "output.LayerNorm.weight"], s[p + "output.LayerNorm.bias"] = ln()
    return s


# ----------------------------------------------------------------------------------- MIDI files
def synth_midi(n_events: int, rng: random.Random) -> bytes:
    """A two-track piece: a melody (note_on/note_off alternate, so lines rarely merge) plus chords."""
    import mido

    tpb = 480
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=rng.choice([400000, 500000, 600000])),
                           mido.MetaMessage("time_signature", numerator=4, denominator=4),
                           mido.MetaMessage("end_of_track", time=0)])
    track = mido.MidiTrack([mido.Message("program_change", program=rng.randrange(0, 80))])
    pitch = 60
    written = 0
    while written < n_events:
        if rng.random() < 0.2:  # a chord: several note_on then several note_off
            notes = sorted(rng.sample(range(48, 84), rng.randint(2, 4)))
            for k, n in enumerate(notes):
                track.append(mido.Message("note_on", note=n, velocity=rng.randint(40, 110), time=0 if k else 120))
            for k, n in enumerate(notes):
                track.append(mido.Message("note_off", note=n, velocity=0, time=0 if k else 480))
            written += 2
        else:
            pitch = min(96, max(36, pitch + rng.randint(-5, 5)))
            track.append(mido.Message("note_on", note=pitch, velocity=rng.randint(40, 110),
                                      time=rng.choice([0, 60, 120, 240])))
            track.append(mido.Message("note_off", note=pitch, velocity=0,
                                      time=rng.choice([60, 120, 240, 480])))
            written += 2
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb, tracks=[meta, track])
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def make_corpus(folder: Path, n_files: int, lo: int, hi: int, seed: int) -> list[Path]:
    """MIDI files whose patch counts are spread geometrically from ``lo`` to ``hi``."""
    from embedders.lib.mtf import midi_to_mtf, patchilize

    rng = random.Random(seed)
    targets = [round(lo * (hi / lo) ** (i / max(1, n_files - 1))) for i in range(n_files)]
    paths = []
    for i, target in enumerate(targets):
        events = max(2, target)
        for _ in range(8):  # adjust the event count until the patch count is close to the target
            data = synth_midi(events, random.Random(rng.random()))
            n = len(patchilize(midi_to_mtf(data)))
            if abs(n - target) <= max(2, target // 50):
                break
            events = max(2, int(events * target / n))
        p = folder / f"synth_{i:02d}_{n}.mid"
        p.write_bytes(data)
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------------- baseline
class Baseline:
    """Reference-style computation: batch size 1, padded to 512, one-hot patch embedding."""

    def __init__(self, state: dict, heads: int = 12, length: int = 512):
        self.s, self.heads, self.length = state, heads, length
        self.n_layers = len({k.split(".")[4] for k in state if ".encoder.layer." in k})

    def segment(self, ids):
        import torch
        import torch.nn.functional as F

        s, b = self.s, "music_model.base."
        n = ids.shape[0]
        x = torch.zeros(1, self.length, ids.shape[1], dtype=torch.long)
        x[0, :n] = torch.from_numpy(ids)
        mask = torch.zeros(1, self.length)
        mask[0, :n] = 1
        onehot = F.one_hot(x, num_classes=128).float().reshape(1, self.length, -1)
        h = F.linear(onehot, s["music_model.patch_embedding.weight"], s["music_model.patch_embedding.bias"])
        h = h + s[b + "embeddings.position_embeddings.weight"][: self.length] \
            + s[b + "embeddings.token_type_embeddings.weight"][0]
        d = h.shape[-1]
        h = F.layer_norm(h, (d,), s[b + "embeddings.LayerNorm.weight"], s[b + "embeddings.LayerNorm.bias"], 1e-12)
        add = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
        hd = d // self.heads
        for i in range(self.n_layers):
            L = f"{b}encoder.layer.{i}."

            def lin(x_, name):
                return F.linear(x_, s[L + name + ".weight"], s[L + name + ".bias"])

            def split(t):
                return t.view(1, self.length, self.heads, hd).transpose(1, 2)

            q, k, v = (split(lin(h, f"attention.self.{n_}")) for n_ in ("query", "key", "value"))
            scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + add
            ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(1, self.length, d)
            h = F.layer_norm(lin(ctx, "attention.output.dense") + h, (d,),
                             s[L + "attention.output.LayerNorm.weight"], s[L + "attention.output.LayerNorm.bias"], 1e-12)
            f = lin(F.gelu(lin(h, "intermediate.dense")), "output.dense")
            h = F.layer_norm(f + h, (d,), s[L + "output.LayerNorm.weight"], s[L + "output.LayerNorm.bias"], 1e-12)
        m = mask.unsqueeze(-1)
        pooled = (h * m).sum(1) / m.sum(1)
        return F.linear(pooled, s["music_proj.weight"], s["music_proj.bias"])[0].numpy()

    def file(self, ids):
        from embedders.lib.mtf import segment_bounds, segment_weights

        segs = np.stack([self.segment(ids[a:b]) for a, b in segment_bounds(len(ids), self.length)])
        w = np.asarray(segment_weights(len(ids), self.length), dtype=np.float64)
        return segs, (w @ segs.astype(np.float64) / w.sum()).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--min-patches", type=int, default=25)
    ap.add_argument("--max-patches", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--precision", choices=("bfloat16", "float16"), default=None,
                    help="also time this precision option side by side with float32")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per path in the --precision comparison (best is reported)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from embedders.clamp2 import CLaMP2Embedder
    from embedders.lib.mtf import midi_to_mtf, patchilize, segment_bounds

    t0 = time.perf_counter()
    state = official_state(args.seed)
    n_params = sum(v.numel() for v in state.values())
    ours = CLaMP2Embedder.from_state_dict(state, name="random-official-shapes", device=args.device,
                                          batch_size=args.batch_size)
    reduced = None
    if args.precision:
        reduced = CLaMP2Embedder.from_state_dict(state, name="random-official-shapes",
                                                 device=args.device, batch_size=args.batch_size,
                                                 precision=args.precision)
    print(f"model: {n_params:,} music-side parameters (random), built in {time.perf_counter() - t0:.1f}s; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_corpus(Path(tmp), args.files, args.min_patches, args.max_patches, args.seed)
        t0 = time.perf_counter()
        patches = {str(p): patchilize(midi_to_mtf(p)) for p in paths}
        t_parse = time.perf_counter() - t0
        n_real = sum(len(x) for x in patches.values())
        n_segs = sum(len(segment_bounds(len(x))) for x in patches.values())
        lens = sorted(len(x) for x in patches.values())
        print(f"corpus: {len(paths)} files, patches per file {lens}")
        print(f"        {n_real} real patches, {n_segs} segments ({n_segs * 512} patches when padded to 512); "
              f"MIDI→MTF→patches {t_parse:.2f}s ({len(paths) / t_parse:.1f} files/s)")

        # warm-up (thread pools, allocator) on a small file, both paths
        small = min(patches, key=lambda k: len(patches[k]))
        base = Baseline(state)
        if not args.skip_baseline:
            base.file(patches[small])
        ours._embed_patches([patches[small]])

        rows = []
        if not args.skip_baseline:
            t0 = time.perf_counter()
            ref = {p: base.file(x) for p, x in patches.items()}
            t_base = time.perf_counter() - t0
            rows.append(("baseline (bs=1, one-hot, pad 512)", t_base))
        t0 = time.perf_counter()
        got = dict(ours.embed_many([str(p) for p in paths]))
        t_ours = time.perf_counter() - t0  # includes MIDI parsing
        rows.append((f"ours (embed_many, batch {args.batch_size}, incl. parsing)", t_ours))
        t0 = time.perf_counter()
        model_only = ours._embed_patches(list(patches.values()))
        t_model = time.perf_counter() - t0
        rows.append(("ours (model only, patches given)", t_model))
        if reduced is not None:
            x_all = list(patches.values())
            reduced._embed_patches([patches[small]])  # warm-up
            best = {"float32": t_model, args.precision: math.inf}
            out_red = None
            for r in range(args.repeat):
                for name, emb in ((args.precision, reduced), ("float32", ours)):
                    if name == "float32" and r == 0:
                        continue  # the float32 model-only run above is the first one
                    t0 = time.perf_counter()
                    res = emb._embed_patches(x_all)
                    best[name] = min(best[name], time.perf_counter() - t0)
                    if name == args.precision:
                        out_red = res

    print()
    print(f"{'path':<48} {'seconds':>8} {'files/s':>8} {'patches/s':>10}")
    for name, t in rows:
        print(f"{name:<48} {t:8.2f} {len(paths) / t:8.2f} {n_real / t:10.1f}")
    bad = [p for p, e in got.items() if not hasattr(e, "clip")]
    if bad:
        print(f"FAILED files: {bad}")
        return 1
    if not args.skip_baseline:
        d_clip = max(float(np.abs(got[p].clip - ref[p][1]).max()) for p in patches)
        d_seg = max(float(np.abs(got[p].frames - ref[p][0]).max()) for p in patches)
        d_model = max(float(np.abs(e.clip - ref[p][1]).max()) for p, e in zip(patches, model_only))
        scale = max(float(np.abs(ref[p][1]).max()) for p in patches)
        print()
        print(f"speed-up vs baseline: {t_base / t_ours:.2f}x (embed_many incl. parsing), "
              f"{t_base / t_model:.2f}x (model only)")
        print(f"parity: max |ours - baseline| clip {d_clip:.2e}, segments {d_seg:.2e}, model-only clip "
              f"{d_model:.2e} (max |value| {scale:.2f})")
        print(f"padding: baseline computes {n_segs * 512} patch rows, ours "
              f"{sum(b - a for x in patches.values() for a, b in segment_bounds(len(x)))}")
    if reduced is not None:
        print()
        print(f"precision (model only, best of {args.repeat}, device {args.device}):")
        print(f"{'precision':<12} {'seconds':>8} {'files/s':>8} {'patches/s':>10}")
        for name in ("float32", args.precision):
            t = best[name]
            print(f"{name:<12} {t:8.2f} {len(paths) / t:8.2f} {n_real / t:10.1f}")
        print(f"{args.precision} speed vs float32: {best['float32'] / best[args.precision]:.2f}x")
        diffs = [np.abs(b.clip - a.clip) for a, b in zip(model_only, out_red)]
        cos = [float(a.clip.astype(np.float64) @ b.clip / np.linalg.norm(a.clip) / np.linalg.norm(b.clip))
               for a, b in zip(model_only, out_red)]
        scale = float(np.mean([np.abs(a.clip).mean() for a in model_only]))
        print(f"{args.precision} parity (clip vs float32): max |diff| {max(d.max() for d in diffs):.3g}, "
              f"mean |diff| {float(np.mean([d.mean() for d in diffs])):.3g} (mean |value| {scale:.3g}), "
              f"cosine min {min(cos):.6f}, mean {float(np.mean(cos)):.6f}")

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
