"""Linear probe (Hentschel, Kobs & Hotho 2022, Sec. "linear probe"):
standardise each feature by its training mean and standard deviation, then
ordinary least squares to the mean score, on ``image.prelogits`` (CLIP's
768-d vision output before the projection).

``ridge``: ``None`` (the paper: plain OLS), a penalty alpha >= 0, or
``"auto"``: alpha chosen from ``alphas`` by validation SRCC (the intercept
is never penalised).
"""

from __future__ import annotations

import numpy as np
import torch

from ..registry import register_method
from .base import CHUNK, Method, Prediction, Targets, column_stats

DEFAULT_ALPHAS = tuple(10.0 ** k for k in range(-2, 7))  # 0.01 ... 1e6


class Standardized:
    """(x - mean) / std of a feature matrix, read ``CHUNK`` rows at a time
    (a memory-mapped feature file is never copied whole)."""

    def __init__(self, x, mean: np.ndarray, std: np.ndarray):
        self.x, self.mean, self.std = x, mean, std
        self.shape = (len(x), x.shape[1])

    def chunks(self):
        for s in range(0, len(self.x), CHUNK):
            yield s, (np.asarray(self.x[s:s + CHUNK], np.float64) - self.mean) / self.std

    def dense(self) -> np.ndarray:
        return np.concatenate([z for _, z in self.chunks()]) if len(self.x) else np.zeros((0, self.shape[1]))


class RidgePath:
    """argmin_w,b |z w + b - y|^2 + alpha |w|^2 on standardised ``z`` (whose
    columns have mean 0, so the intercept is mean(y)), for any alpha from
    one decomposition: choosing alpha on validation costs one solve each.

    With many more images than features: the d x d normal equations,
    accumulated chunk by chunk (a 250,000 x 768 fit takes seconds, in flat
    memory; standardised features keep them well conditioned), then one
    eigendecomposition. Otherwise the SVD of z. At alpha 0 both give plain
    OLS, the minimum-norm solution where z is rank-deficient (singular
    values below lstsq's default cut-off count as zero)."""

    def __init__(self, z: Standardized, y: np.ndarray):
        n, d = z.shape
        self.intercept = float(y.mean())
        yc = y - self.intercept
        if n <= 4 * d:
            u, self.s, vt = np.linalg.svd(z.dense(), full_matrices=False)
            self.basis, self.proj = vt.T, u.T @ yc
            self.cut = np.finfo(np.float64).eps * max(n, d) * (self.s.max() if len(self.s) else 0.0)
            self.gram = False
        else:
            gram = np.zeros((d, d))
            rhs = np.zeros(d)
            for s, zc in z.chunks():
                gram += zc.T @ zc
                rhs += zc.T @ yc[s:s + len(zc)]
            lam, v = np.linalg.eigh(gram)
            self.s, self.basis, self.proj = np.clip(lam, 0.0, None), v, v.T @ rhs
            self.cut = np.finfo(np.float64).eps * d * (self.s.max() if len(self.s) else 0.0)
            self.gram = True

    def solve(self, alpha: float = 0.0) -> tuple[np.ndarray, float]:
        s = self.s
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.gram:  # eigenvalues of z'z: w = V (lam + alpha)^-1 V' z'y
                f = 1.0 / (s + alpha) if alpha > 0 else np.where(s > self.cut, 1.0 / s, 0.0)
            else:  # singular values of z: w = V s / (s^2 + alpha) U' y
                f = s / (s * s + alpha) if alpha > 0 else np.where(s > self.cut, 1.0 / s, 0.0)
        return self.basis @ (f * self.proj), self.intercept


class _AffineScore(torch.nn.Module):
    """((x - mean) / std) @ coef + intercept, for export."""

    def __init__(self, mean, std, coef, intercept):
        super().__init__()
        f = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.register_buffer("mean", f(mean))
        self.register_buffer("std", f(std))
        self.register_buffer("coef", f(coef))
        self.register_buffer("intercept", f(intercept).reshape(()))

    def forward(self, x):
        return ((x.reshape(x.shape[0], -1).float() - self.mean) / self.std) @ self.coef + self.intercept


@register_method("linear")
class LinearProbe(Method):

    def __init__(self, ridge: float | str | None = None, alphas: tuple = DEFAULT_ALPHAS,
                 view: str = "image.prelogits"):
        self.ridge = ridge
        self.alphas = alphas
        self.view = view

    @property
    def requires(self):  # noqa: F811 - per instance: the view is a parameter
        return (self.view,)

    def fit(self, features, targets: Targets, val=None, on_epoch=None) -> "LinearProbe":
        x = features[self.view]
        y = np.asarray(targets.mean, dtype=np.float64)
        self.mean_, self.std_ = column_stats(x)
        z = Standardized(x, self.mean_, self.std_)
        self.alpha_ = 0.0
        if self.ridge == "auto":
            if val is None:
                raise ValueError("ridge='auto' chooses alpha on a validation split; none was given")
            from ..metrics import srcc

            scores = {}
            path = RidgePath(z, y)
            for a in self.alphas:
                self.coef_, self.intercept_ = path.solve(float(a))
                scores[float(a)] = srcc(self.predict(val[0]).score, val[1].mean)
            self.alpha_ = max(scores, key=scores.get)
            self.alpha_scores_ = scores
            self.coef_, self.intercept_ = path.solve(self.alpha_)
        else:
            if self.ridge is not None:
                self.alpha_ = float(self.ridge)
            self.coef_, self.intercept_ = RidgePath(z, y).solve(self.alpha_)
        if on_epoch:
            train_mse = float(np.mean((self.predict(features).score - y) ** 2))
            on_epoch(1, train_mse)
        return self

    def predict(self, features) -> Prediction:
        z = Standardized(features[self.view], self.mean_, self.std_)
        out = np.empty(z.shape[0])
        for s, zc in z.chunks():
            out[s:s + len(zc)] = zc @ self.coef_ + self.intercept_
        return Prediction(out)

    def export_module(self, features):
        return _AffineScore(self.mean_, self.std_, self.coef_, self.intercept_)

    def feature_importance(self) -> np.ndarray:
        """The probe's weight per feature in units of that feature's standard
        deviation (the weights of the standardised problem): the paper's Fig. 3."""
        return np.asarray(self.coef_)

    def state_dict(self):
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
        return {"mean": t(self.mean_), "std": t(self.std_), "coef": t(self.coef_),
                "intercept": t([self.intercept_])}

    def meta(self) -> dict:
        return {"alpha": self.alpha_}

    def load_state(self, state, meta) -> "LinearProbe":
        self.mean_, self.std_ = state["mean"].double().numpy(), state["std"].double().numpy()
        self.coef_ = state["coef"].double().numpy()
        self.intercept_ = float(state["intercept"][0])
        self.alpha_ = meta.get("alpha", 0.0)
        return self


def plot_weights(probe: LinearProbe, path) -> None:
    """``weights.png``: each feature's standardised weight, sorted by size (Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = probe.feature_importance()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    ax[0].bar(np.arange(len(w)), w, width=1.0, color="#3465a4")
    ax[0].set(xlabel="feature", ylabel="weight x feature std", title="linear probe weights")
    ax[1].plot(np.sort(np.abs(w))[::-1], color="#cc0000")
    ax[1].set(xlabel="rank", ylabel="|weight x std|", yscale="log", title="sorted magnitudes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
