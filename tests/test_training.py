"""Trainable methods, `photocritic train`, model directories v2, the synthetic world."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import photocritic
from photocritic.cli import main
from photocritic.data.synthetic import find_sources, synthesize
from photocritic.methods.base import Targets

from conftest import SHARED, needs_torchrun, run_processes, train_cli as _train

REPO = Path(__file__).resolve().parents[1]


def skimage_sources():
    return [s for s in find_sources(debian=False)]


#: Test-split SRCC floors on the 300-image, 8-photo world (an untrained head
#: scores about 0; benchmarks/learnability.py has the 6,000-image table).
#: Plain OLS on the 1,280 ImageNet pre-logits of 187 images cannot
#: generalise (more features than images), so ``linear`` has no floor here.
FLOORS = {"linear-pooled": 0.3, "nima": 0.15, "mlp": 0.3, "vila-r": 0.35}


# -- the methods' equations --------------------------------------------------------

def test_linear_probe_equals_sklearn():
    from sklearn.linear_model import LinearRegression

    from photocritic.methods.linear import LinearProbe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 30)) * rng.uniform(0.1, 50, 30) + rng.normal(size=30) * 10
    y = x @ rng.normal(size=30) * 0.01 + rng.normal(size=400)
    probe = LinearProbe().fit({"image.prelogits": x}, Targets(y))
    ref = LinearRegression().fit(x, y)
    # the probe's weights live on standardised features: w_raw = w_std / std
    np.testing.assert_allclose(probe.coef_ / probe.std_, ref.coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(probe.predict({"image.prelogits": x}).score, ref.predict(x), rtol=1e-6, atol=1e-9)


def test_ridge_auto_picks_alpha_on_validation():
    from sklearn.linear_model import Ridge

    from photocritic.methods.linear import LinearProbe

    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 80))
    y = x[:, 0] + rng.normal(size=120) * 2
    xv, yv = x[:60], y[:60]
    probe = LinearProbe(ridge="auto").fit({"image.prelogits": x[60:]}, Targets(y[60:]),
                                          val=({"image.prelogits": xv}, Targets(yv)))
    assert probe.alpha_ == max(probe.alpha_scores_, key=probe.alpha_scores_.get)
    z = (x[60:] - probe.mean_) / probe.std_
    ref = Ridge(alpha=probe.alpha_).fit(z, y[60:])
    np.testing.assert_allclose(probe.coef_, ref.coef_, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("n, d, alpha", [(50, 80, 0.0), (400, 30, 3.0), (50, 80, 3.0)])
def test_ridge_path_both_ways_equals_sklearn(n, d, alpha):
    """Fewer images than features (the SVD way; OLS is then the minimum-norm
    solution, as lstsq gives) and many more (the normal equations' way)."""
    from sklearn.linear_model import LinearRegression, Ridge

    from photocritic.methods.linear import LinearProbe

    rng = np.random.default_rng(d)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, d)
    y = x[:, :3].sum(1) + rng.normal(size=n)
    probe = LinearProbe(ridge=alpha or None).fit({"image.prelogits": x}, Targets(y))
    z = (x - probe.mean_) / probe.std_
    ref = (Ridge(alpha=alpha) if alpha else LinearRegression()).fit(z, y)
    np.testing.assert_allclose(probe.coef_, ref.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(probe.predict({"image.prelogits": x}).score, ref.predict(z), rtol=1e-6, atol=1e-8)


def _emd_no_cumsum(p, q, r=2):
    return torch.mean(torch.abs(p - q) ** r, dim=-1) ** (1 / r)


def _moves_mass_monotonically(fn) -> bool:
    """All mass on bin 1 vs all on bin k: the distance must grow with k."""
    q = torch.zeros(1, 10, dtype=torch.float64)
    q[0, 0] = 1
    d = []
    for k in range(1, 10):
        p = torch.zeros(1, 10, dtype=torch.float64)
        p[0, k] = 1
        d.append(float(fn(p, q).mean()))
    return all(b > a for a, b in zip(d, d[1:]))


def test_emd_loss_is_the_metric_and_uses_the_cdf():
    from photocritic import metrics
    from photocritic.losses import emd

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), 50)
    q = rng.dirichlet(np.ones(10), 50)
    loss = float(emd(torch.tensor(p), torch.tensor(q)))
    assert metrics.emd(p, q) == pytest.approx(loss, rel=1e-12)
    # hand-computed: all mass on 1 vs all on 3 -> CDF differs by 1 on bins 1 and 2
    a, b = np.eye(10)[0], np.eye(10)[2]
    assert metrics.emd(a, b) == pytest.approx(np.sqrt(2 / 10))
    assert metrics.emd(a, b, r=1) == pytest.approx(2 / 10)
    assert _moves_mass_monotonically(emd)
    assert not _moves_mass_monotonically(_emd_no_cumsum)
    # a gradient flows at equal distributions (no NaN from the root)
    x = torch.tensor(q[:2], requires_grad=True)
    emd(x, torch.tensor(q[:2])).backward()
    assert torch.isfinite(x.grad).all()


def test_vila_r_loss_by_hand_and_training_lowers_it():
    from photocritic.losses import pairwise_ranking_loss
    from photocritic.methods.vila_r import VilaR

    s = torch.tensor([0.30, 0.10, 0.25, -0.05])
    y = torch.tensor([6.0, 5.0, 7.0, 5.0])
    terms = []
    for i in range(4):
        for j in range(4):
            if y[i] != y[j]:
                terms.append(max(0.0, 0.1 - float(torch.sign(y[i] - y[j])) * float(s[i] - s[j])))
    assert float(pairwise_ranking_loss(s, y, 0.1)) == pytest.approx(sum(terms) / len(terms), abs=1e-7)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16))
    yy = x @ rng.normal(size=16)
    text = rng.normal(size=(1, 16))
    head = VilaR(rank=None, epochs=1, lr=1e-2, batch_size=64, anchor="text")
    feats = {"image.pooled": x, "text.pooled": text}
    head._init_module(torch.as_tensor(x, dtype=torch.float32), feats)
    with torch.no_grad():
        before = float(pairwise_ranking_loss(head.module(torch.as_tensor(x, dtype=torch.float32)),
                                             torch.as_tensor(yy, dtype=torch.float32)))
    head.epochs = 20
    head.fit(feats, Targets(yy))
    after = float(pairwise_ranking_loss(torch.as_tensor(head.predict(feats).score), torch.as_tensor(yy)))
    assert after < 0.5 * before
    # the text anchor is the unit text embedding, frozen
    np.testing.assert_allclose(head.module.anchor.numpy(), text[0] / np.linalg.norm(text[0]), rtol=1e-6)


def test_laion_v2_is_the_released_mlp():
    from safetensors.torch import load_file

    model = photocritic.load("laion-v2", precision="fp32")
    state = {k: v.double().numpy() for k, v in
             load_file(str(Path(photocritic.__file__).parent / "weights/laion-v2/model.safetensors")).items()}
    pth = SHARED / "data/models/laion/sac+logos+ava1-l14-linearMSE.pth"
    if pth.exists():  # the shipped file holds the released values unchanged
        released = torch.load(pth, map_location="cpu", weights_only=True)
        for k, v in released.items():
            np.testing.assert_array_equal(state[k], v.double().numpy())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 768))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    h = unit
    for i in (0, 2, 4, 6, 7):  # no activations in the released head
        h = h @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    np.testing.assert_allclose(model.scores_from_embeddings(unit), h[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.scores_from_embeddings(x * 7.3), h[:, 0], rtol=1e-6, atol=1e-6)


def test_score_embeddings_npy_parquet_and_mismatch(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    e = rng.normal(size=(7, 768)).astype(np.float32)
    np.save(tmp_path / "e.npy", e)
    pq.write_table(pa.table({"key": [f"img{i}" for i in range(7)], "embedding": list(e)}),
                   tmp_path / "e.parquet")
    expected = photocritic.load("laion-v2", precision="fp32").scores_from_embeddings(e)
    for f, keys in (("e.npy", [str(i) for i in range(7)]), ("e.parquet", [f"img{i}" for i in range(7)])):
        out = tmp_path / (f + ".jsonl")
        assert main(["score", "--embeddings", str(tmp_path / f), "--model", "laion-v2", "-o", str(out)]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["path"] for r in rows] == keys
        np.testing.assert_allclose([r["score"] for r in rows], expected, rtol=1e-6)
    np.save(tmp_path / "small.npy", e[:, :512])
    capsys.readouterr()
    assert main(["score", "--embeddings", str(tmp_path / "small.npy"), "--model", "laion-v2"]) == 2
    err = capsys.readouterr().err
    assert "512-d" in err and "768-d" in err and "Traceback" not in err


# -- train, save, load, score ---------------------------------------------------------

def test_trained_models_round_trip_and_learn(trained, world, tmp_path):
    from photocritic.data.datasets import load_dataset

    test = load_dataset(world).split("test")[0]
    paths = test.image_paths()
    for method, d in trained.items():
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["version"] == 2 and cfg["method"]["type"] == method.split("-pooled")[0]
        for f in ("model.safetensors", "metrics.json", "training.png", "train_config.json"):
            assert (d / f).exists(), (method, f)
        a = photocritic.load(str(d), precision="fp32").score(paths, cache=tmp_path / "c.sqlite")
        b = photocritic.load(str(d), precision="fp32").score(paths, cache=tmp_path / "c.sqlite")
        assert all(r.cached for r in b)
        np.testing.assert_array_equal([r.score for r in a], [r.score for r in b])
        srcc = spearmanr([r.score for r in a], test.mean)[0]
        assert srcc > FLOORS.get(method, -1.0), (method, srcc)
    assert (trained["linear"] / "weights.png").exists()
    metrics = json.loads((trained["nima"] / "metrics.json").read_text())
    assert metrics["epochs"] and all("emd" in r and "srcc" in r for r in metrics["epochs"])
    assert metrics["final_val"]["emd"] == min(r["emd"] for r in metrics["epochs"])  # best epoch kept


def test_second_train_decodes_no_image(trained, world, store, tmp_path, capsys):
    assert _train(["linear", "--backbone", "efficientnet-lite0", "--dataset", str(world), "--split", "train",
                   "--val-split", "val", "--output", str(tmp_path / "again")], store) == 0
    m = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert m["train_images"]["computed"] == 0 and m["val_images"]["computed"] == 0
    assert m["train_images"]["from_cache"] == m["train_images"]["used"] > 100


def test_distribution_rows_in_every_format_and_eval_emd(trained, world, tmp_path):
    import pyarrow.parquet as pq

    imgs = sorted((world / "images").glob("*.jpg"))[:4]
    model = str(trained["nima"])
    args = ["score", *map(str, imgs), "--model", model, "--precision", "fp32", "--no-cache"]
    assert main([*args, "-o", str(tmp_path / "s.csv")]) == 0
    assert main([*args, "-o", str(tmp_path / "s.parquet")]) == 0
    import csv

    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    p = np.array([[float(r[f"p{k}"]) for k in range(1, 11)] for r in rows])
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(p @ np.arange(1, 11), [float(r["score"]) for r in rows], atol=1e-4)
    table = pq.read_table(tmp_path / "s.parquet").to_pylist()
    np.testing.assert_allclose([t["distribution"] for t in table], p, atol=1e-6)
    assert main(["eval", "--model", model, "--dataset", str(world), "--split", "test", "--output",
                 str(tmp_path / "ev"), "--precision", "fp32", "--no-cache", "-q"]) == 0
    res = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert 0 < res["emd_r2"] < 0.3


def test_train_bad_input_is_exit_2(world, store, tmp_path, capsys):
    base = ["--backbone", "efficientnet-lite0", "--dataset", str(world)]
    tiny = tmp_path / "tiny"
    (tiny / "images").mkdir(parents=True)
    lines = (world / "labels.csv").read_text().splitlines()
    (tiny / "labels.csv").write_text("\n".join(lines[:4]) + "\n")
    for line in lines[1:3]:
        name = line.split(",")[0]
        shutil.copy(world / name, tiny / name)
    capsys.readouterr()
    assert _train(["linear", "--backbone", "efficientnet-lite0", "--dataset", str(tiny), "--output",
                   str(tmp_path / "o1")], store) == 2
    err = capsys.readouterr().err
    assert "too few labelled images for linear" in err and "1 listed images are missing" in err
    assert _train(["nima", *base, "--param", "view=text.tokens", "--output", str(tmp_path / "o2")], store) == 2
    err = capsys.readouterr().err
    assert "text.tokens" in err and "efficientnet-lite0" in err
    (tmp_path / "o3").mkdir()
    (tmp_path / "o3" / "keep.txt").write_text("x")
    assert _train(["linear", *base, "--output", str(tmp_path / "o3")], store) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "o3" / "keep.txt").exists()
    # --overwrite is carried out only once the data is usable: a failed run deletes nothing
    assert _train(["linear", "--backbone", "efficientnet-lite0", "--dataset", str(tiny), "--overwrite",
                   "--output", str(tmp_path / "o3")], store) == 2
    assert (tmp_path / "o3" / "keep.txt").exists()


def test_train_config_file_and_command_line_override(world, store, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: linear\nbackbone: efficientnet-lite0\ndataset: {world}\nsplit: train\n"
                   f"val_split: val\nparams:\n  ridge: 10.0\n")
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "m"), "--cache", str(store),
                 "-q", "--precision", "fp32", "--param", "ridge=100"]) == 0
    resolved = json.loads((tmp_path / "m" / "train_config.json").read_text())
    assert resolved["params"] == {"ridge": 100} and resolved["split"] == "train"
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["ridge_alpha"] == 100


def test_version_1_lite_still_loads(tmp_path):
    """A directory in the version-1 layout the first `lite` shipped in
    (config.json with ``encoder`` and ``method: vila_r``, head.json,
    head.safetensors with fp16 factors) loads, and scores as the adapter's
    formula computed here by hand."""
    from safetensors.torch import save_file

    from photocritic.methods.vila_r import VilaR

    rng = np.random.default_rng(0)
    dim, rank = 16, 4
    state = {"anchor": torch.nn.functional.normalize(torch.randn(dim), dim=0),
             "shift": torch.randn(dim), "scale": torch.rand(dim) + 0.5,
             "down.weight": torch.randn(rank, dim).half(), "up.weight": torch.randn(dim, rank).half(),
             "up.bias": torch.randn(dim).half()}
    d = tmp_path / "lite-v1"
    d.mkdir()
    save_file(state, str(d / "head.safetensors"))
    (d / "head.json").write_text(json.dumps({"kind": "vila_r", "rank": rank, "margin": 0.1, "dim": dim}))
    (d / "config.json").write_text(json.dumps({
        "format": "photocritic-model", "version": 1, "name": "lite", "description": "v1",
        "encoder": {"type": "efficientnet-lite0"}, "method": "vila_r",
        "score_map": {"kind": "logistic", "center": 0.2, "scale": 0.6}}))
    lite = photocritic.load(str(d))
    assert isinstance(lite.head, VilaR) and lite.head.anchor == "mean" and lite.head.rank == rank
    x = rng.normal(size=(5, dim))
    s = {k: v.double().numpy() for k, v in state.items()}
    v = (x - s["shift"]) / s["scale"]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t = v + (v @ s["down.weight"].T) @ s["up.weight"].T + s["up.bias"]
    r = (t / np.linalg.norm(t, axis=1, keepdims=True)) @ s["anchor"]
    np.testing.assert_allclose(lite.head.predict({"image.pooled": x}).score, r, atol=1e-5)
    np.testing.assert_allclose(lite.score_map(r), 1 + 9 / (1 + np.exp(-(r - 0.2) / 0.6)), atol=1e-9)


def test_the_first_lite_still_loads_and_scores(shared_images):
    """The real version-1 `lite` (benchmarks/assets/lite-v1, the untrained
    prior of the learnability benchmark) scores photos as its saved factors
    and score map give by hand, on the image.pooled features it extracts."""
    from safetensors.numpy import load_file

    from photocritic.features import EmbeddingCache

    d = REPO / "benchmarks" / "assets" / "lite-v1"
    lite = photocritic.load(str(d))
    assert lite.head.rank == 32 and lite.head.anchor == "mean"
    paths = sorted(str(p) for p in shared_images.rglob("*.jpg"))[:4]
    with EmbeddingCache(None) as store:
        rows, x = lite.embed_paths(paths, store)
    assert [r.status for r in rows] == ["ok"] * 4 and x.shape == (4, 2912)
    s = {k: v.astype(np.float64) for k, v in load_file(str(d / "head.safetensors")).items()}
    v = (x - s["shift"]) / s["scale"]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t = v + (v @ s["down.weight"].T) @ s["up.weight"].T + s["up.bias"]
    r = (t / np.linalg.norm(t, axis=1, keepdims=True)) @ s["anchor"]
    sm = json.loads((d / "config.json").read_text())["score_map"]
    np.testing.assert_allclose([row.score for row in rows],
                               1 + 9 / (1 + np.exp(-(r - sm["center"]) / sm["scale"])), atol=1e-3)


def test_save_load_v2_keeps_predictions(tmp_path):
    from photocritic.methods.nima import Nima
    from photocritic.models import Critic
    from photocritic.scoremap import ScoreMap

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 12))
    q = rng.dirichlet(np.ones(10), 80)
    m = Nima(epochs=3).fit({"image.pooled": x}, Targets(q @ np.arange(1, 11), q))
    Critic({"type": "efficientnet-lite0"}, m, ScoreMap(0, 1, "linear"), name="t").save(tmp_path / "m")
    again = photocritic.load(str(tmp_path / "m"))
    np.testing.assert_array_equal(again.head.predict({"image.pooled": x}).distribution,
                                  m.predict({"image.pooled": x}).distribution)


# -- fine-tuning: resume and several processes ------------------------------------------

@pytest.fixture(scope="session")
def clip_world(tmp_path_factory, world):
    """40 images of the world (fine-tuning a tiny CLIP is quick on them)."""
    out = tmp_path_factory.mktemp("clip-world")
    synthesize(out, 40, seed=5, sources=skimage_sources(), min_sources=8)
    return out


def _ft_args(tiny_clip_dir, clip_world, out, epochs):
    return ["finetune", "--backbone", str(tiny_clip_dir), "--dataset", str(clip_world), "--output", str(out),
            "--epochs", str(epochs), "--batch-size", "8", "--param", "workers=0", "--seed", "1"]


def _weights(d):
    from safetensors.torch import load_file

    out = {}
    for f in ("model", "backbone"):
        out.update({f"{f}.{k}": v.float() for k, v in load_file(str(d / f"{f}.safetensors")).items()})
    return out


def test_finetune_resume_is_bit_for_bit(tiny_clip_dir, clip_world, store, tmp_path):
    assert _train(_ft_args(tiny_clip_dir, clip_world, tmp_path / "straight", 4), store) == 0
    assert _train(_ft_args(tiny_clip_dir, clip_world, tmp_path / "cut", 2), store) == 0
    assert _train([*_ft_args(tiny_clip_dir, clip_world, tmp_path / "cut", 4), "--resume"], store) == 0
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    ma = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert [r["train_loss"] for r in ma["epochs"]] == pytest.approx([r["train_loss"] for r in mb["epochs"]],
                                                                    abs=1e-9)
    # the fine-tuned tower is what scores, under its own cache key
    model = photocritic.load(str(tmp_path / "straight"), precision="fp32")
    assert model.encoder_spec["weights"].endswith("backbone.safetensors")
    assert "+tuned:" in model.encoder_key()
    # calibrate keeps the tuned tower and the head; only the 1-10 map changes
    assert main(["calibrate", "--model", str(tmp_path / "straight"), "--dataset", str(clip_world), "--output",
                 str(tmp_path / "cal"), "--precision", "fp32", "--no-cache", "-q"]) == 0
    cal = photocritic.load(str(tmp_path / "cal"), precision="fp32")
    assert (tmp_path / "cal" / "backbone.safetensors").read_bytes() == \
        (tmp_path / "straight" / "backbone.safetensors").read_bytes()
    assert cal.encoder_key() == model.encoder_key() and cal.score_map != model.score_map
    paths = sorted(str(p) for p in (clip_world / "images").glob("*.jpg"))[:5]
    a_rows, b_rows = model.score(paths), cal.score(paths)
    assert np.argsort([r.score for r in a_rows]).tolist() == np.argsort([r.score for r in b_rows]).tolist()


def test_finetune_with_a_decoding_worker_trains_the_same_weights(tiny_clip_dir, clip_world, store, tmp_path):
    """One persistent decoding worker for epoch 1, then (every image cached)
    batches collated in this process: the same weights, bit for bit, as
    decoding in-process every epoch without a cache; the mirroring is drawn
    from each item's own epoch either way."""
    common = ["--param", "augment=hflip", "-q", "--precision", "fp32"]
    worker = [*_ft_args(tiny_clip_dir, clip_world, tmp_path / "worker", 3), *common]
    worker[worker.index("workers=0")] = "workers=1"
    plain = [*_ft_args(tiny_clip_dir, clip_world, tmp_path / "plain", 3), *common, "--param", "image_cache_mb=0"]
    assert _train(worker, store) == 0 and _train(plain, store) == 0
    a, b = _weights(tmp_path / "worker"), _weights(tmp_path / "plain")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma = json.loads((tmp_path / "worker" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert ma["train_images"]["cached"] == ma["train_images"]["used"] > 0 and mb["train_images"]["cached"] == 0
    # the key's epoch, not the dataset's attribute, draws the mirroring
    from photocritic.encoders.base import Preprocess
    from photocritic.training.trainer import ImageRatings

    paths = sorted(str(p) for p in (clip_world / "images").glob("*.jpg"))[:8]
    data = ImageRatings(paths, np.ones((8, 10)), Preprocess(resize=32, crop=32), augment="hflip", seed=1)
    assert any(not torch.equal(data[(2, i)][0], data[(1, i)][0]) for i in range(8))  # mirrored in one only
    assert all(torch.equal(data[(2, i)][0], data[(2, i)][0]) for i in range(8))  # and the same on each read


@needs_torchrun
def test_two_processes_train_the_same_weights(tiny_clip_dir, clip_world, tmp_path):
    """nima and finetune under torchrun with 2 processes give 1 process's
    weights. The fine-tune's world has unreadable training images and
    micro-batches of one image, so a process meets micro-batches with no
    readable image and must still join the other's gradient all-reduce."""
    import csv

    broken = tmp_path / "broken-world"
    shutil.copytree(clip_world, broken)
    train_imgs = [r["path"] for r in csv.DictReader(open(broken / "labels.csv")) if r["split"] == "train"]
    for rel in train_imgs[:4]:
        (broken / rel).write_bytes(b"not a JPEG")
    for args in (["nima", "--backbone", str(tiny_clip_dir), "--dataset", str(clip_world), "--epochs", "5",
                  "--batch-size", "8"],
                 _ft_args(tiny_clip_dir, broken, "X", 2) + ["--param", "accumulate=4"]):
        outs = []
        for procs in (1, 2):
            out = tmp_path / f"{args[0]}-{procs}"
            full = [a if a != "X" else str(out) for a in args]
            if "--output" not in full:
                full += ["--output", str(out)]
            run_processes(["train", *full, "-q", "--precision", "fp32"], procs, tmp_path,
                          PHOTOCRITIC_CACHE=str(tmp_path / "c.sqlite"))
            outs.append(out)
        if args[0] == "nima":
            from safetensors.torch import load_file

            a, b = (load_file(str(o / "model.safetensors")) for o in outs)
        else:
            a, b = _weights(outs[0]), _weights(outs[1])
        for k in a:
            torch.testing.assert_close(a[k].float(), b[k].float(), rtol=0, atol=1e-4)


# -- the synthetic world ----------------------------------------------------------------------

def test_synthetic_world_is_deterministic_and_split_by_source(tmp_path, world):
    import csv

    srcs = skimage_sources()
    synthesize(tmp_path / "a", 30, seed=9, sources=srcs, min_sources=5, workers=1)
    synthesize(tmp_path / "b", 30, seed=9, sources=srcs, min_sources=5, workers=2)
    for f in ["labels.csv", "comments.json", "world.json"] + [f"images/{i:06d}.jpg" for i in range(30)]:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    rows = list(csv.DictReader(open(world / "labels.csv")))
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r["source"], r["split"]) == r["split"]  # a photo in one split only
    assert set(split_of.values()) == {"train", "val", "test"}
    votes = np.array([[int(r[f"score{k}"]) for k in range(1, 11)] for r in rows])
    vote_mean = votes @ np.arange(1, 11) / votes.sum(1)
    true = np.array([float(r["true_mean"]) for r in rows])
    assert np.corrcoef(vote_mean, true)[0, 1] > 0.95
    # mu is the documented weighted sum of the attribute scores
    from photocritic.data.synthetic import ATTRIBUTES, WEIGHTS

    attrs = np.array([[float(r[a]) for a in ATTRIBUTES] for r in rows])
    np.testing.assert_allclose(attrs @ np.array([WEIGHTS[a] for a in ATTRIBUTES]), true, atol=1e-5)
    comments = json.loads((world / "comments.json").read_text())
    assert all(1 <= len(c) <= 5 for c in comments.values()) and len(comments) == 300


def test_synthetic_attributes_follow_the_documented_formulas(world):
    """The five visual attribute scores, recomputed from the recorded edit
    strengths with the module docstring's formulas (written out here)."""
    import csv

    rows = list(csv.DictReader(open(world / "labels.csv")))
    e = {k: np.array([float(r[k]) for r in rows]) for k in
         ("tilt", "offset", "cut", "dof", "defocus", "exposure", "contrast", "saturation", "cast", "noise",
          "resolution", "jpeg")}
    q = {"composition": np.exp(-(e["tilt"] / 8) ** 2) * (1 - 0.5 * e["cut"]) * (1 - 0.3 * e["offset"]),
         "depth_of_field": 0.4 + 0.6 * e["dof"],
         "lighting": np.exp(-(e["exposure"] / 1.2) ** 2) * np.exp(-(np.log(e["contrast"]) / 0.4) ** 2),
         "colour": np.exp(-((e["saturation"] - 1.15) / 0.55) ** 2) * np.exp(-(e["cast"] / 0.12) ** 2),
         "technical_quality": np.exp(-(e["defocus"] / 0.45) ** 2) * np.exp(-(e["noise"] / 0.5) ** 2)
         * np.exp(-(e["resolution"] / 0.5) ** 2) * np.exp(-(e["jpeg"] / 0.6) ** 2)}
    for name, quality in q.items():
        # the CSV holds 6 decimals of each strength
        np.testing.assert_allclose([float(r[name]) for r in rows], 1 + 9 * quality, atol=1e-4, err_msg=name)
    for k in ("resolution", "jpeg", "exposure"):  # each edit is used, about half the time
        assert 0.3 < np.mean(e[k] != 0) < 0.7, k
    assert e["exposure"].min() < -2.0 and e["exposure"].max() > 2.0


def test_synth_needs_enough_sources(tmp_path, capsys):
    assert main(["data", "synth", "--n", "5", "--output", str(tmp_path / "w"), "--sources", str(tmp_path),
                 "--min-sources", "30", "-q"]) == 2
    assert "apt-get install" in capsys.readouterr().err
    assert main(["data", "synth", "--n", "5", "--output", str(tmp_path / "w"), "--exclude", "nope",
                 "--min-sources", "1", "-q"]) == 2
    assert "no source photo named nope" in capsys.readouterr().err
    assert main(["data", "synth", "--n", "12", "--output", str(tmp_path / "x"), "--exclude",
                 "skimage-astronaut,skimage-rocket", "--min-sources", "1", "-q"]) == 0
    world = json.loads((tmp_path / "x" / "world.json").read_text())
    assert not {"skimage-astronaut", "skimage-rocket"} & {s["name"] for s in world["sources"]}


def test_group_by_ranks_within_groups(world, store, tmp_path, capsys):
    import csv

    from photocritic.training.run import label_column

    rows = list(csv.DictReader(open(world / "labels.csv")))
    ids = [r["path"].split("/")[-1][:-4] for r in rows[::-7]]
    codes = label_column(str(world), "source", ids)
    sources = [r["source"] for r in rows[::-7]]
    assert all((codes[i] == codes[j]) == (sources[i] == sources[j]) for i in range(len(ids)) for j in range(i))
    assert _train(["vila-r", "--backbone", "efficientnet-lite0", "--dataset", str(world), "--split", "train",
                   "--val-split", "val", "--group-by", "source", "--output", str(tmp_path / "g")], store) == 0
    assert _train(["nima", "--backbone", "efficientnet-lite0", "--dataset", str(world), "--group-by", "source",
                   "--output", str(tmp_path / "n")], store) == 2
    assert "group_by applies to ranking methods" in capsys.readouterr().err
    # the epoch kept is the best at ranking inside val's groups, and metrics.json says so
    m = json.loads((tmp_path / "g" / "metrics.json").read_text())
    best = max(m["epochs"], key=lambda r: r["group_srcc"])
    assert m["history"]["best_epoch"] == best["epoch"]
    assert m["final_val"]["group_srcc"] == pytest.approx(best["group_srcc"], abs=1e-6)


def test_group_srcc_and_union_split(world):
    from photocritic.data.datasets import load_dataset
    from photocritic.training.run import group_srcc

    rng = np.random.default_rng(0)
    score, target = rng.normal(size=40), rng.normal(size=40)
    groups = np.repeat([0, 1, 2, 3], [15, 15, 8, 2])  # a group of 2 has no SRCC of its own
    expected = np.mean([spearmanr(score[groups == g], target[groups == g])[0] for g in (0, 1, 2)])
    assert group_srcc(score, target, groups) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(group_srcc(score[:4], target[:4], np.arange(4)))
    ds = load_dataset(str(world))
    union, info = ds.split("train+test")
    parts = [set(ds.split(s)[0].ids) for s in ("train", "test")]
    assert set(union.ids) == parts[0] | parts[1] and info["with_labels"] == len(parts[0]) + len(parts[1])


def test_rank_score_map_keeps_the_label_spread():
    """VILA-R's map sends the raw 10th/90th percentiles to the labels'; with
    groups, on deviations inside the groups (each group's mean removed)."""
    from photocritic.methods.base import Prediction
    from photocritic.scoremap import ScoreMap
    from photocritic.training.run import fit_score_map

    rng = np.random.default_rng(1)
    raw, y = rng.normal(size=500), rng.uniform(2, 9, size=500)
    m = ScoreMap.match(raw, y)
    np.testing.assert_allclose(m(np.percentile(raw, [10, 90])), np.percentile(y, [10, 90]), atol=1e-9)
    with pytest.raises(ValueError, match="barely vary"):
        ScoreMap.match(np.ones(10), y[:10])

    class Fixed:
        name = "vila-r"

        def predict(self, features):
            return Prediction(features["image.pooled"])

    groups = np.repeat([0, 1], 250)
    offset = np.where(groups == 1, 3.0, 0.0)  # a group offset in both: gone once centred
    got = fit_score_map(Fixed(), {"image.pooled": raw + offset}, Targets(y + offset), groups)
    rc, yc = raw.copy(), y.copy()
    for g in (0, 1):
        rc[groups == g] -= raw[groups == g].mean() - raw.mean()
        yc[groups == g] -= y[groups == g].mean() - y.mean()
    ref = ScoreMap.match(rc + (raw + offset).mean() - raw.mean(), yc + (y + offset).mean() - y.mean())
    assert got.center == pytest.approx(ref.center) and got.scale == pytest.approx(ref.scale)


def test_text_anchor_is_not_needed_to_score(tmp_path):
    """VILA-R's anchor text is read to fit; the trained head stores it, so
    scoring (here: precomputed embeddings) never loads the backbone."""
    from photocritic.methods.vila_r import VilaR
    from photocritic.models import Critic
    from photocritic.scoremap import ScoreMap

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8))
    head = VilaR(epochs=2, anchor="text").fit({"image.pooled": x, "text.pooled": rng.normal(size=(1, 8))},
                                              Targets(x[:, 0]))
    model = Critic({"type": "hf", "name": str(tmp_path / "no-such-model")}, head, ScoreMap())
    out = model.outputs_from_embeddings(x)
    np.testing.assert_allclose(out["score"], ScoreMap()(head.predict({"image.pooled": x}).score))
    assert model._encoder is None


def test_augmentation_hook_is_seeded_and_off_by_default(world):
    from photocritic.encoders.efficientnet import EfficientNetLite0Encoder
    from photocritic.methods.finetune import Finetune
    from photocritic.training.trainer import ImageRatings

    assert Finetune().augment is None  # as in the paper: resize + centre crop only
    paths = sorted(str(p) for p in (world / "images").glob("*.jpg"))[:6]
    q = np.ones((6, 10))
    pre = EfficientNetLite0Encoder.preprocess
    plain = ImageRatings(paths, q, pre)
    aug = ImageRatings(paths, q, pre, augment="hflip", seed=4)
    again = ImageRatings(paths, q, pre, augment="hflip", seed=4)
    flipped = 0
    for i in range(6):
        a, b, c = plain[i][0].numpy(), aug[i][0].numpy(), again[i][0].numpy()
        np.testing.assert_array_equal(b, c)  # the same (seed, epoch, image): the same image
        assert np.array_equal(b, a) or np.array_equal(b, a[:, ::-1])
        flipped += not np.array_equal(b, a)
    assert 0 < flipped < 6
    with pytest.raises(Exception, match="unknown augmentation"):
        ImageRatings(paths, q, pre, augment="bogus")


def test_linear_probe_on_a_memory_mapped_file_in_flat_memory(tmp_path):
    """Features for training come memory-mapped from a .npy file; the probe
    reads them in chunks, never as a whole float64 copy."""
    import tracemalloc

    from photocritic.methods.linear import LinearProbe

    rng = np.random.default_rng(0)
    n, d = 200_000, 64
    x = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 50_000):
        x[s:s + 50_000] = rng.normal(size=(50_000, d)) * 3 + 1
    x.flush()
    y = np.asarray(x[:, :3].sum(1), np.float64) + rng.normal(size=n)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    tracemalloc.start()
    probe = LinearProbe().fit({"image.prelogits": mapped}, Targets(y))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 << 20, peak  # a float64 copy of the features alone would be 102 MB
    from sklearn.linear_model import LinearRegression

    ref = LinearRegression().fit(np.asarray(mapped[:20_000], np.float64), y[:20_000])
    small = LinearProbe().fit({"image.prelogits": mapped[:20_000]}, Targets(y[:20_000]))
    np.testing.assert_allclose(small.coef_ / small.std_, ref.coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(probe.coef_[:3] / probe.std_[:3], [1, 1, 1], atol=0.01)


def test_shards_cover_each_global_batch_once():
    from photocritic.training.trainer import _Shard, epoch_order

    order = epoch_order(67, seed=3, epoch=2)
    for world, acc in ((1, 1), (2, 1), (2, 3), (3, 2)):
        plans = [_Shard(order, 16, r, world, acc).plan for r in range(world)]
        seen = []
        for step in zip(*plans):
            assert len({n for n, _ in step}) == 1  # every process agrees on the global batch size
            assert all(micro and all(micro) for _, micro in step)  # no process is left without images
            seen += [i for _, micro in step for m in micro for i in m]
        kept = 67 if 67 % 16 >= world else 67 - 67 % 16
        assert sorted(seen) == sorted(order[:kept].tolist())


def test_world_criticisms_name_a_cause_the_image_has():
    """A criticism names a cause the image has (an overexposed image is never
    "too dark"), except the 15 % wrong comments, which criticise only sound
    attributes; praise and wrong criticism follow the documented rates."""
    import numpy as np

    from photocritic.data.synthetic import CRITICISM, GENERIC, PRAISE, attribute_qualities, criticisms, make_comments

    rng = np.random.default_rng(5)
    neutral = {"tilt": 0.0, "offset": 0.0, "cut": 0.0, "dof": 1.0, "defocus": 0.0, "resolution": 0.0, "jpeg": 0.0,
               "exposure": 0.0, "contrast": 1.0, "saturation": 1.15, "cast": 0.0, "noise": 0.0}
    lighting = [p for p in criticisms("lighting")] + PRAISE["lighting"]
    for exposure, allowed in ((2.5, {"blown out highlights", "the exposure is off"}),
                              (-2.5, {"too dark", "the exposure is off"})):
        edits = {**neutral, "exposure": exposure}
        q = attribute_qualities(edits, 0.5, 0.5)
        assert q["lighting"] < 0.6
        said = [c.lower() for _ in range(3000) for c in make_comments(q, edits, rng)]
        light = [next(p for p in lighting if p in c) for c in said if any(p in c for p in lighting)]
        critical = [p for p in light if p not in PRAISE["lighting"]]
        assert set(critical) == allowed  # both phrases of its cause, no other criticism
        assert abs(len(critical) / len(light) - 0.85) < 0.03  # 15 % wrong: praise of the flawed lighting
    edits = dict(neutral)  # a sound image: its criticisms are the wrong ones, of any cause
    q = attribute_qualities(edits, 0.5, 0.5)
    said = [c.lower() for _ in range(3000) for c in make_comments(q, edits, rng)]
    light = [next(p for p in lighting if p in c) for c in said if any(p in c for p in lighting)]
    assert abs(sum(p not in PRAISE["lighting"] for p in light) / len(light) - 0.15) < 0.03
    assert set(CRITICISM) | {"content", "emotion"} == set(GENERIC) == set(PRAISE)


def test_comment_phrase_probabilities_are_the_generators():
    """The exact phrase distribution of one comment drawn from an image's
    comments equals the frequencies of make_comments itself (20,000 draws
    per image, within 4.5 binomial standard errors), for images with and
    without flaws; an observer who is told content is praised half the
    time gets the mixture of the two appeals' distributions."""
    import numpy as np

    from photocritic.data.synthetic import (attribute_qualities, comment_phrase_probabilities, make_comments,
                                            sample_edits)

    rng = np.random.default_rng(3)
    for _ in range(3):
        edits = sample_edits(rng)
        q = attribute_qualities(edits, float(rng.uniform(0.1, 0.9)), float(rng.uniform()))
        exact = comment_phrase_probabilities(q, edits)
        assert abs(sum(exact.values()) - 1) < 1e-12
        longest_first = sorted(exact, key=len, reverse=True)
        n = 20000
        seen: dict[str, int] = {}
        for _ in range(n):
            text = str(rng.choice(make_comments(q, edits, rng))).lower()
            k = next(p for p in longest_first if p in text)  # every comment has a phrase of the list
            seen[k] = seen.get(k, 0) + 1
        for p in set(seen) | set(exact):
            f, e = seen.get(p, 0) / n, exact.get(p, 0.0)
            assert abs(f - e) <= 4.5 * np.sqrt(max(e * (1 - e), 1e-4) / n), (p, f, e)
    edits = sample_edits(rng)
    lo, hi = attribute_qualities(edits, 0.2, 0.5), attribute_qualities(edits, 0.8, 0.5)
    mixed = comment_phrase_probabilities(lo, edits, good={"content": 0.5, "emotion": 0.0})
    a, b = comment_phrase_probabilities(lo, edits), comment_phrase_probabilities({**hi, "emotion": lo["emotion"]}, edits)
    for p in set(a) | set(b):
        assert abs(mixed.get(p, 0) - (a.get(p, 0) + b.get(p, 0)) / 2) < 1e-12
