"""The statistics helpers of the benchmark scripts, against independent
references: the figures in benchmarks/results rest on them."""

import csv
import importlib.util
import sys

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score

from conftest import REPO


def _bench(name):
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_source_average_precision_is_sklearns_per_row():
    m = _bench("multiattr")
    rng = np.random.default_rng(0)
    f, src = rng.normal(size=(80, 6)), rng.integers(0, 5, 80)
    src[0] = 9  # a photo with one image: nothing to retrieve, AP 0
    z = f / np.linalg.norm(f, axis=1, keepdims=True)
    sims = z @ z.T
    ref = [average_precision_score(np.delete(src == src[i], i), np.delete(sims[i], i)) if i else 0.0
           for i in range(80)]
    got = m.source_average_precision(f, src)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    # a perfect embedding (one direction per photo) ranks every sibling first
    assert m.source_average_precision(np.eye(5)[src[1:] % 5] + 1e-3 * f[1:, :5], src[1:] % 5).min() == 1.0


def test_fold_mean_gain_value_and_pairing():
    m = _bench("learnability")
    rng = np.random.default_rng(1)
    truth = [rng.normal(size=n) for n in (40, 55, 30)]
    a = [t + rng.normal(scale=0.5, size=len(t)) for t in truth]
    b = [t + rng.normal(scale=2.0, size=len(t)) for t in truth]
    got = m.fold_mean_gain(a, b, truth, n_boot=300)
    ref = np.mean([spearmanr(x, t)[0] - spearmanr(y, t)[0] for x, y, t in zip(a, b, truth)])
    assert abs(got["value"] - ref) < 1e-4
    assert got["ci95"][0] < got["value"] < got["ci95"][1]
    assert got["per_fold"] == [round(spearmanr(x, t)[0] - spearmanr(y, t)[0], 4) for x, y, t in zip(a, b, truth)]
    same = m.fold_mean_gain(a, a, truth, n_boot=50)  # paired: a model against itself is exactly 0
    assert (same["value"], same["ci95"], same["per_fold"]) == (0.0, [0.0, 0.0], [0.0, 0.0, 0.0])
    # images a model did not score (NaN) leave the comparison in that fold, for both models
    half = [x.copy() for x in a]
    for x in half:
        x[::2] = np.nan
    got = m.fold_mean_gain(half, b, truth, n_boot=50)
    ref = np.mean([spearmanr(x[1::2], t[1::2])[0] - spearmanr(y[1::2], t[1::2])[0] for x, y, t in zip(a, b, truth)])
    assert abs(got["value"] - ref) < 1e-4


def test_fold_files_test_every_photo_once(tmp_path):
    m = _bench("learnability")
    rows = [[f"images/{i:03d}.jpg", "train", f"photo{i % 23}"] for i in range(200)]
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "split", "source"], *rows])
    files = m.fold_files(tmp_path, 5, seed=0)
    tested = []
    for path in files:
        with open(path, newline="") as fh:
            got = list(csv.DictReader(fh))
        assert [r["path"] for r in got] == [r[0] for r in rows]  # every image, in order, other columns kept
        by = {s: {r["source"] for r in got if r["split"] == s} for s in ("train", "val", "test")}
        assert by["train"] and by["val"] and by["test"]
        assert not (by["train"] & by["val"] or by["train"] & by["test"] or by["val"] & by["test"])
        tested += sorted(by["test"])
    assert sorted(tested) == sorted({r[2] for r in rows})  # each photo a test photo in exactly one fold


def test_neighbour_mean_is_brute_force_knn_mean():
    from photocritic.retrieval import CommentBank

    m = _bench("learnability")
    rng = np.random.default_rng(2)
    bank_x, queries = rng.normal(size=(60, 8)), rng.normal(size=(15, 8))
    ids = [f"b{i}" for i in range(60)]
    values = dict(zip(ids, rng.normal(size=60)))
    bank = CommentBank(ids, bank_x, {i: ["x"] for i in ids})
    unit = bank_x / np.linalg.norm(bank_x, axis=1, keepdims=True)
    for k in (1, 5):
        nearest = np.argsort(-(queries @ unit.T), axis=1)[:, :k]  # cosine order: the query's norm does not matter
        ref = np.array([np.mean([values[ids[j]] for j in row]) for row in nearest])
        np.testing.assert_allclose(m.neighbour_mean(bank, queries, values, k), ref, rtol=1e-6)


def test_comment_oracle_is_at_chance_exactly_when_comments_tell_images_apart_by_nothing_it_knows():
    """The Bayes oracle of benchmarks/vilap.py: images with one set of edits
    and qualities are indistinguishable (loss exactly log(batch)); with the
    hidden appeal differing, the oracle that knows it does better than
    chance and the one that knows only the edits is at chance exactly; and
    over many draws the loss is its expectation over the comments, computed
    from two kinds of image's phrase distributions."""
    m = _bench("vilap")
    from photocritic.data.synthetic import ATTRIBUTES, attribute_qualities

    edits = {"tilt": 0.0, "offset": 0.0, "cut": 0.0, "dof": 1.0, "defocus": 0.0, "resolution": 0.0, "jpeg": 0.0,
             "exposure": 0.0, "contrast": 1.0, "saturation": 1.15, "cast": 0.0, "noise": 0.0}

    def row(appeal, mood, **change):
        e = {**edits, **change}
        q = attribute_qualities(e, appeal, mood)
        return {**{a: 1 + 9 * q[a] for a in ATTRIBUTES}, **{k: str(v) for k, v in e.items()}}

    same = [row(0.5, 0.5) for _ in range(128)]
    assert abs(m.oracle_contrastive(same, draws=3)["oracle_loss"] - np.log(64)) < 1e-12
    hidden = [row(0.9 if i % 2 else 0.1, 1.0 if i % 2 else 0.0) for i in range(128)]
    assert m.oracle_contrastive(hidden, draws=3)["oracle_loss"] < np.log(64) - 0.05
    assert abs(m.oracle_contrastive(hidden, appeals=[0.1, 0.9], draws=3)["oracle_loss"] - np.log(64)) < 1e-12
    # 8 dark and 8 sound images: the mean over 1,000 draws is the expectation over comments,
    # (1/B) sum_i sum_c p_i(c) [log sum_j p_j(c) - log p_i(c)], computed here from the two distributions
    from photocritic.data.synthetic import comment_phrase_probabilities as probs

    rows = [row(0.5, 0.5, exposure=-2.5), row(0.5, 0.5)] * 8
    p = [probs({a: (float(r[a]) - 1) / 9 for a in ATTRIBUTES}, {k: float(r[k]) for k in edits}) for r in rows[:2]]
    phrases = set(p[0]) | set(p[1])
    expected = float(np.mean([sum(p[i].get(c, 0) * (np.log(8 * (p[0].get(c, 0) + p[1].get(c, 0)))
                                                     - np.log(p[i][c])) for c in phrases if p[i].get(c, 0))
                              for i in (0, 1)]))
    assert 0.02 < np.log(16) - expected < np.log(2)  # a comment on the light tells a dark image apart
    got = m.oracle_contrastive(rows, batch=16, draws=1000)["oracle_loss"]
    assert abs(got - expected) < 0.03


def test_fixed_feature_learner_reaches_the_bound_its_features_allow():
    """The contrastive reader of vilap.py's information part: when an image's
    features name its comment's phrase (one of 8), its held-out loss nears
    log(64 / 8) (about 8 images of a batch share each phrase, which no
    reader can tell apart); when they are noise, it stays at chance,
    log(64), give or take over-fitting."""
    m = _bench("vilap")
    rng = np.random.default_rng(0)
    n, k = 768, 8
    phrase = rng.integers(0, k, n)
    split = np.array(["train"] * 512 + ["val"] * 128 + ["test"] * 128)
    told = np.eye(k)[phrase] + 0.05 * rng.normal(size=(n, k))
    got = m.fixed_feature_learner(told, [[int(p)] for p in phrase], k, split, epochs=40, draws=3)
    assert got["test"]["text_to_image"] < np.log(64 / k) + 0.3
    blind = m.fixed_feature_learner(rng.normal(size=(n, 16)), [[int(p)] for p in phrase], k, split, epochs=40,
                                    draws=3)
    assert abs(blind["test"]["text_to_image"] - np.log(64)) < 0.15
