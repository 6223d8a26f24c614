"""Bursts of photos with known groups and known best frames, for testing culling.

Each scene is a crop of a real photo (the synthetic world's sources). A
scene is shot as a burst of 1 to ``max_frames`` frames: frame 0 is the
scene as it is (the frame to keep); each other frame is shifted by a few
per cent and degraded: blurred, under- or over-exposed (the strong levels of
:mod:`photocritic.data.degrade`, the held-out degradations `lite` is checked
on). Frames of a burst are 0.1 to 0.5 s apart (a burst lasts
under 2 s); scenes are minutes apart. Capture times go into EXIF
DateTimeOriginal and SubSecTimeOriginal; file names are shuffled so that
their order says nothing. Returns the truth: ``{file: {"group", "best",
"edit", "source"}}`` (``edit``: none, blur, underexpose or overexpose;
``source``: the source photo's name).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .degrade import DEGRADATIONS


def _exif_bytes(t: float) -> bytes:
    stamp = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    exif = Image.Exif()
    exif[306] = stamp.strftime("%Y:%m:%d %H:%M:%S")
    ifd = exif.get_ifd(0x8769)
    ifd[36867] = stamp.strftime("%Y:%m:%d %H:%M:%S")
    ifd[37521] = f"{stamp.microsecond // 1000:03d}"
    return exif.tobytes()


def make_bursts(out: str | Path, n_photos: int, seed: int = 0, sources=None, size: tuple[int, int] = (960, 640),
                max_frames: int = 6, quality: int = 90) -> dict:
    from .synthetic import find_sources

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = list(sources if sources is not None else find_sources())
    if not sources:
        raise ValueError("no source photos (install the Debian wallpapers or scikit-image)")
    loaded = [s.load() for s in sources]
    names = [s.name for s in sources]
    truth, frames, scene, t = {}, [], 0, 1.7e9
    while len(frames) < n_photos:
        src = loaded[scene % len(loaded)]
        w, h = src.size
        f = rng.uniform(0.45, 0.8)  # the scene: a crop of the photo at the output's aspect
        cw = int(min(w, h * size[0] / size[1]) * f)
        ch = int(cw * size[1] / size[0])
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        k = int(min(rng.integers(1, max_frames + 1), n_photos - len(frames)))
        t += rng.uniform(120, 600)  # minutes after the last scene
        best = int(rng.integers(0, k))  # where in the burst the good frame falls
        ft = t
        for i in range(k):
            if i:
                ft += rng.uniform(0.1, 0.5)
            dx, dy = (0, 0) if i == best else (int(rng.uniform(-0.04, 0.04) * cw), int(rng.uniform(-0.04, 0.04) * ch))
            xa, ya = min(max(x0 + dx, 0), w - cw), min(max(y0 + dy, 0), h - ch)
            im = src.crop((xa, ya, xa + cw, ya + ch)).resize(size, Image.Resampling.BICUBIC)
            kind = "none"
            if i != best:  # the project's held-out degradations, strong (data/degrade.py)
                kind = str(rng.choice(["blur", "underexpose", "overexpose"]))
                im = DEGRADATIONS[kind](im, level=2, seed=int(rng.integers(1 << 30)))
            frames.append((im, ft, scene, i == best, kind, names[scene % len(loaded)]))
        scene += 1
    order = rng.permutation(len(frames))
    for n, j in enumerate(order):
        im, ft, g, is_best, kind, source = frames[j]
        name = f"IMG_{n:05d}.jpg"
        im.save(out / name, quality=quality, exif=_exif_bytes(ft))
        truth[name] = {"group": int(g), "best": bool(is_best), "edit": kind, "source": source}
    (out / "truth.json").write_text(json.dumps(truth, indent=0) + "\n")
    return truth
