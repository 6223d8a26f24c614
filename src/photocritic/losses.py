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


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                     valid: torch.Tensor | None = None, rows: slice | None = None) -> torch.Tensor:
    """VILA-P's contrastive loss (CoCa, Yu et al. 2022, Eq. 1; Ke et al.,
    CVPR 2023, Sec. 3.1): symmetric InfoNCE over a batch of N pairs,

        L = -1/(2N) * sum_i [ log softmax_j(t x_i.y_j)_i + log softmax_j(t y_i.x_j)_i ]

    with x, y the L2-normalised image and text embeddings and t the logit
    scale (1 / temperature). ``valid`` (N,) leaves padded pairs out of both
    the sums and the candidates. ``rows`` restricts the outer sums to a
    slice of the pairs (one process's share; the shares of all processes add
    up to L), the denominators still over every valid pair.
    """
    x = torch.nn.functional.normalize(image.float(), dim=-1)
    y = torch.nn.functional.normalize(text.float(), dim=-1)
    logits = logit_scale.float() * x @ y.t()
    n = len(x)
    if valid is None:
        valid = torch.ones(n, dtype=torch.bool, device=x.device)
    valid = valid.bool()
    block = ~(valid[:, None] & valid[None, :])
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    logits = logits.masked_fill(block & ~eye, float("-inf"))
    i2t = -torch.log_softmax(logits, dim=1).diagonal()
    t2i = -torch.log_softmax(logits, dim=0).diagonal()
    keep = valid.clone()
    if rows is not None:
        mine = torch.zeros_like(keep)
        mine[rows] = True
        keep &= mine
    total = (i2t[keep].sum() + t2i[keep].sum()) / 2
    return total / valid.sum().clamp(min=1)


def caption_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100,
                 reduction: str = "mean") -> torch.Tensor:
    """VILA-P's captioning loss (CoCa, Eq. 2): the cross-entropy of each next
    token given the image and the tokens before it, over every position whose
    label is not ``ignore_index`` (padding). ``reduction``: ``mean`` over
    those tokens, or ``sum``."""
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=ignore_index, reduction=reduction)


def coca_loss(contrastive: torch.Tensor, captioning: torch.Tensor, alpha: float = 1.0,
              beta: float = 2.0) -> torch.Tensor:
    """CoCa's objective as VILA-P weighs it: alpha * contrastive + beta * captioning
    (alpha = 1, beta = 2 in Ke et al., CVPR 2023)."""
    return alpha * contrastive + beta * captioning
