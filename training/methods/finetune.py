"""Fine-tuning a published ``transformers`` waveform encoder with a linear head on the labels.

``--model`` is a Hugging Face id (resolved through the Hugging Face cache) or a
``save_pretrained`` folder (see ``embedders.lib.hf_models``); one hidden layer (``--layer``) is
pooled over time; the convolutional front-end stays frozen unless
``--no-freeze-feature-encoder``.
"""
from __future__ import annotations

from embedders.lib import trained_nets as tn

from . import register
from .base import SCRATCH_SETTINGS, ClassifierMethod


@register
class Finetune(ClassifierMethod):
    name = "finetune"
    #: A pretrained transformer wants a small learning rate and longer clips.
    defaults = {"lr": 5e-5, "crop_seconds": 4.0}
    ignores = SCRATCH_SETTINGS
    from_pretrained = True

    def set_up_pretrained(self, config):
        """Find and check the published weights (before any audio is read)."""
        from embedders.lib.hf_models import resolve_model

        folder, identity = resolve_model(str(config["model"]), who=self.name,
                                         local_option="--model PATH")
        hf = tn.finetune_setup(folder, layer=config["layer"],
                               crop_samples=self.crop_length(config))
        return hf, folder, identity

    def net_config(self, config, n_classes, pretrained=None):
        if pretrained is None:
            raise ValueError("finetune: the network is described by its pretrained model "
                             "(trained_nets.finetune_setup)")
        return {"hf_config": pretrained["hf_config"], "n_classes": n_classes,
                "layer": config["layer"], "do_normalize": pretrained["do_normalize"],
                "freeze_feature_encoder": bool(config["freeze_feature_encoder"])}
