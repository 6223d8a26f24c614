"""Interoperability helpers for comparing photocritic with other tools."""

from __future__ import annotations


def torchmetrics_clip_loader(model_dir):
    """A ``model_name_or_path`` callable for torchmetrics' CLIP metrics that
    loads a local CLIP directory. With transformers 5, ``get_image_features``
    and ``get_text_features`` return output objects where torchmetrics expects
    tensors; the model returned here gives it ``.pooler_output``."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    class TensorCLIP(CLIPModel):
        def get_image_features(self, *a, **k):
            out = super().get_image_features(*a, **k)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        def get_text_features(self, *a, **k):
            out = super().get_text_features(*a, **k)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

    return lambda: (TensorCLIP.from_pretrained(str(model_dir)).eval(),
                    CLIPProcessor.from_pretrained(str(model_dir)))
