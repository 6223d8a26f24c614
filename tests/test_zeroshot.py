import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

import photocritic
from photocritic.cli import main
from photocritic.methods import prompt_search
from photocritic.methods import styles as ST
from photocritic.methods.zeroshot import (PromptSet, ZeroShotHead, antonym_score, ensemble_vectors,
                                          imagenet_class_names, nearest_label, weighted_sum)

from conftest import gray as _gray
from conftest import write_style_lists

# -- rules on fixed small embeddings ------------------------------------------


def test_antonym_rule_hand_computed():
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    pos = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # not unit: the rule normalises
    neg = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    s = 10.0
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731  softmax over two = sigmoid of the difference
    expected = [(sig(s * (1 - 0)) + sig(s * (0 - 1))) / 2,
                (sig(s * (0.6 - 0.8)) + sig(s * (0.8 - 0.6))) / 2]
    np.testing.assert_allclose(antonym_score(img, pos, neg, s).numpy(), expected, rtol=1e-6)


def test_weighted_sum_and_nearest_label_hand_computed():
    img = torch.tensor([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]])
    w = [1.0, -1.0, 1.0]
    np.testing.assert_allclose(weighted_sum(img, texts, w).numpy(), [1 - 0 + 0.6, 0 - 1 + 0.8], atol=1e-6)
    assert nearest_label(img, texts, [1, -1, 1]).tolist() == [1, -1]


def test_ensemble_vectors_hand_computed():
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    vecs, keys = ensemble_vectors(texts, [1, 1, -1])
    assert keys == [1, -1]
    np.testing.assert_allclose(vecs.numpy(), [[2 ** -0.5, 2 ** -0.5], [0.0, -1.0]], atol=1e-6)


def test_prompt_sets_expand():
    fixed = PromptSet.load("hentschel-fixed")
    assert fixed.expand() == (["a outstanding picture", "a horrible picture"], [1.0, -1.0])
    ctx = PromptSet("c", "context", template="a {label} picture, of a #{class}",
                    positive=["smashing"], negative=["horrible"], classes=["cat", "dog"])
    assert ctx.expand()[0] == ["a smashing picture, of a #cat", "a smashing picture, of a #dog",
                               "a horrible picture, of a #cat", "a horrible picture, of a #dog"]
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[967] == "espresso"
    texts, weights = PromptSet.load("hentschel-context").expand()
    assert len(texts) == 2000 and sum(weights) == 0 and texts[0] == "a smashing picture, of a #tench"
    vila = PromptSet.load("vila")
    assert len(vila.pairs) == 6 and vila.pairs[0] == ["good image", "bad image"]
    with pytest.raises(ValueError, match="rule"):
        PromptSet("x", "vote", pairs=[["a", "b"]])
    with pytest.raises(ValueError, match="unknown prompt set"):
        PromptSet.load("no-such-set")


def test_head_rules_against_hand_values():
    # three prompts' embeddings chosen by hand; a fake text encoder returns them
    table = {"a good picture, of a #cat": [1.0, 0.0], "a good picture, of a #dog": [0.0, 1.0],
             "a bad picture, of a #cat": [-1.0, 0.0], "a bad picture, of a #dog": [0.0, -1.0]}
    embed = lambda texts: np.array([table[t] for t in texts])  # noqa: E731
    img = np.array([[1.0, 0.0], [0.0, -1.0], [0.8, 0.6]])
    ctx = ZeroShotHead(PromptSet("c", "context", template="a {label} picture, of a #{class}",
                                 positive=["good"], negative=["bad"], classes=["cat", "dog"]),
                       embed, lambda: 100.0)
    np.testing.assert_allclose(ctx.predict(img), [2.0, -2.0, 2 * 0.8 + 2 * 0.6], atol=1e-6)
    assert ctx.predict_binary(img).tolist() == [1, 0, 1]
    ens = ZeroShotHead(PromptSet("e", "ensemble", template="a {label} picture, of a #{class}",
                                 positive=["good"], negative=["bad"], classes=["cat", "dog"]),
                       embed, lambda: 100.0)
    r = 2 ** -0.5
    # label vectors: normalize([1, 1]) and normalize([-1, -1]); image [0, -1] gives -r - r
    np.testing.assert_allclose(ens.predict(img), [2 * r, -2 * r, 2 * r * 1.4], atol=1e-6)
    # binary: the nearer of the two label vectors, i.e. the sign of the cosine difference
    label_vecs = np.array([[r, r], [-r, -r]])
    unit_img = img / np.linalg.norm(img, axis=1, keepdims=True)
    nearer = (unit_img @ label_vecs.T).argmax(1)
    assert ens.predict_binary(img).tolist() == (nearer == 0).astype(int).tolist() == [1, 0, 1]


# -- parity with torchmetrics ------------------------------------------------------


@pytest.fixture(scope="module")
def clip100(tmp_path_factory):
    """A tiny random CLIP whose logit scale is exactly 100, as torchmetrics assumes."""
    from photocritic.encoders.tiny import save_random_clip

    return save_random_clip(tmp_path_factory.mktemp("clip100"), size="tiny", kind="clip", seed=3,
                            logit_scale=100.0)


def test_antonym_rule_equals_torchmetrics_clip_iqa(clip100, tmp_path):
    tm = pytest.importorskip("torchmetrics.multimodal")
    from photocritic.compat import torchmetrics_clip_loader

    pairs = (("Good photo.", "Bad photo."), ("Sharp photo.", "Blurry photo."))
    metric = tm.CLIPImageQualityAssessment(model_name_or_path=torchmetrics_clip_loader(clip100),
                                           prompts=pairs)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(5)]
    paths = []
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    ref = metric(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))  # uint8, as documented
    ref = torch.stack([ref[k] for k in ref], dim=1).mean(1).numpy()
    ps = PromptSet("pair", "antonym", pairs=[list(p) for p in pairs])
    critic = photocritic.load(str(clip100), prompts=ps, precision="fp32")
    rows = critic.score(paths)
    ours = (np.array([r.score for r in rows]) - 1.0) / 9.0  # the antonym map is 1 + 9p
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert critic.logit_scale() == pytest.approx(100.0, rel=1e-5)


# -- end to end: a tiny CLIP that learned brightness ------------------------------


def test_trained_tiny_clip_ranks_brightness_through_the_zero_shot_path(brightness_clip, tmp_path):
    levels = np.linspace(0.08, 0.92, 12)
    paths = []
    for i, b in enumerate(levels):  # held out: new seeds, PNG files through the pipeline
        Image.fromarray(_gray(b, 99_000 + i)).save(tmp_path / f"{i:02d}.png")
        paths.append(str(tmp_path / f"{i:02d}.png"))
    cache = tmp_path / "c.sqlite"
    rules = {
        "antonym": PromptSet("bright-antonym", "antonym", pairs=[["a bright photo", "a dark photo"]]),
        "weighted_sum": PromptSet("bright-sum", "weighted_sum", template="a {label} photo",
                                  positive=["bright", "very bright"], negative=["dark", "very dark"]),
    }
    for name, ps in rules.items():
        f = tmp_path / f"{name}.json"
        ps.save(f)  # prompt sets are data: go through a user file
        critic = photocritic.load(str(brightness_clip), prompts=str(f))
        rows = critic.score(paths, cache=cache)
        assert all(r.status == "ok" for r in rows)
        rho = spearmanr([r.score for r in rows], levels)[0]
        assert rho >= 0.9, (name, rho)
        again = photocritic.load(str(brightness_clip), prompts=str(f))
        again.score(paths, cache=cache)
        assert again._encoder is None  # images, prompt texts and logit scale all from the cache


def _labelled_folder(d, items):
    """Write (file name, PIL image, mean score) items and their labels.csv."""
    import csv

    d.mkdir()
    with open(d / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "mean"])
        w.writeheader()
        for name, im, mean in items:
            im.save(d / name)
            w.writerow({"path": name, "mean": mean})
    return d


# -- styles, prompt search, presets ----------------------------------------------


def test_style_map_equals_sklearn():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    names = list(ST.STYLE_PHRASES)
    img = rng.normal(size=(120, 16))
    text = rng.normal(size=(14 * len(ST.TEMPLATES), 16))
    scores = ST.style_scores(img, text, len(ST.TEMPLATES))
    labels = (rng.random((120, 14)) < 0.15).astype(int)
    labels[0] = 1  # every class has a positive
    res = ST.evaluate(labels, scores, names)
    assert res["map"] == pytest.approx(average_precision_score(labels, scores, average="macro"), abs=1e-12)
    assert ST.style_prompts(["Shallow_DOF"])[0][0] == "a photo with shallow depth of field"


def test_styles_command(tiny_clip_dir, tmp_path, capsys):
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    labels = (rng.random((10, 14)) < 0.3).astype(int)
    labels[0] = 1
    lists = write_style_lists(tmp_path / "lists", [100 + i for i in range(11)],  # 110 is missing
                              np.vstack([labels, np.ones((1, 14), int)]))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(imgs / f"{100 + i}.jpg")
    out = tmp_path / "out"
    assert main(["styles", "--model", str(tiny_clip_dir), "--styles", str(lists), "--images", str(imgs),
                 "--output", str(out), "-q", "--no-cache"]) == 0
    res = json.loads((out / "styles.json").read_text())
    assert res["n"] == 10 and res["images_missing"] == 1
    rows = [line.split(",") for line in (out / "style_scores.csv").read_text().splitlines()[1:]]
    scores = np.array([[float(v) for v in r[1:]] for r in rows])
    assert res["map"] == pytest.approx(average_precision_score(labels, scores, average="macro"), abs=1e-9)


def test_prompt_search_finds_the_informative_pair():
    rng = np.random.default_rng(0)
    d = 8
    img = rng.normal(size=(200, d))
    labels = 5 + 2 * img[:, 0] + 0.1 * rng.normal(size=200)
    basis = {"outstanding": np.eye(d)[0], "horrible": -np.eye(d)[0]}
    words = ["outstanding", "great", "nifty", "horrible", "ugly"]
    table = {f"a {w} picture": basis.get(w, rng.normal(size=d)) for w in words}
    embed = lambda texts: np.array([table[t] for t in texts])  # noqa: E731
    res = prompt_search.search(img, labels, embed, ["outstanding", "great", "nifty"], ["horrible", "ugly"])
    assert len(res) == 6 and (res[0]["positive"], res[0]["negative"]) == ("outstanding", "horrible")
    assert res[0]["srcc"] > 0.95
    binary = prompt_search.search(img, labels, embed, ["outstanding", "great", "nifty"], ["horrible", "ugly"],
                                  task="binary")
    assert (binary[0]["positive"], binary[0]["negative"]) == ("outstanding", "horrible")
    assert binary[0]["accuracy"] > 0.95
    best = prompt_search.best_prompt_set(res)
    assert best.expand() == (["a outstanding picture", "a horrible picture"], [1.0, -1.0])
    pos, neg = prompt_search.adjective_lists()
    assert (len(pos), len(neg)) == (27, 12) and "outstanding" in pos and "atrocious" in neg


def test_prompt_search_command_writes_a_reusable_set(brightness_clip, tmp_path, capsys):
    import csv

    d = _labelled_folder(tmp_path / "set", [(f"{i}.png", Image.fromarray(_gray(b, 5000 + i)), 2 + 7 * b)
                                            for i, b in enumerate(np.linspace(0.1, 0.9, 10))])
    out = tmp_path / "best.json"
    assert main(["prompts", "search", "--model", str(brightness_clip), "--dataset", str(d),
                 "--template", "a {label} photo", "--positive", "bright,very bright,dark",
                 "--negative", "dark,very dark", "--output", str(out), "--all-pairs", str(tmp_path / "t.csv"),
                 "-q", "--no-cache"]) == 0
    best = PromptSet.load(out)
    assert best.rule == "weighted_sum" and best.positive[0] in ("bright", "very bright")
    assert len(list(csv.DictReader(open(tmp_path / "t.csv")))) == 6
    assert main(["score", str(d), "--model", str(brightness_clip), "--prompts", str(out), "-q",
                 "--no-cache"]) == 0


def test_presets_name_rule_and_prompts_and_explain_missing_weights(tmp_path, capsys, clip100):
    from photocritic.zoo import PRESETS

    for name in ("clip-vit-b-32", "clip-vit-l-14", "siglip-b-16"):
        assert "hub" in PRESETS[name] and PromptSet.load(PRESETS[name]["prompts"]).rule
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    assert main(["score", str(img), "--model", "clip-vit-l-14", "--no-cache", "-q"]) == 3
    err = capsys.readouterr().err
    assert "openai/clip-vit-large-patch14" in err and "--weights DIR" in err
    # the same preset pointed at a local directory of weights
    assert main(["score", str(img), "--model", "clip-vit-b-32", "--weights", str(clip100),
                 "--no-cache", "-q"]) == 0
    crit = photocritic.load("clip-vit-b-32", weights=str(clip100))
    assert crit.prompts.name == "hentschel-fixed" and crit.name == "clip-vit-b-32"
    with pytest.raises(ValueError, match="--weights only applies"):
        photocritic.load("lite", weights=str(clip100))
    with pytest.raises(ValueError, match="--prompts applies to zero-shot"):
        photocritic.load("lite", prompts="vila")


def test_calibrate_fits_the_map_and_saves_a_loadable_model(brightness_clip, tmp_path, capsys):
    items = [(f"{i}.png", Image.fromarray(_gray(b, 7000 + i)), 3 + 4 * b)
             for i, b in enumerate(np.linspace(0.1, 0.9, 12))]
    d = _labelled_folder(tmp_path / "set", items)
    rows = [{"path": name, "mean": mean} for name, _, mean in items]
    pair = tmp_path / "pair.json"
    PromptSet("bright", "antonym", pairs=[["a bright photo", "a dark photo"]]).save(pair)
    out = tmp_path / "calibrated"
    assert main(["calibrate", "--model", str(brightness_clip), "--prompts", str(pair), "--dataset", str(d),
                 "--output", str(out), "-q", "--no-cache"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mse_after"] < res["mse_before"] and res["score_map"]["kind"] == "logistic"
    before = photocritic.load(str(brightness_clip), prompts=str(pair))
    after = photocritic.load(str(out))
    assert after.prompts.pairs == [["a bright photo", "a dark photo"]]
    paths = [str(d / r["path"]) for r in rows]
    s0 = [r.score for r in before.score(paths)]
    s1 = [r.score for r in after.score(paths)]
    assert spearmanr(s0, s1)[0] == pytest.approx(1.0)  # monotone: the ranking is kept
    labels = [r["mean"] for r in rows]
    assert np.mean((np.array(s1) - labels) ** 2) < np.mean((np.array(s0) - labels) ** 2)


def test_calibrating_lite_keeps_its_head(tmp_path, capsys):
    from PIL import ImageFilter

    from conftest import photo

    items = [(f"{i}.jpg", photo(40 + i, (240, 180)).filter(ImageFilter.GaussianBlur(r)), 8 - 0.8 * r)
             for i, r in enumerate([0, 1, 2, 3, 4, 6])]
    d = _labelled_folder(tmp_path / "set", items)
    rows = [{"path": name, "mean": mean} for name, _, mean in items]
    out = tmp_path / "lite-cal"
    assert main(["calibrate", "--dataset", str(d), "--output", str(out), "-q", "--no-cache"]) == 0
    assert (out / "model.safetensors").exists()
    from photocritic.features import EmbeddingCache

    lite, cal = photocritic.load("lite"), photocritic.load(str(out))
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        _, emb = lite.embed_paths([str(d / r["path"]) for r in rows], cache)
    # the same rank head, a new map
    np.testing.assert_allclose(cal.raw_from_embeddings(emb), lite.raw_from_embeddings(emb), rtol=1e-6)
    assert cal.score_map != lite.score_map
