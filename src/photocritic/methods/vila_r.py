"""VILA-R: the rank-based residual adapter of VILA (Ke et al., CVPR 2023).

Given a frozen image embedding v (L2-normalised here first), the adapter is

    v~ = normalize(v^T H + v),      r = v~^T w_p

with H a learnable 768 -> 768 linear map (bias initialised to 0, so an
untrained adapter is the identity) and w_p a unit text anchor - the frozen
text embedding of "good image" from the same VLM. Only H is trained, with
:func:`photocritic.losses.pairwise_ranking_loss` (margin 0.1, all ordered
pairs of a batch).

Options (the paper's ablations and this project's choices):

* ``anchor``: ``"text"`` (the paper), ``"learned"`` (w_p a trained
  parameter: the paper's "without text anchor" ablation, and what a backbone
  without a text tower, such as EfficientNet-Lite0, gets), or ``"mean"``
  (w_p the normalised mean training embedding, held fixed: the version-1
  ``lite`` model);
* ``residual=False``: v~ = normalize(v^T H), H initialised to the identity
  (the "without residual" ablation);
* ``rank``: H = U V^T of that rank (``lite`` uses 32); ``None``: full;
* ``standardize``: standardise each feature by fixed training statistics
  first, for multi-level CNN features whose dimensions differ in scale.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..losses import pairwise_ranking_loss
from ..registry import register_method
from .base import CHUNK, Method, Prediction, Targets, as_tensor, column_stats

ANCHORS = ("text", "learned", "mean")


class RankAdapter(nn.Module):
    def __init__(self, dim: int, anchor: torch.Tensor, rank: int | None = None,
                 shift: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                 learn_anchor: bool = False, residual: bool = True):
        super().__init__()
        self.dim = dim
        self.rank = rank
        self.residual_on = residual
        if rank is None:
            self.H = nn.Linear(dim, dim, bias=True)
            nn.init.zeros_(self.H.weight) if residual else nn.init.eye_(self.H.weight)
            nn.init.zeros_(self.H.bias)
        else:
            self.down = nn.Linear(dim, rank, bias=False)
            self.up = nn.Linear(rank, dim, bias=True)
            nn.init.normal_(self.down.weight, std=1.0 / math.sqrt(dim))
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        unit = F.normalize(anchor.float().reshape(-1), dim=0)
        if learn_anchor:
            self.anchor_param = nn.Parameter(unit.clone())
        else:
            self.register_buffer("anchor", unit)
        self.register_buffer("shift", torch.zeros(dim) if shift is None else shift.float())
        self.register_buffer("scale", torch.ones(dim) if scale is None else scale.float())

    def residual(self, v: torch.Tensor) -> torch.Tensor:
        return self.H(v) if self.rank is None else self.up(self.down(v))

    def adapt(self, v: torch.Tensor) -> torch.Tensor:
        """v~ = normalize(v^T H + v), on the L2-normalised embedding v
        (standardised first by the fixed ``shift``/``scale`` buffers)."""
        v = F.normalize((v.float() - self.shift) / self.scale, dim=-1)
        return F.normalize(v + self.residual(v) if self.residual_on else self.residual(v), dim=-1)

    def unit_anchor(self) -> torch.Tensor:
        a = getattr(self, "anchor_param", None)
        return F.normalize(a, dim=0) if a is not None else self.anchor

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """r = v~^T w_p."""
        return self.adapt(v) @ self.unit_anchor()


@register_method("vila-r")
class VilaR(Method):
    """``fit(features, targets)`` / ``predict`` on ``image.pooled``.

    ``predict`` returns the raw rank score r in [-1, 1]; mapping it to the
    1-10 scale is the model's :class:`~photocritic.scoremap.ScoreMap`.
    ``features["text.pooled"]`` holds the embedding of :meth:`texts` (the
    anchor text) when ``anchor="text"``.
    """

    def __init__(self, rank: int | None = None, margin: float = 0.1, lr: float = 1e-3,
                 weight_decay: float = 0.0, epochs: int = 30, batch_size: int = 128,
                 seed: int = 0, anchor: str = "text", residual: bool = True,
                 standardize: bool = False, anchor_text: str = "good image", patience: int | None = None,
                 group_chunk: int = 16):
        self.rank = rank
        self.margin = margin
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.seed = seed
        self.anchor = anchor
        self.residual = residual
        self.standardize = standardize
        self.anchor_text = anchor_text
        self.patience = patience
        self.group_chunk = group_chunk

    module: RankAdapter | None = None

    def texts(self) -> list[str]:
        return [self.anchor_text] if self.anchor == "text" else []

    def _init_module(self, x: torch.Tensor, features) -> None:
        from ..errors import ViewError

        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, not {self.anchor!r}")
        shift = scale = None
        if self.standardize:
            mean, std = column_stats(features["image.pooled"])
            shift, scale = torch.as_tensor(mean).float(), torch.as_tensor(std).float().clamp(min=1e-6)
        if self.anchor == "text":
            if "text.pooled" not in features:
                raise ViewError("VILA-R's text anchor needs the backbone's text tower "
                                f"(the embedding of {self.anchor_text!r}); use anchor='learned'")
            w = as_tensor(features["text.pooled"])[0]
            if w.shape[0] != x.shape[1]:
                raise ViewError(f"the text anchor has {w.shape[0]} dimensions and the image "
                                f"embeddings {x.shape[1]}")
        else:  # learned: start from the mean direction, as "mean" keeps it
            w = torch.zeros(x.shape[1])
            for s in range(0, len(x), CHUNK):
                z = x[s:s + CHUNK] if shift is None else (x[s:s + CHUNK] - shift) / scale
                w += F.normalize(z.float(), dim=-1).sum(0)
            w /= len(x)
        self._meta = {"dim": int(x.shape[1])}
        self.module = RankAdapter(x.shape[1], w, self.rank, shift, scale,
                                  learn_anchor=self.anchor == "learned", residual=self.residual)

    def fit(self, features, targets: Targets | np.ndarray, val=None, on_epoch=None,
            groups=None) -> "VilaR":
        """Train H on all ordered pairs within each batch. With ``groups``,
        only pairs inside a group count: each epoch cuts every group into
        random chunks of ``group_chunk`` images, and a batch holds
        ``batch_size // group_chunk`` chunks."""
        x = as_tensor(features["image.pooled"])
        y = as_tensor(targets.mean if isinstance(targets, Targets) else targets)
        g = None if groups is None else torch.as_tensor(np.asarray(groups))
        torch.manual_seed(self.seed)
        if self.module is None:
            self._init_module(x, features)
        if g is None:
            groups_idx = None
        else:
            _, inverse = torch.unique(g, return_inverse=True)
            groups_idx = [torch.nonzero(inverse == k).flatten() for k in range(int(inverse.max()) + 1)]
        chunk = max(2, min(self.group_chunk, self.batch_size))

        def batches(gen):
            if groups_idx is None:
                order = torch.randperm(len(x), generator=gen)
                return [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]
            # each group cut afresh into random chunks; a batch is batch_size // chunk chunks
            # of different (or the same) groups, so one step sees many groups, not one
            chunks = [grp[perm[s:s + chunk]] for grp in groups_idx
                      for perm in [torch.randperm(len(grp), generator=gen)] for s in range(0, len(grp), chunk)]
            order = torch.randperm(len(chunks), generator=gen)
            per = max(1, self.batch_size // chunk)
            return [torch.cat([chunks[k] for k in order[s:s + per]]) for s in range(0, len(order), per)]

        def loss(idx):
            return pairwise_ranking_loss(self.module(x[idx]), y[idx], self.margin,
                                         None if g is None else g[idx])

        from ..training.loop import fit_head

        self.history_ = fit_head(self.module, loss, len(x), epochs=self.epochs, batch_size=self.batch_size,
                                 lr=self.lr, weight_decay=self.weight_decay, seed=self.seed,
                                 batches=batches, on_epoch=on_epoch, monitor=self.monitor,
                                 patience=self.patience if val is not None else None)
        return self

    def predict(self, features) -> Prediction:
        with torch.inference_mode():
            return Prediction(self.module(as_tensor(features["image.pooled"])).numpy())

    def export_module(self, features):
        return self.module

    def meta(self) -> dict:
        return {"dim": self.module.dim}

    def state_dict(self):
        return {k: v.detach().contiguous() for k, v in self.module.state_dict().items()}

    def load_state(self, state, meta) -> "VilaR":
        state = {k: v.float() for k, v in state.items()}
        anchor = state.get("anchor", state.get("anchor_param"))
        self.module = RankAdapter(meta["dim"], anchor, self.rank, state.get("shift"), state.get("scale"),
                                  learn_anchor="anchor_param" in state, residual=self.residual)
        self.module.load_state_dict(state)
        self.module.eval()
        return self
