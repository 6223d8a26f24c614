"""Aesthetics and caption metrics as plain functions.

Correlations (SRCC, PLCC, KRCC) follow scipy's definitions; average precision
follows scikit-learn's; EMD follows NIMA (Talebi & Milanfar, 2018); BLEU,
ROUGE-L and CIDEr(-D) follow the MS-COCO caption evaluation code
(pycocoevalcap), so that numbers are comparable with published ones. Each
is tested against its reference implementation.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

# -- score metrics -----------------------------------------------------------


def _pair(pred, true, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels as float arrays of one length, at least ``min_n``
    (2 for correlations; errors and accuracy are defined for one image)."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"predictions ({p.size}) and labels ({t.size}) differ in length")
    if p.size < min_n:
        raise ValueError(f"need at least {min_n} sample{'s' if min_n > 1 else ''}")
    return p, t


def _rank(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    from scipy.stats import rankdata

    return rankdata(x, method="average")


def plcc(pred, true) -> float:
    """Pearson linear correlation coefficient."""
    p, t = _pair(pred, true)
    p, t = p - p.mean(), t - t.mean()
    denom = math.sqrt(float((p * p).sum() * (t * t).sum()))
    return float((p * t).sum() / denom) if denom > 0 else float("nan")


def srcc(pred, true) -> float:
    """Spearman rank correlation: Pearson correlation of average ranks."""
    p, t = _pair(pred, true)
    return plcc(_rank(p), _rank(t))


def krcc(pred, true) -> float:
    """Kendall's tau-b (accounts for ties in either variable).

    scipy's O(n log n) implementation (merge-sort discordance count), so the
    20,000 images of AVA's test split need O(n) memory, not n x n matrices."""
    from scipy.stats import kendalltau

    p, t = _pair(pred, true)
    return float(kendalltau(p, t, variant="b").statistic)


def logistic4(x, b1, b2, b3, b4):
    """The 4-parameter logistic of VQEG-style quality evaluation:
    f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2.
    Increasing in x when b1 > b2."""
    z = np.clip(-(np.asarray(x, dtype=np.float64) - b3) / abs(b4), -500, 500)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


class LogisticFitError(ValueError):
    """The monotone logistic could not be fitted (too few points, constant
    predictions or labels, or no convergence)."""


def fit_logistic4(pred, true) -> np.ndarray:
    """Least-squares fit of :func:`logistic4` mapping predictions to labels,
    constrained to be monotone increasing (b1 >= b2, b4 > 0).

    An unconstrained fit can pick a decreasing logistic and so turn a
    correlation of -0.99 into +0.99; a monotone increasing map can only keep
    or lose correlation. Parametrised as low + span * sigmoid((x - c) / s)
    with span >= 0 and s > 0 (box bounds, trust-region reflective).
    Raises :class:`LogisticFitError` when it cannot be fitted.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    p, t = _pair(pred, true)
    if len(p) < 4:
        raise LogisticFitError(f"needs at least 4 points for 4 parameters, got {len(p)}")
    if np.ptp(p) == 0 or np.ptp(t) == 0:
        raise LogisticFitError("predictions or labels are constant")
    spread = float(np.std(p))

    def f(x, low, span, c, s):
        return low + span / (1.0 + np.exp(np.clip(-(x - c) / s, -500, 500)))

    p0 = [float(t.min()), float(np.ptp(t)), float(np.mean(p)), spread]
    lo = [-np.inf, 0.0, -np.inf, spread * 1e-6]
    hi = [np.inf, np.inf, np.inf, np.inf]
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            (low, span, c, s), _ = curve_fit(f, p, t, p0=p0, bounds=(lo, hi), maxfev=20000)
    except (RuntimeError, ValueError, OptimizeWarning) as exc:
        raise LogisticFitError(f"the fit did not converge ({exc})") from None
    return np.array([low + span, low, c, s])


def plcc_logistic(pred, true) -> float:
    """PLCC after the monotone 4-parameter logistic fit (standard in quality
    assessment). NaN when the fit fails (see :func:`plcc_logistic_fit`);
    never the raw PLCC under this name."""
    return plcc_logistic_fit(pred, true)[0]


def plcc_logistic_fit(pred, true) -> tuple[float, str | None]:
    """(PLCC after the fit, None) or (NaN, why the fit failed)."""
    p, t = _pair(pred, true)
    try:
        params = fit_logistic4(p, t)
    except LogisticFitError as exc:
        return float("nan"), str(exc)
    fitted = logistic4(p, *params)
    if np.ptp(fitted) == 0:
        return float("nan"), "the fitted logistic is constant"
    return plcc(fitted, t), None


def accuracy(pred, true, threshold: float = 5.0) -> float:
    """Binary accuracy of (pred > threshold) against (true > threshold): the
    rule of regression heads, whose prediction is a mean score."""
    p, t = _pair(pred, true, min_n=1)
    return float(np.mean((p > threshold) == (t > threshold)))


def binary_accuracy(pred_positive, true, threshold: float = 5.0) -> float:
    """Accuracy of binary predictions (1 = good) against (true > threshold),
    for methods that classify by their own rule (e.g. the nearest prompt)."""
    b = np.asarray(pred_positive).reshape(-1).astype(bool)
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    if b.shape != t.shape or b.size == 0:
        raise ValueError(f"predictions ({b.size}) and labels ({t.size}) differ in length or are empty")
    return float(np.mean(b == (t > threshold)))


def mse(pred, true) -> float:
    p, t = _pair(pred, true, min_n=1)
    return float(np.mean((p - t) ** 2))


def mae(pred, true) -> float:
    p, t = _pair(pred, true, min_n=1)
    return float(np.mean(np.abs(p - t)))


def emd(pred_dist, true_dist, r: int = 2) -> float:
    """Earth mover's distance between score distributions, averaged over
    images: :func:`photocritic.losses.emd` (the training loss itself) in
    float64, after normalising each row to sum to 1."""
    import torch

    from .losses import emd as emd_fn

    p = np.atleast_2d(np.asarray(pred_dist, dtype=np.float64))
    q = np.atleast_2d(np.asarray(true_dist, dtype=np.float64))
    if p.shape != q.shape:
        raise ValueError(f"distribution shapes differ: {p.shape} vs {q.shape}")
    p = p / p.sum(1, keepdims=True)
    q = q / q.sum(1, keepdims=True)
    return float(emd_fn(torch.from_numpy(p), torch.from_numpy(q), r))


def average_precision(labels, scores) -> float:
    """Average precision for one class, as scikit-learn defines it:
    AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds."""
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not y.any():
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(labels, scores) -> tuple[float, np.ndarray]:
    """Macro mAP over classes (columns) and the per-class APs; classes with
    no positive example are left out of the mean (their AP is NaN)."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be (images, classes)")
    aps = np.array([average_precision(y[:, k], s[:, k]) for k in range(y.shape[1])])
    return float(np.nanmean(aps)), aps


def bootstrap_ci(metric, pred, true, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of ``metric(pred, true)``,
    resampling images with replacement."""
    p = np.asarray(pred)
    t = np.asarray(true)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(p), len(p))
        v = metric(p[idx], t[idx])
        if not np.isnan(v):
            vals.append(v)
    if len(vals) < max(2, n_boot // 2):  # e.g. constant labels: the metric is undefined
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


# -- caption metrics ---------------------------------------------------------
# Inputs: ``refs`` {image id: [reference strings]}, ``cands`` {image id:
# [one candidate string]}; strings are split on whitespace, so tokenise and
# lower-case them first as the COCO toolkit's PTB tokenizer would.


def _ngrams(words: list[str], n: int) -> Counter:
    c = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            c[tuple(words[i:i + k])] += 1
    return c


def _check(refs: dict, cands: dict):
    if set(refs) != set(cands):
        raise ValueError("references and candidates must cover the same image ids")
    for k, v in cands.items():
        if len(v) != 1:
            raise ValueError(f"image {k!r}: exactly one candidate caption expected, got {len(v)}")
    return sorted(refs)


def bleu(refs: dict, cands: dict, n: int = 4) -> list[float]:
    """Corpus BLEU-1..n as in the COCO toolkit: clipped n-gram counts summed
    over the corpus, the brevity penalty from the summed "closest" reference
    lengths, and its tiny/small smoothing constants."""
    tiny, small = 1e-15, 1e-9
    correct = [0] * n
    guess = [0] * n
    testlen = reflen = 0
    for key in _check(refs, cands):
        words = cands[key][0].split()
        ref_words = [r.split() for r in refs[key]]
        maxref = Counter()
        for rw in ref_words:
            for g, c in _ngrams(rw, n).items():
                maxref[g] = max(maxref[g], c)
        lens = [len(rw) for rw in ref_words]
        reflen += min(lens, key=lambda L: (abs(L - len(words)), L))
        testlen += len(words)
        for g, c in _ngrams(words, n).items():
            correct[len(g) - 1] += min(maxref.get(g, 0), c)
        for k in range(n):
            guess[k] += max(0, len(words) - k)
    out, prod = [], 1.0
    for k in range(n):
        prod *= (correct[k] + tiny) / (guess[k] + small)
        out.append(prod ** (1.0 / (k + 1)))
    ratio = (testlen + tiny) / (reflen + small)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(refs: dict, cands: dict, beta: float = 1.2) -> float:
    """ROUGE-L as in the COCO toolkit: per image, the LCS-based F-measure from
    the best precision and best recall over its references (beta = 1.2),
    averaged over images."""
    scores = []
    for key in _check(refs, cands):
        cand = cands[key][0].split()
        precs, recs = [], []
        for r in refs[key]:
            rw = r.split()
            lcs = _lcs(rw, cand)
            precs.append(lcs / len(cand) if cand else 0.0)
            recs.append(lcs / len(rw) if rw else 0.0)
        p, r = max(precs), max(recs)
        scores.append((1 + beta ** 2) * p * r / (r + beta ** 2 * p) if p and r else 0.0)
    return float(np.mean(scores))


def cider(refs: dict, cands: dict, n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D as computed by the COCO toolkit's ``Cider`` scorer: TF-IDF
    n-gram vectors (document frequencies over this corpus's references),
    clipped cosine similarity per n, a Gaussian length penalty (sigma = 6),
    averaged over n and references, times 10, averaged over images."""
    keys = _check(refs, cands)
    crefs = [[_ngrams(r.split(), n) for r in refs[k]] for k in keys]
    ctest = [_ngrams(cands[k][0].split(), n) for k in keys]
    df = defaultdict(float)
    for rs in crefs:
        for g in {g for r in rs for g in r}:
            df[g] += 1
    log_n = math.log(float(len(crefs)))

    def vec(counts):
        v = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in counts.items():
            k = len(g) - 1
            v[k][g] = tf * (log_n - math.log(max(1.0, df[g])))
            norm[k] += v[k][g] ** 2
            if k == 1:  # the toolkit measures length in bigrams; kept for parity
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    scores = []
    for test, rs in zip(ctest, crefs):
        vh, nh, lh = vec(test)
        total = np.zeros(n)
        for r in rs:
            vr, nr, lr = vec(r)
            delta = float(lh - lr)
            for k in range(n):
                val = sum(min(vh[k][g], vr[k][g]) * vr[k][g] for g in list(vh[k]))
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * math.exp(-(delta ** 2) / (2 * sigma ** 2))
        scores.append(float(np.mean(total)) / len(rs) * 10.0)
    return float(np.mean(scores))


def caption_metrics(refs: dict, cands: dict) -> dict:
    b = bleu(refs, cands)
    return {"bleu1": b[0], "bleu2": b[1], "bleu3": b[2], "bleu4": b[3],
            "rouge_l": rouge_l(refs, cands), "cider": cider(refs, cands)}
