import itertools
import pytest

import torch

from gnn_jepa.nn.predictor import CellPredictor, _pairs_within_groups, knn_bipartite, position_features


def test_position_features_continuous_across_pi():
    a = position_features(torch.tensor([100.0]), torch.tensor([torch.pi - 1e-4]), torch.tensor([0.5]))
    b = position_features(torch.tensor([100.0]), torch.tensor([-torch.pi + 1e-4]), torch.tensor([0.5]))
    assert torch.dist(a, b) < 1e-3


def test_knn_bipartite_matches_brute_force_and_respects_graphs():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(50, 4, generator=g)
    ref_b = torch.randint(0, 3, (50,), generator=g)
    q = torch.randn(20, 4, generator=g)
    q_b = torch.randint(0, 3, (20,), generator=g)
    ei = knn_bipartite(q, q_b, ref, ref_b, k=4, chunk=7)
    for j in range(20):
        cand = (ref_b == q_b[j]).nonzero().squeeze(1)
        d = (ref[cand] - q[j]).norm(dim=1)
        expect = set(cand[d.argsort()[:4]].tolist())
        got = set(ei[0, ei[1] == j].tolist())
        assert got == expect


def test_pairs_within_groups_is_all_ordered_pairs():
    groups = torch.tensor([2, 0, 2, 1, 0, 2])
    ei = _pairs_within_groups(groups)
    got = set(map(tuple, ei.t().tolist()))
    expect = {(i, j) for i, j in itertools.permutations(range(6), 2) if groups[i] == groups[j]}
    assert got == expect


@pytest.mark.parametrize("conv", ["transformer", "gatv2"])
def test_predictor_shapes_and_gradients(conv):
    torch.manual_seed(0)
    pred = CellPredictor(d_embedding=8, d_predictor=16, n_layers=2, heads=4, d_descriptor=5, knn=3,
                         conv=conv)
    nc, q = 30, 6
    ctx = torch.randn(nc, 8, requires_grad=True)
    ctx_pos = torch.randn(nc, 4)
    ctx_b = torch.zeros(nc, dtype=torch.long)
    ctx_b[15:] = 1
    ei = torch.tensor([[0, 1, 16], [1, 0, 17]])
    out = pred(ctx, ctx_pos, ctx_b, ei, torch.randn(q, 4), torch.randn(q, 5),
               torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 1, 2, 2, 2]))
    assert out.shape == (q, 8)
    out.sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    assert pred.mask_token.grad is not None


@pytest.mark.parametrize("conv", ["transformer", "gatv2"])
def test_predictor_queries_of_one_event_ignore_other_events(conv):
    torch.manual_seed(0)
    pred = CellPredictor(d_embedding=8, d_predictor=16, n_layers=2, heads=4, d_descriptor=5, knn=3,
                         conv=conv).eval()
    ctx = torch.randn(20, 8)
    pos = torch.randn(20, 4)
    b = torch.tensor([0] * 10 + [1] * 10)
    ei = torch.empty(2, 0, dtype=torch.long)
    qp, qd = torch.randn(4, 4), torch.randn(4, 5)
    qb, qr = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1])
    out1 = pred(ctx, pos, b, ei, qp, qd, qb, qr)
    ctx2 = ctx.clone()
    ctx2[10:] += 5.0  # change event 1 only
    out2 = pred(ctx2, pos, b, ei, qp, qd, qb, qr)
    torch.testing.assert_close(out1[:2], out2[:2])
    assert not torch.allclose(out1[2:], out2[2:])


@pytest.mark.parametrize("query_pairs", [True, False])
def test_unlinked_queries_never_see_each_other(query_pairs):
    """Moving one query of a region changes its region-mates' predictions only when the
    queries are linked (a hit query's position is the hit's: linked, it leaks)."""
    torch.manual_seed(0)
    pred = CellPredictor(d_embedding=8, d_predictor=16, n_layers=2, heads=4, d_descriptor=5, knn=3,
                         query_pairs=query_pairs).eval()
    ctx, pos = torch.randn(12, 8), torch.randn(12, 4)
    b, ei = torch.zeros(12, dtype=torch.long), torch.empty(2, 0, dtype=torch.long)
    qp, qd = torch.randn(3, 4), torch.randn(3, 5)
    qb, qr = torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)
    out1 = pred(ctx, pos, b, ei, qp, qd, qb, qr)
    qp2 = qp.clone()
    qp2[2] += 0.05  # small enough to keep every query's nearest context hits
    out2 = pred(ctx, pos, b, ei, qp2, qd, qb, qr)
    assert not torch.allclose(out1[2], out2[2])
    assert torch.allclose(out1[:2], out2[:2]) != query_pairs
    assert f"query_pairs={query_pairs}" in repr(pred)


def test_knn_r_scale_links_a_cell_to_hits_along_its_direction():
    """A cell at r = 100 mm, phi = eta = 0. Context hit 0 lies on the same direction at
    r = 700 mm (the same radial track, other r half); hit 1 sits at the cell's radius but
    0.3 rad away in phi (another track). With r at full weight the cell's nearest context hit
    is hit 1; with r down-weighted it is hit 0."""
    q = position_features(torch.tensor([100.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    c = position_features(torch.tensor([700.0, 100.0]), torch.tensor([0.0, 0.3]), torch.tensor([0.0, 0.0]))
    zeros = torch.zeros(1, dtype=torch.long)
    for scale, nearest in ((1.0, 1), (0.1, 0)):
        p = CellPredictor(8, 16, n_layers=1, heads=2, knn=1, knn_r_scale=scale)
        edges = p.context_query_edges(q, zeros, c, torch.zeros(2, dtype=torch.long))
        assert edges.tolist() == [[nearest], [0]]
    with pytest.raises(ValueError, match="knn_r_scale"):
        CellPredictor(8, 16, knn_r_scale=-1.0)


def test_one_layer_predictor_reads_only_the_nearest_context_hits():
    """With one GATv2 layer a query sees its ``knn`` nearest context hits once: changing any
    other context hit, or the context edges, leaves its prediction unchanged, and changing one
    of its nearest hits' embeddings moves it (the encoder must carry what the query needs)."""
    torch.manual_seed(0)
    pred = CellPredictor(d_embedding=8, d_predictor=16, n_layers=1, heads=2, d_descriptor=5, knn=2,
                         conv="gatv2").eval()
    assert pred.blocks[0].conv.__class__.__name__ == "GATv2Conv"
    assert "conv='gatv2'" in repr(pred)
    pos = position_features(torch.tensor([100.0, 110.0, 400.0, 700.0]), torch.tensor([0.0, 0.01, 1.5, -2.0]),
                            torch.zeros(4))
    ctx, b = torch.randn(4, 8), torch.zeros(4, dtype=torch.long)
    qp = position_features(torch.tensor([105.0]), torch.tensor([0.005]), torch.zeros(1))
    args = (qp, torch.randn(1, 5), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    nearest = pred.context_query_edges(qp, args[2], pos, b)[0]
    assert sorted(nearest.tolist()) == [0, 1]
    out = pred(ctx, pos, b, torch.empty(2, 0, dtype=torch.long), *args)
    far = ctx.clone()
    far[2:] = torch.randn(2, 8)
    edges = torch.tensor([[0, 2, 3], [2, 3, 0]])
    torch.testing.assert_close(pred(far, pos, b, edges, *args), out)
    near = ctx.clone()
    near[1] = torch.randn(8)
    assert not torch.allclose(pred(near, pos, b, edges, *args), out)


def test_predictor_rejects_an_unknown_conv():
    with pytest.raises(ValueError, match="conv must be one of"):
        CellPredictor(8, 16, conv="gcn")
