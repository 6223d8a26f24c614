"""Full fine-tuning (Hentschel, Kobs & Hotho 2022, Sec. "fine-tuning"): the
whole image tower (projection removed; its 768-d output for CLIP ViT-B/32,
1280-d for EfficientNet-Lite0) + Linear(d, 10) + softmax, trained with the
EMD loss (r = 2); SGD with momentum 0.5, lr 1e-4 for the backbone and 1e-2
for the head, batch 128, early stopping with patience 10 on a 10%
validation split, no epoch cap by default.

Training runs in :mod:`photocritic.training.trainer`; this class is the
method's saved head: at scoring time the fine-tuned tower (the model
directory's ``backbone.safetensors``) produces ``image.prelogits`` and
:meth:`predict` applies the head. Batch-norm layers (EfficientNet) keep
their running statistics during fine-tuning (eval mode), so a score never
depends on the batch it was computed in.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..registry import register_method
from .base import Prediction, TorchHead
from .nima import MeanAndDistribution, mean_score


class SoftmaxHead(nn.Module):
    def __init__(self, dim: int, bins: int = 10):
        super().__init__()
        self.fc = nn.Linear(dim, bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(x.float()), dim=-1)


@register_method("finetune")
class Finetune(TorchHead):
    requires = ("image.prelogits",)
    has_distribution = True
    trains_backbone = True
    monitor = ("emd", True)

    def __init__(self, epochs: int | None = None, batch_size: int = 128, lr_backbone: float = 1e-4,
                 lr: float = 1e-2, momentum: float = 0.5, patience: int = 10, seed: int = 0,
                 accumulate: int = 1, workers: int | None = None, augment: str | None = None,
                 checkpoint_every: int = 1, image_cache_mb: float = 2048.0):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr_backbone = lr_backbone
        self.lr = lr
        self.momentum = momentum
        self.patience = patience
        self.seed = seed
        self.accumulate = accumulate
        self.workers = workers
        self.augment = augment
        self.checkpoint_every = checkpoint_every
        self.image_cache_mb = image_cache_mb

    def build(self, meta):
        return SoftmaxHead(meta["dim"])

    def predict(self, features) -> Prediction:
        p = self.forward_batches(np.asarray(features["image.prelogits"]))
        return Prediction(mean_score(p).numpy(), p.numpy())

    def export_module(self, features):
        return MeanAndDistribution(self.module)
