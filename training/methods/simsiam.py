"""SimSiam (Chen & He 2021): two random views of one crop, negative cosine with stop-gradient."""
from __future__ import annotations

from . import register
from .base import TrainingMethod


@register
class SimSiam(TrainingMethod):
    name = "simsiam"

    def net_config(self, config, n_classes, pretrained=None):
        return {"width": config["width"], "depth": config["depth"]}

    def input_length(self, crop_length: int) -> int:
        """A 1.5x longer patch, from which the two views are cropped."""
        return int(crop_length * 1.5)

    def batch_inputs(self, batch, *, trainer, gen):
        import torch
        from .. import augment  # looked up at call time: a bench may stand in for random_view

        x = torch.from_numpy(batch)
        return [augment.random_view(x, crop_frames=trainer.length, gen=gen) for _ in range(2)]

    def loss(self, trainer, inputs, labels):
        from ..losses import simsiam_loss

        v1, v2 = (v.to(trainer.device) for v in inputs)
        z1, p1 = trainer.net(v1)
        z2, p2 = trainer.net(v2)
        return simsiam_loss(p1.float(), z1.float(), p2.float(), z2.float())
