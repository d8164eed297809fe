"""Second identical run vs first run: how much the embedding cache saves.

Builds (once) a small paired corpus with the demo synthesizer, then in one process:
run 1 embeds everything into an empty embeddings folder, run 2 repeats the same call.
Prints both wall times and their ratio; also checks that run 2 computed nothing and gave
identical vectors. Usage: ``python bench/bench_cache.py [--pieces N] [--embedders ...]``
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedders import get_embedder  # noqa: E402
from collection.demo_corpus import build_demo_corpus  # noqa: E402
from collection.pipeline import embed_dataset  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pieces", type=int, default=4, help="pieces per genre")
    ap.add_argument("--embedders", nargs="+", default=["audio-stats", "midi-stats"])
    ap.add_argument("--corpus", default=None, help="reuse/build the corpus here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus) if args.corpus else Path(tmp) / "corpus"
        build_demo_corpus(corpus, n_per_genre=args.pieces, synth="builtin")
        times, results = [], []
        for attempt in range(2):
            embs = [get_embedder(n) for n in args.embedders]
            for e in embs:
                e.load()  # model loading is not what the cache saves
            t0 = time.perf_counter()
            res = embed_dataset(corpus, embs, emb_dir=Path(tmp) / "emb", out_dir=Path(tmp) / "out",
                                progress=False)
            times.append(time.perf_counter() - t0)
            results.append(res)
        first, second = results
        n_files = sum(r.n_found for r in first.runs.values())
        computed_again = sum(r.n_computed for r in second.runs.values())
        same = all(np.array_equal(first.sets[n].vectors, second.sets[n].vectors)
                   for n in first.runs)
        print(f"files (file x embedder): {n_files}")
        print(f"run 1 (empty cache): {times[0]:.2f} s")
        print(f"run 2 (same inputs): {times[1]:.2f} s   recomputed: {computed_again}   "
              f"identical vectors: {same}")
        print(f"ratio run1/run2: {times[0] / times[1]:.1f}x")


if __name__ == "__main__":
    main()
