"""Held-out degradation pairs: does a model rank a real photo above mildly
and strongly degraded copies of itself, and the mild copy above the strong
one? The held-out photos are the ten in ../shared/data/images and
scikit-image's astronaut and rocket (never used to train lite).

    python benchmarks/lite_pairs.py [--model lite] [--model DIR ...]

Writes benchmarks/results/lite_pairs.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, write_results  # noqa: E402

import photocritic  # noqa: E402
from photocritic.data.degrade import degradation_scores  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"
RESULTS = Path(__file__).resolve().parent / "results" / "lite_pairs.json"


def held_out():
    import skimage.data

    photos = [(n, Image.fromarray(getattr(skimage.data, n)())) for n in ("astronaut", "rocket")]
    return photos + [(p.name, Image.open(p)) for p in sorted(SHARED.rglob("*.jpg"))]


def evaluate(model) -> dict:
    rows = list(degradation_scores(model, held_out()))
    strong = [s[0] > s[2] for _, _, s in rows if 2 in s]
    mild = [s[0] > s[1] for _, _, s in rows if 1 in s]
    graded = [s[0] > s[1] > s[2] for _, _, s in rows if 1 in s and 2 in s]
    mild_over_strong = [s[1] > s[2] for _, _, s in rows if 1 in s and 2 in s]
    return {"strong": [int(sum(strong)), len(strong)], "mild": [int(sum(mild)), len(mild)],
            "mild_above_strong": [int(sum(mild_over_strong)), len(mild_over_strong)],
            "fully_ordered": [int(sum(graded)), len(graded)]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=None)
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"{SHARED} not found: the held-out photos are needed", file=sys.stderr)
        return 2
    print(machine_line())
    out = {}
    for name in args.model or ["lite"]:
        res = evaluate(photocritic.load(name, precision="fp32"))
        out[name] = res
        print(name, " ".join(f"{k} {v[0]}/{v[1]}" for k, v in res.items()))
    write_results(RESULTS, held_out_photos=len(held_out()), models=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
