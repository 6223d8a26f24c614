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
                     valid: torch.Tensor | None = None, rows: slice | None = None,
                     text_ids: torch.Tensor | None = None) -> torch.Tensor:
    """VILA-P's contrastive loss (CoCa, Yu et al. 2022, Eq. 1; Ke et al.,
    CVPR 2023, Sec. 3.1): symmetric InfoNCE over a batch of N pairs,

        L = -1/(2N) * sum_i [ log softmax_j(t x_i.y_j)_i + log softmax_j(t y_i.x_j)_i ]

    with x, y the L2-normalised image and text embeddings and t the logit
    scale (1 / temperature). ``valid`` (N,) leaves padded pairs out of both
    the sums and the candidates. ``rows`` restricts the outer sums to a
    slice of the pairs (one process's share; the shares of all processes add
    up to L), the denominators still over every valid pair.

    ``text_ids`` (N,): pairs whose texts have the same id are positives of
    one another (an option of ours, not the paper's): the softmax term of
    pair i becomes the summed probability of every j with i's text, so a
    repeated comment is not pushed away from the other images it was said of.
    """
    if text_ids is not None:  # one attribute space whose positives are the equal texts
        n = len(image)
        mask = torch.ones(n, 1, dtype=torch.bool, device=image.device) if valid is None else valid.bool()[:, None]
        return attribute_contrastive_loss(image[:, None], text[:, None], mask, logit_scale, text_ids[:, None], rows)
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


def _own_rows(n: int, rows: slice | None, device) -> torch.Tensor:
    mine = torch.ones(n, dtype=torch.bool, device=device)
    if rows is not None:
        mine[:] = False
        mine[rows] = True
    return mine


def attribute_contrastive_loss(image: torch.Tensor, text: torch.Tensor, mask: torch.Tensor,
                               logit_scale: torch.Tensor, text_ids: torch.Tensor | None = None,
                               rows: slice | None = None) -> torch.Tensor:
    """The multi-attribute contrastive loss (after Huang et al., TPAMI 2024,
    whose equations are not in our sources; this form is our choice): one
    symmetric InfoNCE per attribute space k over the images that have a
    description of k, averaged over every present (image, attribute) pair:

        L = 1/|M| * sum_k sum_{i: m_ik} 1/2 [ -log sum_{j in P_k(i)} softmax_j(t_k x_ik.y_jk)
                                             -log sum_{j in P_k(i)} softmax_j(t_k y_ik.x_jk) ]

    ``image`` and ``text`` are (N, K, d) embeddings (L2-normalised here),
    ``mask`` (N, K) marks present attributes (M is the set of present pairs;
    a missing attribute is neither a term nor a candidate, so it contributes
    nothing), ``logit_scale`` one t_k per space (K,) or one for all. The
    candidates j run over the images with attribute k present. P_k(i), the
    positives, are the images whose description of k has the same
    ``text_ids[:, k]`` as i's (the same text): templated or repeated
    descriptions are not pushed apart as negatives. Without ``text_ids``,
    P_k(i) = {i} and each space's term is :func:`contrastive_loss`.
    ``rows``: this process's slice of the (gathered) batch; the outer sums
    run over it, |M| and the candidates over the whole batch, so the shares
    of all processes add up to L.
    """
    x = torch.nn.functional.normalize(image.float(), dim=-1)
    y = torch.nn.functional.normalize(text.float(), dim=-1)
    n, k = mask.shape
    mask = mask.bool()
    scale = logit_scale.float().reshape(-1)
    scale = scale.expand(k) if scale.numel() == 1 else scale
    mine = _own_rows(n, rows, x.device)
    total = x.new_zeros(())
    for a in range(k):
        m = mask[:, a]
        if not bool(m.any()):
            continue
        logits = scale[a] * x[:, a] @ y[:, a].t()
        pair = m[:, None] & m[None, :]
        logits = logits.masked_fill(~pair, float("-inf"))
        if text_ids is None:
            pos = torch.eye(n, dtype=torch.bool, device=x.device)
        else:
            pos = text_ids[:, a][:, None] == text_ids[:, a][None, :]
        pos = pos & pair
        lse_row = torch.logsumexp(logits, dim=1)
        lse_col = torch.logsumexp(logits, dim=0)
        pos_row = torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=1)
        pos_col = torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=0)
        keep = m & mine
        total = total + ((lse_row - pos_row)[keep].sum() + (lse_col - pos_col)[keep].sum()) / 2
    return total / mask.sum().clamp(min=1)


def _pairs(features: torch.Tensor, initial: torch.Tensor, valid: torch.Tensor | None):
    """Both feature sets L2-normalised, the valid rows, and the valid pairs i != j."""
    f = torch.nn.functional.normalize(features.float(), dim=-1)
    g = torch.nn.functional.normalize(initial.float(), dim=-1)
    valid = torch.ones(len(f), dtype=torch.bool, device=f.device) if valid is None else valid.bool()
    off = valid[:, None] & valid[None, :] & ~torch.eye(len(f), dtype=torch.bool, device=f.device)
    return f, g, valid, off


def semantic_affinity_loss(features: torch.Tensor, initial: torch.Tensor, valid: torch.Tensor | None = None,
                           rows: slice | None = None) -> torch.Tensor:
    """The semantic affinity loss (our form; Huang et al. name the loss, not
    its equation): the mean squared difference between the batch's cosine
    affinity matrices of the learnt image features f and of the frozen
    initial (general-domain) features g,

        L_aff = 1/(V(V-1)) * sum_{i != j} ( cos(f_i, f_j) - cos(g_i, g_j) )^2

    over the V valid images. It keeps which images look alike to the general
    model (their content) while letting each feature move: it is invariant
    to rotating or rescaling the features, unlike a distance to g itself.
    ``rows``: this process's slice of the gathered batch (the shares add up
    to L_aff)."""
    f, g, valid, off = _pairs(features, initial, valid)
    n = len(f)
    mine = _own_rows(n, rows, f.device)
    diff = (f @ f.t() - g @ g.t()) ** 2
    v = valid.sum()
    return (diff * (off & mine[:, None])).sum() / (v * (v - 1)).clamp(min=1)


def neighbour_affinity_loss(features: torch.Tensor, initial: torch.Tensor, valid: torch.Tensor | None = None,
                            rows: slice | None = None, temperature: float = 0.05) -> torch.Tensor:
    """The semantic affinity loss in its neighbourhood form (our choice, the
    ``--affinity-form neighbours`` of ``pretrain multiattr``): for each
    valid image i, the distribution over the batch's other valid images
    j != i of softmax_j(cos(g_i, g_j) / t) under the frozen initial
    features g (P_i) and under the learnt ones f (Q_i); the loss is

        L_nb = 1/V * sum_i KL(P_i || Q_i)

    over the V valid images (an image with no other valid image adds
    nothing). Where :func:`semantic_affinity_loss` asks every pair's
    similarity to stay what it was, which makes the whole geometry the
    general model's, this asks only that an image's near neighbours under
    g (at t = 0.05, mostly other views of the same scene) stay near: the
    rest of the space is free for what the contrastive loss teaches. KL in
    this direction penalises losing a neighbour, not gaining one.
    ``rows``: this process's slice of the gathered batch (the shares add up
    to L_nb)."""
    f, g, valid, off = _pairs(features, initial, valid)
    n = len(f)
    floor = torch.finfo(f.dtype).min / 4  # a finite "minus infinity": rows with no neighbour stay NaN-free
    log_p = torch.log_softmax(torch.where(off, g @ g.t() / temperature, floor), dim=1)
    log_q = torch.log_softmax(torch.where(off, f @ f.t() / temperature, floor), dim=1)
    kl = torch.where(off, log_p.exp() * (log_p - log_q), torch.zeros((), device=f.device)).sum(1)
    counted = off.any(1) & _own_rows(n, rows, f.device)
    return (kl * counted).sum() / valid.sum().clamp(min=1)


AFFINITY_FORMS = ("gram", "neighbours")


def space_affinity_loss(embeddings: torch.Tensor, initial: torch.Tensor, valid: torch.Tensor | None = None,
                        rows: slice | None = None, form: str = "gram", temperature: float = 0.05) -> torch.Tensor:
    """The semantic affinity loss on the attribute spaces: the mean over
    the K spaces of the affinity loss between the images' embeddings in
    that space (``embeddings``: (N, K, d)) and the initial features —
    :func:`semantic_affinity_loss` (``form="gram"``) or
    :func:`neighbour_affinity_loss` (``"neighbours"``). What the attribute
    heads read are these embeddings; the contrastive loss alone pulls
    images with like descriptions together in each space whatever they
    show, and this keeps in each space which images look alike to the
    general model."""
    k = embeddings.shape[1]
    return sum(affinity_loss(embeddings[:, s], initial, valid, rows, form, temperature) for s in range(k)) / k


def affinity_loss(features: torch.Tensor, initial: torch.Tensor, valid: torch.Tensor | None = None,
                  rows: slice | None = None, form: str = "gram", temperature: float = 0.05) -> torch.Tensor:
    """The semantic affinity loss of ``form`` ("gram": every pair's cosine;
    "neighbours": each image's near neighbours) between learnt features
    and the initial ones."""
    if form == "gram":
        return semantic_affinity_loss(features, initial, valid, rows)
    if form == "neighbours":
        return neighbour_affinity_loss(features, initial, valid, rows, temperature)
    raise ValueError(f"unknown affinity form {form!r}; use one of {', '.join(AFFINITY_FORMS)}")
