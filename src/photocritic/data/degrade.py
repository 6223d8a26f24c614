"""Synthetic degradations of real photos: held-out ranking pairs for `lite`
(benchmarks/lite_pairs.py, tests/test_lite_quality.py).

A real photo should rank above each degraded version of itself (the
self-supervised aesthetic pretraining idea of Pfister et al., 2021, cited by
the CLIP-aesthetics paper). Every function is deterministic for a given
``level`` (1 = mild, 2 = strong) and seed.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

WORKING_SIDE = 512  # short side at which photos are degraded


def working_copy(im: Image.Image, side: int = WORKING_SIDE) -> Image.Image:
    """RGB copy with its short side resized to ``side``."""
    im = im.convert("RGB")
    w, h = im.size
    s = side / min(w, h)
    return im.resize((max(side, round(w * s)), max(side, round(h * s))), Image.Resampling.LANCZOS)


def blur(im, level=2, seed=0):
    return im.filter(ImageFilter.GaussianBlur(radius=min(im.size) * (0.006, 0.012)[level - 1]))


def noise(im, level=2, seed=0):
    rng = np.random.default_rng(seed)
    a = np.asarray(im, dtype=np.float32)
    a = a + rng.normal(0.0, (18.0, 35.0)[level - 1], a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def underexpose(im, level=2, seed=0):
    return ImageEnhance.Brightness(im).enhance((0.45, 0.25)[level - 1])


def overexpose(im, level=2, seed=0):
    a = np.asarray(im, dtype=np.float32) * (1.9, 2.8)[level - 1]
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def jpeg(im, level=2, seed=0):
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=(10, 4)[level - 1])
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def desaturate(im, level=2, seed=0):
    return ImageEnhance.Color(im).enhance((0.3, 0.0)[level - 1])


def bad_crop(im, level=2, seed=0):
    """A small off-centre crop blown back up to full size: composition and
    resolution are both lost."""
    rng = np.random.default_rng(seed)
    w, h = im.size
    frac = (0.45, 0.3)[level - 1]
    cw, ch = max(8, int(w * frac)), max(8, int(h * frac))
    corner = rng.integers(0, 4)
    left = 0 if corner in (0, 2) else w - cw
    top = 0 if corner in (0, 1) else h - ch
    return im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.Resampling.BICUBIC)


DEGRADATIONS = {
    "blur": blur,
    "noise": noise,
    "underexpose": underexpose,
    "overexpose": overexpose,
    "jpeg": jpeg,
    "desaturate": desaturate,
    "bad_crop": bad_crop,
}


#: A "degraded" version whose pixels moved less than this on average (0-255
#: scale) is no degradation at all (desaturating a grey photo, say) and is
#: skipped: it cannot be ranked below its original.
MIN_CHANGE = 2.0


def degraded_versions(im: Image.Image, levels=(1, 2), seed: int = 0):
    """Yield ``(name, level, image)`` for every degradation and level that
    really changes ``im`` (see :data:`MIN_CHANGE`)."""
    base = np.asarray(im, dtype=np.float32)
    for k, (name, fn) in enumerate(DEGRADATIONS.items()):
        for level in levels:
            out = fn(im, level=level, seed=seed * 100 + k)
            if np.abs(np.asarray(out, dtype=np.float32) - base).mean() >= MIN_CHANGE:
                yield name, level, out


def degradation_scores(model, photos, seed0: int = 1000):
    """Score each photo and its degraded versions (both levels) with
    ``model``: yields (photo name, degradation, {0: original score, 1: mild,
    2: strong}) for every degradation that really changes the photo at both
    levels. ``photos``: (name, PIL image) pairs; photo k uses seed seed0 + k."""
    import torch

    from .images import prepare_pil

    for k, (name, im) in enumerate(photos):
        base = working_copy(im)
        versions = list(degraded_versions(base, levels=(1, 2), seed=seed0 + k))
        batch = np.stack([prepare_pil(x, model.preprocess) for x in [base] + [v[2] for v in versions]])
        s = model.scores_from_embeddings(model.embed(torch.from_numpy(batch)))
        by_kind: dict[str, dict[int, float]] = {}
        for (kind, level, _), sv in zip(versions, s[1:]):
            by_kind.setdefault(kind, {0: float(s[0])})[level] = float(sv)
        for kind, scores in by_kind.items():
            yield name, kind, scores
