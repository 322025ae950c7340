import math

import pytest
import torch

from gnn_jepa.nn.edge_head import HeadConfig
from gnn_jepa.nn.segment_pairs import (PAIR_FEATURES, SegmentPairEdgeHead, _group_pairs, _smallest_k,
                                       oriented_segments, pair_geometry, segment_pairs)


def test_segments_merge_both_directions_and_point_outwards():
    pos = torch.tensor([[100.0, 0, 0], [50.0, 0, 0], [200.0, 0, 0]])
    # edges 0->1, 1->0, 1->2, 2->0 (either direction)
    ei = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 0]])
    seg, edge_seg = oriented_segments(pos, ei)
    assert seg.t().tolist() == [[0, 2], [1, 0], [1, 2]]  # (inner, outer), unique, sorted by code
    assert edge_seg.tolist() == [1, 1, 2, 0]
    # a tie in distance is broken by hit index
    seg, _ = oriented_segments(torch.tensor([[0.0, 10, 0], [10.0, 0, 0]]), torch.tensor([[1], [0]]))
    assert seg.t().tolist() == [[0, 1]]


def test_group_pairs_and_smallest_k_by_hand():
    left, right = torch.tensor([3, 1, 3]), torch.tensor([3, 3, 2, 1])
    i, j = _group_pairs(left, right)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 0), (0, 1), (1, 3), (2, 0), (2, 1)]
    group = torch.tensor([0, 0, 0, 1, 1])
    value = torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0])
    assert _smallest_k(group, value, 2).tolist() == [False, True, True, True, True]
    assert _smallest_k(group, value, 1).tolist() == [False, True, False, False, True]


def test_pair_geometry_of_a_straight_line_and_a_bend():
    """Hits on a straight radial line: no turn, no (r, z) kink. A 90 degree turn: beta = pi/2."""
    pos = torch.tensor([[100.0, 0, 10], [200.0, 0, 20], [300.0, 0, 30], [200.0, 100, 20]])
    seg = torch.tensor([[0, 1, 1], [1, 2, 3]])
    f = pair_geometry(pos, seg, torch.tensor([0, 0]), torch.tensor([1, 2]))
    assert f.shape == (2, PAIR_FEATURES)
    torch.testing.assert_close(f[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    assert f[1, 0].item() == pytest.approx(math.pi / 2 / 0.1, rel=1e-5)
    # curvature x 100: 2 beta / (100 + 100 mm) * 100
    assert f[1, 1].item() == pytest.approx(2 * (math.pi / 2) / 200 * 100, rel=1e-5)


def helix_event():
    """Two crossing tracks through hit 2: a straight one (0, 1, 2, 3) and a bent one (4, 5, 2, 6).
    Segment (1 -> 2) must continue into (2 -> 3), not into the bent track's (2 -> 6)."""
    pos = torch.tensor([[100.0, 0, 0], [200.0, 0, 0], [300.0, 0, 0], [400.0, 0, 0],
                        [100.0, -60, 0], [200.0, -35, 0], [400.0, 60, 0]])
    ei = torch.tensor([[0, 1, 2, 4, 5, 2, 1, 5], [1, 2, 3, 5, 2, 6, 6, 3]])
    return pos, torch.cat([ei, ei.flip(0)], 1)


def test_the_straight_continuation_has_the_smallest_kink():
    pos, ei = helix_event()
    seg, _ = oriented_segments(pos, ei)
    first, second, feats = segment_pairs(pos, seg, k=1)
    s12 = seg.t().tolist().index([1, 2])
    succ = [seg[1, second[p]].item() for p in range(len(first)) if first[p] == s12]
    assert succ == [3]  # the kept successor of (1 -> 2) is (2 -> 3)
    # with k = 2 both continuations are kept
    first2, _, _ = segment_pairs(pos, seg, k=2)
    assert (first2 == s12).sum() == 2


def test_head_learns_which_continuation_is_true():
    """Both tracks share the middle hit; only the head's pair messages can tell which segment
    continues which. Trained on this event (hit embeddings carry nothing: zeros), the true
    segments score above the false ones."""
    pos, ei = helix_event()
    true = {(0, 1), (1, 2), (2, 3), (4, 5), (2, 5), (2, 6)}  # hit pairs of the two tracks
    y = torch.tensor([float((min(a, b), max(a, b)) in true) for a, b in ei.t().tolist()])
    assert 0 < y.sum() < len(y)  # (1, 6) and (3, 5) are the false crossings
    torch.manual_seed(0)
    head = SegmentPairEdgeHead(d_embedding=4, hidden=16, rounds=2, pairs_per_segment=2)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    h = torch.zeros(7, 4)
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(h, ei, pos=pos), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    s = head(h, ei, pos=pos)
    assert s[y > 0].min() > s[y == 0].max()


def test_both_directions_score_alike_and_the_config_builds_it():
    pos, ei = helix_event()
    head = HeadConfig(kind="segment_pairs", hidden=8, rounds=1, pairs_per_segment=3).build(4, 5)
    assert isinstance(head, SegmentPairEdgeHead) and head.k == 3
    s = head(torch.randn(7, 4), ei, pos=pos)
    half = ei.shape[1] // 2
    torch.testing.assert_close(s[:half], s[half:])
    assert "pairs_per_segment=3" in repr(head)
    with pytest.raises(ValueError, match="rounds >= 1"):
        SegmentPairEdgeHead(4, rounds=0)


def test_pairs_stay_linear_in_segments():
    """A hit with 30 incoming and 30 outgoing segments has 900 pairs through it; k = 4 keeps at
    most 2 k per segment."""
    torch.manual_seed(0)
    inner = torch.cat([torch.randn(30, 3) * 5 + torch.tensor([100.0, 0, 0])])
    outer = torch.randn(30, 3) * 5 + torch.tensor([300.0, 0, 0])
    pos = torch.cat([inner, torch.tensor([[200.0, 0, 0]]), outer])
    mid = 30
    ei = torch.cat([torch.stack([torch.arange(30), torch.full((30,), mid)]),
                    torch.stack([torch.full((30,), mid), torch.arange(31, 61)])], 1)
    seg, _ = oriented_segments(pos, ei)
    first, second, _ = segment_pairs(pos, seg, k=4)
    assert len(first) <= 2 * 4 * 30
    assert torch.bincount(first, minlength=60).max() <= 4 + 30  # its own k plus being picked
    assert len(set(zip(first.tolist(), second.tolist()))) == len(first)  # no pair twice


def reference_forward(head: SegmentPairEdgeHead, h, ei, pos):
    """The module doc's formula evaluated directly: concatenations and PyG scatters."""
    from torch_geometric.utils import scatter

    from gnn_jepa.nn.segment_pairs import segment_geometry
    n = h.shape[0]
    seg_ix, edge_seg = oriented_segments(pos, ei)
    s_n = seg_ix.shape[1]
    first, second, pf = segment_pairs(pos, seg_ix, head.k)
    r, phi = torch.hypot(pos[:, 0], pos[:, 1]), torch.atan2(pos[:, 1], pos[:, 0])
    node = head.node_in(torch.cat([h, torch.stack([r / 1000, phi.cos(), phi.sin(), pos[:, 2] / 1000], 1)], 1))
    a, b = seg_ix
    seg = head.segment_in(torch.cat([node[a], node[b], segment_geometry(pos, seg_ix)], 1))
    for t in range(head.rounds):
        m = head.pair_mlps[t](torch.cat([seg[first], seg[second], pf], 1))
        agg = [scatter(m, ix, 0, dim_size=s_n, reduce=red) for ix in (first, second) for red in ("max", "mean")]
        seg = seg + head.segment_mlps[t](torch.cat([head.segment_norms[t](seg), node[a], node[b], *agg], 1))
        if t == head.rounds - 1:
            break
        into = scatter(seg, b, 0, dim_size=n, reduce="mean")
        out_of = scatter(seg, a, 0, dim_size=n, reduce="mean")
        node = node + head.node_mlps[t](torch.cat([head.node_norms[t](node), into, out_of], 1))
    return head.logits(seg)[edge_seg]


def test_forward_and_gradients_equal_the_direct_formula():
    """The head's split first layers and its max aggregation give the values and gradients of
    the concatenate-then-scatter formula, on a random event with isolated hits and ties."""
    torch.manual_seed(3)
    pos = torch.randn(40, 3) * torch.tensor([300.0, 300.0, 500.0])
    ei = torch.randint(0, 36, (2, 150))  # hits 36..39 have no edge
    ei = ei[:, ei[0] != ei[1]]
    h = torch.randn(40, 8)
    head = SegmentPairEdgeHead(d_embedding=8, hidden=16, rounds=2, pairs_per_segment=2)
    out = head(h, ei, pos=pos)
    grads = torch.autograd.grad(out.square().sum(), list(head.parameters()))
    ref = reference_forward(head, h, ei, pos)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(head.parameters()))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for g, rg in zip(grads, ref_grads):
        torch.testing.assert_close(g, rg, rtol=1e-4, atol=1e-5)


def test_scatter_max_shares_the_gradient_of_ties_like_torch():
    from gnn_jepa.nn.segment_pairs import _scatter_max
    src = torch.tensor([[1.0, 2.0], [1.0, 5.0], [0.5, -1.0]], requires_grad=True)
    index = torch.tensor([0, 0, 2])
    out = _scatter_max(src, index, 4, groups=2)
    assert out.tolist() == [[1.0, 5.0], [0.0, 0.0], [0.5, -1.0], [0.0, 0.0]]
    out.sum().backward()
    assert src.grad.tolist() == [[0.5, 0.0], [0.5, 1.0], [1.0, 1.0]]


def test_scatter_max_equals_torch_amax_with_ties_in_some_columns():
    from gnn_jepa.nn.segment_pairs import _scatter_max
    g = torch.Generator().manual_seed(0)
    src = torch.randint(0, 4, (40, 5), generator=g).float()  # many ties
    src[:, 2] = torch.randn(40, generator=g)  # a column without ties
    index = torch.randint(0, 7, (40,), generator=g)
    index[index == 3] = 4  # an empty group
    upstream = torch.randn(9, 5, generator=g)
    a = src.clone().requires_grad_()
    out = _scatter_max(a, index, 9, groups=int(index.unique().numel()))
    (out * upstream).sum().backward()
    b = src.clone().requires_grad_()
    ref = b.new_zeros(9, 5).scatter_reduce(0, index.unsqueeze(1).expand(-1, 5), b, "amax",
                                           include_self=False)
    (ref * upstream).sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(a.grad, b.grad)


def test_bf16_autocast_runs_and_ties_share_their_gradient():
    """Mixed precision (bf16 autocast, as precision: bf16-mixed): the head runs forward and
    backward; in bf16 a tie among > 256 groups still splits its gradient (exact counts)."""
    from gnn_jepa.nn.segment_pairs import SegmentPairEdgeHead, _scatter_max
    g = torch.Generator().manual_seed(3)
    pos = torch.randn(200, 3, generator=g) * 100.0
    ei = torch.randint(0, 200, (2, 800), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    head = SegmentPairEdgeHead(16, hidden=8, rounds=2)
    h = torch.randn(200, 16, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(h, ei, pos=pos)
    out.float().sum().backward()
    assert out.shape == (ei.shape[1],) and torch.isfinite(h.grad).all()
    src = torch.randn(2000, 1, generator=g).to(torch.bfloat16)
    index = torch.arange(2000) // 2  # 1,000 groups of 2
    src[1] = src[0]  # one tie
    src = src.requires_grad_()
    _scatter_max(src, index, 1000, groups=1000).float().sum().backward()
    assert src.grad[:2, 0].tolist() == [0.5, 0.5]


def direct_pair_messages(net, seg, first, second, geo, size):
    """The four aggregations of ``net([seg[first], seg[second], geo])`` by torch's scatters."""
    m = net(torch.cat([seg[first], seg[second], geo], 1))
    out = []
    for ix in (first, second):
        e = ix.unsqueeze(1).expand_as(m)
        out.append(m.new_zeros(size, m.shape[1]).scatter_reduce(0, e, m, "amax", include_self=False))
        out.append(m.new_zeros(size, m.shape[1]).index_add(0, ix, m))
    return out


@pytest.mark.parametrize("chunk", [7, 1 << 16])
def test_pair_messages_equal_torch_scatters_in_chunks_and_with_ties(chunk):
    """Values and gradients of :func:`pair_messages` (messages recomputed chunk by chunk in
    backward) equal the direct formula's, with a segment in no pair, pairs split over several
    chunks and a message column in which every pair ties (its second layer's row is zero)."""
    from gnn_jepa.nn.layers import mlp
    from gnn_jepa.nn.segment_pairs import pair_messages
    g = torch.Generator().manual_seed(5)
    size, hid = 12, 6
    first = torch.randint(0, 10, (40,), generator=g)  # segments 10, 11: no successors
    second = torch.randint(1, 12, (40,), generator=g)  # segment 0: no predecessors
    geo = torch.randn(40, 3, generator=g)
    net = mlp(2 * hid + 3, hid, hid)
    with torch.no_grad():
        net[2].weight[2].zero_()  # column 2: m = bias for every pair, all tie
    seg = torch.randn(size, hid, generator=g, requires_grad=True)
    groups = (int(first.unique().numel()), int(second.unique().numel()))
    ups = [torch.randn(size, hid, generator=g) for _ in range(4)]
    out = pair_messages(net, seg, first, second, geo, *groups, chunk=chunk)
    params = [seg, *net.parameters()]
    grads = torch.autograd.grad(sum((o * u).sum() for o, u in zip(out, ups)), params)
    ref = direct_pair_messages(net, seg, first, second, geo, size)
    ref_grads = torch.autograd.grad(sum((o * u).sum() for o, u in zip(ref, ups)), params)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r)
    assert out[0][10:].abs().sum() == 0 and out[2][0].abs().sum() == 0  # empty groups give 0
    # (the tied column's share shows in the second layer's bias and row 2: each tied pair
    # gets 1 / count of its group's gradient)
    for gr, rg in zip(grads, ref_grads):
        torch.testing.assert_close(gr, rg)


def test_pair_messages_refuse_a_geometry_that_needs_a_gradient():
    from gnn_jepa.nn.layers import mlp
    from gnn_jepa.nn.segment_pairs import pair_messages
    net = mlp(2 * 4 + 2, 4, 4)
    geo = torch.randn(3, 2, requires_grad=True)
    with pytest.raises(ValueError, match="pair geometry"):
        pair_messages(net, torch.randn(3, 4), torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0]),
                      geo, 3, 3)
