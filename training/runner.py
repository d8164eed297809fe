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

Methods (``--method``) are found through the registry of :mod:`training.methods`, one module
each: ``simsiam``, ``cpc`` (self-supervised), ``crnn`` and ``finetune`` (supervised: seeded
split by pair id, classifier, test metrics). A run is :func:`set_up` (settings, data, split,
trainer, run folder), :func:`fit` (the epochs) and, for a supervised method,
:func:`evaluate_test` (the best checkpoint on the test side); :func:`train` does all three.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from common.csvfile import write_csv
from common.fsutil import atomic_path, atomic_write_text
from common.progress import progress_bar
from embedders.base import resolve_device
from embedders.lib import trained_nets as tn
from . import data as D
from .methods import TrainingMethod, available_methods, get_method

METHODS = tuple(available_methods())
MIN_FILES = 4

DEFAULTS = {"method": "simsiam", "epochs": 10, "batch_size": 16, "lr": 1e-3, "seed": 0,
            "device": "cpu", "workers": 1, "width": 16, "depth": 3, "crop_seconds": 1.5,
            "clips_per_file": 1, "n_future": 4, "val_fraction": 0.15, "test_fraction": 0.15,
            "weight_decay": 1e-4, "model": "facebook/wav2vec2-base", "layer": -1,
            "freeze_feature_encoder": True}
#: Defaults that differ by method (each method's ``defaults``).
METHOD_DEFAULTS = {name: dict(cls.defaults) for name, cls in available_methods().items()
                   if cls.defaults}
#: Settings that may differ on --resume (everything else must match the run's config.json).
RESUMABLE_CHANGES = ("epochs", "device", "workers", "dataset", "out")


def resolve_config(config: dict) -> dict:
    """``config`` with the defaults filled in (the method's own first); ``None`` means "the
    default"; settings the method does not read are left out (so they are not in config.json)."""
    given = {k: v for k, v in config.items() if v is not None}
    method = get_method(given.get("method", DEFAULTS["method"]))
    full = {**DEFAULTS, **method.defaults, **given}
    return {k: v for k, v in full.items() if k not in method.ignores}


def net_config(config: dict, n_classes: int, hf: dict | None = None) -> dict:
    """Keyword arguments of the method's network; a method built on a pretrained model also
    needs ``hf``, what :func:`trained_nets.finetune_setup` says of it."""
    return get_method(config["method"]).net_config(config, n_classes, hf)


def crop_length(config: dict) -> int:
    """Frames (mel methods) or samples (cpc, finetune) of one training clip."""
    return get_method(config["method"]).crop_length(config)


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
        self.method = get_method(config["method"])
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
        self.length = self.method.crop_length(config)
        # mixed precision and pinned memory on CUDA only (CPU stays float32: exact resume)
        self.amp = device.startswith("cuda")

    def to_device(self, array):
        """A numpy array or CPU tensor on the run's device (pinned first on CUDA)."""
        t = self.torch.as_tensor(array)
        if self.amp:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def loss(self, batch: np.ndarray, labels: np.ndarray | None = None, *, inputs=None):
        """The method's loss on one batch of crops (numpy in, scalar tensor out); ``inputs``:
        the method's :meth:`~TrainingMethod.batch_inputs` of it, when already made."""
        torch = self.torch
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            if inputs is None:
                inputs = self.method.batch_inputs(batch, trainer=self, gen=self.gen)
            return self.method.loss(self, inputs, labels)

    def step(self, batch, labels=None, *, inputs=None) -> float:
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(batch, labels, inputs=inputs)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def input_length(self) -> int:
        """The length the data pipeline crops (SimSiam cuts its two views from a longer one)."""
        return self.method.input_length(self.length)

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

def _write_loss_files(out: Path, history: list[dict], *, val_loss: bool) -> None:
    """``loss.csv`` (a header only before the first epoch) and, once there is an epoch,
    ``loss.png``."""
    cols = ["epoch", "loss"] + (["val_loss"] if val_loss else [])
    write_csv(out / "loss.csv", ([row["epoch"]] + [float(row[c]) for c in cols[1:]]
                                 for row in history), header=cols)
    if not history:
        return
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


#: ``on_epoch_end(epoch)``: called after the checkpoint and loss files of each epoch are written.
EpochHook = Callable[[int], None]


@dataclass
class Run:
    """A run set up and ready to fit: its settings, data, trainer and where it stands."""

    config: dict
    method: TrainingMethod
    out: Path
    device: str
    trainer: Trainer
    #: What every checkpoint records besides the weights (network, classes, seen files).
    meta: dict
    classes: list[str]
    #: The examples of each side (``data.TRAIN``, ``VAL``, ``TEST``).
    by_side: dict[str, list]
    history: list[dict] = field(default_factory=list)
    best: float = float("inf")
    start_epoch: int = 0

    def labels(self, side: str) -> np.ndarray:
        """The class indices of one side's examples [shape=(n,)]."""
        return np.array([self.classes.index(ex.item.label) for ex in self.by_side[side]],
                        dtype=np.int64)

    def checkpoint(self, name: str, epoch: int, *, resumable: bool) -> None:
        _save_checkpoint(self.out / name, self.trainer, epoch=epoch, history=self.history,
                         best=self.best, meta=self.meta, resumable=resumable)


def _resume_checkpoint(config: dict, out: Path, resume: bool) -> dict | None:
    """``last.pt`` of the run being resumed (checked against ``config``), else None."""
    last = out / "last.pt"
    if not resume:
        if last.is_file():
            raise D.TrainingUsageError(f"{out} already holds a training run: pass --resume to "
                                       f"continue it, or choose another --out")
        return None
    if not last.is_file():
        raise D.TrainingUsageError(f"--resume: {last} does not exist (start without --resume)")
    ckpt = tn.read_checkpoint(last, method=config["method"])
    saved = json.loads(ckpt["config"])
    diff = sorted(k for k in saved if k not in RESUMABLE_CHANGES and saved[k] != config.get(k))
    if diff:
        raise D.TrainingUsageError(
            f"--resume: {', '.join(f'{k}={config.get(k)!r} (run has {saved[k]!r})' for k in diff)}"
            f" differ from the run in {out}")
    return ckpt


def _load_collection(config: dict, *, quiet: bool) -> tuple[list, list, list]:
    """The collection's items, the audio examples with their features, and the files skipped
    (``(id, reason)``, each said on stderr)."""
    method = config["method"]
    items, examples, skipped = D.load_examples(config["dataset"], method=method,
                                               workers=config["workers"], progress=not quiet)
    for item_id, reason in skipped:
        _say(f"skipped {item_id}: {reason}", quiet)
    if len(examples) < MIN_FILES:
        raise D.TrainingUsageError(
            f"{method} needs at least {MIN_FILES} readable audio files in class folders; "
            f"{config['dataset']} has {len(examples)}")
    return items, examples, skipped


def _assign_sides(method: TrainingMethod, config: dict, items: list, examples: list,
                  classes: list[str]) -> dict[str, str]:
    """Item id -> side. Supervised: the seeded split by pair id (every labelled item, MIDI
    twins too: the record for analysis). Self-supervised: every example trains, and so does
    the MIDI twin of a piece whose audio was seen."""
    if method.supervised:
        per_class = {c: len({ex.item.pair_id or ex.item.id for ex in examples
                             if ex.item.label == c}) for c in classes}
        if len(classes) < 2 or min(per_class.values()) < 3:
            raise D.TrainingUsageError(
                f"{method.name} is supervised: it needs at least 2 classes with at least 3 "
                f"audio pieces each; found {per_class or 'none'}")
        return D.split_by_pair([it for it in items if it.label], seed=config["seed"],
                               val_fraction=config["val_fraction"],
                               test_fraction=config["test_fraction"])
    side = {ex.item.id: D.TRAIN for ex in examples}
    pair_of = {ex.item.pair_id for ex in examples if ex.item.pair_id}
    for it in items:
        if it.pair_id in pair_of and it.id not in side:
            side[it.id] = D.TRAIN
    return side


def set_up(config: dict, *, resume: bool = False, quiet: bool = False) -> Run:
    """Everything before the first step: settings resolved and checked, the pretrained model
    (finetune) found before any audio is read, the collection loaded and split, the trainer
    built (or restored from ``last.pt``), and the run folder's ``config.json``, ``split.csv``,
    ``skipped.csv`` and (a new run) the epoch-0 checkpoints written. Raises as :func:`train`."""
    import torch

    method = get_method(config.get("method") or DEFAULTS["method"])
    config = resolve_config(config)
    out = Path(config["out"])
    ckpt = _resume_checkpoint(config, out, resume)
    hf, pretrained, identity = None, None, None
    if method.from_pretrained:
        if ckpt is None:
            hf, pretrained, identity = method.set_up_pretrained(config)
        else:
            identity = ckpt.get("pretrained")
    device = resolve_device(config["device"])
    torch.set_num_threads(max(1, torch.get_num_threads()))

    items, examples, skipped = _load_collection(config, quiet=quiet)
    classes = sorted({ex.item.label for ex in examples})
    side = _assign_sides(method, config, items, examples, classes)
    by_side = {s: [ex for ex in examples if side.get(ex.item.id) == s]
               for s in (D.TRAIN, D.VAL, D.TEST)}
    if len(by_side[D.TRAIN]) < 2:
        raise D.TrainingUsageError(f"{method.name}: only {len(by_side[D.TRAIN])} training files "
                                   f"after the split; at least 2 are needed")
    seen = sorted({it.content_hash for it in items if side.get(it.id) in (D.TRAIN, D.VAL)})
    net_cfg = (dict(ckpt["net_config"]) if ckpt is not None
               else method.net_config(config, len(classes), hf))
    trainer = Trainer(config, len(classes), device, net_cfg=net_cfg, pretrained=pretrained)
    run = Run(config=config, method=method, out=out, device=device, trainer=trainer,
              meta={"net_config": net_cfg, "classes": classes, "seen": seen,
                    "pretrained": identity},
              classes=classes, by_side=by_side)
    if ckpt is not None:
        trainer.net.load_state_dict(ckpt["model"])
        trainer.opt.load_state_dict(ckpt["optimizer"])
        trainer.set_rng_state(ckpt["rng"])
        run.history = json.loads(ckpt["history"])
        run.best, run.start_epoch = float(ckpt["best"]), int(ckpt["epoch"])
        _say(f"resuming {out} after epoch {run.start_epoch}", quiet)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(
        {**config, "device_resolved": device, "classes": classes,
         "n_train_files": len(by_side[D.TRAIN]), "frontend": tn.FRONTEND,
         "crop_length": trainer.length,
         **({"pretrained": identity} if method.from_pretrained else {})},
        indent=2, sort_keys=True))
    D.write_split(out / "split.csv", items, side)
    write_csv(out / "skipped.csv", skipped, header=("id", "reason"))
    if ckpt is None:  # epoch 0: the randomly initialised network, the control of every run
        run.checkpoint("last.pt", 0, resumable=True)
        run.checkpoint("best.pt", 0, resumable=False)
    return run


def _fit_epoch(run: Run, epoch: int, *, quiet: bool) -> list[float]:
    """One epoch of steps over the shuffled training examples; the loss of each step."""
    trainer, config = run.trainer, run.config
    train_ex, train_labels = run.by_side[D.TRAIN], run.labels(D.TRAIN)
    batches = epoch_batches(len(train_ex), config, trainer.rng)
    length_in = trainer.input_length()
    losses = []
    bar = progress_bar(len(batches), desc=f"{run.method.name} epoch {epoch + 1}/"
                       f"{config['epochs']}", unit="step", enabled=not quiet, leave=False)
    with bar:
        for idx in batches:
            batch = make_batch(train_ex, idx, trainer.rng, length_in)
            losses.append(trainer.step(batch, train_labels[idx]))
            bar.update(1)
            bar.set_postfix_str(f"loss {losses[-1]:.4f}")
    return losses


def fit(run: Run, *, quiet: bool = False, on_epoch_end: EpochHook | None = None) -> dict:
    """Train from ``run.start_epoch`` to ``config["epochs"]``; after every epoch ``last.pt``,
    ``best.pt`` (when the score improved: the validation loss of a supervised method, else the
    training loss) and the loss files are written. Returns the run's summary."""
    config, trainer = run.config, run.trainer
    val_ex, val_labels = run.by_side[D.VAL], run.labels(D.VAL)
    with_val = run.method.supervised and bool(val_ex)
    t0 = time.perf_counter()
    n_steps = 0
    for epoch in range(run.start_epoch, config["epochs"]):
        losses = _fit_epoch(run, epoch, quiet=quiet)
        n_steps += len(losses)
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
        if with_val:
            row["val_loss"], _ = evaluate_classifier(trainer.net, val_ex, val_labels,
                                                     trainer.length, run.device)
        run.history.append(row)
        _say(f"epoch {epoch + 1}/{config['epochs']}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"), quiet)
        score = row.get("val_loss", row["loss"])
        if score < run.best:
            run.best = score
            run.checkpoint("best.pt", epoch + 1, resumable=False)
        run.checkpoint("last.pt", epoch + 1, resumable=True)
        _write_loss_files(run.out, run.history, val_loss=with_val)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    seconds = time.perf_counter() - t0
    if not run.history:
        _write_loss_files(run.out, [], val_loss=run.method.supervised)
    return {"run": str(run.out), "method": run.method.name, "epochs": config["epochs"],
            "history": run.history, "train_seconds": seconds,
            "steps_per_second": n_steps / seconds if n_steps and seconds > 0 else None}


def evaluate_test(run: Run) -> dict:
    """A supervised run's test metrics from ``best.pt``, also written to
    ``test_metrics.json``."""
    best_ckpt = tn.read_checkpoint(run.out / "best.pt", method=run.method.name)
    net = tn.network_from_checkpoint(best_ckpt).to(run.device)
    test_ex, test_labels = run.by_side[D.TEST], run.labels(D.TEST)
    test_loss, pred = evaluate_classifier(net, test_ex, test_labels, run.trainer.length,
                                          run.device)
    metrics = {"test_accuracy": float(np.mean(pred == test_labels)),
               "test_macro_f1": macro_f1(test_labels, pred, len(run.classes)),
               "test_loss": test_loss, "n_test": len(test_ex), "chance": 1 / len(run.classes),
               "checkpoint": "best.pt", "best_epoch": int(best_ckpt["epoch"]),
               "classes": run.classes}
    atomic_write_text(run.out / "test_metrics.json", json.dumps(metrics, indent=2))
    return metrics


def train(config: dict, *, resume: bool = False, quiet: bool = False,
          on_epoch_end: EpochHook | None = None) -> dict:
    """Train (or resume) one run as ``config`` says; returns a summary (with the test metrics
    of a supervised method). ``on_epoch_end(epoch)`` is called after each epoch is saved.

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
    run = set_up(config, resume=resume, quiet=quiet)
    summary = fit(run, quiet=quiet, on_epoch_end=on_epoch_end)
    if run.method.supervised:
        summary.update(evaluate_test(run))
    return summary
