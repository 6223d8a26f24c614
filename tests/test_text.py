import numpy as np
import pytest

from photocritic.encoders.text import MiniLMTextEncoder, packaged_minilm_dir

TEXTS = ["Great composition and lovely light.", "Too dark, the subject is lost.",
         "a photo of a cat", "A kitten sitting on a sofa.", "Stock prices fell sharply today."]


@pytest.fixture(scope="module")
def minilm():
    return MiniLMTextEncoder()


def test_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(packaged_minilm_dir()), device="cpu").encode(TEXTS)
    ours = minilm.encode_text(TEXTS, batch_size=2).numpy()
    assert ours.shape == (5, 384)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_semantics(minilm):
    e = minilm.encode_text(TEXTS).numpy()
    sim = e @ e.T
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    assert sim[2, 3] > sim[2, 4] + 0.2  # cat ~ kitten, not stock prices
