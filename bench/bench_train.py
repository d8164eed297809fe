"""Training steps/s with the real data pipeline vs the same batches already in memory, for every
training method, side by side in one run.

For each method, blocks of ``--steps`` training steps of two kinds:

(a) *pipeline*: what ``train`` does per step -- random crops cut from the cached feature arrays,
    stacked into one float32 array (``runner.make_batch``), then the step, which for SimSiam
    also draws the two augmented views (``training/augment.py``);
(b) *in memory*: the identical batches (and SimSiam's views) built beforehand, so only the
    network, the loss and the optimizer run.

The blocks come in adjacent pairs on the same batches, a/b then b/a, ..., rotating over the
methods, so the load of a shared machine falls on both sides alike; each pair gives one ratio
a/b (each pair moves on to the next batches of the epoch). The table shows the median ratio
over ``--repeat`` pairs with its range, and the same median for the CPU time this process used
(less sensitive to other processes than wall-clock time). Ratio >= 0.8: data loading is not
the bottleneck. Because these ratios are noisy on a loaded machine (a step of the default
networks takes about a second there), the pipeline is also timed *alone* (crops, stacking and
SimSiam's views, no network) in the same rotation: ``step / (step + pipeline alone)`` is the
ratio that cost implies, free of the network's noise. Last column: reading the whole corpus's
features back from the (warm) feature cache, which ``train`` does once per run, before the
first step.

Uses a generated corpus (``tests/train_corpus.py``, 30 files of 2.5 s) in a temporary folder
and the methods' default networks (``training.runner.DEFAULTS``); finetune uses a small random
wav2vec 2.0 built in the temporary folder unless ``--finetune-model`` names one.

    python bench/bench_train.py [--methods simsiam cpc crnn finetune] [--steps 1]
                                [--repeat 12] [--batch-size 16] [--threads N]
                                [--finetune-model PATH]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from machine import describe_cpu  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

#: Benchmarked methods and the settings each adds to ``runner.DEFAULTS`` (a method whose
#: ``Trainer`` takes the same ``step(batch, labels)`` needs only its line here).
METHODS = {
    "simsiam": {},
    "cpc": {},
    "crnn": {},
    # clips of the generated corpus are 2.5 s; "model" is filled in by main()
    "finetune": {"crop_seconds": 2.0},
}


def small_wav2vec2(folder: str) -> str:
    """A wav2vec 2.0 of reduced width (4 layers of 256, convolutions of 128 channels) with random
    weights, saved locally: the bench measures the data pipeline, so published weights (a
    download) are not needed; ``--finetune-model`` takes a real one."""
    import torch
    import transformers

    cfg = transformers.Wav2Vec2Config(hidden_size=256, num_hidden_layers=4,
                                      num_attention_heads=4, intermediate_size=1024,
                                      conv_dim=(128,) * 7)
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(cfg).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True,
                                          return_attention_mask=False).save_pretrained(folder)
    return folder


def block(trainer, examples, labels, index, rng, ready) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process, all threads) per step of one block: from the
    pipeline when ``ready`` is None, else from memory (the network's inputs already made)."""
    from training.runner import make_batch

    length = trainer.input_length()
    t, c = time.perf_counter(), time.process_time()
    for i, idx in enumerate(index):
        if ready is None:
            trainer.step(make_batch(examples, idx, rng, length), labels[idx])
        else:
            trainer.step(None, labels[idx], inputs=ready[i])
    return ((time.perf_counter() - t) / len(index), (time.process_time() - c) / len(index))


def pipeline_alone(trainer, examples, index, rng, rounds: int = 5) -> float:
    """Seconds per step of the pipeline without the network: crops, stack, the method's inputs
    (SimSiam: its two views)."""
    from training.runner import make_batch

    length = trainer.input_length()
    t = time.perf_counter()
    for _ in range(rounds):
        for idx in index:
            trainer.method.batch_inputs(make_batch(examples, idx, rng, length), trainer=trainer,
                                        gen=trainer.gen)
    return (time.perf_counter() - t) / (rounds * len(index))


def prepare(method: str, data: str, args):
    """The trainer, examples, labels, batch indices and ready inputs of one method, plus the
    seconds it took to read the features back from the warm cache."""
    import torch
    from training import data as D
    from training.runner import Trainer, epoch_batches, make_batch, resolve_config

    D.load_examples(data, method=method, progress=False)  # fills the feature cache
    t = time.perf_counter()
    _, examples, _ = D.load_examples(data, method=method, progress=False)
    cache_s = time.perf_counter() - t
    config = resolve_config({**METHODS[method], "method": method,
                             "batch_size": args.batch_size, "clips_per_file": 8})
    classes = sorted({e.item.label for e in examples})
    labels = np.array([classes.index(e.item.label) for e in examples])
    # as train() does: a method built on a pretrained model is described by it
    from training.methods import get_method
    spec = get_method(method)
    hf, folder, _ = spec.set_up_pretrained(config)
    trainer = Trainer(config, len(classes), "cpu", pretrained=folder,
                      net_cfg=spec.net_config(config, len(classes), hf))
    n = min(args.steps * args.repeat, len(examples) * config["clips_per_file"] // args.batch_size)
    index = epoch_batches(len(examples), config, np.random.default_rng(0))[:n]
    length = trainer.input_length()
    gen = torch.Generator().manual_seed(2)
    ready = [spec.batch_inputs(make_batch(examples, idx, np.random.default_rng(1), length),
                               trainer=trainer, gen=gen) for idx in index]
    return {"trainer": trainer, "examples": examples, "labels": labels, "index": index,
            "ready": ready, "rng": np.random.default_rng(3), "cache_s": cache_s,
            "n_files": len(examples), "config": config}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--steps", type=int, default=1, help="steps per timed block")
    ap.add_argument("--repeat", type=int, default=12, help="(pipeline, in memory) pairs")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--finetune-model", default=None,
                    help="folder or cached Hugging Face id for finetune (default: a small "
                         "random wav2vec 2.0 built here)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's); 1 steadies the figures on a shared "
                         "machine, where a second thread waiting for a busy core makes small "
                         "operations 10-20x slower now and then")
    args = ap.parse_args()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from train_corpus import make_corpus

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EMBCOMPARE_CACHE_DIR"] = os.path.join(tmp, "cache")
        data = os.path.join(tmp, "data")
        make_corpus(data, factor="all", n_per_class=10)
        from training.methods import get_method
        pretrained = [m for m in args.methods if get_method(m).from_pretrained]
        if pretrained:
            model = args.finetune_model or small_wav2vec2(os.path.join(tmp, "wav2vec2"))
            for m in pretrained:
                METHODS[m]["model"] = model
        runs = {m: prepare(m, data, args) for m in args.methods}
        for r in runs.values():  # warm-up: first-call allocations belong to neither side
            block(r["trainer"], r["examples"], r["labels"], r["index"][:1], r["rng"], None)
        times = {m: {"pipeline": [], "memory": [], "alone": []} for m in runs}
        for rep in range(args.repeat):
            for m, r in runs.items():
                times[m]["alone"].append(pipeline_alone(r["trainer"], r["examples"],
                                                        r["index"][:4], r["rng"]))
                order = ("pipeline", "memory") if rep % 2 == 0 else ("memory", "pipeline")
                for mode in order:
                    # the same batches on both sides of a pair; the next pair takes the next
                    mem = mode == "memory"
                    sel = [(rep * args.steps + j) % len(r["index"]) for j in range(args.steps)]
                    times[m][mode].append(block(
                        r["trainer"], r["examples"], r["labels"], [r["index"][i] for i in sel],
                        r["rng"], [r["ready"][i] for i in sel] if mem else None))
    print(f"CPU {describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    print(f"batch {args.batch_size}, {args.steps} steps per block, {args.repeat} alternating "
          f"pairs; {next(iter(runs.values()))['n_files']} files of 2.5 s; default networks\n")
    print("| method | input | pipeline steps/s | in memory steps/s | ratio (median, range) "
          "| ratio of CPU time | pipeline alone, ms/step | implied ratio | features from cache |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, r in runs.items():
        p, q = times[m]["pipeline"], times[m]["memory"]
        ratios = [b[0] / a[0] for a, b in zip(p, q)]          # steps/s pipeline / in memory
        cpu = statistics.median(b[1] / a[1] for a, b in zip(p, q))
        alone = statistics.median(times[m]["alone"])
        step = statistics.median(b[0] for b in q)
        crop = r["trainer"].input_length()
        unit = "frames" if r["trainer"].method.mel else "samples"
        print(f"| {m} | {crop} {unit} | {1 / statistics.median(a[0] for a in p):.2f} "
              f"| {1 / step:.2f} | **{statistics.median(ratios):.2f}** "
              f"({min(ratios):.2f}-{max(ratios):.2f}) | {cpu:.2f} | {alone * 1000:.1f} "
              f"| {step / (step + alone):.3f} | {r['cache_s'] * 1000:.0f} ms |")
    print("\ngoal: ratio >= 0.8 (the pipeline costs at most a fifth of a step)")


if __name__ == "__main__":
    main()
