"""``python main.py train --method simsiam|cpc|crnn|finetune --dataset DATA --out RUN [...]``."""
from __future__ import annotations

import argparse
import json
import sys

from collection.sources import (SOURCE_DESTS, SourceError, add_source_arguments,
                                source_from_args)
from common.exits import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK,  # noqa: F401 (as before)
                          EXIT_USAGE, OneLineParser, UsageError, fail)
from common.exits import program_name
from embedders import ConfigurationError, WeightsError
from embedders.lib.trained_nets import CheckpointError
from .data import TrainingUsageError
from .runner import DEFAULTS, METHOD_DEFAULTS, METHODS

PROG = program_name("train")


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    ft = METHOD_DEFAULTS["finetune"]
    p = OneLineParser(prog=PROG, description="Train an encoder on a collection; the run "
                      "folder is then an embedder: --embedders trained --set "
                      "trained.checkpoint=RUN")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--dataset", metavar="DATA", help="collection folder (or --manifest / "
                   "--mirdata; a manifest's split column, when every row has one, is the split)")
    add_source_arguments(p.add_argument_group("collection as a list instead of --dataset"))
    p.add_argument("--out", required=True, metavar="RUN", help="run folder")
    p.add_argument("--epochs", type=int, default=d["epochs"],
                   help="0 writes the randomly initialised network (the control)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--lr", type=float, default=None,
                   help=f"learning rate (default {d['lr']:g}; finetune {ft['lr']:g})")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--device", default=d["device"], help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--workers", type=int, default=d["workers"],
                   help="threads computing features on the first run (then cached)")
    p.add_argument("--resume", action="store_true", help="continue RUN from last.pt")
    p.add_argument("--width", type=int, default=d["width"], help="channels of the first block")
    p.add_argument("--depth", type=int, default=d["depth"], help="conv / residual blocks")
    p.add_argument("--crop-seconds", type=float, default=None,
                   help=f"length of one training clip (default {d['crop_seconds']:g}; "
                        f"finetune {ft['crop_seconds']:g})")
    p.add_argument("--clips-per-file", type=int, default=d["clips_per_file"],
                   help="random clips drawn from each file per epoch")
    p.add_argument("--n-future", type=int, default=d["n_future"], help="cpc: steps predicted")
    p.add_argument("--model", default=d["model"], metavar="NAME_OR_PATH",
                   help="finetune: the pretrained encoder, a Hugging Face id (from the Hugging "
                        "Face cache; downloaded once when online) or a save_pretrained folder")
    p.add_argument("--layer", type=int, default=d["layer"],
                   help="finetune: hidden state pooled into the embedding (0 = transformer "
                        "input, -1 = last)")
    p.add_argument("--freeze-feature-encoder", action=argparse.BooleanOptionalAction,
                   default=d["freeze_feature_encoder"],
                   help="finetune: keep the convolutional front-end fixed")
    p.add_argument("--val-fraction", type=float, default=d["val_fraction"])
    p.add_argument("--test-fraction", type=float, default=d["test_fraction"])
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str]) -> int:
    """Run the subcommand; ``argv`` has params files already expanded (see ``cli.train``)."""
    try:
        args = build_parser().parse_args(argv)
        checks = {"--epochs": args.epochs >= 0, "--batch-size": args.batch_size >= 2,
                  "--lr": args.lr is None or args.lr > 0, "--workers": args.workers >= 1,
                  "--width": args.width >= 1, "--depth": args.depth >= 1,
                  "--crop-seconds": args.crop_seconds is None or args.crop_seconds > 0,
                  "--model": bool(str(args.model).strip()), "--clips-per-file":
                  args.clips_per_file >= 1, "--n-future": args.n_future >= 1,
                  "--val-fraction/--test-fraction":
                  0 < args.val_fraction and 0 < args.test_fraction
                  and args.val_fraction + args.test_fraction < 0.9}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"out of range: {', '.join(bad)} (batch size >= 2, epochs >= 0, "
                             f"positive lr/width/depth/crop)")
        try:
            source = source_from_args(args)
        except SourceError as exc:
            raise UsageError(str(exc)) from None
        config = {k: v for k, v in vars(args).items()
                  if k not in ("resume", "quiet", *SOURCE_DESTS)}
        config["dataset"] = source.to_config()  # a folder stays a plain path
        from .runner import train
        summary = train(config, resume=args.resume, quiet=args.quiet)
    except (UsageError, TrainingUsageError, CheckpointError, ConfigurationError,
            WeightsError) as exc:
        return fail(PROG, exc, EXIT_USAGE)
    except KeyboardInterrupt:
        print("\ninterrupted: the last finished epoch is in RUN/last.pt; run the same command "
              "with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        keep = {k: v for k, v in summary.items() if k != "history"}
        print(json.dumps(keep, indent=2))
    return EXIT_OK
