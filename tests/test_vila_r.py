import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from photocritic.losses import pairwise_ranking_loss
from photocritic.methods.vila_r import RankAdapter, VilaR
from photocritic.scoremap import ScoreMap


def test_ranking_loss_hand_computed():
    s = torch.tensor([0.1, 0.3, 0.2])
    y = torch.tensor([3.0, 1.0, 2.0])
    # pairs (0>1): .1-.1+.3=.3, (0>2): .1-.1+.2=.2, (2>1): .1-.2+.3=.2
    assert float(pairwise_ranking_loss(s, y, margin=0.1)) == pytest.approx(0.7 / 3, abs=1e-7)


def test_ranking_loss_groups_and_ties():
    s = torch.tensor([0.1, 0.3, 0.2, 0.9])
    y = torch.tensor([3.0, 1.0, 2.0, 1.0])
    g = torch.tensor([0, 0, 1, 1])
    # only (0>1) in group 0: 0.3; (2>3) in group 1: .1-.2+.9 = .8
    assert float(pairwise_ranking_loss(s, y, 0.1, g)) == pytest.approx(1.1 / 2, abs=1e-6)
    # no ordered pair at all -> 0, and still differentiable
    z = torch.tensor([0.5, 0.2], requires_grad=True)
    loss = pairwise_ranking_loss(z, torch.tensor([1.0, 1.0]))
    loss.backward()
    assert float(loss.detach()) == 0.0


def test_loss_is_zero_when_margin_is_met():
    s = torch.tensor([0.9, 0.5, 0.1])
    y = torch.tensor([3.0, 2.0, 1.0])
    assert float(pairwise_ranking_loss(s, y, margin=0.1)) == 0.0


def test_adapter_equation():
    torch.manual_seed(0)
    dim = 6
    anchor = torch.randn(dim)
    m = RankAdapter(dim, anchor, rank=None)
    H = torch.randn(dim, dim) * 0.3
    b = torch.randn(dim) * 0.1
    m.H.weight.data = H.T.clone()  # nn.Linear computes v @ W^T, so v^T H needs W = H^T
    m.H.bias.data = b.clone()
    v = torch.randn(4, dim)
    vn = v / v.norm(dim=1, keepdim=True)
    vt = vn @ H + b + vn
    vt = vt / vt.norm(dim=1, keepdim=True)
    expected = vt @ (anchor / anchor.norm())
    torch.testing.assert_close(m(v), expected, rtol=1e-5, atol=1e-6)


def test_fit_learns_a_ranking_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    dim = 32
    direction = rng.normal(size=dim)
    x = rng.normal(size=(600, dim))
    y = x @ direction + 0.1 * rng.normal(size=600)
    train, test = slice(0, 500), slice(500, 600)
    head = VilaR(rank=None, epochs=40, lr=1e-2, batch_size=64, standardize=True, anchor="mean")
    head.fit({"image.pooled": x[train]}, y[train])
    feats = {"image.pooled": x[test]}
    after = spearmanr(head.predict(feats).score, y[test])[0]
    assert after > 0.9
    again = VilaR(rank=None, anchor="mean").load_state(head.state_dict(), head.meta())
    np.testing.assert_array_equal(again.predict(feats).score, head.predict(feats).score)


def test_score_map_anchors_and_monotone():
    m = ScoreMap.from_anchors(-0.2, 0.4, 3.0, 7.0)
    np.testing.assert_allclose(m([-0.2, 0.4]), [3.0, 7.0], atol=1e-12)
    raw = np.linspace(-3, 3, 101)
    s = m(raw)
    assert np.all(np.diff(s) > 0) and s.min() > 1 and s.max() < 10
    assert ScoreMap.from_dict(m.to_dict()) == m
