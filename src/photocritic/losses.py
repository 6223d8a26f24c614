"""Training losses. Each paper equation lives here once."""

from __future__ import annotations

import torch


def pairwise_ranking_loss(scores: torch.Tensor, labels: torch.Tensor, margin: float = 0.1,
                          groups: torch.Tensor | None = None) -> torch.Tensor:
    """VILA-R triplet ranking loss (Ke et al., CVPR 2023, Sec. 3.3):

        L = 1/P * sum over pairs (i, j) with l_i > l_j of max(0, m - r_i + r_j)

    where P is the number of such pairs. With ``groups`` given, only pairs
    inside the same group count (e.g. a photo and its own degraded
    versions). Returns 0 when the batch holds no ordered pair.
    """
    scores = scores.reshape(-1)
    labels = labels.reshape(-1).to(scores.dtype)
    higher = labels[:, None] > labels[None, :]
    if groups is not None:
        groups = groups.reshape(-1)
        higher = higher & (groups[:, None] == groups[None, :])
    n_pairs = higher.sum()
    if n_pairs == 0:
        return scores.sum() * 0.0
    hinge = torch.relu(margin - scores[:, None] + scores[None, :])
    return (hinge * higher).sum() / n_pairs


def emd(pred: torch.Tensor, target: torch.Tensor, r: int = 2, reduction: str = "mean") -> torch.Tensor:
    """Earth mover's distance between ordered score distributions (NIMA,
    Talebi & Milanfar 2018, Eq. 1; the loss of Hentschel et al.'s fine-tuning
    with r = 2):

        EMD(p, q) = ( 1/N * sum_k |CDF_p(k) - CDF_q(k)|^r )^(1/r)

    on the cumulative distributions over the N bins. Both the training loss
    and :func:`photocritic.metrics.emd` call this function. Rows must
    already sum to 1. ``reduction``: ``mean`` over images, or ``none``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"distribution shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    diff = torch.abs(torch.cumsum(pred, dim=-1) - torch.cumsum(target, dim=-1))
    m = diff.pow(r).mean(dim=-1)
    # exact 0 for equal rows, with a finite gradient there
    per_image = torch.where(m > 0, m.clamp_min(1e-30).pow(1.0 / r), torch.zeros_like(m))
    return per_image.mean() if reduction == "mean" else per_image
