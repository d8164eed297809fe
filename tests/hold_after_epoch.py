"""Test driver: ``python tests/hold_after_epoch.py EPOCH TRAIN_ARGS...`` runs ``main.py train
TRAIN_ARGS`` with an ``on_epoch_end`` hook injected into :func:`training.runner.train`: once the
checkpoint and loss files of epoch EPOCH are written it prints ``holding after epoch EPOCH`` and
waits, so a test can kill the process (SIGKILL) at a known point. The hook lives here, not in
the training loop."""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import training.runner as runner  # noqa: E402
from cli import main  # noqa: E402


def run_holding(after_epoch: int, train_args: list[str]) -> int:
    real_train = runner.train

    def hold(epoch: int) -> None:
        if epoch == after_epoch:
            print(f"holding after epoch {epoch}", flush=True)
            time.sleep(600)

    runner.train = lambda config, **kw: real_train(config, on_epoch_end=hold, **kw)
    return main(["train", *train_args])


if __name__ == "__main__":
    sys.exit(run_holding(int(sys.argv[1]), sys.argv[2:]))
