"""Multi-attribute pretraining, per-attribute heads and ``explain``."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import needs_torchrun, run_processes

from photocritic.cli import main
from photocritic.losses import (affinity_loss, attribute_contrastive_loss, contrastive_loss,
                               neighbour_affinity_loss, semantic_affinity_loss, space_affinity_loss)


# -- losses, against hand computations -------------------------------------------------
def _norm(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _by_hand(x, y, mask, scale, ids):
    """The documented formula, written as loops."""
    x, y = _norm(x), _norm(y)
    total, count = 0.0, 0
    n, k = mask.shape
    for a in range(k):
        present = [i for i in range(n) if mask[i, a]]
        for i in present:
            pos = [j for j in present if ids[j, a] == ids[i, a]]
            row = {j: scale[a] * x[i, a] @ y[j, a] for j in present}
            col = {j: scale[a] * y[i, a] @ x[j, a] for j in present}
            i2t = np.log(sum(np.exp(v) for v in row.values())) - np.log(sum(np.exp(row[j]) for j in pos))
            t2i = np.log(sum(np.exp(v) for v in col.values())) - np.log(sum(np.exp(col[j]) for j in pos))
            total += (i2t + t2i) / 2
            count += 1
    return total / count


def test_attribute_contrastive_loss_equals_the_hand_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3, 5)), rng.normal(size=(4, 3, 5))
    mask = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 1]], bool)
    ids = np.array([[0, 5, 9], [1, 6, 7], [0, 5, 8], [2, 7, 7]])  # images 0 and 2 share two descriptions
    scale = np.array([3.0, 7.0, 14.0])
    got = attribute_contrastive_loss(torch.tensor(x), torch.tensor(y), torch.tensor(mask), torch.tensor(scale),
                                     torch.tensor(ids))
    assert float(got) == pytest.approx(_by_hand(x, y, mask, scale, ids), rel=1e-6)


def test_without_duplicates_each_space_is_the_clip_loss():
    """Every attribute present, distinct texts: the mean over spaces of InfoNCE."""
    rng = np.random.default_rng(1)
    x, y = torch.tensor(rng.normal(size=(5, 2, 4))), torch.tensor(rng.normal(size=(5, 2, 4)))
    mask = torch.ones(5, 2, dtype=torch.bool)
    t = torch.tensor([4.0, 9.0])
    want = (contrastive_loss(x[:, 0], y[:, 0], t[0]) + contrastive_loss(x[:, 1], y[:, 1], t[1])) / 2
    assert float(attribute_contrastive_loss(x, y, mask, t)) == pytest.approx(float(want), rel=1e-6)


def test_a_missing_attribute_contributes_nothing():
    rng = np.random.default_rng(2)
    x, y = torch.tensor(rng.normal(size=(4, 3, 6))), torch.tensor(rng.normal(size=(4, 3, 6)))
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    t = torch.tensor(10.0)
    base = attribute_contrastive_loss(x, y, mask, t)
    x2, y2 = x.clone(), y.clone()
    x2[~mask] = torch.tensor(rng.normal(size=(int((~mask).sum()), 6)))  # what is masked may be anything
    y2[~mask] = 100.0
    assert float(attribute_contrastive_loss(x2, y2, mask, t)) == pytest.approx(float(base), rel=1e-6)
    # an attribute missing everywhere but once adds no term (one candidate: log 1 = 0) and one count
    only = attribute_contrastive_loss(x[:, :2], y[:, :2], mask[:, :2], t)
    assert float(base) * 9 == pytest.approx(float(only) * 8, rel=1e-6)
    # gradients reach no masked embedding
    xg = x.clone().requires_grad_(True)
    attribute_contrastive_loss(xg, y, mask, t).backward()
    assert float(xg.grad[~mask].abs().max()) == 0.0


def test_semantic_affinity_loss_by_hand():
    rng = np.random.default_rng(3)
    f, g = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    fz, gz = _norm(f), _norm(g)
    want = np.mean([(fz[i] @ fz[j] - gz[i] @ gz[j]) ** 2 for i in range(4) for j in range(4) if i != j])
    assert float(semantic_affinity_loss(torch.tensor(f), torch.tensor(g))) == pytest.approx(want, rel=1e-6)
    # invariant to rotating and scaling the learnt features
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    assert float(semantic_affinity_loss(torch.tensor(3 * f @ q), torch.tensor(f))) == pytest.approx(0, abs=1e-10)
    # an invalid (padding) row is neither a term nor a partner
    valid = torch.tensor([True, True, True, False])
    sub = semantic_affinity_loss(torch.tensor(f[:3]), torch.tensor(g[:3]))
    assert float(semantic_affinity_loss(torch.tensor(f), torch.tensor(g), valid)) == pytest.approx(float(sub))


def test_space_affinity_loss_by_hand():
    """The mean over spaces of each space's affinity gap to the initial features."""
    rng = np.random.default_rng(6)
    e, g = rng.normal(size=(5, 3, 4)), rng.normal(size=(5, 7))
    gz = _norm(g)
    per_space = []
    for s in range(3):
        ez = _norm(e[:, s])
        per_space.append(np.mean([(ez[i] @ ez[j] - gz[i] @ gz[j]) ** 2 for i in range(5) for j in range(5) if i != j]))
    got = space_affinity_loss(torch.tensor(e), torch.tensor(g))
    assert float(got) == pytest.approx(np.mean(per_space), rel=1e-6)
    valid = torch.tensor([True, True, False, True, True])
    keep = [0, 1, 3, 4]
    assert float(space_affinity_loss(torch.tensor(e), torch.tensor(g), valid)) == pytest.approx(
        float(space_affinity_loss(torch.tensor(e[keep]), torch.tensor(g[keep]))), rel=1e-6)
    parts = sum(space_affinity_loss(torch.tensor(e), torch.tensor(g), rows=slice(s, s + 2)) for s in (0, 2, 4))
    assert float(parts) == pytest.approx(float(got), rel=1e-6)


def test_neighbour_affinity_loss_by_hand():
    """Mean over images of KL(P_i || Q_i), each a softmax over the other images' cosines / t."""
    rng = np.random.default_rng(8)
    f, g = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
    fz, gz = _norm(f), _norm(g)

    def dist(z, i, t, keep):
        others = [j for j in keep if j != i]
        w = np.exp([z[i] @ z[j] / t for j in others])
        return dict(zip(others, w / w.sum()))

    def by_hand(keep, t):
        total = 0.0
        for i in keep:
            p, q = dist(gz, i, t, keep), dist(fz, i, t, keep)
            total += sum(p[j] * np.log(p[j] / q[j]) for j in p)
        return total / len(keep)

    for t in (0.05, 0.5):
        got = neighbour_affinity_loss(torch.tensor(f), torch.tensor(g), temperature=t)
        assert float(got) == pytest.approx(by_hand(range(5), t), rel=1e-6)
    # 0 when the learnt features are the initial ones rotated and scaled; > 0 otherwise
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    assert float(neighbour_affinity_loss(torch.tensor(2 * g @ q), torch.tensor(g))) == pytest.approx(0, abs=1e-6)
    assert float(neighbour_affinity_loss(torch.tensor(f), torch.tensor(g))) > 0.01
    # an invalid (padding) row is neither a term nor a neighbour, and its values never matter
    valid = torch.tensor([True, True, False, True, True])
    keep = [0, 1, 3, 4]
    f2 = f.copy()
    f2[2] = 1e6
    got = neighbour_affinity_loss(torch.tensor(f2), torch.tensor(g), valid)
    assert float(got) == pytest.approx(by_hand(keep, 0.05), rel=1e-6)
    # one valid image has no neighbour: nothing to keep, and no NaN
    lone = torch.tensor([True, False, False, False, False])
    assert float(neighbour_affinity_loss(torch.tensor(f), torch.tensor(g), lone)) == 0.0
    # process shares add up; the spaces' mean takes the form; an unknown form is an error
    whole = neighbour_affinity_loss(torch.tensor(f), torch.tensor(g))
    parts = sum(neighbour_affinity_loss(torch.tensor(f), torch.tensor(g), rows=slice(s, s + 2)) for s in (0, 2, 4))
    assert float(parts) == pytest.approx(float(whole), rel=1e-6)
    e = torch.tensor(rng.normal(size=(5, 2, 3)))
    want = np.mean([float(neighbour_affinity_loss(e[:, s], torch.tensor(g), temperature=0.2)) for s in range(2)])
    assert float(space_affinity_loss(e, torch.tensor(g), form="neighbours", temperature=0.2)) == pytest.approx(want)
    with pytest.raises(ValueError, match="unknown affinity form"):
        affinity_loss(torch.tensor(f), torch.tensor(g), form="pairs")


def test_process_shares_add_up_to_the_loss():
    rng = np.random.default_rng(4)
    x, y = torch.tensor(rng.normal(size=(6, 2, 4))), torch.tensor(rng.normal(size=(6, 2, 4)))
    mask = torch.tensor(rng.random((6, 2)) > 0.3)
    ids = torch.tensor(rng.integers(0, 3, (6, 2)))
    t = torch.tensor([5.0, 6.0])
    whole = attribute_contrastive_loss(x, y, mask, t, ids)
    parts = sum(attribute_contrastive_loss(x, y, mask, t, ids, rows=slice(s, s + 3)) for s in (0, 3))
    assert float(parts) == pytest.approx(float(whole), rel=1e-6)
    f, g = x[:, 0], y[:, 0]
    whole = semantic_affinity_loss(f, g)
    parts = sum(semantic_affinity_loss(f, g, rows=slice(s, s + 2)) for s in (0, 2, 4))
    assert float(parts) == pytest.approx(float(whole), rel=1e-6)


# -- data ---------------------------------------------------------------------------------------
def test_attribute_files_in_every_layout_read_the_same(tmp_path):
    from photocritic.data.ava import LabelFormatError
    from photocritic.data.attributes import attribute_names, read_attribute_scores, read_attributes

    want = {"1": {"lighting": ["too dark"], "colour": ["muted", "washed out"]}, "2": {"sharpness": ["crisp"]}}
    (tmp_path / "a.json").write_text(json.dumps({"1.jpg": {"lighting": "too dark", "colour": ["muted", "washed out"]},
                                                 "2.jpg": {"sharpness": "crisp", "lighting": ""}}))
    (tmp_path / "a.jsonl").write_text('{"id": "1", "lighting": "too dark", "colour": "muted"}\n'
                                      '{"1.jpg": {"colour": ["washed out"]}}\n\n'
                                      '{"filename": "x/2.jpg", "sharpness": "crisp"}\n')
    (tmp_path / "a.csv").write_text("path,lighting,colour,sharpness\nimages/1.jpg,too dark,muted,\n"
                                    "images/1.jpg,,washed out,\nimages/2.jpg,,,crisp\n")
    for name in ("a.json", "a.jsonl", "a.csv"):
        assert read_attributes(tmp_path / name) == want, name
    assert attribute_names(want) == ["lighting", "colour", "sharpness"]  # the default seven first
    (tmp_path / "s.csv").write_text("id,lighting,mood,source\n1,3.5,1,x\n2,,2,y\n3,abc,1,z\n")
    with pytest.raises(LabelFormatError, match=r"s.csv:4: attribute 'lighting' is 'abc'"):
        read_attribute_scores(tmp_path / "s.csv")
    (tmp_path / "s.csv").write_text("id,lighting,mood,source\n1,3.5,1,x\n2,,2,y\n")
    names, scores = read_attribute_scores(tmp_path / "s.csv")
    assert names == ["lighting"] and scores == {"1": {"lighting": 3.5}, "2": {}}
    assert read_attribute_scores(tmp_path / "s.csv", ["mood"])[1]["2"] == {"mood": 2.0}
    with pytest.raises(LabelFormatError, match="no attribute nope"):
        read_attribute_scores(tmp_path / "s.csv", ["nope"])


def test_the_world_describes_its_attributes(world):
    from photocritic.data.attributes import DEFAULT_ATTRIBUTES, read_attributes
    from photocritic.data.synthetic import GRADES

    desc = read_attributes(world / "attributes.json")
    rows = {r.split(",")[0].split("/")[-1][:-4]: r for r in (world / "labels.csv").read_text().splitlines()[1:]}
    assert set(desc) == set(rows)
    present = np.mean([a in d for d in desc.values() for a in DEFAULT_ATTRIBUTES])
    assert 0.78 < present < 0.92  # each attribute left out with probability 0.15
    header = (world / "labels.csv").read_text().splitlines()[0].split(",")
    # a description's grade follows the true attribute score (noise 0.05 in quality)
    worst = [w for _, words in GRADES[-1:] for w in words]
    best = [w for _, words in GRADES[:1] for w in words]
    col = header.index("lighting")
    for key, d in desc.items():
        if "lighting" not in d:
            continue
        q = (float(rows[key].split(",")[col]) - 1) / 9
        text = d["lighting"][0].lower()
        if q > 0.95:
            assert any(w in text for w in best), text
        if q < 0.15:
            assert any(w in text for w in worst), text


# -- pretraining ------------------------------------------------------------------------------
def _pretrain(args) -> int:
    return main(["pretrain", "multiattr", *map(str, args), "-q"])


@pytest.fixture(scope="module")
def few(world, tmp_path_factory):
    """The descriptions of 80 of the world's images: enough for the runs that
    compare weights, quick to train on."""
    desc = json.loads((world / "attributes.json").read_text())
    path = tmp_path_factory.mktemp("few") / "attributes.json"
    path.write_text(json.dumps(dict(sorted(desc.items())[:80])))
    return path


@pytest.fixture(scope="session")
def multiattr_dir(world, tiny_clip_dir, tiny_text, store, tmp_path_factory):
    out = tmp_path_factory.mktemp("multiattr") / "m"
    assert _pretrain(["--init", tiny_clip_dir, "--attributes", world / "attributes.json", "--images",
                      world / "images", "--output", out, "--text-encoder", tiny_text, "--epochs", 3,
                      "--batch-size", 32, "--cache", store, "--precision", "fp32", "--space-dim", 16,
                      "--hidden", 32, "--adapter-dim", 16]) == 0
    return out


def test_pretrained_directory_scores_explains_and_serves_as_a_backbone(multiattr_dir, world, tmp_path, store,
                                                                     capsys):
    import photocritic
    from photocritic.data.attributes import DEFAULT_ATTRIBUTES

    m = json.loads((multiattr_dir / "metrics.json").read_text())
    assert m["attributes"] == list(DEFAULT_ATTRIBUTES) and len(m["epochs"]) == 3
    assert m["epochs"][-1]["train_contrastive"] < m["epochs"][0]["train_contrastive"]
    model = photocritic.load(str(multiattr_dir), precision="fp32")
    paths = sorted(str(p) for p in (world / "images").glob("*.jpg"))[:6]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    from PIL import Image

    rows = model.explain(paths + [str(bad), Image.open(paths[0]).convert("RGB")])
    assert [r.status for r in rows] == ["ok"] * 6 + ["not_image", "ok"]
    assert rows[7].path == "<image 7>" and set(rows[7].descriptions) == set(DEFAULT_ATTRIBUTES)
    for r in rows[:6]:
        assert set(r.attributes) == set(DEFAULT_ATTRIBUTES)
        assert all(1 <= v <= 10 for v in r.attributes.values())
        assert r.score == pytest.approx(np.mean(list(r.attributes.values())))  # zero-shot overall: the mean
        assert all(r.descriptions[a] for a in DEFAULT_ATTRIBUTES)  # retrieved from the training descriptions
    bank = {t for texts in json.loads((multiattr_dir / "multiattr" / "bank.json").read_text()).values()
            for t in texts}
    assert rows[0].descriptions["lighting"] in bank
    scored = model.score(paths)
    assert [r.score for r in scored] == pytest.approx([r.score for r in rows[:6]], abs=1e-5)
    # the CLI: a table, a row file with one column per attribute, an HTML page
    out, page = tmp_path / "ex.csv", tmp_path / "ex.html"
    assert main(["explain", *paths[:3], str(bad), "--model", str(multiattr_dir), "--output", str(out),
                 "--html", str(page), "-q", "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "overall" in text and "not_image" in text and "technical_quality" in text
    import csv

    with open(out, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0])[:9] == ["path", "score", *DEFAULT_ATTRIBUTES]
    assert "lighting_description" in table[0]
    assert [r["status"] for r in table] == ["ok"] * 3 + ["not_image"] and table[-1]["lighting"] == ""
    html = page.read_text()
    assert html.count('<div class="card">') == 3 and "not_image" in html and "data:image/jpeg;base64," in html
    # a backbone: per-attribute heads and a linear head on the pretrained features
    heads = tmp_path / "heads"
    assert main(["train", "attributes", "--backbone", str(multiattr_dir), "--dataset", str(world), "--split",
                 "train", "--attribute-labels", str(world / "labels.csv"), "--output", str(heads),
                 "--cache", str(store), "--precision", "fp32", "-q"]) == 0
    hm = json.loads((heads / "metrics.json").read_text())
    assert set(hm["final_val_attributes"]) == set(DEFAULT_ATTRIBUTES)
    assert json.loads((heads / "config.json").read_text())["method"]["meta"]["view"] == "image.attributes"
    trained = photocritic.load(str(heads), precision="fp32").explain(paths[:2])
    assert all(r.descriptions["colour"] in bank for r in trained)  # the backbone's descriptions
    # score writes a column per attribute, the same numbers explain gives
    assert main(["score", *paths[:2], str(bad), "--model", str(heads), "--output", str(tmp_path / "s.jsonl"),
                 "--no-cache", "--precision", "fp32", "-q"]) == 0
    scored = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    for r, e in zip(scored, trained):
        assert r["score"] == pytest.approx(e.score, abs=1e-5)
        assert [r[a] for a in DEFAULT_ATTRIBUTES] == pytest.approx([e.attributes[a] for a in DEFAULT_ATTRIBUTES],
                                                                   abs=1e-5)
    assert scored[2]["status"] == "not_image" and scored[2]["lighting"] is None
    # eval reports SRCC per attribute, as scipy computes it from the predictions
    from scipy.stats import spearmanr

    ev = tmp_path / "ev"
    assert main(["eval", "--model", str(heads), "--dataset", str(world), "--split", "test", "--attribute-labels",
                 str(world / "labels.csv"), "--output", str(ev), "--no-cache", "--precision", "fp32", "-q",
                 "--bootstrap", "50"]) == 0
    rep = json.loads((ev / "metrics.json").read_text())["attributes"]
    test = sorted(str(p) for p in world.glob("images/*.jpg") if p.stem in
                  {line.split(",")[0][7:-4] for line in (world / "labels.csv").read_text().splitlines()[1:]
                   if ",test," in line})
    ex = photocritic.load(str(heads), precision="fp32").explain(test, describe=False)
    header = (world / "labels.csv").read_text().splitlines()[0].split(",")
    truth = {line.split(",")[0][7:-4]: line.split(",") for line in (world / "labels.csv").read_text().splitlines()[1:]}
    want = spearmanr([r.attributes["colour"] for r in ex],
                     [float(truth[os.path.basename(r.path)[:-4]][header.index("colour")]) for r in ex]).statistic
    assert rep["colour"]["n"] == len(test) and rep["colour"]["srcc"] == pytest.approx(want, abs=1e-6)
    assert "| colour |" in (ev / "report.md").read_text()
    lin = tmp_path / "lin"
    assert main(["train", "linear", "--backbone", str(multiattr_dir), "--dataset", str(world), "--split", "train",
                 "--output", str(lin), "--cache", str(store), "--precision", "fp32", "-q"]) == 0
    # explain with another method on it: the backbone's zero-shot attribute scores, its own overall score
    on_lin = photocritic.load(str(lin), precision="fp32")
    got = on_lin.explain(paths[:2])
    assert [r.score for r in got] == pytest.approx([r.score for r in on_lin.score(paths[:2])], abs=1e-5)
    assert [r.attributes for r in got] == [pytest.approx(r.attributes, abs=1e-5) for r in rows[:2]]


def test_attribute_heads_learn_on_the_tower(world, store, tmp_path):
    """train attributes on EfficientNet-Lite0's features: the attributes the
    pixels show are predicted above chance on held-out photos (SRCC by scipy)."""
    from scipy.stats import spearmanr

    import photocritic
    from photocritic.data.datasets import load_dataset

    out = tmp_path / "heads"
    assert main(["train", "attributes", "--backbone", "efficientnet-lite0", "--dataset", str(world), "--split",
                 "train", "--val-split", "val", "--attribute-labels", str(world / "labels.csv"), "--output",
                 str(out), "--cache", str(store), "--precision", "fp32", "-q"]) == 0
    test = load_dataset(world).split("test")[0]  # two source photos no training image shows
    rows = photocritic.load(str(out), precision="fp32").explain(test.image_paths(), describe=False)
    labels = {r.split(",")[0]: r.split(",") for r in (world / "labels.csv").read_text().splitlines()[1:]}
    header = (world / "labels.csv").read_text().splitlines()[0].split(",")
    got = {}
    for a in ("technical_quality", "lighting", "colour"):
        truth = [float(labels["images/" + os.path.basename(r.path)][header.index(a)]) for r in rows]
        got[a] = spearmanr([r.attributes[a] for r in rows], truth).statistic
    assert all(v > 0.25 for v in got.values()), got


def test_explain_needs_attributes_or_an_image_text_space(tiny_clip_dir, world, capsys):
    import photocritic

    paths = sorted(str(p) for p in (world / "images").glob("*.jpg"))[:2]
    rows = photocritic.zoo.zero_shot(tiny_clip_dir).configure(precision="fp32").explain(paths)
    assert rows.source is None and len(rows[0].attributes) == 7 and rows[0].descriptions == {}
    assert main(["explain", paths[0], "--model", "lite", "--no-cache"]) == 2
    assert "has no attribute scores" in capsys.readouterr().err
    assert main(["train", "multiattr", "--backbone", "lite", "--dataset", str(world), "--output", "x"]) == 2


def test_resume_continues_bit_for_bit(world, few, tiny_clip_dir, tiny_text, store, tmp_path):
    from safetensors.torch import load_file

    base = ["--init", tiny_clip_dir, "--attributes", few, "--images", world / "images",
            "--text-encoder", tiny_text, "--batch-size", 32, "--cache", store, "--precision", "fp32",
            "--space-dim", 8, "--hidden", 16, "--adapter-dim", 8, "--val-fraction", 0]
    assert _pretrain(base + ["--output", tmp_path / "a", "--epochs", 2]) == 0
    assert _pretrain(base + ["--output", tmp_path / "b", "--epochs", 1]) == 0
    assert _pretrain(base + ["--output", tmp_path / "b", "--epochs", 2, "--resume"]) == 0
    a, b = (load_file(str(tmp_path / d / "multiattr" / "net.safetensors")) for d in "ab")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # other options than the checkpoint's (the network's or the loss's): refused, the output kept
    assert _pretrain(base[:-2] + ["--output", tmp_path / "b", "--epochs", 3, "--resume", "--spaces", "single"]) == 2
    assert _pretrain(base + ["--output", tmp_path / "b", "--epochs", 3, "--resume", "--affinity", 2]) == 2
    kept = load_file(str(tmp_path / "b" / "multiattr" / "net.safetensors"))
    assert all(torch.equal(kept[k], b[k]) for k in b)
    # the neighbours form trains other weights and is recorded; a temperature of 0 is refused
    assert _pretrain(base + ["--output", tmp_path / "n", "--epochs", 2, "--affinity-form", "neighbours",
                             "--affinity-temperature", 0.1]) == 0
    cfg = json.loads((tmp_path / "n" / "multiattr" / "config.json").read_text())
    assert (cfg["affinity_form"], cfg["affinity_temperature"]) == ("neighbours", 0.1)
    n = load_file(str(tmp_path / "n" / "multiattr" / "net.safetensors"))
    assert any(not torch.equal(a[k], n[k]) for k in a)
    assert _pretrain(base + ["--output", tmp_path / "z", "--affinity-temperature", 0]) == 2


@needs_torchrun
def test_two_processes_pretrain_the_same_weights(world, few, tiny_clip_dir, tiny_text, tmp_path):
    from safetensors.torch import load_file

    imgs = tmp_path / "images"
    imgs.mkdir()
    names = sorted(json.loads(few.read_text()))
    for name in names:
        shutil.copy(world / "images" / name, imgs / name)
    for name in names[:3]:
        (imgs / name).write_bytes(b"not a JPEG")
    outs = []
    for procs in (1, 2):
        out = tmp_path / f"p{procs}"
        run_processes(["pretrain", "multiattr", "--init",
                       str(tiny_clip_dir), "--attributes", str(few), "--images", str(imgs),
                       "--output", str(out), "--text-encoder", str(tiny_text), "--epochs", "2", "--batch-size", "25",
                       "--cache", str(tmp_path / "store.sqlite"), "--precision", "fp32", "--space-dim", "8",
                       "--hidden", "16", "--adapter-dim", "8", "--workers", "0", "-q"], procs, tmp_path)
        outs.append(out)
    a, b = (load_file(str(o / "multiattr" / "net.safetensors")) for o in outs)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-4)
    m = json.loads((outs[1] / "metrics.json").read_text())
    assert m["processes"] == 2 and m["images"]["unreadable"] == 3


def test_a_trainable_tower_is_trained_and_scores_with_its_weights(world, few, tiny_clip_dir, tiny_text, tmp_path):
    """--tower trainable: the tower moves, its weights are saved, and the
    model's features are the net's adapter on the trained tower's output."""
    from safetensors.torch import load_file
    from transformers import CLIPModel

    import photocritic

    out = tmp_path / "t"
    assert _pretrain(["--init", tiny_clip_dir, "--tower", "trainable", "--lr-tower", "1e-3", "--attributes",
                      few, "--images", world / "images", "--output", out, "--text-encoder",
                      tiny_text, "--epochs", 1, "--batch-size", 32, "--no-cache", "--precision", "fp32",
                      "--space-dim", 8, "--hidden", 16, "--adapter-dim", 8, "--val-fraction", 0]) == 0
    tuned = load_file(str(out / "multiattr" / "tower.safetensors"))
    init = CLIPModel.from_pretrained(str(tiny_clip_dir)).vision_model.state_dict()
    assert set(tuned) == set(init) and any(not torch.equal(tuned[k], init[k]) for k in tuned)
    enc = photocritic.load(str(out), precision="fp32").encoder
    vision = enc.tower.model.vision_model
    for k, v in vision.state_dict().items():
        assert torch.equal(v, tuned[k]), k
    x = torch.randn(2, 3, *enc.preprocess.output_size)
    with torch.no_grad():
        want = enc.net.adapter(vision(pixel_values=x).pooler_output)
    torch.testing.assert_close(enc.encode(x).pooled, want)
    assert _pretrain(["--init", tiny_clip_dir, "--tower", "trainable", "--fusion", "tokens", "--attributes",
                      world / "attributes.json", "--images", world / "images", "--output", tmp_path / "u"]) == 2
