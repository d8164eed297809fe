"""The Ray engine on one machine vs the in-process engine, on the same files, in one run.

Builds (once) the demo corpus (5 genres x ``--pieces`` pieces; audio rendered with the built-in
synthesizer), then embeds it into fresh embeddings folders with ``--embedders`` (default
``audio-stats``): first with the in-process engine and ``--workers`` processes, then on a local
Ray instance (``--workers`` CPUs, bound to 127.0.0.1) with as many actors. Each is timed as
``embed_dataset`` (scan, hash, embed, export, manifest), best of ``--repeats``; starting Ray is
timed apart (a cluster starts once and serves many runs). Checks that both give identical
vectors, and prints a cluster projection: files/s per worker measured here x workers, assuming
the shared filesystem keeps up. Usage: ``python bench/bench_ray.py [--pieces 8] [--workers 2]``
"""
import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedders import get_embedder  # noqa: E402
from collection.demo_corpus import build_demo_corpus  # noqa: E402
from collection.pipeline import embed_dataset  # noqa: E402
from collection.ray_engine import CODE_ROOT  # noqa: E402
from machine import describe_cpu  # noqa: E402

#: FMA full, the issue's example of a corpus beyond one machine: tracks, hours of audio.
FMA_FULL_TRACKS, FMA_FULL_HOURS = 106_574, 8_000


def timed_run(corpus, tmp, tag, names, **kwargs):
    embs = [get_embedder(n).load() for n in names]  # model loading is not the engine's cost
    t0 = time.perf_counter()
    result = embed_dataset(corpus, embs, emb_dir=Path(tmp) / tag / "emb",
                           out_dir=Path(tmp) / tag / "out", progress=False, **kwargs)
    return time.perf_counter() - t0, result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces", type=int, default=8, help="pieces per genre (demo: 8)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--embedders", nargs="+", default=["audio-stats"])
    ap.add_argument("--repeats", type=int, default=2, help="runs per engine; the best counts")
    ap.add_argument("--corpus", default=None, help="reuse/build the corpus here")
    ap.add_argument("--cluster-workers", type=int, nargs="+", default=[16, 64, 256])
    args = ap.parse_args()
    print(f"CPU: {describe_cpu()}")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus) if args.corpus else Path(tmp) / "corpus"
        build_demo_corpus(corpus, n_per_genre=args.pieces, synth="builtin")
        # the in-process engine first: its process pool must fork before Ray's threads exist
        local = [timed_run(corpus, tmp, f"local{i}", args.embedders, workers=args.workers)
                 for i in range(args.repeats)]
        import ray
        t0 = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, logging_level=logging.WARNING,
                 _node_ip_address="127.0.0.1",
                 runtime_env={"env_vars": {"PYTHONPATH": CODE_ROOT}})
        t_init = time.perf_counter() - t0
        try:
            remote = [timed_run(corpus, tmp, f"ray{i}", args.embedders, workers=args.workers,
                                engine="ray") for i in range(args.repeats)]
        finally:
            ray.shutdown()
        audio_s = sum(sf.info(it.path).duration for run in remote[0][1].runs.values()
                      for it in run.items if run.modality == "audio")
    t_local, res_local = min(local, key=lambda r: r[0])
    t_ray, res_ray = min(remote, key=lambda r: r[0])
    n_files = sum(r.n_computed for r in res_ray.runs.values())
    same = all(np.array_equal(res_local.sets[n].vectors, res_ray.sets[n].vectors)
               for n in res_local.runs)
    print(f"files embedded: {n_files} ({', '.join(args.embedders)}), workers: {args.workers}")
    print(f"in-process --workers {args.workers}: {t_local:.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t, _ in local)})")
    print(f"Ray local, {args.workers} actors:    {t_ray:.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t, _ in remote)}; actor start-up included)")
    print(f"starting Ray itself (once per cluster): {t_init:.2f} s")
    print(f"ratio Ray / in-process: {t_ray / t_local:.2f}x (goal <= 1.25x)   "
          f"identical vectors: {same}")
    per_worker = n_files / t_ray / args.workers
    audio_per_worker = audio_s / t_ray / args.workers   # seconds of audio per second
    print(f"PROJECTION (not measured): per worker here {per_worker:.2f} files/s, "
          f"{audio_per_worker:.1f} s of audio/s ({audio_s:.0f} s of audio in all); x workers, "
          f"if the shared filesystem keeps up and start-up is amortised:")
    for w in args.cluster_workers:
        hours = FMA_FULL_HOURS * 3600 / (audio_per_worker * w) / 3600 if audio_s else float("nan")
        print(f"  {w:4d} workers: {per_worker * w:8.1f} files/s of these; FMA full "
              f"({FMA_FULL_TRACKS} tracks, ~{FMA_FULL_HOURS} h of audio) in ~{hours:.1f} h "
              f"with {', '.join(args.embedders)}")


if __name__ == "__main__":
    main()
