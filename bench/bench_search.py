"""Similar-item search speed: the Qdrant Edge index against exact numpy search, in one run.

    python bench/bench_search.py                 # 10k and 100k random 512-d vectors
    python bench/bench_search.py --large         # also 1M
    python bench/bench_search.py --sizes 20000   # any sizes

Per size, in its own process (so peak memory is that size's): insert rate into the index (the
index's own sync, with payloads, as `main.py index` does), queries answered *while* the HNSW
graph is built by the background process (exact full scans: they must never wait for it), the
graph's build time, then recall@10 of the HNSW search against exact numpy top-10, median latency
and queries/s of both, and the process's peak RSS. Random Gaussian vectors are the hard case for
a graph index (no cluster structure); real embeddings are easier.

Sizes above ``--hnsw-max`` (default 200,000, so ``--large``'s 1M) skip the graph: at 1M the
build took 31 minutes on 2 idle Zen 4 cores (more when they are shared). They measure inserts, exact search in the engine (what
queries get until a graph is there) and exact numpy search, with 50 queries. ``--hnsw-max
2000000 --hnsw-timeout S`` builds it anyway and gives up waiting after S seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe_cpu  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIM = 512
N_QUERIES = 200


def _exact_top(Xn, q, k=10):
    s = Xn @ q
    top = np.argpartition(-s, k)[:k]
    return top[np.argsort(-s[top])]


def one_size(n: int, seed: int = 0, data: str = "random", hnsw_max: int = 200_000,
             hnsw_timeout: float = 3600.0) -> dict:
    import qdrant_edge as q

    from search.index import (sync_shard, shard_path, open_shard, read_index_meta, VECTOR_NAME,
                              search_params)

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, DIM)).astype(np.float32)
    if data == "clustered":  # 1,000 Gaussian clusters: closer to real embeddings' structure
        centres = rng.standard_normal((1000, DIM)).astype(np.float32) * 2.0
        X += centres[rng.integers(0, 1000, n)]
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    # queries: perturbed collection vectors (a new recording of a known piece)
    Q = X[rng.integers(0, n, N_QUERIES)] + 0.5 * rng.standard_normal((N_QUERIES, DIM)).astype(
        np.float32)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    pay = [{"item_id": f"g/{i}.wav", "content_hash": f"{i:064x}", "label": f"g{i % 10}",
            "pair_id": "", "path": f"/data/g/{i}.wav", "modality": "audio", "duration": 30.0}
           for i in range(n)]
    out = {"n": n, "data": data}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        folder = Path(tmp) / "idx"
        meta = {"embedder": "bench", "version": "1", "options": {}, "modality": "audio"}
        build = n <= hnsw_max  # above it: inserts and exact search only (--hnsw-max)
        t = time.perf_counter()
        sync_shard(folder, meta, X, pay, hnsw="background" if build else "off")
        out["insert_s"] = time.perf_counter() - t
        out["insert_per_s"] = n / out["insert_s"]
        t_build = time.perf_counter()

        # fewer queries where only exact scans answer (1M: ~0.5 s each)
        nq = N_QUERIES if build else 50

        def timed_queries(shard, params=None, count=nq, flt=None):
            lat, ids = [], []
            for qv in Q[:count]:
                t0 = time.perf_counter()
                hits = shard.query(q.QueryRequest(limit=10, query=q.Query.Nearest(
                    qv.tolist(), using=VECTOR_NAME), params=params, filter=flt))
                lat.append(time.perf_counter() - t0)
                ids.append([h.id for h in hits])
            return np.array(lat), ids

        # queries while the graph is being built (exact scans of the current shard)
        shard = open_shard(shard_path(folder))
        lat_during, n_during = [], 0
        while n_during < 50 and (not build or read_index_meta(folder).get("hnsw") != "ready"):
            lat, _ = timed_queries(shard, count=5)
            lat_during += list(lat)
            n_during += 5
        shard.close()
        out["during_build_median_ms"] = float(np.median(lat_during)) * 1e3
        out["during_build_queries"] = n_during
        out["hnsw_build_s"] = None  # not built (--hnsw-max) or not finished (--hnsw-timeout)
        from search.index import _alive
        while build and read_index_meta(folder).get("hnsw") != "ready":
            if not _alive(read_index_meta(folder).get("hnsw_pid")):
                time.sleep(1.0)  # it may have swapped the graph in just now
                if read_index_meta(folder).get("hnsw") == "ready":
                    continue
                log = (folder / "hnsw.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the background HNSW build died:\n{log}")
            if time.perf_counter() - t_build > hnsw_timeout:
                out["hnsw_unfinished_after_s"] = hnsw_timeout
                pid = read_index_meta(folder).get("hnsw_pid")
                if pid:  # stop the background build: the folder is about to be removed
                    os.kill(int(pid), signal.SIGKILL)
                break
            time.sleep(0.5)
        else:
            if build:
                out["hnsw_build_s"] = time.perf_counter() - t_build

        # the finished index: HNSW vs exact numpy
        from search.index import point_id
        pid_to_row = {point_id(p["item_id"], p["content_hash"]): i for i, p in enumerate(pay)}
        t0 = time.perf_counter()
        shard = open_shard(shard_path(folder))
        out["open_ms"] = (time.perf_counter() - t0) * 1e3
        try:
            runs = [(q.SearchParams(exact=True), "exact", None)]
            if out["hnsw_build_s"] is not None:
                # a must_not filter checked during the walk (what `recommend` sent before it
                # dropped its exclusions after the query: search/recommend.py)
                own = q.Filter(must_not=[q.FieldCondition("content_hash",
                                                          match=q.MatchValue("f" * 64))])
                runs[:0] = [(search_params(), "hnsw", None),
                            (search_params(), "hnsw_filtered", own)]
            for params, key, flt in runs:
                timed_queries(shard, params, count=10, flt=flt)  # warm the page cache
                lat, ids = timed_queries(shard, params, flt=flt)
                recall = np.mean([len({pid_to_row[i] for i in got} & set(_exact_top(Xn, qv)))
                                  / 10 for got, qv in zip(ids, Qn)])
                out[f"{key}_recall_at_10"] = float(recall)
                out[f"{key}_median_ms"] = float(np.median(lat)) * 1e3
                out[f"{key}_qps"] = 1.0 / float(np.mean(lat))
        finally:
            shard.close()
        lat = []
        for qv in Qn[:nq]:
            t0 = time.perf_counter()
            _exact_top(Xn, qv)
            lat.append(time.perf_counter() - t0)
        out["numpy_median_ms"] = float(np.median(lat)) * 1e3
        out["numpy_qps"] = 1.0 / float(np.mean(lat))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _fmt(r: dict, key: str, spec: str) -> str:
    v = r.get(key)
    if v is not None:
        return format(v, spec)
    if key.startswith("hnsw") and r.get("hnsw_unfinished_after_s"):
        return f"> {r['hnsw_unfinished_after_s']:.0f} s: not finished" if key == "hnsw_build_s" \
            else "–"
    return "not built" if key == "hnsw_build_s" else "–"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--large", action="store_true", help="also 1,000,000 vectors")
    p.add_argument("--data", choices=("random", "clustered"), nargs="+", default=["random"],
                   help="random Gaussian vectors (the hard case), and/or 1,000 clusters")
    p.add_argument("--hnsw-max", type=int, default=200_000, metavar="N",
                   help="build the HNSW graph only up to N vectors (default 200,000); larger "
                        "sizes measure inserts and exact search only (the graph's build "
                        "would take hours on 2 cores)")
    p.add_argument("--hnsw-timeout", type=float, default=3600.0, metavar="S",
                   help="stop waiting for a graph after S seconds and report it unfinished")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(args.one, data=args.data[0], hnsw_max=args.hnsw_max,
                                  hnsw_timeout=args.hnsw_timeout)))
        return 0
    from search.index import HNSW_EF, HNSW_EF_CONSTRUCT, HNSW_M, QUERY_OVERSAMPLING
    sizes = args.sizes + ([1_000_000] if args.large else [])
    print(f"CPU: {describe_cpu()}; load average {os.getloadavg()[0]:.1f}; {DIM}-d, "
          f"{N_QUERIES} queries; HNSW m {HNSW_M}, ef_construct {HNSW_EF_CONSTRUCT}, hnsw_ef "
          f"{HNSW_EF}, int8 oversampling {QUERY_OVERSAMPLING:g}")
    rows = []
    for data, n in [(d, n) for d in args.data for n in sizes]:
        res = subprocess.run([sys.executable, __file__, "--one", str(n), "--data", data,
                              "--hnsw-max", str(args.hnsw_max),
                              "--hnsw-timeout", str(args.hnsw_timeout)],
                             capture_output=True, text=True, cwd=ROOT)
        if res.returncode:
            print(res.stderr[-2000:], file=sys.stderr)
            return 1
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"# {json.dumps(rows[-1])}; load average {os.getloadavg()[0]:.1f}", flush=True)
    head = ("data", "vectors", "insert/s", "ms during build (exact)", "HNSW build s",
            "recall@10", "HNSW ms", "HNSW filtered ms", "HNSW q/s", "Qdrant exact ms", "numpy exact ms",
            "numpy q/s", "open ms", "peak MB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['data']} | {r['n']:,} | {r['insert_per_s']:,.0f} | "
              f"{r['during_build_median_ms']:.1f} | {_fmt(r, 'hnsw_build_s', '.0f')} | "
              f"{_fmt(r, 'hnsw_recall_at_10', '.3f')} | {_fmt(r, 'hnsw_median_ms', '.2f')} | "
              f"{_fmt(r, 'hnsw_filtered_median_ms', '.2f')} | "
              f"{_fmt(r, 'hnsw_qps', ',.0f')} | {r['exact_median_ms']:.2f} | "
              f"{r['numpy_median_ms']:.2f} | {r['numpy_qps']:,.0f} | {r['open_ms']:.0f} | "
              f"{r['peak_rss_mb']:.0f} |")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
