"""The LAION "improved aesthetic predictor" head: an MLP
768 -> 1024 -> 128 -> 64 -> 16 -> 1 (dropout 0.2, 0.2, 0.1 after the first
three layers, no activations, as released) on the L2-normalised CLIP image
embedding, trained with MSE on mean scores. The output is the 1-10 score.

The input is always L2-normalised here: an un-normalised embedding gives
the same score (the released head expects unit vectors; without the
normalisation it returns scores of 20-30). The layer names match the
released state dict (``layers.0`` ... ``layers.7``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_method
from .base import Prediction, Targets, TorchHead, as_tensor

WIDTHS = (1024, 128, 64, 16)


class AestheticMLP(nn.Module):
    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, WIDTHS[0]), nn.Dropout(0.2),
            nn.Linear(WIDTHS[0], WIDTHS[1]), nn.Dropout(0.2),
            nn.Linear(WIDTHS[1], WIDTHS[2]), nn.Dropout(0.1),
            nn.Linear(WIDTHS[2], WIDTHS[3]),
            nn.Linear(WIDTHS[3], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(F.normalize(x.float(), dim=-1)).squeeze(-1)


@register_method("mlp")
class LaionMLP(TorchHead):
    requires = ("image.pooled",)
    monitor = ("mse", True)

    def build(self, meta):
        return AestheticMLP(meta["dim"])

    def fit(self, features, targets: Targets, val=None, on_epoch=None) -> "LaionMLP":
        x = as_tensor(features["image.pooled"])
        y = as_tensor(targets.mean)
        torch.manual_seed(self.seed)
        self._meta = {"dim": int(x.shape[1])}
        self.module = self.build(self._meta)
        with torch.no_grad():  # start at the mean label, so early epochs are not spent on the offset
            self.module.layers[-1].bias.fill_(float(y.mean()))
        from ..training.loop import fit_head

        self.history_ = fit_head(self.module, lambda idx: F.mse_loss(self.module(x[idx]), y[idx]), len(x),
                                 epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                 weight_decay=self.weight_decay, seed=self.seed, on_epoch=on_epoch,
                                 monitor=self.monitor, patience=self.patience if val is not None else None)
        return self

    def predict(self, features) -> Prediction:
        return Prediction(self.forward_batches(np.asarray(features["image.pooled"])).numpy())

    def export_module(self, features):
        return self.module
