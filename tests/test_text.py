import numpy as np
import torch
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


def test_multipart_zip_is_joined_once_and_loads(tiny_text, tmp_path):
    """The mpnet packages' layout: one zip split into numbered parts."""
    import zipfile

    from photocritic.encoders.text import SentenceEncoder, assemble_multipart_zip

    z = tmp_path / "model.zip"
    with zipfile.ZipFile(z, "w") as out:
        for f in tiny_text.iterdir():
            out.write(f, f"tiny-bert/{f.name}")
    data = z.read_bytes()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = []
    for k in range(3):
        p = tmp_path / f"model.zip.00{k + 1}"
        p.write_bytes(data[cut[k]:cut[k + 1]])
        parts.append(p)
    target = tmp_path / "cache" / "tiny"
    d = assemble_multipart_zip(parts, target)
    assert d == target / "tiny-bert" and (d / "config.json").is_file()
    stamp = (target / ".complete").stat().st_mtime_ns
    assert assemble_multipart_zip(parts, target) == d and (target / ".complete").stat().st_mtime_ns == stamp
    (target / ".complete").write_text("half done")  # an unpack that did not finish is redone
    assert assemble_multipart_zip(parts, target) == d and (target / ".complete").read_text() != "half done"
    enc = SentenceEncoder(d)
    ref = SentenceEncoder(tiny_text)
    np.testing.assert_allclose(enc.encode_text(TEXTS).numpy(), ref.encode_text(TEXTS).numpy(), atol=1e-6)
    with pytest.raises(Exception, match="do not join into a zip"):
        assemble_multipart_zip(parts[:1] + parts[2:], tmp_path / "cache" / "bad")


def test_comment_ids_cut_at_comment_boundaries(tiny_text):
    from photocritic.encoders.text import SentenceEncoder

    enc = SentenceEncoder(tiny_text, max_length=20)
    tok = enc.tokenizer
    lens = [len(tok(c, add_special_tokens=False)["input_ids"]) for c in ("nice light", "a bit too dark here")]
    ids, cut = enc.comment_ids(["nice light", "a bit too dark here"])
    assert not cut and len(ids) == 1 + lens[0] + 1 + lens[1] + 1
    assert ids[0] == tok.cls_token_id and ids.count(tok.sep_token_id) == 2
    ids, cut = enc.comment_ids(["nice light", "a bit too dark here"], limit=1 + lens[0] + 1 + 2)
    assert cut and len(ids) == 1 + lens[0] + 1  # the second comment left out whole, not cut
    ids, cut = enc.comment_ids(["word " * 50])  # one comment over the limit: its start is kept
    assert cut and len(ids) == 20 and ids[-1] == tok.sep_token_id
    states, mask = enc.encode_ids([ids, ids[:5]])
    assert states.shape == (2, 20, 32) and mask.sum(1).tolist() == [20, 5]


def test_mpnet_from_its_packages_matches_sentence_transformers():
    from photocritic.encoders.base import ModelNotAvailableError
    from photocritic.encoders.text import packaged_mpnet_dir, text_encoder

    st = pytest.importorskip("sentence_transformers")
    try:
        d = packaged_mpnet_dir()
    except ModelNotAvailableError as exc:
        assert "pip install" in str(exc)
        pytest.skip("the all-mpnet-base-v2 parts are not installed (the mpnet extra)")
    enc = text_encoder("mpnet")
    assert enc.dim == 768 and enc.id == "all-mpnet-base-v2"
    ref = st.SentenceTransformer(str(d), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(enc.encode_text(TEXTS).numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("which", ["clip", "siglip"])
def test_clip_and_siglip_text_towers_give_comment_tokens(which, tiny_clip_dir, tiny_siglip_dir):
    """A CLIP/SigLIP directory as --text-encoder: its text tower's last
    hidden states, cut to its positions."""
    from transformers import AutoModel

    from photocritic.encoders.text import text_encoder

    d = tiny_clip_dir if which == "clip" else tiny_siglip_dir
    enc = text_encoder(str(d))
    full = AutoModel.from_pretrained(str(d)).eval()
    assert enc.max_length == full.config.text_config.max_position_embeddings
    ids, cut = enc.comment_ids(["a sharp photo", "lovely light " * 200])
    assert cut and len(ids) <= enc.max_length
    states, mask = enc.encode_ids([ids])
    with torch.no_grad():
        ref = full.text_model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    torch.testing.assert_close(states, ref.last_hidden_state.float(), rtol=0, atol=1e-5)
    assert states.shape == (1, len(ids), full.config.text_config.hidden_size)
