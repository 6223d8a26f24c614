"""Build a model's score reference (``--percentiles default``) from a synthetic world.

The reference is the distribution of the model's scores on a world of real
photos with random edits (``photocritic data synth``; a seed other than the
one `make lite` trains on), written as 101 percentiles beside the model.

Usage: python scripts/build_reference.py [--model lite] [--n 1000] [--seed 11]
       [--output src/photocritic/weights/lite/reference.json]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import photocritic
from photocritic.data.synthetic import find_sources, synthesize
from photocritic.reference import ScoreReference

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lite")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--output", default=str(REPO / "src/photocritic/weights/lite/reference.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sources = find_sources()
        synthesize(tmp, args.n, seed=args.seed, sources=sources)
        paths = sorted(str(p) for p in (Path(tmp) / "images").glob("*.jpg"))
        rows = photocritic.load(args.model, precision="fp32").score(paths)
    ref = ScoreReference.from_scores(
        [r.score for r in rows if r.status == "ok"], model=args.model,
        description=f"{args.model}'s scores (fp32) on {len(paths)} images of the synthetic world (seed "
                    f"{args.seed}): {len(sources)} real photos (Debian wallpapers, scikit-image) with random "
                    f"crops and edits of exposure, colour, sharpness, noise and composition")
    ref.save(args.output)
    q = ref.quantiles
    print(f"{args.output}: {ref.n} scores; 10th/50th/90th percentiles {q[10]:.2f} / {q[50]:.2f} / {q[90]:.2f}")


if __name__ == "__main__":
    main()
