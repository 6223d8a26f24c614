"""Train the `lite` model's head: EfficientNet-Lite0 features + VILA-R.

Self-supervised pairs: each real photo (and random crops of it) ranks above
its own degraded versions (photocritic.data.degrade), and a mildly degraded
version ranks above a strongly degraded one. No photo is committed; they come
from packages:

* Debian's ukui-wallpapers (`apt-get install ukui-wallpapers`; the photos
  among /usr/share/backgrounds),
* scikit-image's bundled photos, except those held out for testing.

Held out (never trained on; used by tests/test_lite_quality.py): the ten
photos in ../shared/data/images and scikit-image's `astronaut` and `rocket`.

Usage: python scripts/train_lite.py [--out src/photocritic/weights/lite]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from photocritic.data.degrade import degraded_versions, working_copy
from photocritic.data.images import prepare_pil
from photocritic.methods.vila_r import VilaR
from photocritic.models import Critic
from photocritic.scoremap import ScoreMap

WALLPAPERS = ["2004default.jpg", "calla.png", "city.png", "desert.png", "firstgeneration.jpg",
              "goldfish.png", "rhythm.jpg", "string.jpg", "the-mouse.jpg"]
# Photographs only: scikit-image's textures (brick, grass, gravel) and
# scientific images (retina, immunohistochemistry, hubble) taught the head
# nothing that carried over to photos in leave-photos-out validation.
SKIMAGE_TRAIN = ["coffee", "chelsea", "stereo_motorcycle", "camera"]
HELD_OUT_SKIMAGE = ["astronaut", "rocket"]


def training_photos() -> list[tuple[str, Image.Image]]:
    import skimage.data

    photos = []
    for name in WALLPAPERS:
        p = Path("/usr/share/backgrounds") / name
        if p.exists():
            photos.append((f"ukui:{name}", Image.open(p).convert("RGB")))
        else:
            print(f"warning: {p} missing (apt-get install ukui-wallpapers)", file=sys.stderr)
    for name in SKIMAGE_TRAIN:
        arr = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            arr = arr[0]  # (left, right, disparity): the left view
        photos.append((f"skimage:{name}", Image.fromarray(arr).convert("RGB")))
    return photos


def random_crops(im: Image.Image, n: int, rng: np.random.Generator) -> list[Image.Image]:
    out = [im]
    w, h = im.size
    for _ in range(n - 1):
        f = rng.uniform(0.55, 0.9)
        cw, ch = int(w * f), int(h * f)
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out.append(im.crop((left, top, left + cw, top + ch)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="src/photocritic/weights/lite")
    ap.add_argument("--crops", type=int, default=12)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--features", help="cache extracted features in this .npz (re-used if present)")
    ap.add_argument("--validate", action="store_true",
                    help="also report pair accuracy with 4 training photos left out")
    args = ap.parse_args(argv)

    if args.features and Path(args.features).exists():
        z = np.load(args.features)
        x, y, g, photo_of, n_photos = z["x"], z["y"], z["g"], z["photo"], int(z["n_photos"])
    else:
        x, y, g, photo_of, n_photos = extract(args)
        if args.features:
            np.savez(args.features, x=x, y=y, g=g, photo=photo_of, n_photos=n_photos)
    if args.validate:
        held = np.isin(photo_of, [1, 5, 9, 11])
        head = make_head(args).fit(x[~held], y[~held], groups=g[~held])
        for level in (1, 2):
            print(f"validation (4 photos left out), level {level}: pair accuracy "
                  f"{pair_accuracy(head.predict(x[held]), y[held], g[held], level):.3f}", file=sys.stderr)
    head = make_head(args)
    head.fit({"image.pooled": x}, y, groups=g,
             on_epoch=lambda e, loss: print(f"epoch {e} loss {loss:.4f}", file=sys.stderr) if e in (1, args.epochs) else None)
    raw = head.predict({"image.pooled": x}).score
    originals, strong = raw[y == 0], raw[y == -2]
    # Map the median original to 7 and the median strongly degraded image to 3.
    score_map = ScoreMap.from_anchors(float(np.median(strong)), float(np.median(originals)), 3.0, 7.0)
    for level in (1, 2):
        print(f"training pair accuracy, level {level}: {pair_accuracy(raw, y, g, level):.3f}", file=sys.stderr)

    out = Path(args.out)
    model = Critic({"type": "efficientnet-lite0"}, head, score_map, name="lite",
                   description="EfficientNet-Lite0 (ImageNet) multi-level features + VILA-R rank head "
                               f"(rank {args.rank}) trained on self-supervised degradation pairs "
                               f"from {n_photos} real photos; a technical-quality prior.")
    model.save(out, half=True)
    print(f"saved {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1024:.0f} KiB)", file=sys.stderr)
    return 0


def make_head(args) -> VilaR:
    return VilaR(rank=args.rank, margin=0.1, lr=args.lr, epochs=args.epochs, batch_size=150,
                 seed=args.seed, weight_decay=args.weight_decay, standardize=True, anchor="mean")


def pair_accuracy(raw, y, g, level) -> float:
    """Share of (original, degraded at ``level``) pairs ranked the right way."""
    correct = total = 0
    for k in np.unique(g):
        m = g == k
        r0 = raw[m][y[m] == 0][0]
        d = raw[m][y[m] == -level]
        correct += int((r0 > d).sum())
        total += d.size
    return correct / max(total, 1)


def extract(args):
    rng = np.random.default_rng(args.seed)
    critic = Critic({"type": "efficientnet-lite0"}, None, ScoreMap())
    pre = critic.preprocess
    feats, labels, groups, photo_of = [], [], [], []
    t0 = time.time()
    photos = training_photos()
    group = 0
    for p_idx, (name, photo) in enumerate(photos):
        for crop in random_crops(photo, args.crops, rng):
            base = working_copy(crop)
            images = [base]
            labs = [0.0]
            for _, level, im in degraded_versions(base, seed=group):
                images.append(im)
                labs.append(-float(level))
            arr = torch.from_numpy(np.stack([prepare_pil(im, pre) for im in images]))
            feats.append(critic.embed(arr))
            labels.extend(labs)
            groups.extend([group] * len(images))
            photo_of.extend([p_idx] * len(images))
            group += 1
        print(f"{name}: {group} groups, {time.time() - t0:.0f}s", file=sys.stderr)
    return (np.concatenate(feats), np.asarray(labels, dtype=np.float32), np.asarray(groups),
            np.asarray(photo_of), len(photos))


if __name__ == "__main__":
    raise SystemExit(main())
