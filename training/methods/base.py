"""The contract every training method follows.

A method says which settings it reads (:attr:`TrainingMethod.ignores`, :attr:`~TrainingMethod.
defaults`), how its network is configured (:meth:`~TrainingMethod.net_config`), what the network
reads of one batch (:meth:`~TrainingMethod.batch_inputs`, the last stage of the data pipeline)
and its loss (:meth:`~TrainingMethod.loss`). Whether it works on log-mel frames or on the 16 kHz
signal, and whether it is supervised, is read from ``embedders.lib.trained_nets`` (the networks'
side, which the ``trained`` embedder also reads), so it is said once.
"""
from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from embedders.lib import trained_nets as tn

#: Settings only a method built on a pretrained model reads.
PRETRAINED_SETTINGS = ("model", "layer", "freeze_feature_encoder")
#: Settings of the networks built here from scratch.
SCRATCH_SETTINGS = ("width", "depth", "n_future")


class TrainingMethod:
    """One way of training an encoder: a network, its inputs and its loss.

    Subclasses set :attr:`name` and implement :meth:`net_config` and :meth:`loss`.
    """

    #: The method's name (``--method``); also the network's name in ``trained_nets``.
    name: ClassVar[str] = ""
    #: Defaults that differ from ``runner.DEFAULTS`` for this method.
    defaults: ClassVar[dict[str, Any]] = {}
    #: Settings this method does not read: left out of its ``config.json``.
    ignores: ClassVar[tuple[str, ...]] = PRETRAINED_SETTINGS
    #: Whether the network starts from a published pretrained model (``--model``).
    from_pretrained: ClassVar[bool] = False

    @property
    def supervised(self) -> bool:
        """Trained on the labels (seeded split, classifier, test metrics)."""
        return self.name in tn.SUPERVISED_METHODS

    @property
    def mel(self) -> bool:
        """Reads log-mel frames (else the 16 kHz signal)."""
        return self.name in tn.MEL_METHODS

    def crop_length(self, config: dict) -> int:
        """Frames (mel methods) or samples (the others) of one training clip."""
        if self.mel:
            return max(8, int(round(config["crop_seconds"] * tn.SR / tn.FRONTEND["hop_length"])))
        return max(2000, int(round(config["crop_seconds"] * tn.SR)))

    def input_length(self, crop_length: int) -> int:
        """Length of the crops the data pipeline cuts (the method may cut views from them)."""
        return crop_length

    def net_config(self, config: dict, n_classes: int, pretrained: dict | None = None) -> dict:
        """Keyword arguments of the method's network (``trained_nets.build_network``);
        ``pretrained``: what :meth:`set_up_pretrained` found, for a method built on one."""
        raise NotImplementedError

    def set_up_pretrained(self, config: dict
                          ) -> tuple[dict | None, str | os.PathLike | None, Any]:
        """``(description, folder, identity)`` of the pretrained model; ``(None, None, None)``
        for a method trained from scratch."""
        return None, None, None

    def batch_inputs(self, batch: np.ndarray, *, trainer, gen) -> list:
        """The CPU tensors the network reads for one batch of crops (``gen``: the torch
        generator of the random augmentations)."""
        import torch
        return [torch.from_numpy(batch)]

    def loss(self, trainer, inputs: list, labels: np.ndarray | None):
        """The method's loss on :meth:`batch_inputs` (scalar tensor)."""
        raise NotImplementedError


class ClassifierMethod(TrainingMethod):
    """A supervised method: the network outputs class logits, the loss is cross-entropy."""

    def loss(self, trainer, inputs, labels):
        import torch.nn.functional as F

        logits = trainer.net(trainer.to_device(inputs[0]))
        return F.cross_entropy(logits.float(), trainer.to_device(labels))
