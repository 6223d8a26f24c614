import io

import numpy as np
import pytest
import torch
from PIL import Image

from photocritic.data.images import decode_for
from photocritic.encoders.efficientnet import EfficientNetLite0Encoder, SameConv2d

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def encoder():
    return EfficientNetLite0Encoder()


def _logits(encoder, arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    pixels = decode_for(buf.getvalue(), encoder.preprocess)
    return encoder.classify(encoder.preprocess.normalize(torch.from_numpy(pixels.copy())[None]))[0]


def test_coffee_is_espresso(encoder):
    assert int(_logits(encoder, skdata.coffee()).argmax()) == 967


def test_chelsea_is_a_cat(encoder):
    assert 281 <= int(_logits(encoder, skdata.chelsea()).argmax()) <= 285


def test_same_padding_matches_tensorflow_rule():
    # TF SAME: out = ceil(in / stride); for in=224, k=3, s=2 the pad is 0 before, 1 after.
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    conv.weight.data.fill_(1.0)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = conv(x)
    assert y.shape[-2:] == (2, 2)
    # Top-left output sums rows 0-2 and columns 0-2 (no padding before).
    assert float(y[0, 0, 0, 0].detach()) == float(x[0, 0, :3, :3].sum())
    # Bottom-right output sums rows 2-3, columns 2-3 plus one padded zero row/column.
    assert float(y[0, 0, 1, 1].detach()) == float(x[0, 0, 2:, 2:].sum())


def test_embedding_does_not_depend_on_batch(encoder):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-1, 1, (5, 3, 224, 224)).astype(np.float32))
    together = encoder.encode(x).pooled
    alone = torch.cat([encoder.encode(x[i:i + 1]).pooled for i in range(5)])
    assert together.shape == (5, encoder.dim) == (5, 2912)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)
