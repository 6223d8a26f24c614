"""VILA-R: the rank-based residual adapter of VILA (Ke et al., CVPR 2023).

Given a frozen image embedding v (L2-normalised here first), the adapter is

    v~ = normalize(v^T H + v),      r = v~^T w_p

with H a learnable linear map (bias initialised to 0, so an untrained
adapter is the identity) and w_p a unit text anchor - in VILA the frozen
text embedding of "good image". Only H is trained, with
:func:`photocritic.losses.pairwise_ranking_loss` (margin 0.1).

Choices of this implementation, for backbones and sizes the paper did not
have:

* ``rank``: H may be low-rank, H = U V^T (dim x rank x dim), which keeps a
  shipped head small; ``rank=None`` is the paper's full dim x dim layer.
* Backbones without a text tower (EfficientNet-Lite0) have no text anchor:
  w_p is then the normalised mean training embedding, held fixed like the
  text anchor (H can rotate any direction onto it).
* ``standardize=True`` first standardises each feature by its training mean
  and standard deviation (fixed buffers), for embeddings whose dimensions
  have very different scales (multi-level CNN features). CLIP embeddings
  are used as they are, as in the paper.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..losses import pairwise_ranking_loss


class RankAdapter(nn.Module):
    def __init__(self, dim: int, anchor: torch.Tensor, rank: int | None = None,
                 shift: torch.Tensor | None = None, scale: torch.Tensor | None = None):
        super().__init__()
        self.dim = dim
        self.rank = rank
        if rank is None:
            self.H = nn.Linear(dim, dim, bias=True)
            nn.init.zeros_(self.H.weight)
            nn.init.zeros_(self.H.bias)
        else:
            self.down = nn.Linear(dim, rank, bias=False)
            self.up = nn.Linear(rank, dim, bias=True)
            nn.init.normal_(self.down.weight, std=1.0 / math.sqrt(dim))
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        self.register_buffer("anchor", F.normalize(anchor.float().reshape(-1), dim=0))
        self.register_buffer("shift", torch.zeros(dim) if shift is None else shift.float())
        self.register_buffer("scale", torch.ones(dim) if scale is None else scale.float())

    def residual(self, v: torch.Tensor) -> torch.Tensor:
        return self.H(v) if self.rank is None else self.up(self.down(v))

    def adapt(self, v: torch.Tensor) -> torch.Tensor:
        """v~ = normalize(v^T H + v), on the L2-normalised embedding v
        (standardised first by the fixed ``shift``/``scale`` buffers)."""
        v = F.normalize((v.float() - self.shift) / self.scale, dim=-1)
        return F.normalize(v + self.residual(v), dim=-1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """r = v~^T w_p."""
        return self.adapt(v) @ self.anchor


class VilaR:
    """Estimator wrapper: ``fit(features, labels)`` / ``predict`` / ``save`` / ``load``.

    ``predict`` returns the raw rank score r in [-1, 1]; mapping it to the
    1-10 scale is the model's :class:`~photocritic.scoremap.ScoreMap`.
    """

    kind = "vila_r"

    def __init__(self, rank: int | None = None, margin: float = 0.1, lr: float = 1e-3,
                 weight_decay: float = 0.0, epochs: int = 30, batch_size: int = 128,
                 seed: int = 0, anchor: torch.Tensor | np.ndarray | None = None,
                 standardize: bool = False):
        self.rank = rank
        self.margin = margin
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.anchor = anchor
        self.standardize = standardize
        self.module: RankAdapter | None = None

    def _init_module(self, features: torch.Tensor) -> None:
        shift = scale = None
        if self.standardize:
            shift, scale = features.mean(0), features.std(0).clamp(min=1e-6)
        anchor = self.anchor
        if anchor is None:
            z = features if shift is None else (features - shift) / scale
            anchor = F.normalize(z.float(), dim=-1).mean(0)
        self.module = RankAdapter(features.shape[1], torch.as_tensor(anchor), self.rank, shift, scale)

    def fit(self, features, labels, groups=None, log=None) -> "VilaR":
        """Train H on all ordered pairs within each batch.

        With ``groups``, batches are made of whole groups, and only pairs
        inside a group count.
        """
        x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
        g = None if groups is None else torch.as_tensor(np.asarray(groups))
        torch.manual_seed(self.seed)
        if self.module is None:
            self._init_module(x)
        params = [p for p in self.module.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        if g is None:
            units = [torch.tensor([i]) for i in range(len(x))]
        else:
            _, inverse = torch.unique(g, return_inverse=True)
            units = [torch.nonzero(inverse == k).flatten() for k in range(int(inverse.max()) + 1)]
        per_unit = max(1, round(sum(len(u) for u in units) / len(units)))
        units_per_batch = max(1, self.batch_size // per_unit)
        self.module.train()
        for epoch in range(self.epochs):
            order = torch.randperm(len(units), generator=gen)
            total, steps = 0.0, 0
            for start in range(0, len(order), units_per_batch):
                idx = torch.cat([units[k] for k in order[start:start + units_per_batch]])
                loss = pairwise_ranking_loss(self.module(x[idx]), y[idx], self.margin,
                                             None if g is None else g[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach())
                steps += 1
            if log:
                log(f"epoch {epoch + 1}/{self.epochs} loss {total / max(steps, 1):.4f}")
        self.module.eval()
        return self

    @torch.inference_mode()
    def predict(self, features) -> np.ndarray:
        x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        return self.module(x).numpy()

    def config(self) -> dict:
        return {"kind": self.kind, "rank": self.rank, "margin": self.margin, "dim": self.module.dim}

    def save(self, directory: str | Path, half: bool = False) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.module.state_dict().items()}
        if half:  # weights in fp16; the fixed vectors stay fp32
            state = {k: v if k in ("anchor", "shift", "scale") else v.half() for k, v in state.items()}
        save_file(state, str(directory / "head.safetensors"))
        (directory / "head.json").write_text(json.dumps(self.config(), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "VilaR":
        directory = Path(directory)
        cfg = json.loads((directory / "head.json").read_text())
        state = {k: v.float() for k, v in load_file(str(directory / "head.safetensors")).items()}
        obj = cls(rank=cfg.get("rank"), margin=cfg.get("margin", 0.1))
        obj.module = RankAdapter(cfg["dim"], state["anchor"], cfg.get("rank"),
                                 state.get("shift"), state.get("scale"))
        obj.module.load_state_dict(state)
        obj.module.eval()
        return obj

