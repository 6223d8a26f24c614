"""MMLQ (multi-modal learnable queries) and the comment-token view."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import needs_torchrun, run_processes

import photocritic
from photocritic.cli import main
from photocritic.methods.base import Targets
from photocritic.methods.mmlq import MMLQ, MMLQNet, pad_batch


def _ragged(rng, n, dim, lo, hi):
    return [rng.normal(size=(int(rng.integers(lo, hi)), dim)).astype(np.float16) for _ in range(n)]


@pytest.mark.parametrize("shared", [True, False])
def test_padding_never_changes_a_prediction(shared):
    """The same comments padded to two lengths (alone, or beside a longer
    row) give the same distribution."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    net = MMLQNet(12, 8, "image+comments", n_visual=3, n_text=2, blocks=2, width=16, heads=2,
                  shared_self_attention=shared).eval()
    img, txt = _ragged(rng, 2, 12, 5, 6), [rng.normal(size=(4, 8)), rng.normal(size=(30, 8))]
    with torch.no_grad():
        t_short, p_short = pad_batch(txt[:1])
        i_short, pi_short = pad_batch(img[:1])
        alone = net({"image": i_short, "comments": t_short}, {"image": pi_short, "comments": p_short})
        t_both, p_both = pad_batch(txt)
        i_both, pi_both = pad_batch(img)
        beside = net({"image": i_both, "comments": t_both}, {"image": pi_both, "comments": p_both})
        # the padding's values do not matter either
        t_noisy = t_both.clone()
        t_noisy[0, 4:] = 1e3
        noisy = net({"image": i_both, "comments": t_noisy}, {"image": pi_both, "comments": p_both})
    assert t_both.shape[1] == 30 and p_both[0].sum() == 26
    torch.testing.assert_close(alone[0], beside[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(noisy, beside, rtol=0, atol=1e-6)
    assert beside.shape == (2, 10)
    torch.testing.assert_close(beside.sum(1), torch.ones(2))


def test_modes_read_only_their_views():
    rng = np.random.default_rng(1)
    n = 60
    img, txt = _ragged(rng, n, 6, 4, 5), _ragged(rng, n, 5, 2, 9)
    q = rng.dirichlet(np.ones(10), n)
    t = Targets(q @ np.arange(1, 11), q)
    for inputs, views in (("image", ("image.tokens",)), ("comments", ("text.tokens",)),
                          ("image+comments", ("image.tokens", "text.tokens"))):
        m = MMLQ(inputs=inputs, epochs=2, width=8, heads=2, n_visual=2, n_text=2)
        assert m.requires == views
        feats = {"image.tokens": img, "text.tokens": txt}
        m.fit({v: feats[v] for v in views}, t)
        p = m.predict({v: feats[v] for v in views})
        assert p.distribution.shape == (n, 10)
        np.testing.assert_allclose(p.score, p.distribution @ np.arange(1, 11), atol=1e-5)
        assert len(m.module.head.weight[0]) == 8 * len(views)
    with pytest.raises(ValueError, match="inputs must be one of"):
        MMLQ(inputs="pixels").requires


def test_mmlq_learns_a_signal_in_each_modality():
    """Scores driven half by the image tokens and half by the comment tokens:
    image+comments ranks better than either alone (held-out rows)."""
    rng = np.random.default_rng(2)
    n = 400
    img, txt = _ragged(rng, n, 8, 6, 7), _ragged(rng, n, 8, 3, 12)
    a = np.array([x[:, 0].astype(np.float32).mean() for x in img])
    b = np.array([x[:, 1].astype(np.float32).mean() for x in txt])
    mu = 5.5 + 2.0 * (a / a.std() + b / b.std())
    q = np.exp(-0.5 * ((np.arange(1, 11)[None] - mu[:, None]) / 1.2) ** 2)
    q /= q.sum(1, keepdims=True)
    tr, te = np.arange(300), np.arange(300, n)
    srcc = {}
    from scipy.stats import spearmanr

    for inputs in ("image", "comments", "image+comments"):
        feats = {"image.tokens": img, "text.tokens": txt}
        m = MMLQ(inputs=inputs, epochs=25, width=32, heads=2, n_visual=2, n_text=2, dropout=0.0, lr=2e-3)
        m.fit({v: [feats[v][i] for i in tr] for v in m.requires}, Targets(mu[tr], q[tr]))
        p = m.predict({v: [feats[v][i] for i in te] for v in m.requires})
        srcc[inputs] = spearmanr(p.score, mu[te])[0]
    assert srcc["image+comments"] > max(srcc["image"], srcc["comments"]) + 0.05, srcc
    assert srcc["image"] > 0.3 and srcc["comments"] > 0.3, srcc


# -- comment tokens and `photocritic train mmlq --inputs comments` ------------------------------

@pytest.fixture(scope="module")
def comment_world(tmp_path_factory):
    """Labels + comments only: no image anywhere."""
    d = tmp_path_factory.mktemp("comments-only")
    rng = np.random.default_rng(3)
    good, bad = ["lovely light", "tack sharp", "great colours"], ["too dark", "blurry", "washed out colours"]
    comments, rows = {}, []
    for i in range(160):
        mu = float(rng.uniform(2.5, 8.5))
        p_good = (mu - 2.5) / 6.0
        k = int(rng.integers(1, 4))
        comments[f"{i:05d}.jpg"] = [str(rng.choice(good if rng.random() < p_good else bad)) for _ in range(k)]
        votes = np.bincount(np.clip(np.rint(rng.normal(mu, 1.2, 100)), 1, 10).astype(int) - 1, minlength=10)
        rows.append([f"images/{i:05d}.jpg", *votes, "val" if i >= 130 else "train"])
    comments["99999.jpg"] = ["an id no label has"]
    rows.append(["images/00160.jpg", *[10] * 10, "train"])  # a labelled image without comments
    with open(d / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path"] + [f"score{k}" for k in range(1, 11)] + ["split"])
        w.writerows(rows)
    (d / "comments.json").write_text(json.dumps(comments))
    return d


def test_comments_only_trains_with_no_image_anywhere(comment_world, tiny_text, tmp_path, capsys):
    assert not (comment_world / "images").exists()
    args = ["train", "mmlq", "--inputs", "comments", "--dataset", str(comment_world), "--comments",
            str(comment_world / "comments.json"), "--text-encoder", str(tiny_text), "--split", "train",
            "--val-split", "val", "--epochs", "3", "--cache", str(tmp_path / "f.sqlite"), "-q",
            "--param", "width=16", "--param", "heads=2"]
    assert main([*args, "--output", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert "1 images have no comments: left out" in err and "1 images in --comments are not in" in err
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert m["train_images"]["used"] == 130 and m["train_images"]["without_comments"] == 1
    sets = json.loads((comment_world / "comments.json").read_text())
    distinct = len({tuple(sets[f"{i:05d}.jpg"]) for i in range(130)})  # the same comments: encoded once
    assert m["train_images"]["comment_sets"]["computed"] == distinct and m["val_images"]["used"] == 30
    model = photocritic.load(str(tmp_path / "m"))
    assert model.encoder_spec is None and model.head.inputs == "comments"
    assert model.head.text_encoder == str(tiny_text)
    # a second run encodes no comment: the token store has them
    assert main([*args, "--output", str(tmp_path / "m2")]) == 0
    m2 = json.loads((tmp_path / "m2" / "metrics.json").read_text())
    assert m2["train_images"]["comment_sets"]["computed"] == 0
    assert m2["train_images"]["comment_sets"]["from_store"] == distinct
    # eval and score on labels + comments, no image anywhere; the same predictions as the Python API
    assert main(["eval", "--model", str(tmp_path / "m"), "--dataset", str(comment_world), "--split", "val",
                 "--comments", str(comment_world / "comments.json"), "--output", str(tmp_path / "ev"),
                 "--cache", str(tmp_path / "f.sqlite"), "-q", "--bootstrap", "0"]) == 0
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["n"] == 30 and ev["images_without_comments"] == 0
    val_ids = [f"{i:05d}" for i in range(130, 160)]
    capsys.readouterr()
    assert main(["score", *val_ids, "00160", "--model", str(tmp_path / "m"), "--comments",
                 str(comment_world / "comments.json"), "--output", str(tmp_path / "s.csv"), "--no-cache",
                 "-q"]) == 0
    err = capsys.readouterr().err
    assert "31 images, 30 scored" in err and "no_comments: 1" in err
    with open(tmp_path / "s.csv") as fh:
        got = {r["path"]: r for r in csv.DictReader(fh)}
    assert got["00160"]["status"] == "no_comments" and got["00160"]["score"] == ""
    direct = model.score(val_ids, comments={f"{i}.jpg": sets[f"{i}.jpg"] for i in val_ids})
    pred = {r["image_id"]: float(r["predicted"]) for r in csv.DictReader(open(tmp_path / "ev" / "predictions.csv"))}
    for r in direct:
        assert abs(float(got[r.path]["score"]) - r.score) < 1e-4 and abs(pred[r.path] - r.score) < 1e-4
    # scored from the store that training filled: every comment set comes from it
    assert main(["score", *val_ids, "--model", str(tmp_path / "m"), "--comments",
                 str(comment_world / "comments.json"), "--cache", str(tmp_path / "f.sqlite"), "-q"]) == 0
    assert "30 scored (30 from cache, 0 computed)" in capsys.readouterr().err
    # the model reads comments: scoring without them is a usage error
    assert main(["score", *val_ids, "--model", str(tmp_path / "m"), "-q"]) == 2
    # MMLQ with image inputs still needs a backbone
    assert main(["train", "mmlq", "--inputs", "image", "--dataset", str(comment_world),
                 "--output", str(tmp_path / "x"), "-q"]) == 2
    assert "needs --backbone" in capsys.readouterr().err


def test_comment_tokens_are_stored_once_and_truncation_is_counted(tiny_text, tmp_path):
    from photocritic.encoders.text import SentenceEncoder
    from photocritic.features import TokenStore
    from photocritic.textviews import comment_tokens

    enc = SentenceEncoder(tiny_text, max_length=16)
    comments = {"a": ["nice", "very nice light"], "b": ["word " * 40], "c": ["  "], "d": ["nice", "very nice light"]}
    with TokenStore(tmp_path / "t") as store:
        toks, rep = comment_tokens(enc, comments, ["a", "b", "c", "d", "e"], store)
        assert rep.without_comments == ["c", "e"] and rep.truncated == 1 and rep.with_comments == 3
        assert rep.computed == 2 and len(store) == 2  # a and d share their comments
        ids, _ = enc.comment_ids(comments["a"])
        states, _ = enc.encode_ids([ids])
        np.testing.assert_allclose(toks["a"], states[0].numpy().astype(np.float16), atol=1e-3)
        assert toks["b"].shape == (16, 32)
        toks2, rep2 = comment_tokens(enc, comments, ["a", "b"], store)
        assert rep2.computed == 0 and rep2.from_store == 2 and rep2.truncated == 1
        np.testing.assert_array_equal(toks2["b"], toks["b"])


def test_non_utf8_comments_name_the_file_and_line(tmp_path):
    from photocritic.data.ava import LabelFormatError
    from photocritic.data.comments import read_comments

    p = tmp_path / "c.jsonl"
    p.write_bytes(b'{"id": "1", "comment": "fine"}\n{"id": "2", "comment": "caf\xe9"}\n')
    with pytest.raises(LabelFormatError, match=r"c.jsonl:2: not UTF-8 \(byte 0xe9 at column 28\)"):
        read_comments(p)
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "7.txt").write_bytes(b"ok\nbad \xff here\n")
    with pytest.raises(LabelFormatError, match=r"7.txt:2: not UTF-8"):
        read_comments(tmp_path / "txt")


@needs_torchrun
def test_two_processes_train_mmlq_to_the_same_weights(comment_world, tiny_text, tmp_path):
    """torchrun with 2 CPU processes and the same global batch: the weights
    of one process (dropout 0: its masks are drawn per process)."""
    from safetensors.torch import load_file

    outs = []
    for procs in (1, 2):
        out = tmp_path / f"mmlq-{procs}"
        run_processes(["train", "mmlq", "--inputs",
                       "comments", "--dataset", str(comment_world), "--comments", str(comment_world / "comments.json"),
                       "--text-encoder", str(tiny_text), "--split", "train", "--val-split", "val", "--epochs", "3",
                       "--batch-size", "16", "--param", "width=16", "--param", "heads=2", "--param", "dropout=0",
                       "--output", str(out), "-q"], procs, tmp_path, PHOTOCRITIC_CACHE=str(tmp_path / "c.sqlite"))
        outs.append(out)
    a, b = (load_file(str(o / "model.safetensors")) for o in outs)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=0, atol=1e-4)
    m1, m2 = (json.loads((o / "metrics.json").read_text()) for o in outs)
    assert [r["epoch"] for r in m1["epochs"]] == [r["epoch"] for r in m2["epochs"]] == [1, 2, 3]
    assert abs(m1["epochs"][-1]["train_loss"] - m2["epochs"][-1]["train_loss"]) < 1e-5
