"""A convolutional-recurrent classifier of log-mel frames, trained on the labels."""
from __future__ import annotations

from . import register
from .base import ClassifierMethod


@register
class CRNN(ClassifierMethod):
    name = "crnn"

    def net_config(self, config, n_classes, pretrained=None):
        return {"n_classes": n_classes, "width": config["width"], "depth": config["depth"]}
