"""MMLQ: multi-modal learnable queries (Xiong et al., ICME 2024).

Frozen image tokens (``image.tokens``: ViT patch tokens + CLS, or
EfficientNet-Lite0's last 7x7 map) and frozen comment tokens
(``text.tokens``: an image's concatenated comments, at most 512 tokens) are
read by N_v visual and N_t textual learnable queries through L multi-modal
interaction blocks (:class:`InteractionBlock`): self-attention among the
queries (all queries together, or each modality's apart), cross-attention
(visual queries -> image tokens, textual queries -> comment tokens) and a
feed-forward layer, each pre-norm with dropout and a residual. The output,
mean of the visual queries || mean of the textual queries, goes through a
linear layer and a softmax over the 10 score bins; the loss is the EMD
(r = 2, :func:`photocritic.losses.emd`); score = sum_k k p_k.

Modes (``inputs``): ``image+comments``, ``image`` (visual queries only) and
``comments`` (textual queries only; no image is read). ``text_encoder``:
``minilm``, ``mpnet``, a CLIP/SigLIP text tower, a directory or a hub id
(:func:`photocritic.encoders.text.text_encoder`); ``max_tokens``: the
comment-token limit; ``retrieve_comments`` K: an image without comments
gets those of its K nearest training images (:mod:`photocritic.retrieval`);
``train_on_retrieved``: every training and validation image reads
retrieved comments (a training image's own go into the bank only), so the
model learns how far retrieved comments can be trusted, from the
distribution it will be scored on (with ``train --group-by``, retrieved
from other groups only, as an unseen image's are).

The paper gives no query, block or width counts. The defaults (8 + 8
queries, 2 blocks, width 256, 4 heads, self-attention per modality, dropout
0.1, AdamW lr 3e-4, batch 32, early stopping on validation EMD with
patience 8) are the settings benchmarks/comments.py and
benchmarks/learnability.py report; the README lists what else was tried.

Inputs are ragged (comment sets differ in length): ``features[view]`` is a
sequence of (T_i, C) arrays; batches are padded, and padding is masked out
of every attention, so it never changes a prediction.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..losses import emd
from ..registry import register_method
from .base import Prediction, Targets, TorchHead
from .nima import mean_score

MODES = ("image+comments", "image", "comments")


class InteractionBlock(nn.Module):
    """One multi-modal interaction block (pre-norm, residual, dropout)."""

    def __init__(self, width: int, heads: int, dropout: float, shared_self_attention: bool,
                 modalities: tuple[str, ...], ffn_mult: int = 4):
        super().__init__()
        self.shared = shared_self_attention
        self.modalities = modalities

        def attn():
            return nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)

        names = ("all",) if shared_self_attention else modalities
        self.self_norm = nn.ModuleDict({m: nn.LayerNorm(width) for m in names})
        self.self_attn = nn.ModuleDict({m: attn() for m in names})
        self.cross_norm = nn.ModuleDict({m: nn.LayerNorm(width) for m in modalities})
        self.kv_norm = nn.ModuleDict({m: nn.LayerNorm(width) for m in modalities})
        self.cross_attn = nn.ModuleDict({m: attn() for m in modalities})
        self.ffn_norm = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, ffn_mult * width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_mult * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, queries: dict, tokens: dict, pad: dict) -> dict:
        """``queries[m]``: (B, N_m, W); ``tokens[m]``: (B, T_m, W);
        ``pad[m]``: (B, T_m) True where padding."""
        if self.shared:
            sizes = [queries[m].shape[1] for m in self.modalities]
            q = torch.cat([queries[m] for m in self.modalities], dim=1)
            h = self.self_norm["all"](q)
            q = q + self.drop(self.self_attn["all"](h, h, h, need_weights=False)[0])
            queries = dict(zip(self.modalities, torch.split(q, sizes, dim=1)))
        else:
            queries = {m: queries[m] + self.drop(self.self_attn[m](*(self.self_norm[m](queries[m]),) * 3,
                                                                   need_weights=False)[0])
                       for m in self.modalities}
        out = {}
        for m in self.modalities:
            kv = self.kv_norm[m](tokens[m])
            q = queries[m]
            q = q + self.drop(self.cross_attn[m](self.cross_norm[m](q), kv, kv, key_padding_mask=pad[m],
                                                 need_weights=False)[0])
            out[m] = q + self.drop(self.ffn(self.ffn_norm(q)))
        return out


class MMLQNet(nn.Module):
    def __init__(self, image_dim: int | None, text_dim: int | None, inputs: str = "image+comments",
                 n_visual: int = 8, n_text: int = 8, blocks: int = 2, width: int = 256, heads: int = 4,
                 dropout: float = 0.1, shared_self_attention: bool = False, bins: int = 10):
        super().__init__()
        self.modalities = tuple(m for m in ("image", "comments") if m in inputs.split("+"))
        dims = {"image": image_dim, "comments": text_dim}
        counts = {"image": n_visual, "comments": n_text}
        self.proj = nn.ModuleDict({m: nn.Linear(dims[m], width) for m in self.modalities})
        self.queries = nn.ParameterDict({m: nn.Parameter(torch.randn(counts[m], width) / math.sqrt(width))
                                         for m in self.modalities})
        self.blocks = nn.ModuleList(InteractionBlock(width, heads, dropout, shared_self_attention,
                                                     self.modalities) for _ in range(blocks))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width * len(self.modalities), bins)

    def forward(self, tokens: dict, pad: dict) -> torch.Tensor:
        """``tokens[m]``: (B, T_m, C_m); ``pad[m]``: (B, T_m) True where
        padding. Returns (B, 10) probabilities."""
        b = next(iter(tokens.values())).shape[0]
        kv = {m: self.proj[m](tokens[m]) for m in self.modalities}
        q = {m: self.queries[m].unsqueeze(0).expand(b, -1, -1) for m in self.modalities}
        for block in self.blocks:
            q = block(q, kv, pad)
        pooled = torch.cat([self.norm(q[m]).mean(1) for m in self.modalities], dim=-1)
        return torch.softmax(self.head(pooled), dim=-1)


VIEW_OF = {"image": "image.tokens", "comments": "text.tokens"}


def pad_batch(rows: list, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(T_i, C) arrays -> (B, T_max, C) zero-padded and the (B, T_max) padding mask."""
    width = max(len(r) for r in rows)
    c = rows[0].shape[-1]
    out = torch.zeros((len(rows), width, c), dtype=dtype)
    pad = torch.ones((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.as_tensor(np.asarray(r, dtype=np.float32))
        pad[i, :len(r)] = False
    return out, pad


@register_method("mmlq")
class MMLQ(TorchHead):
    has_distribution = True
    not_exportable = "it reads comments (text tokens), which a single image graph has no input for"
    monitor = ("emd", True)
    #: set by `photocritic train` under torchrun: gradients summed across processes
    data_parallel = False

    def __init__(self, inputs: str = "image+comments", n_visual: int = 8, n_text: int = 8, blocks: int = 2,
                 width: int = 256, heads: int = 4, dropout: float = 0.1, shared_self_attention: bool = False,
                 epochs: int = 60, batch_size: int = 32, lr: float = 3e-4, weight_decay: float = 0.01,
                 patience: int = 8, seed: int = 0, text_encoder: str = "minilm", max_tokens: int = 512,
                 retrieve_comments: int = 0, train_on_retrieved: bool = False):
        super().__init__(epochs, batch_size, lr, weight_decay, patience, seed)
        self.retrieve_comments = int(retrieve_comments)
        self.train_on_retrieved = bool(train_on_retrieved)
        self.inputs = inputs
        self.text_encoder = text_encoder
        self.max_tokens = max_tokens
        self.n_visual = n_visual
        self.n_text = n_text
        self.blocks = blocks
        self.width = width
        self.heads = heads
        self.dropout = dropout
        self.shared_self_attention = shared_self_attention

    @property
    def modalities(self) -> tuple[str, ...]:
        if self.inputs not in MODES:
            raise ValueError(f"MMLQ inputs must be one of {', '.join(MODES)}, not {self.inputs!r}")
        return tuple(m for m in ("image", "comments") if m in self.inputs.split("+"))

    @property
    def requires(self):  # noqa: F811
        return tuple(VIEW_OF[m] for m in self.modalities)

    @property
    def image_view(self) -> str:
        return "image.tokens"

    def build(self, meta):
        return MMLQNet(meta.get("image_dim"), meta.get("text_dim"), self.inputs, self.n_visual, self.n_text,
                       self.blocks, self.width, self.heads, self.dropout, self.shared_self_attention)

    def _batch(self, features: dict, idx) -> tuple[dict, dict]:
        tokens, pad = {}, {}
        for m in self.modalities:
            tokens[m], pad[m] = pad_batch([features[VIEW_OF[m]][int(i)] for i in idx])
        return tokens, pad

    def fit(self, features, targets: Targets, val=None, on_epoch=None) -> "MMLQ":
        self.check_targets(targets)
        n = len(targets)
        for view in self.requires:
            if len(features[view]) != n:
                raise ValueError(f"{view}: {len(features[view])} rows for {n} targets")
        q = torch.as_tensor(np.asarray(targets.distribution, dtype=np.float32))
        q = q / q.sum(1, keepdim=True)
        torch.manual_seed(self.seed)
        self._meta = {}
        if "image" in self.modalities:
            self._meta["image_dim"] = int(features["image.tokens"][0].shape[-1])
        if "comments" in self.modalities:
            self._meta["text_dim"] = int(features["text.tokens"][0].shape[-1])
        self.module = self.build(self._meta)

        def loss(idx):
            tokens, pad = self._batch(features, idx)
            return emd(self.module(tokens, pad), q[idx])

        from ..training.loop import fit_head

        self.history_ = fit_head(self.module, loss, n, epochs=self.epochs, batch_size=self.batch_size,
                                 lr=self.lr, weight_decay=self.weight_decay, seed=self.seed, on_epoch=on_epoch,
                                 monitor=self.monitor, patience=self.patience if val is not None else None,
                                 data_parallel=self.data_parallel)
        return self

    def predict(self, features, batch: int = 64) -> Prediction:
        n = len(features[self.requires[0]])
        parts = []
        self.module.eval()
        with torch.inference_mode():
            for s in range(0, n, batch):
                tokens, pad = self._batch(features, range(s, min(n, s + batch)))
                parts.append(self.module(tokens, pad))
        p = torch.cat(parts) if parts else torch.zeros((0, 10))
        return Prediction(mean_score(p).numpy(), p.numpy())
