"""``python main.py train ...``: params files expanded here (the ``cli`` layer), then handed to
:mod:`training.cli`, which sits below ``cli`` and may not import it."""
from __future__ import annotations

from .params import expand_argv


def main(argv: list[str]) -> int:
    from training.cli import main as train_main
    return train_main(expand_argv(list(argv)))
