"""NIMA-style distribution head on frozen features (Talebi & Milanfar 2018;
the EMD head of Hentschel et al. 2022 and of VILA's Table 1):
Linear(d, 10) + softmax, trained with the EMD loss (r = 2) on the vote
distribution; score = sum_k k p_k.

Choice of this implementation: features are first standardised by their
training mean and standard deviation (fixed buffers), which leaves CLIP
features' information unchanged and makes multi-level CNN features, whose
dimensions differ in scale by orders of magnitude, trainable with one
learning rate. Adam, lr 1e-3, early stopping on validation EMD.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..losses import emd
from ..registry import register_method
from .base import Prediction, Targets, TorchHead, as_tensor, column_stats

BINS = torch.arange(1, 11, dtype=torch.float32)


class DistributionHead(nn.Module):
    def __init__(self, dim: int, bins: int = 10):
        super().__init__()
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.fc = nn.Linear(dim, bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (N, 10) probabilities."""
        return torch.softmax(self.fc((x - self.shift) / self.scale), dim=-1)


def mean_score(p: torch.Tensor) -> torch.Tensor:
    """sum_k k p_k over the bins 1..10."""
    return p @ BINS.to(p.device, p.dtype)


class MeanAndDistribution(nn.Module):
    """A distribution head as one graph: (mean score, distribution)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head
        self.register_buffer("bins", BINS.clone())

    def forward(self, x: torch.Tensor):
        p = self.head(x)
        return p @ self.bins, p


@register_method("nima")
class Nima(TorchHead):
    has_distribution = True
    monitor = ("emd", True)

    def __init__(self, epochs: int = 200, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 0.0, patience: int = 10, seed: int = 0,
                 view: str = "image.pooled"):
        super().__init__(epochs, batch_size, lr, weight_decay, patience, seed)
        self.view = view

    @property
    def requires(self):  # noqa: F811
        return (self.view,)

    def build(self, meta):
        return DistributionHead(meta["dim"])

    def fit(self, features, targets: Targets, val=None, on_epoch=None) -> "Nima":
        self.check_targets(targets)
        x = as_tensor(features[self.view])
        q = as_tensor(targets.distribution)
        q = q / q.sum(1, keepdim=True)
        torch.manual_seed(self.seed)
        self._meta = {"dim": int(x.shape[1])}
        self.module = self.build(self._meta)
        mean, std = column_stats(features[self.view])
        self.module.shift.copy_(torch.as_tensor(mean))
        self.module.scale.copy_(torch.as_tensor(std).clamp_min(1e-6))
        from ..training.loop import fit_head

        self.history_ = fit_head(self.module, lambda idx: emd(self.module(x[idx]), q[idx]), len(x),
                                 epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                 weight_decay=self.weight_decay, seed=self.seed, on_epoch=on_epoch,
                                 monitor=self.monitor, patience=self.patience if val is not None else None)
        return self

    def predict(self, features) -> Prediction:
        p = self.forward_batches(np.asarray(features[self.view]))
        return Prediction(mean_score(p).numpy(), p.numpy())

    def export_module(self, features):
        return MeanAndDistribution(self.module)
