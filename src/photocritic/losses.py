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
