import csv
import json

import numpy as np
import pytest
from PIL import Image, ImageFilter
from scipy.stats import spearmanr

from photocritic.cli import main



@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """24 images of graded sharpness (four real photos of scikit-image's,
    each at six blur radii) with labels that fall with the blur, plus one
    row whose image is missing and one whose file is broken."""
    import skimage.data

    d = tmp_path_factory.mktemp("graded")
    rows = []
    for base, name in enumerate(["astronaut", "rocket", "camera", "coffee"]):
        im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((320, 240))
        for level, radius in enumerate([0, 1, 2, 3, 5, 8]):
            name = f"b{base}_r{radius}.jpg"
            im.filter(ImageFilter.GaussianBlur(radius)).save(d / name, quality=92)
            rows.append({"path": name, "mean": round(8.0 - 0.9 * level + 0.1 * base, 3),
                         "split": "test" if base == 3 else "train"})
    rows.append({"path": "not_on_disk.jpg", "mean": 5.0, "split": "train"})
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    rows.append({"path": "broken.jpg", "mean": 4.0, "split": "train"})
    with open(d / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "mean", "split"])
        w.writeheader()
        w.writerows(rows)
    return d


def test_eval_writes_report_and_its_srcc_matches_score(graded, tmp_path, capsys):
    out = tmp_path / "report"
    cache = tmp_path / "c.sqlite"
    assert main(["eval", "--model", "lite", "--dataset", str(graded), "--output", str(out),
                 "--cache", str(cache), "-q", "--bootstrap", "200"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 24 and m["images_missing"] == 1 and m["images_failed"] == 1
    for key in ("srcc", "plcc", "plcc_logistic", "krcc", "accuracy", "mse", "mae", "ci95"):
        assert key in m
    assert m["ci95"]["srcc"][0] <= m["srcc"] <= m["ci95"]["srcc"][1]
    report = (out / "report.md").read_text()
    assert "not_on_disk.jpg" in report and "broken.jpg" in report and "| srcc |" in report
    for png in ("scatter.png", "histograms.png", "calibration.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 300
        assert f"]({png})" in report
    capsys.readouterr()

    scores_csv = tmp_path / "scores.csv"
    assert main(["score", str(graded), "--output", str(scores_csv), "--cache", str(cache), "-q"]) == 0
    assert "24 scored (24 from cache, 0 computed), 1 failed" in capsys.readouterr().err
    labels = {r["path"]: float(r["mean"]) for r in csv.DictReader(open(graded / "labels.csv"))}
    scored = {r["path"].rsplit("/", 1)[-1]: float(r["score"]) for r in csv.DictReader(open(scores_csv))
              if r["status"] == "ok"}
    names = sorted(set(labels) & set(scored))
    assert len(names) == 24
    ref = spearmanr([scored[n] for n in names], [labels[n] for n in names])[0]
    assert m["srcc"] == pytest.approx(ref, abs=1e-12)
    assert m["srcc"] > 0.5  # sharper images do score higher (labels fall with the blur)

    preds = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(preds) == 24
    np.testing.assert_allclose(sorted(float(p["predicted"]) for p in preds),
                               sorted(scored[n] for n in names), atol=1e-5)


def test_eval_on_a_split(graded, tmp_path, capsys):
    out = tmp_path / "split"
    assert main(["eval", "--dataset", str(graded / "labels.csv"), "--split", "test",
                 "--output", str(out), "--no-cache", "-q", "--bootstrap", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 6 and m["split"]["how"] == "split column = test"
    assert main(["eval", "--dataset", str(graded), "--split", "nope", "--output", str(out), "-q"]) == 2
    assert "unknown split 'nope'" in capsys.readouterr().err


def test_emd_metrics_in_compute_metrics_equal_scipy_wasserstein():
    from scipy.stats import wasserstein_distance

    from photocritic.evaluation import compute_metrics

    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(10), 30)
    q = rng.dirichlet(np.ones(10) * 2, 30)
    bins = np.arange(1, 11)
    m = compute_metrics(p @ bins, q @ bins, True, p, q, n_boot=0)
    # r = 1 on unit-spaced bins: the mean |CDF difference| over the 10 bins = W1 / 10
    ref = np.mean([wasserstein_distance(bins, bins, a, b) / 10 for a, b in zip(p, q)])
    assert m["emd"] == pytest.approx(ref, abs=1e-12)
    ref2 = np.mean([np.sqrt(np.mean((np.cumsum(a) - np.cumsum(b)) ** 2)) for a, b in zip(p, q)])
    assert m["emd_r2"] == pytest.approx(ref2, abs=1e-12)
