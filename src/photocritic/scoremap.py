"""Monotone maps from a method's raw output to the 1-10 aesthetic scale."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class ScoreMap:
    """``kind="logistic"``: score = 1 + 9 * sigmoid((raw - center) / scale);
    ``kind="linear"``: score = center + scale * raw (for raw outputs that
    are probabilities: center 1, scale 9 maps [0, 1] onto [1, 10]).

    Strictly increasing in ``raw`` for ``scale > 0``, so it never changes a
    ranking. For the logistic map ``center`` is the raw value that maps to
    5.5 and ``scale`` sets how fast scores approach 1 and 10.
    """

    center: float = 0.0
    scale: float = 1.0
    kind: str = "logistic"

    def __post_init__(self):
        if self.kind not in ("logistic", "linear"):
            raise ValueError(f"score map kind must be logistic or linear, not {self.kind!r}")
        if not self.scale > 0:
            raise ValueError("a score map's scale must be positive (the map must be increasing)")

    def __call__(self, raw) -> np.ndarray:
        r = np.asarray(raw, dtype=np.float64)
        if self.kind == "linear":
            return self.center + self.scale * r
        z = (r - self.center) / self.scale
        return 1.0 + 9.0 / (1.0 + np.exp(-z))

    @classmethod
    def calibrate(cls, raw, labels) -> "ScoreMap":
        """The logistic map that fits ``labels`` (1-10 mean scores) best in
        the least-squares sense; monotone by construction."""
        from scipy.optimize import curve_fit

        r = np.asarray(raw, dtype=np.float64)
        y = np.clip(np.asarray(labels, dtype=np.float64), 1.0 + 1e-6, 10.0 - 1e-6)
        f = lambda x, c, s: 1.0 + 9.0 / (1.0 + np.exp(-(x - c) / abs(s)))  # noqa: E731
        if np.ptp(r) == 0 or np.ptp(y) == 0:
            raise ValueError("cannot calibrate: the model's outputs or the labels are all equal")
        p0 = [float(np.median(r)), float(np.std(r)) or 1.0]
        try:
            (c, s), _ = curve_fit(f, r, y, p0=p0, maxfev=20000)
        except RuntimeError as exc:
            raise ValueError(f"cannot calibrate: the logistic fit did not converge ({exc})") from None
        return cls(center=float(c), scale=float(abs(s)))

    @classmethod
    def match(cls, raw, labels, percentiles=(10.0, 90.0)) -> "ScoreMap":
        """The logistic map that sends the raw scores' 10th and 90th
        percentiles to the labels' (1-10): the mapped scores keep the labels'
        spread. For rank scores (VILA-R), which have no scale of their own; a
        least-squares fit (:meth:`calibrate`) shrinks a weak ranker's scores
        towards the mean."""
        r = np.asarray(raw, dtype=np.float64)
        y = np.clip(np.asarray(labels, dtype=np.float64), 1.0 + 1e-3, 10.0 - 1e-3)
        (r_lo, r_hi), (y_lo, y_hi) = np.percentile(r, percentiles), np.percentile(y, percentiles)
        if not (r_hi > r_lo and y_hi > y_lo):
            raise ValueError("cannot match the score scale: the model's outputs or the labels barely vary")
        return cls.from_anchors(float(r_lo), float(r_hi), float(y_lo), float(y_hi))

    @classmethod
    def from_anchors(cls, low_raw: float, high_raw: float, low_score: float = 3.0,
                     high_score: float = 8.0) -> "ScoreMap":
        """The map that sends ``low_raw`` to ``low_score`` and ``high_raw`` to ``high_score``."""
        def logit(s):
            p = (s - 1.0) / 9.0
            return math.log(p / (1.0 - p))

        lo, hi = logit(low_score), logit(high_score)
        scale = (high_raw - low_raw) / (hi - lo)
        center = low_raw - lo * scale
        return cls(center=center, scale=scale)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreMap":
        return cls(center=float(d["center"]), scale=float(d["scale"]), kind=d.get("kind", "logistic"))
