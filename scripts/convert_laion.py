"""Convert the LAION "improved aesthetic predictor" head into the project's
model format: src/photocritic/weights/laion-v2/ (config.json,
model.safetensors, NOTICE.md).

    python scripts/convert_laion.py ../shared/data/models/laion/sac+logos+ava1-l14-linearMSE.pth
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

from photocritic.methods.mlp import LaionMLP
from photocritic.models import Critic
from photocritic.scoremap import ScoreMap
from photocritic.zoo import BACKBONES

OUT = Path(__file__).resolve().parents[1] / "src" / "photocritic" / "weights" / "laion-v2"
NOTICE = """# laion-v2: the LAION improved aesthetic predictor head

`model.safetensors` holds the weights of `sac+logos+ava1-l14-linearMSE.pth`
from LAION's improved aesthetic predictor (Christoph Schuhmann et al.),
released under the Apache License 2.0, converted to the photocritic model
format without changing a value (sha256 of the source file: {sha}).

It maps an L2-normalised CLIP ViT-L/14 image embedding (768-d) to a 1-10
aesthetic score, with an MLP 768-1024-128-64-16-1 trained with MSE on
SAC, LAION-Logos and AVA ratings.
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("pth", help="the released .pth state dict")
    args = ap.parse_args()
    data = Path(args.pth).read_bytes()
    state = torch.load(args.pth, map_location="cpu", weights_only=True)
    method = LaionMLP().load_state(state, {"dim": int(state["layers.0.weight"].shape[1])})
    model = Critic(dict(BACKBONES["clip-vit-l-14"]), method, ScoreMap(center=0.0, scale=1.0, kind="linear"),
                   name="laion-v2", description="CLIP ViT-L/14 + the LAION improved aesthetic predictor "
                                                "head (MLP on the L2-normalised embedding; Apache-2.0)")
    model.save(OUT)
    (OUT / "NOTICE.md").write_text(NOTICE.format(sha=hashlib.sha256(data).hexdigest()))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
