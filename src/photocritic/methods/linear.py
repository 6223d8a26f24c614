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
from .base import Method, Prediction, Targets

DEFAULT_ALPHAS = tuple(10.0 ** k for k in range(-2, 7))  # 0.01 ... 1e6


def standardize_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (constant columns get 1)."""
    mean = x.mean(0)
    std = x.std(0)
    return mean, np.where(std > 0, std, 1.0)


def least_squares(z: np.ndarray, y: np.ndarray, alpha: float = 0.0) -> tuple[np.ndarray, float]:
    """argmin_w,b |z w + b - y|^2 + alpha |w|^2 on standardised ``z``.

    alpha = 0 is ordinary least squares: with many more images than
    features, through the d x d normal equations (a 250,000 x 768 fit takes
    seconds; standardised features keep them well conditioned), else by SVD
    (which also gives the minimum-norm solution when z is rank-deficient)."""
    zc = z - z.mean(0)
    yc = y - y.mean()
    if alpha == 0 and len(z) > 4 * z.shape[1]:
        w = np.linalg.lstsq(zc.T @ zc, zc.T @ yc, rcond=None)[0]
    elif alpha == 0:
        w = np.linalg.lstsq(zc, yc, rcond=None)[0]
    else:
        gram = zc.T @ zc
        gram[np.diag_indices_from(gram)] += alpha
        w = np.linalg.solve(gram, zc.T @ yc)
    return w, float(y.mean() - z.mean(0) @ w)


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
        x = np.asarray(features[self.view], dtype=np.float64)
        y = np.asarray(targets.mean, dtype=np.float64)
        self.mean_, self.std_ = standardize_stats(x)
        z = (x - self.mean_) / self.std_
        self.alpha_ = 0.0
        if self.ridge == "auto":
            if val is None:
                raise ValueError("ridge='auto' chooses alpha on a validation split; none was given")
            from ..metrics import srcc

            zv = (np.asarray(val[0][self.view], dtype=np.float64) - self.mean_) / self.std_
            scores = {}
            for a in self.alphas:
                w, b = least_squares(z, y, float(a))
                scores[float(a)] = srcc(zv @ w + b, val[1].mean)
            self.alpha_ = max(scores, key=scores.get)
            self.alpha_scores_ = scores
        elif self.ridge is not None:
            self.alpha_ = float(self.ridge)
        self.coef_, self.intercept_ = least_squares(z, y, self.alpha_)
        if on_epoch:
            train_mse = float(np.mean((z @ self.coef_ + self.intercept_ - y) ** 2))
            on_epoch(1, train_mse)
        return self

    def predict(self, features) -> Prediction:
        x = np.asarray(features[self.view], dtype=np.float64)
        return Prediction(((x - self.mean_) / self.std_) @ self.coef_ + self.intercept_)

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
