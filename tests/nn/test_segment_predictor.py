"""The segment-level JEPA predictor: link geometry by hand, and no leak between queries."""
import math

import pytest
import torch

from gnn_jepa.nn.segment_predictor import LINK_FEATURES, SegmentPredictor, link_geometry


def _hit(r, phi, z):
    return torch.tensor([[r * math.cos(phi), r * math.sin(phi), z]])


def test_link_geometry_of_a_straight_chain_is_kink_free_in_either_order():
    # four hits on a straight line from the origin: no turn, no change of slope
    a, b, c, d = (_hit(r, 0.3, 0.5 * r) for r in (100.0, 200.0, 300.0, 400.0))
    inside = link_geometry(a, b, c, d)  # context (a -> b) inside the query (c -> d)
    outside = link_geometry(c, d, a, b)  # context outside the query
    assert inside.shape == (1, LINK_FEATURES)
    for g in (inside, outside):
        for triplet in (g[0, :6], g[0, 6:12]):
            torch.testing.assert_close(triplet[[0, 1, 2, 5]], torch.zeros(4), atol=1e-5, rtol=0)
            # transverse lengths / 100 mm: 1 each
            torch.testing.assert_close(triplet[3:5], torch.ones(2), atol=1e-5, rtol=0)
    assert inside[0, 12] == 1 and outside[0, 12] == -1
    # midpoint offsets in position features: r / 1000 differs by 0.2, phi and eta equal
    torch.testing.assert_close(inside[0, 13:], torch.tensor([0.2, 0.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(outside[0, 13:], -inside[0, 13:])


def test_link_geometry_sees_a_turn():
    a, b = _hit(100.0, 0.0, 0.0), _hit(200.0, 0.0, 0.0)
    c, d = _hit(300.0, 0.1, 0.0), _hit(400.0, 0.2, 0.0)  # bends after b
    g = link_geometry(a, b, c, d)
    assert g[0, 0] > 0.1 and g[0, 5] > 0.1  # turning angle and kink of (a, b, c) / 0.1


def test_queries_never_see_each_other():
    torch.manual_seed(0)
    pred = SegmentPredictor(d_state=8, hidden=16, rounds=2, knn=3).eval()
    ca = torch.randn(20, 3) * 200
    cb = ca * 1.3
    state = torch.randn(20, 8)
    qa = torch.randn(5, 3) * 200
    qb = qa * 1.2
    desc = torch.randn(5, 9)
    zeros = lambda n: torch.zeros(n, dtype=torch.long)  # noqa: E731
    out = pred(state, ca, cb, zeros(20), qa, qb, zeros(5), desc)
    assert out.shape == (5, 8)
    # moving queries 1..4 leaves query 0's prediction unchanged
    qa2, qb2 = qa.clone(), qb.clone()
    qa2[1:] += 50.0
    qb2[1:] -= 30.0
    out2 = pred(state, ca, cb, zeros(20), qa2, qb2, zeros(5), desc)
    torch.testing.assert_close(out2[0], out[0])
    assert not torch.allclose(out2[1:], out[1:])
    # a context segment of another event is as good as absent
    other = torch.cat([zeros(19), torch.ones(1, dtype=torch.long)])
    out3 = pred(state, ca, cb, other, qa, qb, zeros(5), desc)
    out4 = pred(state[:19], ca[:19], cb[:19], zeros(19), qa, qb, zeros(5), desc)
    torch.testing.assert_close(out3, out4)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="knn >= 1"):
        SegmentPredictor(d_state=8, knn=0)
