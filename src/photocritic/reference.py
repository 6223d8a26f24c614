"""Scores as percentiles against a reference distribution (``--percentiles REF``).

A score of 5.3 says little by itself; "better than 71% of the reference
photos" says more. A reference is a JSON file ``{"format":
"photocritic-score-reference", "model", "description", "n", "quantiles":
[101 scores: the 0th to the 100th percentile]}``, or any results file that
``score`` wrote (its ``ok`` scores become the distribution). ``default``
names the reference that ships with the model (``lite`` has one).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import DataError, UsageError

FORMAT = "photocritic-score-reference"
WEIGHTS = Path(__file__).with_name("weights")


class ScoreReference:
    def __init__(self, quantiles, model: str = "", description: str = "", n: int = 0):
        q = np.asarray(quantiles, np.float64)
        if q.ndim != 1 or len(q) < 2 or not np.all(np.isfinite(q)) or np.any(np.diff(q) < 0):
            raise DataError("a score reference needs increasing, finite quantiles")
        self.quantiles, self.model, self.description, self.n = q, model, description, n

    @classmethod
    def from_scores(cls, scores, model: str = "", description: str = "") -> "ScoreReference":
        s = np.asarray([x for x in scores if x is not None and np.isfinite(x)], np.float64)
        if len(s) < 10:
            raise DataError(f"a score reference needs at least 10 scores, not {len(s)}")
        return cls(np.percentile(s, np.arange(101)), model, description, len(s))

    def percentiles(self, scores) -> np.ndarray:
        """0-100: the share of the reference scoring at most each score
        (interpolated between the reference's percentiles)."""
        s = np.asarray(scores, np.float64)
        q = self.quantiles
        grid = np.linspace(0, 100, len(q))
        lo = np.interp(s, q, grid, left=0.0, right=100.0)
        # flat stretches of the quantiles (tied reference scores): take the middle
        hi = 100.0 - np.interp(-s, -q[::-1], grid, left=0.0, right=100.0)
        return np.where(np.isnan(s), np.nan, (lo + hi) / 2)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "model": self.model, "description": self.description, "n": self.n,
                "quantiles": [round(float(v), 6) for v in self.quantiles]}

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def load_reference(spec: str, critic=None) -> ScoreReference:
    """``default`` (the model's shipped reference), a reference JSON, or a results file."""
    if spec == "default":
        name = getattr(critic, "name", "") or ""
        d = getattr(critic, "directory", None)
        candidates = [Path(d) / "reference.json"] if d else []
        candidates.append(WEIGHTS / name / "reference.json")
        for c in candidates:
            if c.is_file():
                return load_reference(str(c))
        raise UsageError(f"model {name or '?'} ships no score reference; give --percentiles FILE (a reference "
                         f"JSON, or a results file of scores from this model)")
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"--percentiles {spec}: no such file (or 'default' for the model's own)")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"--percentiles {spec}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"--percentiles {spec}: not a photocritic score reference")
        return ScoreReference(data["quantiles"], data.get("model", ""), data.get("description", ""),
                              data.get("n", 0))
    from .report import read_results

    rows = read_results(path)
    return ScoreReference.from_scores([r["score"] for r in rows if r["status"] == "ok"],
                                      description=f"the scores in {path.name}")
