"""One training run: the loop, the run folder, checkpoints and resume.

Run folder ``RUN``::

    config.json        every setting of the run (as resolved)
    split.csv          every item of the collection and its side (train/val/test; unused)
    last.pt, best.pt   checkpoints, written atomically after every epoch
    loss.csv           epoch, loss (training, mean over steps) and val_loss where there is one
    loss.png           the same as a plot
    test_metrics.json  supervised methods: test_accuracy, test_macro_f1 (best checkpoint)
    skipped.csv        files left out, with the reason

``last.pt`` holds, besides the weights and the optimizer, every random state the run uses
(numpy's generator for order and crops, torch's generator for augmentations, torch's global
state for dropout, numpy's global state for the time masks wav2vec 2.0 draws in training), so
``--resume`` after a kill continues exactly where the last finished epoch left off: on CPU the
losses are those of an uninterrupted run, bit for bit. ``best.pt`` holds the weights without
the optimizer (it is never resumed from).

Methods: ``simsiam``, ``cpc`` (self-supervised), ``crnn`` and ``finetune`` (supervised: seeded
split by pair id, classifier, test metrics). ``finetune`` starts from a published
``transformers`` waveform encoder (``--model``: a Hugging Face id, resolved through the Hugging
Face cache, or a ``save_pretrained`` folder; see ``embedders.lib.hf_models``), pools one hidden
layer (``--layer``) over time and fits a linear head on top, the convolutional front-end frozen
unless ``--no-freeze-feature-encoder``; its ``--epochs 0`` control is the un-fine-tuned encoder.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from common.fsutil import atomic_path, atomic_write_text
from common.progress import progress_bar
from embedders.base import resolve_device
from embedders.lib import trained_nets as tn
from . import data as D

SUPERVISED = tn.SUPERVISED_METHODS
METHODS = tn.METHODS
#: Test hook: after writing the checkpoint of this epoch, wait (so a test can kill the process
#: at a known point).
HOLD_ENV = "EMBCOMPARE_TRAIN_HOLD_AFTER_EPOCH"
MIN_FILES = 4

DEFAULTS = {"method": "simsiam", "epochs": 10, "batch_size": 16, "lr": 1e-3, "seed": 0,
            "device": "cpu", "workers": 1, "width": 16, "depth": 3, "crop_seconds": 1.5,
            "clips_per_file": 1, "n_future": 4, "val_fraction": 0.15, "test_fraction": 0.15,
            "weight_decay": 1e-4, "model": "facebook/wav2vec2-base", "layer": -1,
            "freeze_feature_encoder": True}
#: Defaults that differ by method (a pretrained transformer wants a small learning rate and
#: longer clips).
METHOD_DEFAULTS = {"finetune": {"lr": 5e-5, "crop_seconds": 4.0}}
#: Settings only finetune reads, and those it does not.
FINETUNE_ONLY = ("model", "layer", "freeze_feature_encoder")
NOT_FOR_FINETUNE = ("width", "depth", "n_future")
#: Settings that may differ on --resume (everything else must match the run's config.json).
RESUMABLE_CHANGES = ("epochs", "device", "workers", "dataset", "out")


def resolve_config(config: dict) -> dict:
    """``config`` with the defaults filled in (the method's own first); ``None`` means "the
    default"; settings the method does not read are left out (so they are not in config.json)."""
    given = {k: v for k, v in config.items() if v is not None}
    method = given.get("method", DEFAULTS["method"])
    full = {**DEFAULTS, **METHOD_DEFAULTS.get(method, {}), **given}
    drop = NOT_FOR_FINETUNE if method == "finetune" else FINETUNE_ONLY
    return {k: v for k, v in full.items() if k not in drop}


def net_config(config: dict, n_classes: int, hf: dict | None = None) -> dict:
    """Keyword arguments of the method's network; ``finetune`` also needs ``hf``, what
    :func:`trained_nets.finetune_setup` says of the pretrained model."""
    m = config["method"]
    if m == "finetune":
        if hf is None:
            raise ValueError("finetune: the network is described by its pretrained model "
                             "(trained_nets.finetune_setup)")
        return {"hf_config": hf["hf_config"], "n_classes": n_classes, "layer": config["layer"],
                "do_normalize": hf["do_normalize"],
                "freeze_feature_encoder": bool(config["freeze_feature_encoder"])}
    if m == "simsiam":
        return {"width": config["width"], "depth": config["depth"]}
    if m == "crnn":
        return {"n_classes": n_classes, "width": config["width"], "depth": config["depth"]}
    return {"enc_dim": 4 * config["width"], "ctx_dim": 4 * config["width"],
            "n_future": config["n_future"]}


def crop_length(config: dict) -> int:
    """Frames (mel methods) or samples (cpc) of one training clip."""
    if config["method"] in tn.MEL_METHODS:
        return max(8, int(round(config["crop_seconds"] * tn.SR / tn.FRONTEND["hop_length"])))
    return max(2000, int(round(config["crop_seconds"] * tn.SR)))


def make_batch(examples, indices, rng: np.random.Generator, length: int) -> np.ndarray:
    """Random crops of ``length`` from the examples ``indices`` (the numpy data pipeline).

    Returns
    -------
    np.ndarray [shape=(len(indices), n_mels, length) or (len(indices), length), dtype=float32]
    """
    out = []
    for i in indices:
        f = examples[i].features
        start = int(rng.integers(0, max(1, f.shape[-1] - length + 1)))
        out.append(D.crop(f, start, length))
    return np.stack(out).astype(np.float32, copy=False)


def epoch_batches(n_train: int, config: dict, rng: np.random.Generator) -> list[np.ndarray]:
    """The shuffled batches of one epoch (indices into the training examples); a last batch of
    one is merged into the previous one (batch norm needs two)."""
    order = rng.permutation(np.repeat(np.arange(n_train), config["clips_per_file"]))
    bs = config["batch_size"]
    batches = [order[i:i + bs] for i in range(0, len(order), bs)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches[-2] = np.concatenate([batches[-2], batches.pop()])
    return batches


class Trainer:
    """Holds the network, optimizer and random states of a run; one step per batch."""

    def __init__(self, config: dict, n_classes: int, device: str, *,
                 net_cfg: dict | None = None, pretrained: str | os.PathLike | None = None):
        """``net_cfg``: the network's settings (default :func:`net_config`); ``pretrained``: a
        model folder whose encoder weights replace the random ones (finetune)."""
        import torch

        self.torch = torch
        self.config, self.device = config, device
        torch.manual_seed(config["seed"])
        np.random.seed(config["seed"] % 2 ** 32)  # wav2vec 2.0's training-time masks draw here
        self.net = tn.build_network(config["method"], net_cfg if net_cfg is not None
                                    else net_config(config, n_classes))
        if pretrained is not None:
            self.net.load_pretrained(pretrained)
        self.net.to(device)
        self.opt = torch.optim.AdamW([p for p in self.net.parameters() if p.requires_grad],
                                     lr=config["lr"], weight_decay=config["weight_decay"])
        self.rng = np.random.default_rng(config["seed"])
        self.gen = torch.Generator().manual_seed(config["seed"] + 1)
        self.length = crop_length(config)
        # mixed precision and pinned memory on CUDA only (CPU stays float32: exact resume)
        self.amp = device.startswith("cuda")

    def to_device(self, array: np.ndarray):
        t = self.torch.from_numpy(array)
        if self.amp:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def loss(self, batch: np.ndarray, labels: np.ndarray | None = None):
        """The method's loss on one batch of crops (numpy in, scalar tensor out)."""
        from .augment import random_view
        from .losses import cpc_loss, simsiam_loss
        import torch.nn.functional as F

        torch, m = self.torch, self.config["method"]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            if m == "simsiam":
                x = torch.from_numpy(batch)
                v1 = random_view(x, crop_frames=self.length, gen=self.gen)
                v2 = random_view(x, crop_frames=self.length, gen=self.gen)
                v1, v2 = v1.to(self.device), v2.to(self.device)
                z1, p1 = self.net(v1)
                z2, p2 = self.net(v2)
                return simsiam_loss(p1.float(), z1.float(), p2.float(), z2.float())
            x = self.to_device(batch)
            if m == "cpc":
                z, c = self.net(x)
                return cpc_loss(z.float(), c.float(), self.net.predictors)
            logits = self.net(x)
            return F.cross_entropy(logits.float(), self.to_device(labels))

    def step(self, batch, labels=None) -> float:
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(batch, labels)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def input_length(self) -> int:
        """SimSiam crops a 1.5x longer patch into its two views; the others use the crop."""
        return int(self.length * 1.5) if self.config["method"] == "simsiam" else self.length

    # -- random states ------------------------------------------------------------------------
    def rng_state(self) -> dict:
        torch = self.torch
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {"numpy": self.rng.bit_generator.state, "torch_generator": self.gen.get_state(),
                 "torch_global": torch.get_rng_state(),
                 "numpy_global": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                                  "pos": int(pos), "has_gauss": int(has_gauss),
                                  "cached_gaussian": float(gauss)}}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def set_rng_state(self, state: dict) -> None:
        torch = self.torch
        self.rng.bit_generator.state = state["numpy"]
        self.gen.set_state(state["torch_generator"])
        torch.set_rng_state(state["torch_global"])
        if "numpy_global" in state:  # absent from checkpoints of earlier versions
            g = state["numpy_global"]
            np.random.set_state((g["kind"], g["keys"].numpy().astype(np.uint32), g["pos"],
                                 g["has_gauss"], g["cached_gaussian"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _window_logits(net, features: np.ndarray, length: int, device: str, batch_size: int = 32):
    """Class logits of each window of one file, as float64 numpy [shape=(n_windows, n_classes)]."""
    import torch

    windows = D.windows(features, length).astype(np.float32)
    out = []
    with torch.inference_mode():
        for i in range(0, len(windows), batch_size):
            out.append(net(torch.from_numpy(windows[i:i + batch_size]).to(device))
                       .double().cpu().numpy())
    return np.concatenate(out)


def evaluate_classifier(net, examples, labels: np.ndarray, length: int, device: str
                        ) -> tuple[float, np.ndarray]:
    """Cross-entropy of the clip logits (mean over windows) and the predicted classes."""
    net.eval()
    logits = np.stack([_window_logits(net, ex.features, length, device).mean(axis=0)
                       for ex in examples])
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(labels)), labels].mean())
    return loss, logits.argmax(axis=1)


def macro_f1(true: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean over classes of F1 (a class absent from both counts as 0)."""
    scores = []
    for k in range(n_classes):
        tp = np.sum((pred == k) & (true == k))
        fp = np.sum((pred == k) & (true != k))
        fn = np.sum((pred != k) & (true == k))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


# -- run folder -----------------------------------------------------------------------------------

def _write_loss_files(out: Path, history: list[dict]) -> None:
    cols = ["epoch", "loss"] + (["val_loss"] if history and "val_loss" in history[0] else [])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in history:
        w.writerow([row["epoch"]] + [repr(float(row[c])) for c in cols[1:]])
    atomic_write_text(out / "loss.csv", buf.getvalue())
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for c in cols[1:]:
        ax.plot([r["epoch"] for r in history], [r[c] for r in history], marker="o", label=c)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "loss.png", suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _save_checkpoint(path: Path, trainer: Trainer, *, epoch: int, history: list, best: float,
                     meta: dict, resumable: bool = True) -> None:
    """One checkpoint; ``resumable=False`` (best.pt) leaves out the optimizer's state."""
    torch = trainer.torch
    state = {"format": tn.CHECKPOINT_FORMAT, "format_version": tn.CHECKPOINT_VERSION,
             "method": trainer.config["method"], "net_config": meta["net_config"],
             "frontend": dict(tn.FRONTEND), "crop_length": trainer.length,
             "classes": meta["classes"], "seen_content_hashes": meta["seen"],
             "pretrained": meta.get("pretrained"),
             "config": json.dumps(trainer.config, sort_keys=True),
             "model": {k: v.detach().cpu() for k, v in trainer.net.state_dict().items()},
             "rng": trainer.rng_state(),
             "epoch": epoch, "history": json.dumps(history), "best": best}
    if resumable:
        state["optimizer"] = trainer.opt.state_dict()
    with atomic_path(path, suffix=".tmp.pt") as tmp:
        torch.save(state, tmp)


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def train(config: dict, *, resume: bool = False, quiet: bool = False) -> dict:
    """Train (or resume) one run as ``config`` says; returns a summary.

    Raises
    ------
    data.TrainingUsageError
        Too few files, one class for a supervised method, a run folder already in use,
        settings that differ from the run being resumed (one line, exit status 2).
    trained_nets.CheckpointError
        ``--resume`` from a corrupt checkpoint or one of another method.
    embedders.WeightsError, embedders.ConfigurationError
        finetune: the pretrained model cannot be found (not cached while offline, no such
        folder) or does not fit (not a waveform encoder, layer out of range, crop too short).
    """
    import torch

    config = resolve_config(config)
    method = config["method"]
    if method not in METHODS:
        raise D.TrainingUsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    out = Path(config["out"])
    last = out / "last.pt"
    ckpt = None
    if resume:
        if not last.is_file():
            raise D.TrainingUsageError(f"--resume: {last} does not exist (start without --resume)")
        ckpt = tn.read_checkpoint(last, method=method)
        saved = json.loads(ckpt["config"])
        diff = sorted(k for k in saved if k not in RESUMABLE_CHANGES and saved[k] != config.get(k))
        if diff:
            raise D.TrainingUsageError(
                f"--resume: {', '.join(f'{k}={config.get(k)!r} (run has {saved[k]!r})' for k in diff)}"
                f" differ from the run in {out}")
    elif last.is_file():
        raise D.TrainingUsageError(f"{out} already holds a training run: pass --resume to "
                                   f"continue it, or choose another --out")
    hf, pretrained, pretrained_identity = None, None, None
    if method == "finetune":
        if ckpt is None:  # find and check the published weights before reading any audio
            from embedders.lib.hf_models import resolve_model
            pretrained, pretrained_identity = resolve_model(
                str(config["model"]), who="finetune", local_option="--model PATH")
            hf = tn.finetune_setup(pretrained, layer=config["layer"],
                                   crop_samples=crop_length(config))
        else:
            pretrained_identity = ckpt.get("pretrained")
    device = resolve_device(config["device"])
    torch.set_num_threads(max(1, torch.get_num_threads()))

    items, examples, skipped = D.load_examples(config["dataset"], method=method,
                                               workers=config["workers"], progress=not quiet)
    for item_id, reason in skipped:
        _say(f"skipped {item_id}: {reason}", quiet)
    if len(examples) < MIN_FILES:
        raise D.TrainingUsageError(
            f"{method} needs at least {MIN_FILES} readable audio files in class folders; "
            f"{config['dataset']} has {len(examples)}")
    classes = sorted({ex.item.label for ex in examples})
    if method in SUPERVISED:
        per_class = {c: len({ex.item.pair_id or ex.item.id for ex in examples
                             if ex.item.label == c}) for c in classes}
        if len(classes) < 2 or min(per_class.values()) < 3:
            raise D.TrainingUsageError(
                f"{method} is supervised: it needs at least 2 classes with at least 3 audio "
                f"pieces each; found {per_class or 'none'}")
        # every labelled item gets its piece's side (MIDI twins too: the record for analysis)
        side = D.split_by_pair([it for it in items if it.label], seed=config["seed"],
                               val_fraction=config["val_fraction"],
                               test_fraction=config["test_fraction"])
    else:
        side = {ex.item.id: D.TRAIN for ex in examples}
        pair_of = {ex.item.pair_id for ex in examples if ex.item.pair_id}
        for it in items:  # the MIDI twin of a seen piece: its music was seen
            if it.pair_id in pair_of and it.id not in side:
                side[it.id] = D.TRAIN
    by_side = {s: [ex for ex in examples if side.get(ex.item.id) == s]
               for s in (D.TRAIN, D.VAL, D.TEST)}
    train_ex = by_side[D.TRAIN]
    if len(train_ex) < 2:
        raise D.TrainingUsageError(f"{method}: only {len(train_ex)} training files after the "
                                   f"split; at least 2 are needed")
    class_index = {c: i for i, c in enumerate(classes)}
    train_labels = np.array([class_index[ex.item.label] for ex in train_ex])
    seen = sorted({it.content_hash for it in items if side.get(it.id) in (D.TRAIN, D.VAL)})

    net_cfg = dict(ckpt["net_config"]) if ckpt is not None else net_config(config, len(classes), hf)
    trainer = Trainer(config, len(classes), device, net_cfg=net_cfg, pretrained=pretrained)
    meta = {"net_config": net_cfg, "classes": classes, "seen": seen,
            "pretrained": pretrained_identity}
    history: list[dict] = []
    best = float("inf")
    start_epoch = 0
    if ckpt is not None:
        trainer.net.load_state_dict(ckpt["model"])
        trainer.opt.load_state_dict(ckpt["optimizer"])
        trainer.set_rng_state(ckpt["rng"])
        history = json.loads(ckpt["history"])
        best, start_epoch = float(ckpt["best"]), int(ckpt["epoch"])
        _say(f"resuming {out} after epoch {start_epoch}", quiet)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(
        {**config, "device_resolved": device, "classes": classes, "n_train_files": len(train_ex),
         "frontend": tn.FRONTEND, "crop_length": trainer.length,
         **({"pretrained": pretrained_identity} if method == "finetune" else {})},
        indent=2, sort_keys=True))
    D.write_split(out / "split.csv", items, side)
    atomic_write_text(out / "skipped.csv", "id,reason\n" + "".join(
        f"{json.dumps(i)},{json.dumps(r)}\n" for i, r in skipped))
    if ckpt is None:  # epoch 0: the randomly initialised network, the control of every run
        _save_checkpoint(last, trainer, epoch=0, history=history, best=best, meta=meta)
        _save_checkpoint(out / "best.pt", trainer, epoch=0, history=history, best=best, meta=meta,
                         resumable=False)

    val_ex = by_side[D.VAL]
    val_labels = np.array([class_index[ex.item.label] for ex in val_ex])
    length_in = trainer.input_length()
    t0 = time.perf_counter()
    n_steps = 0
    for epoch in range(start_epoch, config["epochs"]):
        batches = epoch_batches(len(train_ex), config, trainer.rng)
        losses = []
        bar = progress_bar(len(batches), desc=f"{method} epoch {epoch + 1}/{config['epochs']}",
                           unit="step", enabled=not quiet, leave=False)
        with bar:
            for idx in batches:
                batch = make_batch(train_ex, idx, trainer.rng, length_in)
                losses.append(trainer.step(batch, train_labels[idx]))
                n_steps += 1
                bar.update(1)
                bar.set_postfix_str(f"loss {losses[-1]:.4f}")
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
        score = row["loss"]
        if method in SUPERVISED and val_ex:
            row["val_loss"], _ = evaluate_classifier(trainer.net, val_ex, val_labels,
                                                     trainer.length, device)
            score = row["val_loss"]
        history.append(row)
        _say(f"epoch {epoch + 1}/{config['epochs']}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"), quiet)
        if score < best:
            best = score
            _save_checkpoint(out / "best.pt", trainer, epoch=epoch + 1, history=history,
                             best=best, meta=meta, resumable=False)
        _save_checkpoint(last, trainer, epoch=epoch + 1, history=history, best=best, meta=meta)
        _write_loss_files(out, history)
        if os.environ.get(HOLD_ENV) == str(epoch + 1):
            print(f"holding after epoch {epoch + 1}", flush=True)
            time.sleep(600)
    seconds = time.perf_counter() - t0
    if not history:
        atomic_write_text(out / "loss.csv", "epoch,loss" + (",val_loss" if method in SUPERVISED
                                                             else "") + "\n")
    summary = {"run": str(out), "method": method, "epochs": config["epochs"],
               "history": history, "train_seconds": seconds,
               "steps_per_second": n_steps / seconds if n_steps and seconds > 0 else None}
    if method in SUPERVISED:
        best_ckpt = tn.read_checkpoint(out / "best.pt", method=method)
        net = tn.network_from_checkpoint(best_ckpt).to(device)
        test_ex = by_side[D.TEST]
        test_labels = np.array([class_index[ex.item.label] for ex in test_ex])
        test_loss, pred = evaluate_classifier(net, test_ex, test_labels, trainer.length, device)
        metrics = {"test_accuracy": float(np.mean(pred == test_labels)),
                   "test_macro_f1": macro_f1(test_labels, pred, len(classes)),
                   "test_loss": test_loss, "n_test": len(test_ex), "chance": 1 / len(classes),
                   "checkpoint": "best.pt", "best_epoch": int(best_ckpt["epoch"]),
                   "classes": classes}
        atomic_write_text(out / "test_metrics.json", json.dumps(metrics, indent=2))
        summary.update(metrics)
    return summary
