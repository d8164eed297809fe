"""Where a probe run spends its time: the share spent making and rendering variants, with a
learned model (musicnn) among the embedders. Goal: at most 25 %.

One ``run_probes`` call on the demo corpus with empty caches (nothing reused), every step
timed inside the same run: reading the attributes, embedding the collection, the attribute
probes, making + rendering the variants (``--workers`` processes), embedding the variants.
Prints the CPU, each step's seconds and share, and keeps the run's outputs in ``--out`` (the
result tables of docs/probes.md and the README come from its ``probe.json``).

Usage: ``python bench/bench_probe.py [--corpus DIR] [--out DIR] [--pieces N] [--workers N]
[--embedders ...]``
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe_cpu  # noqa: E402
from collection.demo_corpus import build_demo_corpus  # noqa: E402
from embedders import get_embedder  # noqa: E402
from probe import run_probes  # noqa: E402

GOAL = 0.25


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", help="demo corpus folder (built here if missing)")
    ap.add_argument("--per-genre", type=int, default=8, help="demo pieces per genre if built")
    ap.add_argument("--out", help="keep the probe outputs here (default: a temporary folder)")
    ap.add_argument("--pieces", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--synth", default="auto")
    ap.add_argument("--embedders", nargs="+", default=["musicnn", "audio-stats", "midi-stats"])
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus) if args.corpus else Path(tmp) / "corpus"
        if not corpus.is_dir():
            build_demo_corpus(corpus, n_per_genre=args.per_genre, synth=args.synth)
        out = Path(args.out) if args.out else Path(tmp) / "out"
        emb_dir = Path(tmp) / "emb"   # empty: every variant is made and every file embedded
        embedders = [get_embedder(n) for n in args.embedders]
        t0 = time.perf_counter()
        for e in embedders:
            e.load()
        load_s = time.perf_counter() - t0
        probe = run_probes(corpus, embedders, out=out, emb_dir=emb_dir, pieces=args.pieces,
                           workers=args.workers, synth=args.synth, progress=False)
        p = probe["params"]
        secs = p["seconds"]
        total = secs["total"]
        print(f"CPU: {describe_cpu()}")
        print(f"embedders: {' '.join(p['embedders'])}; pieces {p['pieces']}; "
              f"{len(p['interventions'])} interventions; renderer {p['renderer']['synth']}; "
              f"workers {args.workers}; variants made {p['variants_made']}, "
              f"failed {p['variants_failed']}; model loading before the run {load_s:.1f} s")
        for step in ("attributes", "embedding_collection", "attribute_probes", "variants",
                     "embedding_variants"):
            print(f"  {step:<22} {secs[step]:8.1f} s  {secs[step] / total:6.1%}")
        share = secs["variants"] / total
        print(f"  {'total':<22} {total:8.1f} s")
        print(f"share making + rendering variants: {share:.1%} (goal <= {GOAL:.0%}: "
              f"{'met' if share <= GOAL else 'NOT met'})")
        if args.out:
            (out / "bench_probe.json").write_text(json.dumps(
                {"cpu": describe_cpu(), "seconds": secs, "share_variants": share,
                 "workers": args.workers, "load_seconds": load_s}, indent=2))


if __name__ == "__main__":
    main()
