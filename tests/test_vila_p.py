"""VILA-P: the CoCa model, its losses, generation, pretraining and the model
directory it writes (zero-shot scorer, backbone, style classifier, captioner)."""

import itertools
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from photocritic.cli import main
from photocritic.encoders import coca as C
from photocritic.encoders.base import fit_tower_keys
from photocritic.losses import caption_loss, contrastive_loss

from conftest import (browser_page, needs_chromium, needs_torchrun, run_processes, served, write_broken_files,
                      write_style_lists)


# -- losses, by hand ---------------------------------------------------------------------------

def test_contrastive_loss_equals_a_hand_computation_on_three_pairs():
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])
    txt = torch.tensor([[0.8, 0.6], [0.0, 1.0], [-1.0, 1.0]])
    t = 1 / 0.07
    x = [[a / math.hypot(a, b), b / math.hypot(a, b)] for a, b in img.tolist()]
    y = [[a / math.hypot(a, b), b / math.hypot(a, b)] for a, b in txt.tolist()]

    def dot(a, b):
        return a[0] * b[0] + a[1] * b[1]

    i2t = sum(-math.log(math.exp(t * dot(x[i], y[i])) / sum(math.exp(t * dot(x[i], y[j])) for j in range(3)))
              for i in range(3))
    t2i = sum(-math.log(math.exp(t * dot(y[i], x[i])) / sum(math.exp(t * dot(y[i], x[j])) for j in range(3)))
              for i in range(3))
    want = (i2t + t2i) / 6
    got = contrastive_loss(img, txt, torch.tensor(t))
    assert float(got) == pytest.approx(want, rel=1e-5)
    # the two directions differ here: the loss is not one direction twice
    assert i2t != pytest.approx(t2i, rel=1e-3)
    # a padded fourth pair changes nothing; shares of the rows add up to the loss
    pad_img, pad_txt = torch.cat([img, torch.randn(1, 2)]), torch.cat([txt, torch.randn(1, 2)])
    valid = torch.tensor([True, True, True, False])
    assert float(contrastive_loss(pad_img, pad_txt, torch.tensor(t), valid=valid)) == pytest.approx(want, rel=1e-5)
    parts = [contrastive_loss(pad_img, pad_txt, torch.tensor(t), valid=valid, rows=s)
             for s in (slice(0, 2), slice(2, 4))]
    assert float(sum(parts)) == pytest.approx(want, rel=1e-5)


def test_same_text_positives_equal_a_hand_computation():
    """Pairs 0 and 2 share a text: each one's term is the summed probability
    of both; with every text distinct the loss is the plain one."""
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0], [-1.0, -0.5]])
    txt = torch.tensor([[0.8, 0.6], [0.0, 1.0], [-1.0, 1.0], [0.3, -1.0]])
    t = 1 / 0.1
    x = torch.nn.functional.normalize(img, dim=-1).tolist()
    y = torch.nn.functional.normalize(txt, dim=-1).tolist()
    same = [[0, 2], [1], [0, 2], [3]]

    def e(a, b):
        return math.exp(t * (a[0] * b[0] + a[1] * b[1]))

    i2t = sum(-math.log(sum(e(x[i], y[j]) for j in same[i]) / sum(e(x[i], y[j]) for j in range(4)))
              for i in range(4))
    t2i = sum(-math.log(sum(e(y[i], x[j]) for j in same[i]) / sum(e(y[i], x[j]) for j in range(4)))
              for i in range(4))
    ids = torch.tensor([7, 3, 7, 9])
    got = contrastive_loss(img, txt, torch.tensor(t), text_ids=ids)
    assert float(got) == pytest.approx((i2t + t2i) / 8, rel=1e-5)
    assert float(got) < float(contrastive_loss(img, txt, torch.tensor(t)))
    distinct = contrastive_loss(img, txt, torch.tensor(t), text_ids=torch.arange(4))
    assert float(distinct) == pytest.approx(float(contrastive_loss(img, txt, torch.tensor(t))), rel=1e-6)
    # a padded pair sharing a text id changes nothing, gives finite gradients; shares add up
    pad_img = torch.cat([img, torch.randn(1, 2)]).requires_grad_()
    pad_txt = torch.cat([txt, torch.randn(1, 2)])
    valid = torch.tensor([True] * 4 + [False])
    ids5 = torch.tensor([7, 3, 7, 9, 7])
    full = contrastive_loss(pad_img, pad_txt, torch.tensor(t), valid=valid, text_ids=ids5)
    assert float(full.detach()) == pytest.approx(float(got), rel=1e-5)
    full.backward()
    assert torch.isfinite(pad_img.grad).all() and float(pad_img.grad[4].abs().max()) == 0
    parts = [contrastive_loss(pad_img.detach(), pad_txt, torch.tensor(t), valid=valid, rows=s, text_ids=ids5)
             for s in (slice(0, 2), slice(2, 5))]
    assert float(sum(parts)) == pytest.approx(float(got), rel=1e-5)


def test_text_keys_are_equal_exactly_for_equal_texts():
    from photocritic.training.pretrain import text_keys

    ids, mask = _batch([[1, 5, 7, 2], [1, 5, 7, 2], [1, 5, 2], [1, 5, 7, 9, 2]], pad=0, width=6)
    k = text_keys(ids, mask).tolist()
    assert k[0] == k[1] and len({k[0], k[2], k[3]}) == 3


def test_caption_loss_is_the_mean_cross_entropy_of_non_padding_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 4, -100], [0, -100, -100]])
    lp = torch.log_softmax(logits, -1)
    want = -(lp[0, 0, 1] + lp[0, 1, 4] + lp[1, 0, 0]) / 3
    assert float(caption_loss(logits, labels)) == pytest.approx(float(want), rel=1e-6)
    changed = logits.clone()
    changed[0, 2] += 10  # logits at padded positions do not count
    changed[1, 1:] -= 3
    assert float(caption_loss(changed, labels)) == pytest.approx(float(want), rel=1e-6)


# -- the model ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_coca():
    torch.manual_seed(0)
    model = C.CoCa(C.random_config("tiny", vocab_size=40, ids=(1, 2, 0), gen_queries=6))
    with torch.no_grad():  # a non-zero image path through the poolers, as after training
        model.con_projection.weight.normal_(0, 0.2)
    return model.eval()


def _batch(rows, pad=0, width=None):
    width = width or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = torch.tensor(r)
        mask[k, :len(r)] = 1
    return ids, mask


def test_changing_a_later_token_never_changes_earlier_logits(tiny_coca):
    px = torch.randn(1, 3, 64, 64)
    a = [1, 5, 7, 9, 11, 2]
    for t in range(4):  # token t + 1 is a text token
        b = list(a)
        b[t + 1] = 30
        outs = [tiny_coca(px, *_batch([s])) for s in (a, b)]
        torch.testing.assert_close(outs[0]["logits"][0, :t + 1], outs[1]["logits"][0, :t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(outs[0]["logits"][0, t + 1:], outs[1]["logits"][0, t + 1:])


def test_padding_never_changes_an_output(tiny_coca):
    """A text alone, and padded beside a longer one: the same CLS embedding
    and the same logits at its own positions; shapes as documented."""
    px = torch.randn(2, 3, 64, 64)
    short, long = [1, 5, 7, 2], [1, 8, 9, 10, 11, 12, 13, 2]
    alone = tiny_coca(px[:1], *_batch([short]))
    padded = tiny_coca(px, *_batch([short, long], pad=0))
    padded_other = tiny_coca(px, *_batch([short, long], pad=17, width=12))
    assert padded["logits"].shape == (2, 7, 40) and padded["image"].shape == (2, 32)
    assert padded["text"].shape == (2, 32)
    for out in (padded, padded_other):
        torch.testing.assert_close(out["text"][0], alone["text"][0], rtol=0, atol=1e-5)
        torch.testing.assert_close(out["logits"][0, :3], alone["logits"][0, :3], rtol=0, atol=1e-5)
        assert (out["labels"][0, 3:] == -100).all() and out["labels"][0, :3].tolist() == [5, 7, 2]
    # the image embedding of one image never depends on the others in the batch
    torch.testing.assert_close(padded["image"][0], alone["image"][0], rtol=0, atol=1e-5)


def test_pooler_ignores_masked_context_and_cross_attention_reads_the_image(tiny_coca):
    pool = tiny_coca.gen_pooler
    ctx = torch.randn(2, 5, 32)
    out = pool(ctx)
    assert out.shape == (2, 6, 32)
    extra = torch.cat([ctx, torch.randn(2, 3, 32) * 50], 1)
    mask = torch.tensor([[1] * 5 + [0] * 3] * 2)
    torch.testing.assert_close(pool(extra, key_mask=mask), out, rtol=0, atol=1e-5)
    ids, m = _batch([[1, 5, 7, 2]])
    a = tiny_coca(torch.randn(1, 3, 64, 64), ids, m)["logits"]
    b = tiny_coca(torch.randn(1, 3, 64, 64), ids, m)["logits"]
    assert (a - b).abs().max() > 1e-4  # the multimodal layers see the image


def test_kv_cache_generation_equals_recomputation(tiny_coca):
    px = torch.randn(3, 3, 64, 64)
    fast = tiny_coca.generate(px, max_tokens=20)
    slow = tiny_coca.generate(px, max_tokens=20, use_cache=False)
    assert fast == slow and all(len(s) > 0 for s in fast)
    assert tiny_coca.generate(px, max_tokens=20, beams=3) == tiny_coca.generate(px, max_tokens=20, beams=3,
                                                                               use_cache=False)
    full = tiny_coca.generate(px, max_tokens=63, stop_at_end=False)
    assert all(len(s) == 63 and 2 not in s for s in full)


@torch.no_grad()
def test_generation_from_a_prefix_continues_it(tiny_coca):
    """The prefix is forced (with and without the cache alike) and the first
    free token is the argmax after BOS + prefix, computed without generate."""
    px = torch.randn(2, 3, 64, 64)
    prefix = [5, 7]
    fast = tiny_coca.generate(px, max_tokens=12, prefix=prefix)
    assert fast == tiny_coca.generate(px, max_tokens=12, prefix=prefix, use_cache=False)
    assert all(s[:2] == prefix and len(s) > 2 for s in fast)
    kv = tiny_coca.image_kv(tiny_coca.encode_image(px)["generative"])
    states = tiny_coca._embed_tokens(torch.tensor([[1, *prefix]] * 2))
    for layer in tiny_coca.unimodal:
        states = layer(states)
    assert [s[2] for s in fast] == tiny_coca.decode(states, kv)[:, -1].argmax(-1).tolist()
    beams = tiny_coca.generate(px, max_tokens=12, prefix=prefix, beams=3)
    assert all(s[:2] == prefix for s in beams)


@torch.no_grad()
def test_beam_search_with_every_beam_kept_is_exhaustive_search():
    """Vocabulary 5, at most 3 tokens, 125 beams: beam search keeps every
    sequence, so it must find the best length-normalised log-probability of
    a brute-force enumeration."""
    torch.manual_seed(3)
    model = C.CoCa(C.random_config("tiny", vocab_size=5, ids=(1, 2, 0), gen_queries=4)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8)  # sharper, more varied distributions
    px = torch.randn(2, 3, 64, 64)
    got = model.generate(px, max_tokens=3, beams=125)
    seqs = [seq for n in (1, 2, 3) for seq in itertools.product(range(5), repeat=n)
            if 2 not in seq[:-1] and (n == 3 or seq[-1] == 2)]  # ends at the first end token, or runs to 3
    for k in range(2):
        kv = model.image_kv(model.encode_image(px[k:k + 1])["generative"])
        best, best_seq = -math.inf, None
        for n in (1, 2, 3):
            group = [s for s in seqs if len(s) == n]
            ids = torch.tensor([[1, *s] for s in group])
            states = model._embed_tokens(ids)
            for layer in model.unimodal:
                states = layer(states)
            lp = torch.log_softmax(model.decode(states, [(a.expand(len(group), -1, -1, -1),
                                                          b.expand(len(group), -1, -1, -1)) for a, b in kv]), -1)
            totals = lp[:, :n].gather(2, torch.tensor(group)[:, :, None])[..., 0].sum(1) / n
            j = int(totals.argmax())
            if float(totals[j]) > best:
                best, best_seq = float(totals[j]), [t for t in group[j] if t != 2]
        assert got[k] == best_seq


@torch.no_grad()
def _logp_by_forward(model, px, seq):
    """log p(seq, end | image) from the training forward pass and the captioning loss."""
    ids, mask = _batch([[1, *seq, 2]])
    out = model(px, ids, mask)
    return -float(caption_loss(out["logits"], out["labels"], reduction="sum"))


@torch.no_grad()
def test_text_logprobs_equal_the_captioning_loss(tiny_coca):
    px = torch.randn(3, 3, 64, 64)
    seqs = [[5, 7, 9], [11], [4, 4, 8, 30, 12, 6]]
    gen = tiny_coca.encode_image(px)["generative"]
    pairs = torch.tensor([(t, i) for t in range(3) for i in range(3)])
    got = tiny_coca.text_logprobs(seqs, gen, pairs, chunk=4)  # chunks that split an image's rows
    want = [_logp_by_forward(tiny_coca, px[i:i + 1], seqs[t]) for t, i in pairs.tolist()]
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-4)


def test_nucleus_sampling_draws_from_the_nucleus():
    """Probabilities .5 .3 .15 .05 with top-p .8: only the first two tokens,
    in the ratio 5 : 3; with top-p 1 and temperature 2, the tempered softmax."""
    logp = torch.log(torch.tensor([[0.15, 0.5, 0.05, 0.3]])).repeat(4000, 1)
    gens = [torch.Generator().manual_seed(k) for k in range(4000)]
    picks = C._nucleus(logp, gens, 1.0, 0.8)
    freq = np.bincount(picks.numpy(), minlength=4) / 4000
    assert freq[0] == 0 and freq[2] == 0
    assert abs(freq[1] - 0.625) < 0.03
    picks = C._nucleus(logp, [torch.Generator().manual_seed(k) for k in range(4000)], 2.0, 1.0)
    want = torch.softmax(logp[0] / 2, -1).numpy()
    np.testing.assert_allclose(np.bincount(picks.numpy(), minlength=4) / 4000, want, atol=0.03)
    # a row's draw comes from its own generator only
    again = C._nucleus(logp[:3], [torch.Generator().manual_seed(k) for k in range(3)], 2.0, 1.0)
    assert again.tolist() == picks[:3].tolist()


@torch.no_grad()
def test_pmi_decoding_keeps_the_candidate_with_the_highest_pmi(tiny_coca):
    """The choice equals a brute-force argmax of log p(c | image) - w * log
    mean_r p(c | r) over the greedy critique and each image's samples, every
    probability from the training forward pass; an image's critique does not
    depend on its batch; weight 0 keeps the likeliest candidate."""
    torch.manual_seed(5)
    px, ref = torch.randn(3, 3, 64, 64), torch.randn(4, 3, 64, 64)
    ref_gen = tiny_coca.encode_image(ref)["generative"]
    seeds = [11, 12, 13]
    got = tiny_coca.generate_pmi(px, ref_gen, samples=5, weight=0.7, max_tokens=8, seeds=seeds)
    gen = tiny_coca.encode_image(px)["generative"]
    greedy = tiny_coca.generate(px, max_tokens=8)
    differs = 0
    for i in range(3):
        cands = [greedy[i]] + [tiny_coca._decode(gen[i:i + 1], 8, samplers=[torch.Generator().manual_seed(
            seeds[i] * 1000 + k)], top_p=0.95)[0] for k in range(5)]
        cands = [c for k, c in enumerate(cands) if c not in cands[:k]]
        assert len(cands) > 1

        def pmi(c, w):
            marg = torch.logsumexp(torch.tensor([_logp_by_forward(tiny_coca, ref[r:r + 1], c) for r in range(4)]),
                                   0) - math.log(4)
            return _logp_by_forward(tiny_coca, px[i:i + 1], c) - w * float(marg)

        assert got[i] == max(cands, key=lambda c: pmi(c, 0.7))
        differs += got[i] != greedy[i]
        alone = tiny_coca.generate_pmi(px[i:i + 1], ref_gen, samples=5, weight=0.0, max_tokens=8, seeds=seeds[i:i + 1])
        assert alone[0] == max(cands, key=lambda c: pmi(c, 0.0))
    assert differs > 0
    assert tiny_coca.generate_pmi(px[1:], ref_gen, samples=5, weight=0.7, max_tokens=8, seeds=seeds[1:]) == got[1:]


# -- initialisation from CLIP, the model directory ---------------------------------------------

@pytest.fixture(scope="module")
def init_dir(tiny_clip_dir, tmp_path_factory):
    """A VILA-P directory straight from the tiny CLIP (no aesthetic training)."""
    from photocritic.training.pretrain import PretrainConfig, write_vilap_dir

    out = tmp_path_factory.mktemp("vilap-init")
    model, tok = C.from_clip(str(tiny_clip_dir), gen_queries=8)
    write_vilap_dir(out, model, tok, PretrainConfig(init=str(tiny_clip_dir), captions="x.json", images=".",
                                                    output=str(out)))
    return out


@pytest.mark.parametrize("prompts", ["vila", "hentschel-fixed", "clipiqa"])
def test_initial_vilap_scores_as_its_clip(init_dir, tiny_clip_dir, world, prompts):
    import photocritic

    paths = sorted(str(p) for p in (world / "images").glob("*.jpg"))[:12]
    a = [float(r) for r in photocritic.load(init_dir, precision="fp32", prompts=prompts).score(paths)]
    b = [float(r) for r in photocritic.load(str(tiny_clip_dir), precision="fp32", prompts=prompts).score(paths)]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert np.std(a) > 0


# -- pretraining ----------------------------------------------------------------------------------

def _pretrain(args):
    return main(["pretrain", "vila-p", *args, "-q", "--precision", "fp32", "--workers", "0"])


@pytest.fixture(scope="module")
def vilap(tiny_clip_dir, world, tmp_path_factory):
    out = tmp_path_factory.mktemp("vilap") / "model"
    assert _pretrain(["--init", str(tiny_clip_dir), "--captions", str(world / "comments.json"), "--images",
                      str(world / "images"), "--output", str(out), "--epochs", "3", "--batch-size", "32",
                      "--gen-queries", "8", "--lr", "1e-3", "--warmup-steps", "5"]) == 0
    return out


def test_pretraining_writes_a_model_and_learns_to_caption(vilap):
    metrics = json.loads((vilap / "metrics.json").read_text())
    rows = metrics["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and metrics["images"] == {"train": 285, "val": 15}
    # floor: the held-out captioning loss falls well below its first epoch's
    assert rows[-1]["val_captioning"] < rows[0]["val_captioning"] - 0.2
    assert (vilap / "coca" / "coca.json").is_file() and (vilap / "training.png").is_file()
    cfg = json.loads((vilap / "config.json").read_text())
    assert cfg["backbone"] == {"type": "coca", "name": "coca"} and cfg["method"]["type"] == "zeroshot"


def test_the_vilap_directory_scores_critiques_and_is_a_backbone(vilap, world, tmp_path, capsys):
    import photocritic

    images = sorted((world / "images").glob("*.jpg"))[:6]
    broken = tmp_path / "broken"
    kinds = write_broken_files(broken)
    files = [str(p) for p in images] + [str(broken / k) for k in ("empty.jpg", "text.jpg")]
    m = photocritic.load(vilap, precision="fp32")
    rows = m.critique(files + [Image.open(images[0])], max_tokens=16)
    assert [r.status for r in rows] == ["ok"] * 6 + [kinds["empty.jpg"], kinds["text.jpg"], "ok"]
    assert all(r.critique for r in rows[:6]) and rows[-1].critique
    assert rows[6].error and rows[6].critique == ""
    out = tmp_path / "c.parquet"
    assert main(["critique", *files, "--model", str(vilap), "--max-tokens", "16", "--beams", "2", "-o", str(out),
                 "-q"]) == 0
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pylist()
    assert [r["status"] for r in table] == [r.status for r in rows[:8]]
    assert set(table[0]) == {"path", "critique", "status", "error"}
    capsys.readouterr()
    assert main(["critique", str(images[0]), "--model", "lite", "-q"]) == 2
    assert "cannot generate critiques" in capsys.readouterr().err
    # zero-shot scores with any prompt set, and a backbone for train
    assert main(["score", str(images[0]), "--model", str(vilap), "--prompts", "clipiqa", "--no-cache", "-q"]) == 0
    assert main(["train", "vila-r", "--backbone", str(vilap), "--dataset", str(world), "--output",
                 str(tmp_path / "vr"), "--no-cache", "-q", "--epochs", "3"]) == 0
    cfg = json.loads((tmp_path / "vr" / "config.json").read_text())
    assert cfg["backbone"]["type"] == "coca" and os.path.isabs(cfg["backbone"]["name"])
    scored = photocritic.load(tmp_path / "vr", precision="fp32").score([str(p) for p in images])
    assert all(r.status == "ok" for r in scored) and np.std([float(r) for r in scored]) > 0
    # styles: the same zero-shot machinery on the contrastive towers
    rng = np.random.default_rng(0)
    labels = (rng.random((6, 14)) < 0.4).astype(int)
    labels[0] = 1
    ids = [p.stem for p in images]
    lists = write_style_lists(tmp_path / "lists", ids, labels)
    assert main(["styles", "--model", str(vilap), "--styles", str(lists), "--images", str(world / "images"),
                 "--output", str(tmp_path / "st"), "-q", "--no-cache"]) == 0
    assert json.loads((tmp_path / "st" / "styles.json").read_text())["n"] == 6


def test_explain_with_a_vilap_generates_a_description_per_attribute(vilap, world):
    import photocritic
    from photocritic.data.attributes import DEFAULT_ATTRIBUTES

    paths = sorted(str(p) for p in (world / "images").glob("*.jpg"))[:2]
    rows = photocritic.load(str(vilap), precision="fp32").explain(paths, max_tokens=20)
    assert rows.source == "generated" and [r.status for r in rows] == ["ok", "ok"]
    for r in rows:
        assert set(r.attributes) == set(DEFAULT_ATTRIBUTES)  # zero-shot good/bad prompts in its space
        for a in DEFAULT_ATTRIBUTES:
            assert r.descriptions[a].startswith("the " + a.replace("_", " ")), r.descriptions[a]


def test_eval_captions_scores_generated_critiques(vilap, world, tmp_path):
    from photocritic.captioning import caption_tokens
    from photocritic.metrics import cider

    out = tmp_path / "ev"
    assert main(["eval", "--task", "captions", "--model", str(vilap), "--dataset", str(world), "--split", "test",
                 "--comments", str(world / "comments.json"), "-o", str(out), "--max-tokens", "20", "-q"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    lines = [json.loads(x) for x in (out / "critiques.jsonl").read_text().splitlines()]
    assert res["n"] == len(lines) > 10
    refs = {r["image_id"]: [caption_tokens(t) for t in r["references"]] for r in lines}
    cands = {r["image_id"]: [caption_tokens(r["critique"])] for r in lines}
    assert res["cider"] == pytest.approx(cider(refs, cands), abs=1e-12)
    assert main(["eval", "--task", "captions", "--model", str(vilap), "--dataset", str(world), "--split", "test",
                 "-o", str(out), "-q"]) == 2  # no references


def test_critiques_by_mutual_information(vilap, init_dir, world, tmp_path, capsys):
    """`critique --pmi K`: the reference images saved at pretraining (or
    given), bad files reported as usual, an image's critique independent of
    its batch, clear errors for settings that do not go together."""
    import photocritic
    from photocritic.errors import UsageError

    ref = C.load_reference(vilap / "coca")
    assert ref.shape == (32, 64, 64, 3) and ref.dtype == torch.uint8  # the tiny CLIP's input size
    assert json.loads((vilap / "metrics.json").read_text())["reference_images"] == 32
    images = [str(p) for p in sorted((world / "images").glob("*.jpg"))[:5]]
    broken = tmp_path / "broken"
    kinds = write_broken_files(broken)
    m = photocritic.load(vilap, precision="fp32")
    rows = m.critique(images + [str(broken / "empty.jpg")], max_tokens=12, batch_size=3, pmi={"samples": 4})
    assert [r.status for r in rows] == ["ok"] * 5 + [kinds["empty.jpg"]] and all(r.critique for r in rows[:5])
    alone = m.critique(images[4:], max_tokens=12, pmi={"samples": 4})
    assert alone[0].critique == rows[4].critique
    # the same settings through the command line, with reference images from a folder
    out = tmp_path / "c.jsonl"
    assert main(["critique", *images[:2], "--model", str(vilap), "--max-tokens", "12", "--pmi", "4",
                 "--pmi-reference", str(world / "images"), "-o", str(out), "-q"]) == 0
    assert [json.loads(x)["status"] for x in out.read_text().splitlines()] == ["ok", "ok"]
    capsys.readouterr()
    for bad, message in ((["--pmi", "4", "--beams", "2"], "no --beams"),
                         (["--pmi-reference", images[0]], "goes with --pmi"),
                         (["--pmi", "4", "--retrieve", "2"], "give one of them"),
                         (["--pmi", "4", "--pmi-top-p", "0"], "0 < top_p <= 1")):
        assert main(["critique", images[0], "--model", str(vilap), "-q", *bad]) == 2, bad
        assert message in capsys.readouterr().err
    # a VILA-P directory without saved reference images needs them given
    init = photocritic.load(init_dir, precision="fp32")
    with pytest.raises(UsageError, match="no reference images"):
        init.critique(images[:1], max_tokens=8, pmi=True)
    assert init.critique(images[:1], max_tokens=8, pmi={"samples": 2, "reference": images[1:]})[0].status == "ok"
    with pytest.raises(UsageError, match="no setting 'sample'"):
        init.critique(images[:1], pmi={"sample": 2})
    ev = tmp_path / "ev"
    assert main(["eval", "--task", "captions", "--model", str(vilap), "--dataset", str(world), "--split", "test",
                 "--comments", str(world / "comments.json"), "-o", str(ev), "--max-tokens", "12", "--pmi", "2",
                 "-q"]) == 0
    assert json.loads((ev / "metrics.json").read_text())["decoding"].startswith("mutual information: 2 samples")


def test_pretrain_resume_is_bit_for_bit(tiny_clip_dir, world, tmp_path):
    from safetensors.torch import load_file

    comments = json.loads((world / "comments.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps(dict(list(comments.items())[:48])))
    common = ["--init", str(tiny_clip_dir), "--captions", str(tmp_path / "c.json"), "--images",
              str(world / "images"), "--batch-size", "16", "--gen-queries", "4", "--val-fraction", "0",
              "--warmup-steps", "4"]  # the warm-up spans the cut: its state is resumed too
    assert _pretrain([*common, "--output", str(tmp_path / "straight"), "--epochs", "2"]) == 0
    assert _pretrain([*common, "--output", str(tmp_path / "cut"), "--epochs", "1"]) == 0
    assert _pretrain([*common, "--output", str(tmp_path / "cut"), "--epochs", "2", "--resume"]) == 0
    a, b = (load_file(str(tmp_path / d / "coca" / "model.safetensors")) for d in ("straight", "cut"))
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _pretrain([*common, "--output", str(tmp_path / "straight"), "--epochs", "2"]) != 0  # not empty
    # one persistent decoding worker for both epochs draws the same comments as decoding in-process
    assert main(["pretrain", "vila-p", *common, "-q", "--precision", "fp32", "--workers", "1", "--output",
                 str(tmp_path / "worker"), "--epochs", "2"]) == 0
    c = load_file(str(tmp_path / "worker" / "coca" / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], c[k]), k
    # the comment an image is paired with is drawn anew each epoch, from the key's epoch
    from photocritic.training.pretrain import ImageComments

    ids = list(json.loads((tmp_path / "c.json").read_text()))
    data = ImageComments([str(world / "images" / i) for i in ids], [comments[i] for i in ids], None, None, None)
    many = [i for i, k in enumerate(ids) if len(set(comments[k])) > 2]
    assert any(data.text(i, 1) != data.text(i, 2) for i in many)
    data.preprocess = C.preprocess_of(C.read_coca_config(tmp_path / "worker" / "coca")[0])
    assert all(data[(e, i)][1] == data.text(i, e) for e in (1, 2, 3) for i in many[:3])


def test_random_init_trains_a_tokenizer_on_the_comments(world, tmp_path):
    import photocritic

    out = tmp_path / "rnd"
    assert _pretrain(["--init", "random:tiny", "--captions", str(world / "comments.json"), "--images",
                      str(world / "images"), "--output", str(out), "--epochs", "1", "--vocab-size", "300",
                      "--image-size", "80"]) == 0
    enc = C.CoCaEncoder(out / "coca")
    assert enc.model.config.vision["image_size"] == 80 and enc.preprocess.output_size == (80, 80)
    tok = enc.tokenizer
    assert 250 <= len(tok) <= 300
    ids = tok(["Too DARK, honestly!"], add_special_tokens=False)["input_ids"][0]
    assert tok.decode(ids).strip() == "too dark, honestly!"
    assert len(ids) < len("too dark, honestly!")  # merges were learnt
    rows = photocritic.load(out).critique([str(next((world / "images").glob("*.jpg")))], max_tokens=5)
    assert rows[0].status == "ok"
    # a bad --init is a usage error before anything is written
    bad = tmp_path / "bad"
    for init in (["random:huge"], ["random:tiny", "--image-size", "72"], [str(out), "--image-size", "80"]):
        assert _pretrain(["--init", *init, "--captions", str(world / "comments.json"), "--images",
                          str(world / "images"), "--output", str(bad)]) == 2
        assert not bad.exists()


@needs_torchrun
def test_two_processes_pretrain_the_same_weights(tiny_clip_dir, world, tmp_path):
    """2 processes = 1 process with the same global batch; the world has
    unreadable images, so a process meets batches with none readable, and
    repeated comments, whose text ids are gathered with the embeddings."""
    from safetensors.torch import load_file

    imgs = tmp_path / "images"
    shutil.copytree(world / "images", imgs)
    comments = json.loads((world / "comments.json").read_text())
    keep = dict(list(comments.items())[:60])
    (tmp_path / "c.json").write_text(json.dumps(keep))
    for name in list(keep)[:5]:
        (imgs / name).write_bytes(b"not a JPEG")
    outs = []
    for procs in (1, 2):
        out = tmp_path / f"p{procs}"
        run_processes(["pretrain", "vila-p", "--init",
                       str(tiny_clip_dir), "--captions", str(tmp_path / "c.json"), "--images", str(imgs), "--output",
                       str(out), "--epochs", "2", "--batch-size", "6", "--gen-queries", "4", "--precision", "fp32",
                       "--workers", "0", "-q", "--lr", "1e-3", "--warmup-steps", "3", "--same-text-positives"],
                      procs, tmp_path)
        outs.append(out)
    a, b = (load_file(str(o / "coca" / "model.safetensors")) for o in outs)
    # A key projection's bias adds the same q.b to every key's logit, which the softmax
    # cancels: its true gradient is zero, and AdamW turns the float noise of that zero
    # into steps of about lr in either direction. Those biases are left out.
    keys = [k for k in a if not k.endswith("k_proj.bias")]
    assert len(keys) > 0.8 * len(a)
    for k in keys:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-4)
    init = load_file(str(outs[0] / "checkpoint" / "init" / "model.safetensors"))
    moved = sum(float((a[k] - init[k]).abs().max()) > 1e-4 for k in a)
    assert moved > len(a) // 2  # it trained
    m = json.loads((outs[1] / "metrics.json").read_text())
    assert m["processes"] == 2 and m["unreadable_images"] > 0


def test_initialisation_from_siglip_keeps_its_image_tower(tiny_siglip_dir):
    """From SigLIP the image tower (with its attention-pooling head) is exact;
    the text layers are copied but run causally with a CLS token, so the
    text side starts near, not at, SigLIP's."""
    from photocritic.encoders.hf import HFVisionLanguageEncoder

    model, tok = C.from_clip(str(tiny_siglip_dir), gen_queries=4)
    assert model.config.vision_type == "siglip" and not model.config.vision_projection
    ref = HFVisionLanguageEncoder(str(tiny_siglip_dir))
    px = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(px)["embedding"], ref.encode(px).pooled, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.text_projection.weight, ref.model.text_model.head.weight)
    assert len(model.generate(px, max_tokens=5)) == 2


def test_tower_keys_load_across_transformers_layouts(tiny_coca, tiny_clip_dir, tmp_path):
    """transformers 4 nests a vision tower's weights under vision_model.,
    version 5 does not: either layout loads into the other."""
    state = tiny_coca.state_dict()
    nested = {("vision.vision_model." + k[len("vision."):] if k.startswith("vision.") else k): v
              for k, v in state.items()}
    assert fit_tower_keys(nested, state.keys()).keys() == state.keys()
    tower = tiny_coca.vision.state_dict()
    assert fit_tower_keys({"vision_model." + k: v for k, v in tower.items()}, tower.keys()).keys() == tower.keys()
    flat_expected = {k[len("vision_model."):] if k.startswith("vision_model.") else k for k in tower}
    assert fit_tower_keys({"vision_model." + k: v for k, v in tower.items()}, flat_expected).keys() == flat_expected
    # a fine-tuned CLIP tower saved with version 4's nested keys loads into version 5's tower
    from safetensors.torch import save_file

    from photocritic.encoders.hf import HFVisionLanguageEncoder

    plain = HFVisionLanguageEncoder(str(tiny_clip_dir))
    moved = {k: v + 0.01 for k, v in plain.model.vision_model.state_dict().items()}
    save_file({"vision_model." + k: v.contiguous() for k, v in moved.items()}, str(tmp_path / "tower.safetensors"))
    tuned = HFVisionLanguageEncoder(str(tiny_clip_dir), tuned=str(tmp_path / "tower.safetensors"))
    for k, v in tuned.model.vision_model.state_dict().items():
        torch.testing.assert_close(v, moved[k])


def test_serve_critiques_as_the_api_does(init_dir, world):
    """`POST /critique` on a VILA-P model: the same critiques as `critique`,
    a broken upload reported in its row, /models saying it can critique."""
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    import photocritic
    from photocritic.serving import create_app

    critic = photocritic.load(str(init_dir), precision="fp32")
    paths = sorted((world / "images").glob("*.jpg"))[:3]
    pngs = []
    for p in paths:  # lossless uploads: the server sees exactly the pixels the API sees
        buf = io.BytesIO()
        Image.open(p).convert("RGB").save(buf, "PNG")
        pngs.append(buf.getvalue())
    ref = critic.critique([Image.open(io.BytesIO(b)) for b in pngs], max_tokens=12)
    with TestClient(create_app(critic)) as c:
        assert c.get("/models").json()["models"][0]["critique"] is True
        r = c.post("/critique?max_tokens=12", files=[("files", (f"{k}.png", b, "image/png")) for k, b in enumerate(pngs)]
                   + [("files", ("bad.jpg", b"no", "image/jpeg"))])
        assert r.status_code == 200
        rows = r.json()["rows"]
    assert [x["critique"] for x in rows[:3]] == [x.critique for x in ref]
    assert all(x["status"] == "ok" and x["critique"] for x in rows[:3])
    assert rows[3]["path"] == "bad.jpg" and rows[3]["status"] == "not_image"
    with TestClient(create_app(critic)) as c:  # no reference images saved with this model
        r = c.post("/critique?pmi=2", files=[("files", ("0.png", pngs[0], "image/png"))])
        assert r.status_code == 400 and "no reference images" in r.json()["error"]


def test_serve_critiques_by_mutual_information(vilap, world):
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    import photocritic
    from photocritic.serving import create_app

    critic = photocritic.load(str(vilap), precision="fp32")
    buf = io.BytesIO()
    Image.open(sorted((world / "images").glob("*.jpg"))[0]).convert("RGB").save(buf, "PNG")
    ref = critic.critique([Image.open(io.BytesIO(buf.getvalue()))], max_tokens=12, pmi={"samples": 3})
    with TestClient(create_app(critic)) as c:
        r = c.post("/critique?max_tokens=12&pmi=3", files=[("files", ("a.png", buf.getvalue(), "image/png"))])
        assert r.status_code == 200 and r.json()["rows"][0]["critique"] == ref[0].critique
        assert c.post("/critique?pmi=99", files=[("files", ("a.png", buf.getvalue(), "image/png"))]).status_code == 400


@needs_chromium
def test_web_page_shows_greedy_and_mutual_information_critiques(vilap, world, tmp_path):
    """The page offers mutual-information critiques for a model with reference
    images: a photo uploaded with the box unticked gets the API's greedy
    critique, one uploaded with it ticked the API's `pmi={"samples": 8}` one
    (the server's default of 32 tokens)."""
    from PIL import Image

    import photocritic

    critic = photocritic.load(str(vilap), precision="fp32")
    photos = []
    for k, p in enumerate(sorted((world / "images").glob("*.jpg"))[:2]):  # lossless uploads
        photos.append(tmp_path / f"{k}.png")
        Image.open(p).convert("RGB").save(photos[-1])
    greedy = critic.critique([str(photos[0])], max_tokens=32)[0].critique
    varied = critic.critique([str(photos[1])], max_tokens=32, pmi={"samples": 8})[0].critique
    with served(critic) as url, browser_page() as page:
        asked = []
        page.on("request", lambda r: asked.append(r.url[len(url):]) if "/critique" in r.url else None)
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('critiques')")
        assert page.is_visible("#pmi") and not page.is_checked("#pmi")
        page.set_input_files("#files", [str(photos[0])])
        page.wait_for_function("document.querySelectorAll('#gallery .card .critique').length === 1")
        page.check("#pmi")
        page.set_input_files("#files", [str(photos[1])])
        page.wait_for_function("document.querySelectorAll('#gallery .card .critique').length === 2")
        shown = dict(page.eval_on_selector_all("#gallery .card", "cs => cs.map(c => [c.dataset.name, "
                                               "c.querySelector('.critique').textContent])"))
    assert asked == ["/critique", "/critique?pmi=8"]
    # this tiny model's critiques are arbitrary bytes; an HTML parser drops NUL characters
    assert shown == {"0.png": f"“{greedy}”".replace("\x00", ""), "1.png": f"“{varied}”".replace("\x00", "")}
    # the two decodings differ on the second photo, so a page sending the wrong request fails here
    assert critic.critique([str(photos[1])], max_tokens=32)[0].critique != varied
