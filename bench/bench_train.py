"""Training steps/s with the real data pipeline vs the same batches already in memory.

One run, alternating: (a) the pipeline ``train`` uses (random crops cut from the cached feature
arrays, stacked, turned into tensors; SimSiam's views made per step), (b) the identical batches
built beforehand and only fed to the network. Ratio a/b >= 0.8 means data loading is not the
bottleneck. Uses a generated corpus (``tests/train_corpus.py``) in a temporary folder.

    python bench/bench_train.py [--method simsiam|cpc|crnn] [--steps 20] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from machine import describe_cpu  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="simsiam", choices=("simsiam", "cpc", "crnn"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    import torch
    from train_corpus import make_pulse_corpus
    from training import data as D
    from training.runner import DEFAULTS, Trainer, epoch_batches, make_batch

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("EMBCOMPARE_CACHE_DIR", os.path.join(tmp, "cache"))
        make_pulse_corpus(os.path.join(tmp, "data"), n_per_class=10)
        _, examples, _ = D.load_examples(os.path.join(tmp, "data"), method=args.method,
                                         progress=False)
        config = {**DEFAULTS, "method": args.method, "batch_size": args.batch_size,
                  "clips_per_file": 8}
        labels = np.array([sorted({e.item.label for e in examples}).index(e.item.label)
                           for e in examples])
        trainer = Trainer(config, 3, "cpu")
        rng = np.random.default_rng(0)
        index = [b for b in epoch_batches(len(examples), config, rng)][:args.steps]
        length = trainer.input_length()
        ready = [make_batch(examples, idx, np.random.default_rng(1), length) for idx in index]
        timings = {"pipeline": [], "in memory": []}
        for _ in range(args.repeat):
            for mode in timings:
                t = time.perf_counter()
                for i, idx in enumerate(index):
                    batch = (make_batch(examples, idx, rng, length) if mode == "pipeline"
                             else ready[i])
                    trainer.step(batch, labels[idx])
                timings[mode].append(len(index) / (time.perf_counter() - t))
    best = {k: max(v) for k, v in timings.items()}
    print(f"{args.method}, batch {args.batch_size}, {len(index)} steps, best of {args.repeat}; "
          f"CPU {describe_cpu()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")
    for k, v in best.items():
        print(f"  {k:10s} {v:7.2f} steps/s")
    print(f"  ratio pipeline / in memory: {best['pipeline'] / best['in memory']:.3f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
