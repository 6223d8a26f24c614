import numpy as np
import pytest
import torch

import photocritic
from photocritic.encoders.base import ModelNotAvailableError
from photocritic.encoders.hf import HFVisionLanguageEncoder

from conftest import jpeg_bytes, photo


@pytest.mark.parametrize("which", ["tiny_clip_dir", "tiny_siglip_dir"])
def test_tiny_model_loads_through_hub_path(which, request):
    d = request.getfixturevalue(which)
    enc = HFVisionLanguageEncoder(str(d))
    x = torch.randn(3, 3, 64, 64)
    out = enc.encode(x)
    ref = enc.model.get_image_features(pixel_values=x)
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
    torch.testing.assert_close(out.pooled, ref.float())
    assert out.tokens.shape[0] == 3 and out.pooled.shape == (3, enc.dim)
    t = enc.encode_text(["good image", "bad image"])
    ref_t = enc.model.get_text_features(**{k: v for k, v in enc.tokenizer(
        ["good image", "bad image"], return_tensors="pt",
        **({"padding": "max_length", "max_length": 16} if "siglip" in which else {"padding": True})).items()
        if k in ("input_ids", "attention_mask")})
    ref_t = ref_t if isinstance(ref_t, torch.Tensor) else ref_t.pooler_output
    torch.testing.assert_close(t, ref_t.float())


def test_preprocessing_matches_the_hf_image_processor(tiny_clip_dir, tmp_path):
    from transformers import CLIPImageProcessor

    im = photo(5, (300, 200))
    proc = CLIPImageProcessor.from_pretrained(str(tiny_clip_dir))
    ref = proc(images=im, return_tensors="pt")["pixel_values"]
    crit = photocritic.load(str(tiny_clip_dir))
    from photocritic.data.images import prepare_pil

    ours = crit.preprocess.normalize(torch.from_numpy(prepare_pil(im, crit.preprocess).copy())[None])
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().mean()) < 0.02


def test_clip_dir_scores_zero_shot_with_vila_prompts(tiny_clip_dir, tmp_path):
    crit = photocritic.load(str(tiny_clip_dir), precision="fp32")
    assert crit.prompts.name == "vila" and crit.prompts.rule == "antonym"
    crit.score([photo(9)])  # text side computed before any cache is attached
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(jpeg_bytes(photo(i)))
        paths.append(str(p))
    rows = crit.score(paths, cache=tmp_path / "c.sqlite")
    # independent computation straight from the HF model
    from transformers import CLIPModel

    from photocritic.data.images import decode_for

    model = CLIPModel.from_pretrained(str(tiny_clip_dir)).eval()
    enc = HFVisionLanguageEncoder(str(tiny_clip_dir))
    pix = torch.stack([crit.preprocess.normalize(torch.from_numpy(decode_for(open(p, "rb").read(),
                                                                             crit.preprocess).copy())[None])[0]
                       for p in paths])
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pix)
        img = img if isinstance(img, torch.Tensor) else img.pooler_output
        img = img / img.norm(dim=-1, keepdim=True)
        probs = []
        for good, bad in crit.prompts.pairs:
            t = enc.encode_text([good, bad])
            t = t / t.norm(dim=-1, keepdim=True)
            probs.append((model.logit_scale.exp() * img @ t.T).softmax(-1)[:, 0])
    expected = 1 + 9 * torch.stack(probs).mean(0).numpy()
    np.testing.assert_allclose([r.score for r in rows], expected, rtol=1e-5)
    # a fresh model object gets image and text embeddings and the logit scale from the cache
    again = photocritic.load(str(tiny_clip_dir), precision="fp32")
    rows2 = again.score(paths, cache=tmp_path / "c.sqlite")
    assert rows2.stats.cached == 3 and again._encoder is None  # never loaded the weights
    np.testing.assert_allclose([r.score for r in rows2], [r.score for r in rows], rtol=1e-6)


def test_missing_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotAvailableError) as err:
        HFVisionLanguageEncoder("someone/no-such-clip")
    msg = str(err.value)
    assert "someone/no-such-clip" in msg and "local directory" in msg
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(ModelNotAvailableError):
        HFVisionLanguageEncoder(str(empty))


def test_unreachable_hub_fails_fast_with_the_how_to(tmp_path, monkeypatch):
    import socket

    from photocritic.encoders import hf

    # a closed local port stands in for a hub this machine cannot reach
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    hf.hub_reachable.cache_clear()
    with pytest.raises(ModelNotAvailableError, match="not reachable") as err:
        HFVisionLanguageEncoder("someone/no-such-clip")
    assert "someone/no-such-clip" in str(err.value)
    # the loader is asked once, offline; the unreachable hub is never asked to download
    calls = []

    def loader(name, **kw):
        calls.append(kw)
        raise OSError("not in the local cache")

    with pytest.raises(ModelNotAvailableError, match="not reachable"):
        hf._load_pretrained(loader, "someone/other-clip")
    assert calls == [{"local_files_only": True}] and hf.hub_reachable() is False
    hf.hub_reachable.cache_clear()


def test_local_models_at_one_path_do_not_share_cache_ids(tmp_path):
    from photocritic.encoders.tiny import save_random_clip

    d = tmp_path / "m"
    save_random_clip(d, seed=1)
    first = HFVisionLanguageEncoder(str(d)).id
    save_random_clip(d, seed=2)
    assert HFVisionLanguageEncoder(str(d)).id != first


def test_changing_precision_recomputes_text_features(tiny_clip_dir):
    """Text embeddings held by a model are dropped when configure() changes
    its precision: afterwards they equal a fresh model's at that precision."""
    texts = ["good image", "bad image"]
    m = photocritic.zoo.zero_shot(str(tiny_clip_dir)).configure(precision="fp32")
    fp32 = m.text_embeddings(texts)
    m.configure(precision="bf16")
    fresh = photocritic.zoo.zero_shot(str(tiny_clip_dir)).configure(precision="bf16").text_embeddings(texts)
    np.testing.assert_array_equal(m.text_embeddings(texts), fresh)
    assert not np.array_equal(fresh, fp32)  # bf16 rounding: the test would see stale fp32 features
