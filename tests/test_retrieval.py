"""Comment retrieval: exact and faiss k-NN, the comment bank, MMLQ trained
and scored with retrieved comments, `photocritic critique --retrieve`."""

import csv
import json
import shutil

import numpy as np
import pytest

import photocritic
from photocritic.cli import main
from photocritic.retrieval import CommentBank, VectorIndex, exact_topk


def _brute(bank, queries, k):
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ b.T.astype(np.float64)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), order


def test_exact_search_equals_brute_force_cosine_knn():
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(5000, 48)), rng.normal(size=(300, 48))
    sims, idx = VectorIndex(bank, backend="exact").search(queries, 10)
    ref_sims, ref_idx = _brute(bank, queries, 10)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    # blocks of queries and k = N give the same answer
    s2, i2 = exact_topk(VectorIndex(bank).vectors, VectorIndex(queries).vectors, 10, block=7)
    np.testing.assert_array_equal(i2, idx)
    _, all_idx = VectorIndex(bank[:20]).search(queries[:5], 50)
    np.testing.assert_array_equal(all_idx, _brute(bank[:20], queries[:5], 20)[1])
    # ties go to the lower position
    _, tie = exact_topk(np.ones((4, 3), np.float32) / np.sqrt(3), np.ones((1, 3), np.float32) / np.sqrt(3), 2)
    assert tie.tolist() == [[0, 1]]


def test_faiss_agrees_with_exact_search_on_top_k():
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (the retrieval extra)")
    rng = np.random.default_rng(1)
    bank, queries = rng.normal(size=(5000, 32)), rng.normal(size=(200, 32))
    fi = VectorIndex(bank, backend="faiss", ef_search=256)
    assert fi.backend == "faiss"
    sims, idx = fi.search(queries, 10)
    ref_sims, ref_idx = _brute(bank, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, ref_idx)])
    assert recall >= 0.99, recall
    assert np.mean(idx[:, 0] == ref_idx[:, 0]) >= 0.99
    found = idx == ref_idx
    np.testing.assert_allclose(sims[found], ref_sims[found], atol=1e-4)


def test_bank_retrieves_neighbours_comments_never_its_own(tmp_path):
    vecs = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], np.float32)
    bank = CommentBank(["a", "b", "c", "d"], vecs, {"a": ["A1", "A2"], "b": ["B"], "c": ["C"], "d": ["D"]})
    got = bank.retrieve(np.array([[1, 0.05], [1, 0.0]], np.float32), 2, query_ids=["x", "a"])
    assert got[0].sources == ["a", "b"] and got[0].comments == ["A1", "A2", "B"]
    assert got[1].sources == ["b", "c"]  # "a" itself is left out
    assert got[0].similarities[0] == pytest.approx(1 / np.sqrt(1 + 0.05 ** 2), abs=1e-6)
    bank.save(tmp_path)
    again = CommentBank.load(tmp_path)
    assert again.ids == bank.ids and again.comments == bank.comments
    assert again.retrieve(np.array([[0, 1]], np.float32), 1)[0].sources == ["c"]
    # extended: new images join; an id already in the bank takes the new vector and comments
    more = bank.extended(["c", "e"], np.array([[-1, 0.1], [0.6, 0.8]], np.float32), {"c": ["C2"], "e": ["E"]})
    assert sorted(more.ids) == ["a", "b", "c", "d", "e"] and more.comments["c"] == ["C2"]
    assert more.retrieve(np.array([[0, 1]], np.float32), 1)[0].sources == ["e"]
    assert more.retrieve(np.array([[-1, 0.1]], np.float32), 1)[0].sources == ["c"]
    assert len(bank) == 4 and bank.comments["c"] == ["C"]  # the model's bank is unchanged


def test_grouped_retrieval_equals_masked_brute_force():
    """With groups, an image's neighbours are the brute-force cosine top-k
    over the bank images of other groups only (its own id left out too)."""
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(300, 8)).astype(np.float32)
    ids = [f"i{j}" for j in range(300)]
    groups = {i: j % 7 for j, i in enumerate(ids)}  # 7 groups of about 43
    bank = CommentBank(ids, vecs, {i: [i.upper()] for i in ids})
    q = np.arange(0, 300, 13)
    got = bank.retrieve(vecs[q], 5, query_ids=[ids[j] for j in q], query_groups=[groups[ids[j]] for j in q],
                        groups=groups)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    for r, j in enumerate(q):
        sims = unit @ unit[j]
        sims[[m for m in range(300) if groups[ids[m]] == groups[ids[j]]]] = -np.inf
        want = [ids[m] for m in np.argsort(-sims, kind="stable")[:5]]
        assert got[r].sources == want
        assert got[r].comments == [w.upper() for w in want]
    with pytest.raises(ValueError):
        bank.retrieve(vecs[:1], 2, query_groups=[0])


class _Pooled:
    """A stand-in critic whose ``image.pooled`` embedding of path "p<j>" is vecs[j]."""

    def __init__(self, vecs):
        self.vecs = vecs

    def with_view(self, view):
        assert view == "image.pooled"
        return self

    def embed_paths(self, paths, cache, **kw):
        from types import SimpleNamespace

        return [SimpleNamespace(status="ok", error=None) for _ in paths], self.vecs[[int(p[1:]) for p in paths]]


def test_train_on_retrieved_reads_every_images_retrieved_comments_never_its_own(tiny_text, tmp_path):
    """retrieve_all: an image with comments of its own reads those of its k
    nearest bank images of other groups instead (the tokens equal the
    encoder's on those comments); without it, it reads its own."""
    from types import SimpleNamespace

    from photocritic.encoders.text import SentenceEncoder
    from photocritic.features import TokenStore
    from photocritic.tokeninputs import gather_token_inputs

    rng = np.random.default_rng(5)
    vecs = rng.normal(size=(12, 6)).astype(np.float32)
    ids = [f"i{j}" for j in range(12)]
    groups = {i: j // 3 for j, i in enumerate(ids)}  # 4 groups of 3
    comments = {i: [f"comment {j} of {i}", "nice"] for j, i in enumerate(ids) if j % 4 != 3}
    bank = CommentBank([i for i in ids if i in comments], vecs[[j for j, i in enumerate(ids) if i in comments]],
                       {i: comments[i] for i in ids if i in comments})
    enc = SentenceEncoder(tiny_text, max_length=64)
    method = SimpleNamespace(requires=("text.tokens",), max_tokens=None)
    paths = [f"p{j}" for j in range(12)]

    def encoded(texts):
        seq, _ = enc.comment_ids(texts)
        return enc.encode_ids([seq])[0][0].numpy().astype(np.float16)

    with TokenStore(tmp_path / "t") as store:
        kw = dict(critic=_Pooled(vecs), encoder=enc, comments=comments, store=store, bank=bank, retrieve_k=2,
                  groups=groups)
        got = gather_token_inputs(method, ids, paths, retrieve_all=True, **kw)
        assert got.keep == list(range(12)) and got.report["retrieved"] == 12
        assert got.report["own_comments_unread"] == len(comments) == 9
        unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        for j, i in enumerate(ids):
            sims = unit @ unit[j]
            sims[[m for m in range(12) if groups[ids[m]] == groups[i] or ids[m] not in comments]] = -np.inf
            want = [ids[m] for m in np.argsort(-sims, kind="stable")[:2]]
            assert got.retrieved[j].sources == want
            np.testing.assert_allclose(got.features["text.tokens"][j], encoded(comments[want[0]] + comments[want[1]]),
                                       atol=1e-3)
        plain = gather_token_inputs(method, ids, paths, **kw)
        assert sorted(plain.retrieved) == [3, 7, 11] and "own_comments_unread" not in plain.report
        np.testing.assert_allclose(plain.features["text.tokens"][0], encoded(comments["i0"]), atol=1e-3)


@pytest.fixture(scope="module")
def half_commented(world, tmp_path_factory):
    """The world's comments for half of its training images only."""
    with open(world / "labels.csv") as fh:
        train = [r["path"].split("/")[-1] for r in csv.DictReader(fh) if r["split"] == "train"]
    comments = json.loads((world / "comments.json").read_text())
    keep = {k: v for k, v in comments.items() if k in set(train[::2])}
    p = tmp_path_factory.mktemp("half") / "comments.json"
    p.write_text(json.dumps(keep))
    return p, len(train)


def test_mmlq_with_retrieved_comments_trains_scores_and_critiques(world, store, half_commented, tiny_text,
                                                                  tmp_path, capsys):
    comments, n_train = half_commented
    out = tmp_path / "m"
    assert main(["train", "mmlq", "--backbone", "efficientnet-lite0", "--dataset", str(world), "--split", "train",
                 "--val-split", "val", "--comments", str(comments), "--text-encoder", str(tiny_text),
                 "--retrieve-comments", "2", "--group-by", "source", "--epochs", "2", "--param", "width=16",
                 "--param", "heads=2", "--output", str(out), "--cache", str(store), "-q", "--precision",
                 "fp32"]) == 0
    err = capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert "group_by source: images retrieve comments only from images of other groups" in m["notes"]
    bank = json.loads((out / "config.json").read_text())
    assert bank["method"]["params"]["retrieve_comments"] == 2
    t = m["train_images"]
    assert t["with_comments"] == (n_train + 1) // 2 and t["retrieved"] == n_train // 2, t
    assert m["val_images"]["retrieved"] == m["val_images"]["listed"]  # no validation image has comments
    assert f"comment bank: {(n_train + 1) // 2} training images" in err
    model = photocritic.load(str(out))
    assert len(model.comment_bank) == (n_train + 1) // 2
    # scoring without --comments: every image's comments come from the bank
    test_imgs = sorted(str(p) for p in (world / "images").glob("*.jpg"))[:6]
    rows = model.score(test_imgs, cache=str(store))
    assert all(r.status == "ok" and 1 <= r.score <= 10 for r in rows), [r.error for r in rows]
    # --retrieve-from-inputs: a scored image with comments joins the bank; a copy of the first test
    # image under another name is then the first image's nearest neighbour (similarity 1)
    shutil.copy(test_imgs[0], tmp_path / "twin.jpg")
    both = [test_imgs[0], str(tmp_path / "twin.jpg")]
    plain = model.score(both, cache=str(store), comments={"twin": ["the twin's comment"]})
    joined = model.score(both, cache=str(store), comments={"twin": ["the twin's comment"]}, bank_from_inputs=True)
    assert "twin" not in plain.retrieved[test_imgs[0]] and joined.retrieved[test_imgs[0]][0] == "twin"
    assert list(joined.retrieved) == [test_imgs[0]]  # the twin has comments of its own
    (tmp_path / "twin.json").write_text(json.dumps({"twin.jpg": ["the twin's comment"]}))
    assert main(["score", *both, "--model", str(out), "--comments", str(tmp_path / "twin.json"),
                 "--retrieve-from-inputs", "--cache", str(store), "-q", "--output",
                 str(tmp_path / "twin.csv")]) == 0
    assert main(["score", *both, "--model", str(out), "--retrieve-from-inputs", "-q"]) == 2
    assert "pass --comments" in capsys.readouterr().err
    # critique prints the retrieved comments, their sources and similarities
    capsys.readouterr()
    assert main(["critique", *test_imgs[:2], "--model", str(out), "--retrieve", "3", "--cache", str(store),
                 "-q", "--output", str(tmp_path / "c.jsonl")]) == 0
    printed = capsys.readouterr().out
    recs = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and all(len(r["retrieved"]) == 3 for r in recs)
    first = recs[0]["retrieved"][0]
    assert first["id"] in printed and f"(similarity {first['similarity']:.3f})" in printed
    assert first["comments"] == model.comment_bank.comments[first["id"]]
    sims = [x["similarity"] for x in recs[0]["retrieved"]]
    assert sims == sorted(sims, reverse=True)
    # a model without a bank says so
    assert main(["train", "mmlq", "--backbone", "efficientnet-lite0", "--dataset", str(world), "--split", "train",
                 "--val-split", "val", "--comments", str(world / "comments.json"), "--text-encoder",
                 str(tiny_text), "--epochs", "1", "--param", "width=16", "--param", "heads=2",
                 "--output", str(tmp_path / "nb"), "--cache", str(store), "-q", "--precision", "fp32"]) == 0
    assert main(["critique", test_imgs[0], "--model", str(tmp_path / "nb"), "--retrieve", "2", "-q"]) == 2
    assert "no comment bank" in capsys.readouterr().err


def test_train_on_retrieved_from_the_command_line(world, store, tiny_text, tmp_path, capsys):
    common = ["train", "mmlq", "--backbone", "efficientnet-lite0", "--dataset", str(world), "--split", "train",
              "--val-split", "val", "--comments", str(world / "comments.json"), "--text-encoder", str(tiny_text),
              "--epochs", "1", "--param", "width=16", "--param", "heads=2", "--cache", str(store), "-q",
              "--precision", "fp32", "--train-on-retrieved"]
    assert main([*common, "--output", str(tmp_path / "x")]) == 2
    assert "pass --retrieve-comments K" in capsys.readouterr().err
    out = tmp_path / "m"
    assert main([*common, "--retrieve-comments", "2", "--group-by", "source", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    t = m["train_images"]
    assert t["retrieved"] == t["used"] == t["listed"] and t["own_comments_unread"] == t["with_comments"] > 0, t
    assert f"train_on_retrieved: {t['listed']} of {t['listed']} images read retrieved comments" in err
    assert json.loads((out / "config.json").read_text())["method"]["params"]["train_on_retrieved"] is True
    assert len(photocritic.load(str(out)).comment_bank) == t["with_comments"]
