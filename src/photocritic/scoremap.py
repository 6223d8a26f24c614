"""Monotone maps from a method's raw output to the 1-10 aesthetic scale."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class ScoreMap:
    """score = 1 + 9 * sigmoid((raw - center) / scale).

    Strictly increasing in ``raw`` for ``scale > 0``, so it never changes a
    ranking. ``center`` is the raw value that maps to 5.5; ``scale`` sets
    how fast scores approach 1 and 10.
    """

    center: float = 0.0
    scale: float = 1.0

    def __call__(self, raw) -> np.ndarray:
        z = (np.asarray(raw, dtype=np.float64) - self.center) / self.scale
        return 1.0 + 9.0 / (1.0 + np.exp(-z))

    def inverse(self, score) -> np.ndarray:
        p = (np.asarray(score, dtype=np.float64) - 1.0) / 9.0
        return self.center + self.scale * np.log(p / (1.0 - p))

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
        return {"kind": "logistic", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreMap":
        return cls(center=float(d["center"]), scale=float(d["scale"]))
