import numpy as np
import pytest
from scipy import stats

from photocritic import metrics as M


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200).round(1)  # rounding makes ties
    y = (0.6 * x + rng.normal(size=200)).round(1)
    return x, y


def test_correlations_match_scipy(xy):
    x, y = xy
    assert M.srcc(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    assert M.plcc(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert M.krcc(x, y) == pytest.approx(stats.kendalltau(x, y)[0], abs=1e-12)


def test_accuracy_mse_mae_hand_computed():
    pred = [6.0, 4.0, 5.5, 2.0]
    true = [5.5, 5.2, 4.0, 3.0]
    assert M.accuracy(pred, true) == 0.5  # right on 1st and 4th
    assert M.mse(pred, true) == pytest.approx((0.25 + 1.44 + 2.25 + 1.0) / 4)
    assert M.mae(pred, true) == pytest.approx((0.5 + 1.2 + 1.5 + 1.0) / 4)


def test_emd_hand_computed():
    p = np.zeros(10)
    p[0] = 1
    q = np.zeros(10)
    q[1] = 1
    # CDFs differ only at bin 1: |1 - 0| = 1
    assert M.emd(p, q, r=1) == pytest.approx(0.1)
    assert M.emd(p, q, r=2) == pytest.approx(np.sqrt(0.1))
    q3 = np.zeros(10)
    q3[3] = 1  # CDFs differ at bins 1..3
    assert M.emd(p, q3, r=1) == pytest.approx(0.3)
    assert M.emd(p, q3, r=2) == pytest.approx(np.sqrt(0.3))
    # unnormalised histograms are normalised first
    assert M.emd(p * 7, q * 3, r=2) == pytest.approx(np.sqrt(0.1))


def test_emd_orders_predictions_like_a_distance():
    """The version without the cumulative sum gives equal distances to a
    shift of one bin and a shift of three, and would fail here."""
    rng = np.random.default_rng(1)
    true = rng.dirichlet(np.ones(6) * 3, size=50)
    true = np.concatenate([np.zeros((50, 2)), true, np.zeros((50, 2))], axis=1)
    shift1 = np.roll(true, 1, axis=1)
    shift3 = np.roll(true, 3, axis=1)
    uniform = np.full_like(true, 0.1)
    for r in (1, 2):
        assert M.emd(true, true, r) == pytest.approx(0.0)
        assert M.emd(shift1, true, r) < M.emd(shift3, true, r)
        assert M.emd(true, true, r) < M.emd(uniform, true, r)
        assert M.emd(true, true, r) < M.emd(shift1, true, r)
    one_hot = np.eye(10)
    assert M.emd(one_hot[[5]], one_hot[[4]]) < M.emd(one_hot[[8]], one_hot[[4]])


def test_logistic_fit_hand_computed():
    x = np.linspace(-3, 12, 60)
    true_params = (9.0, 1.0, 5.0, 0.7)
    y = M.logistic4(x, *true_params)
    assert M.logistic4(5.0, *true_params) == pytest.approx(5.0)  # midpoint (9 + 1) / 2
    assert M.logistic4(5.0 + 0.7 * np.log(3), *true_params) == pytest.approx(1 + 8 * 0.75)
    params = M.fit_logistic4(x, y)
    np.testing.assert_allclose(params[:3], true_params[:3], atol=1e-4)
    assert abs(params[3]) == pytest.approx(0.7, abs=1e-4)
    assert M.plcc_logistic(x, y) == pytest.approx(1.0, abs=1e-9)
    assert M.plcc(x, y) < 0.97


def test_average_precision_matches_sklearn():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(2)
    y = (rng.random((300, 14)) < 0.2).astype(int)
    s = (y * 0.5 + rng.random((300, 14))).round(1)  # ties
    for k in range(14):
        assert M.average_precision(y[:, k], s[:, k]) == pytest.approx(
            average_precision_score(y[:, k], s[:, k]), abs=1e-12)
    macro, per = M.mean_average_precision(y, s)
    assert macro == pytest.approx(average_precision_score(y, s, average="macro"), abs=1e-12)
    assert per.shape == (14,)


def test_bootstrap_ci(xy):
    x, y = xy
    lo, hi = M.bootstrap_ci(M.srcc, x, y, n_boot=300, seed=3)
    assert lo < M.srcc(x, y) < hi and hi - lo < 0.4
    assert (lo, hi) == M.bootstrap_ci(M.srcc, x, y, n_boot=300, seed=3)
    assert M.bootstrap_ci(M.plcc, x, 2 * x + 1, n_boot=50) == pytest.approx((1.0, 1.0))


REFS = {
    "1": ["a cat sits on the red mat", "the cat is sitting on a mat", "a small cat on a mat"],
    "2": ["great use of light and shadow", "lovely light and strong shadows", "the lighting is great"],
    "3": ["too dark and a bit blurry", "the subject is out of focus", "underexposed and soft"],
    "4": ["nice composition with the horizon low", "the low horizon works well here"],
}
CANDS = {
    "1": ["a cat is sitting on the mat"],
    "2": ["great light and shadows"],
    "3": ["too blurry and dark"],
    "4": ["the horizon is low in a nice composition"],
}


def test_caption_metrics_equal_pycocoevalcap():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ref_bleu, _ = Bleu(4).compute_score(REFS, CANDS, verbose=0)
    ref_rouge, _ = Rouge().compute_score(REFS, CANDS)
    ref_cider, _ = Cider().compute_score(REFS, CANDS)
    ours = M.caption_metrics(REFS, CANDS)
    np.testing.assert_allclose([ours[f"bleu{k}"] for k in range(1, 5)], ref_bleu, rtol=1e-12, atol=1e-15)
    assert ours["rouge_l"] == pytest.approx(ref_rouge, abs=1e-12)
    assert ours["cider"] == pytest.approx(ref_cider, abs=1e-12)
    assert ours["cider"] > 0 and ours["bleu1"] > ours["bleu4"]
