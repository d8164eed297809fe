"""The HNSW settings grid behind `search/index.py`'s defaults: one graph, many query settings.

    python bench/bench_search_grid.py --n 100000 --m 32 --ef-construct 400 --ef 512 1024 2048
    python bench/bench_search_grid.py --quantization none --ef 512      # float32 graph

Builds one Qdrant Edge shard (cosine, int8 scalar quantization unless ``--quantization none``)
over the same vectors and queries as `bench_search.py` (random Gaussian 512-d, or 1,000
clusters), in the foreground, then for every ``--ef`` × ``--oversampling`` (plus, with
``--float-walk``, the walk on float32 vectors: quantization ignored) measures recall@10 against
exact top-10 and the median latency of 200 queries. One build per call: each takes minutes at
100k on 2 shared cores, so run the graphs one after another, never side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from machine import describe_cpu  # noqa: E402


def make_data(n: int, data: str, dim: int = 512, n_queries: int = 200, seed: int = 0):
    """The vectors and queries of bench_search.py (same seed, same draws)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    if data == "clustered":
        centres = rng.standard_normal((1000, dim)).astype(np.float32) * 2.0
        X += centres[rng.integers(0, 1000, n)]
    Q = X[rng.integers(0, n, n_queries)] + 0.5 * rng.standard_normal(
        (n_queries, dim)).astype(np.float32)
    return X, Q


def main(argv=None) -> int:
    import qdrant_edge as q

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--data", choices=("random", "clustered"), default="random")
    p.add_argument("--quantization", choices=("int8", "none"), default="int8")
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construct", type=int, default=100)
    p.add_argument("--ef", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--oversampling", type=float, nargs="+", default=[2.0])
    p.add_argument("--float-walk", action="store_true",
                   help="also walk the graph on the float32 vectors (quantization ignored)")
    args = p.parse_args(argv)
    X, Q = make_data(args.n, args.data)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    truth = [set(np.argpartition(-(Xn @ qv), 10)[:10].tolist()) for qv in Qn]
    quant = None if args.quantization == "none" else q.ScalarQuantizationConfig(
        type=q.ScalarType.Int8, always_ram=True)
    config = q.EdgeConfig(
        vectors={"v": q.EdgeVectorParams(size=X.shape[1], distance=q.Distance.Cosine,
                                         quantization_config=quant)},
        hnsw_config=q.HnswIndexConfig(m=args.m, ef_construct=args.ef_construct,
                                      full_scan_threshold=1000),
        optimizers=q.EdgeOptimizersConfig(indexing_threshold=1000, default_segment_number=1))
    print(f"CPU: {describe_cpu()}; load average {os.getloadavg()[0]:.1f}; n {args.n:,} "
          f"{args.data}; m {args.m}, ef_construct {args.ef_construct}, {args.quantization}")
    tmp = tempfile.mkdtemp(dir=os.environ.get("BENCH_TMP"))
    try:
        shard = q.EdgeShard.create(os.path.join(tmp, "shard"), config)
        for s in range(0, args.n, 1024):
            shard.update(q.UpdateOperation.upsert_points(
                [q.Point(i, {"v": memoryview(X[i])}) for i in range(s, min(args.n, s + 1024))]))
        t = time.perf_counter()
        shard.optimize()
        build_s = time.perf_counter() - t
        print(f"graph built in {build_s:.0f} s (load average {os.getloadavg()[0]:.1f})")
        settings = [(ef, o, False) for ef in args.ef for o in args.oversampling]
        if args.float_walk and quant is not None:
            settings += [(ef, None, True) for ef in args.ef]
        print("| hnsw_ef | oversampling | walk | recall@10 | median ms |\n|---|---|---|---|---|")
        for ef, over, ignore in settings:
            qp = None if quant is None else q.QuantizationSearchParams(
                ignore=ignore, rescore=True, oversampling=over)
            params = q.SearchParams(hnsw_ef=ef, quantization=qp)
            lat, rec = [], []
            for qv, want in zip(Q, truth):
                req = q.QueryRequest(limit=10, query=q.Query.Nearest(qv.tolist(), using="v"),
                                     params=params)
                t0 = time.perf_counter()
                hits = shard.query(req)
                lat.append(time.perf_counter() - t0)
                rec.append(len({int(h.id) for h in hits} & want) / 10)
            walk = "float32" if ignore or quant is None else "int8"
            print(f"| {ef} | {over if over else '–'} | {walk} | {np.mean(rec):.3f} | "
                  f"{np.median(lat) * 1e3:.2f} |", flush=True)
        shard.close()
        print(json.dumps({"build_s": build_s, "load_end": os.getloadavg()[0]}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
