"""The shipped `lite` head ranks real photos above degraded copies of
themselves, on photos it was never trained on.

Held-out photos (configs/lite.yaml's world leaves them out): the ten
photos in ../shared/data/images (five AVA photos, five from the idealo
README) and scikit-image's `astronaut` and `rocket`.
"""

import numpy as np
import pytest
from PIL import Image

from photocritic.data.degrade import degradation_scores

from conftest import SHARED

skdata = pytest.importorskip("skimage.data")


def _held_out():
    shared = SHARED / "data" / "images"
    if not shared.is_dir():
        pytest.skip(f"{shared} not found: the held-out set is the 10 shared photos + 2 of "
                    f"scikit-image's (84 pairs); without them the figure would not be the README's")
    photos = [(n, Image.fromarray(getattr(skdata, n)())) for n in ["astronaut", "rocket"]]
    photos += [(p.name, Image.open(p)) for p in sorted(shared.rglob("*.jpg"))]
    return photos


def _pair_results(lite, level):
    return [(name, kind, s[0] > s[level]) for name, kind, s in degradation_scores(lite, _held_out())
            if level in s]


def test_original_beats_strong_degradations_on_held_out_photos(lite):
    res = _pair_results(lite, level=2)
    assert len(res) == 84
    acc = np.mean([ok for *_, ok in res])
    assert acc >= 0.90, [r for r in res if not r[2]]


def test_mild_degradations_mostly_ranked_too(lite):
    res = _pair_results(lite, level=1)
    assert len(res) == 84
    acc = np.mean([ok for *_, ok in res])
    assert acc >= 0.75


def test_head_is_small():
    from photocritic.zoo import PRESETS

    size = sum(f.stat().st_size for f in PRESETS["lite"]["dir"].iterdir())
    assert size < 500 * 1024
