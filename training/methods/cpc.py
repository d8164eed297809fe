"""Contrastive predictive coding (van den Oord et al. 2018) on the 16 kHz signal."""
from __future__ import annotations

from . import register
from .base import TrainingMethod


@register
class CPC(TrainingMethod):
    name = "cpc"

    def net_config(self, config, n_classes, pretrained=None):
        return {"enc_dim": 4 * config["width"], "ctx_dim": 4 * config["width"],
                "n_future": config["n_future"]}

    def loss(self, trainer, inputs, labels):
        from ..losses import cpc_loss

        z, c = trainer.net(trainer.to_device(inputs[0]))
        return cpc_loss(z.float(), c.float(), trainer.net.predictors)
