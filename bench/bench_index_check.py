"""The cost of reading an index whole before trusting it (issue 25), side by side in one run.

    python bench/bench_index_check.py                # 20k random 512-d vectors
    python bench/bench_index_check.py --n 100000

Before an update, ``index`` used to scroll only the points' content hashes; it now runs
:func:`search.index.check_shard` (every payload scrolled whole, every vector scored once by an
exact scan), which finds a truncated vector file or an overwritten payload page. Prints the CPU,
both times (best of 3, the same open shard) and their ratio.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe_cpu  # noqa: E402
from search.index import check_shard, open_shard, shard_path, sync_shard  # noqa: E402


def content_hash_scroll(shard) -> dict:
    """What ``index`` read before: point id -> content hash, no vector, one payload field."""
    import qdrant_edge as q

    out, offset = {}, None
    while True:
        records, offset = shard.scroll(q.ScrollRequest(
            offset=offset, limit=4096, with_payload=q.PayloadSelector.Include(["content_hash"]),
            with_vector=False))
        out.update((r.id, (r.payload or {}).get("content_hash", "")) for r in records)
        if offset is None:
            return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    X = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
    payloads = [{"item_id": f"g/f{i}.wav", "content_hash": f"h{i}", "label": f"g{i % 5}",
                 "pair_id": "", "path": f"/x/g/f{i}.wav", "modality": "audio", "duration": 30.0}
                for i in range(args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "idx"
        sync_shard(folder, {"embedder": "bench", "version": "1", "options": {},
                            "modality": "audio"}, X, payloads, hnsw="off")
        shard = open_shard(shard_path(folder))
        times = {"scroll": [], "check": []}
        try:
            for _ in range(3):
                t0 = time.perf_counter()
                content_hash_scroll(shard)
                times["scroll"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                check_shard(shard, folder, args.dim)
                times["check"].append(time.perf_counter() - t0)
        finally:
            shard.close()
    old, new = min(times["scroll"]), min(times["check"])
    print(describe_cpu())
    print(f"{args.n} x {args.dim}: content-hash scroll {old:.2f} s, check_shard {new:.2f} s "
          f"(ratio {new / old:.2f})")


if __name__ == "__main__":
    main()
