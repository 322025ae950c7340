import itertools
import pytest

import torch

from gnn_jepa.nn.predictor import (CellPredictor, PredictorConfig, _pairs_within_groups, knn_bipartite,
                                   position_features)


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


def test_predictor_shapes_and_gradients():
    torch.manual_seed(0)
    pred = CellPredictor(d_embedding=8, d_predictor=16, n_layers=2, heads=4, d_descriptor=5, knn=3)
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


def test_predictor_queries_of_one_event_ignore_other_events():
    torch.manual_seed(0)
    pred = CellPredictor(d_embedding=8, d_predictor=16, n_layers=2, heads=4, d_descriptor=5, knn=3).eval()
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


def test_queries_see_their_region_mates_and_no_other_region():
    """Moving one query changes its region-mates' predictions (cell queries of one region are
    linked) and never a query of another region (queries receive only from context hits and
    their own region's queries)."""
    torch.manual_seed(0)
    pred = CellPredictor(d_embedding=8, d_predictor=16, n_layers=2, heads=4, d_descriptor=5, knn=3).eval()
    ctx, pos = torch.randn(12, 8), torch.randn(12, 4)
    b, ei = torch.zeros(12, dtype=torch.long), torch.empty(2, 0, dtype=torch.long)
    qp, qd = torch.randn(4, 4), torch.randn(4, 5)
    qb, qr = torch.zeros(4, dtype=torch.long), torch.tensor([0, 0, 0, 1])
    out1 = pred(ctx, pos, b, ei, qp, qd, qb, qr)
    qp2 = qp.clone()
    qp2[2] += 0.05  # small enough to keep every query's nearest context hits
    assert torch.equal(pred.context_query_edges(qp, qb, pos, b), pred.context_query_edges(qp2, qb, pos, b))
    out2 = pred(ctx, pos, b, ei, qp2, qd, qb, qr)
    assert not torch.allclose(out1[2], out2[2])
    assert not torch.allclose(out1[:2], out2[:2])
    torch.testing.assert_close(out1[3], out2[3])


def test_predictor_config_builds_the_predictor():
    pred = PredictorConfig(d_model=16, layers=2, heads=2, knn=5).build(d_embedding=8, d_descriptor=11)
    assert (pred.d_predictor, pred.n_layers, pred.heads, pred.knn) == (16, 2, 2, 5)
    assert pred.out.out_features == 8 and pred.d_descriptor == 11
    assert repr(pred) == "CellPredictor(d_embedding=8, d_predictor=16, n_layers=2, heads=2, knn=5)"
    with pytest.raises(ValueError, match="divisible"):
        PredictorConfig(d_model=10, heads=4).build(8, 11)


def test_one_layer_predictor_reads_only_the_nearest_context_hits():
    """With one layer a query sees its ``knn`` nearest context hits once: changing any other
    context hit, or the context edges, leaves its prediction unchanged, and changing one of its
    nearest hits' embeddings moves it (the encoder must carry what the query needs)."""
    torch.manual_seed(0)
    pred = CellPredictor(d_embedding=8, d_predictor=16, n_layers=1, heads=2, d_descriptor=5, knn=2).eval()
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
