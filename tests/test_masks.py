"""Tests of gnn_jepa.masks: region membership, the region masker, target cells."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch_geometric.data import Batch, Data

from gnn_jepa import masks as masks_mod
from gnn_jepa.geometry import cylindrical, wrap_phi
from gnn_jepa.masks import (DESCRIPTOR_COLUMNS, REGION_PARAM_COLUMNS, RegionMasker, RegionMasks,
                            assign_cells, hits_in_region, region_descriptor, regions_disjoint,
                            tile_regions)

INF = math.inf
ALL = [0.0, math.pi, -INF, INF, -INF, INF, -INF, INF]  # the whole detector


def make_event(n: int, seed: int, r_range=(100.0, 1050.0), z_max: float = 2500.0) -> Data:
    """Random hits, uniform in r, phi and z, inside the default extents (|eta| < asinh(25) < 4)."""
    g = torch.Generator().manual_seed(seed)
    r = r_range[0] + torch.rand(n, generator=g) * (r_range[1] - r_range[0])
    phi = (2 * torch.rand(n, generator=g) - 1) * math.pi
    z = (2 * torch.rand(n, generator=g) - 1) * z_max
    return Data(pos=torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], 1))


def coords(data: Data):
    r, phi, z, eta = cylindrical(data.pos)
    return r, phi, z.abs(), eta


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_masks(masker: RegionMasker, batch: Data, m: RegionMasks) -> None:
    """Invariants every RegionMasks must satisfy."""
    r, phi, absz, eta = coords(batch)
    bidx = batch.batch if getattr(batch, "batch", None) is not None else torch.zeros_like(r, dtype=torch.long)
    K, R = masker.num_targets, m.num_regions
    assert m.region_params.shape == (R, len(REGION_PARAM_COLUMNS))
    assert m.region_descriptor.shape == (R, len(DESCRIPTOR_COLUMNS))
    assert torch.isfinite(m.region_descriptor).all()
    assert R == K * int(m.graph_valid.sum())
    assert m.num_skipped == int((~m.graph_valid).sum())
    # Regions: K per valid graph, in graph order.
    expect_batch = torch.nonzero(m.graph_valid).flatten().repeat_interleave(K)
    assert torch.equal(m.region_batch, expect_batch)

    tgt = m.target_region >= 0
    assert not (m.context & tgt).any(), "a hit is both context and target"
    # Invalid graphs have no context and no target hits.
    invalid_hit = ~m.graph_valid[bidx]
    assert not m.context[invalid_hit].any() and not tgt[invalid_hit].any()
    # Every target hit lies in its own region, in no other region, and in its own graph.
    member = hits_in_region(r[:, None], phi[:, None], absz[:, None], eta[:, None], m.region_params)  # [N, R]
    own = member[tgt, m.target_region[tgt]]
    assert own.all(), "a target hit lies outside its region"
    assert torch.equal(m.region_batch[m.target_region[tgt]], bidx[tgt])
    same_graph = m.region_batch[None, :] == bidx[:, None]
    # Each region's target hits are exactly the hits of its graph inside it (and none double).
    assert torch.equal(member & same_graph & m.graph_valid[bidx][:, None],
                       torch.nn.functional.one_hot(m.target_region.clamp_min(0), max(R, 1))[:, :R].bool()
                       & tgt[:, None])
    n_per_region = torch.bincount(m.target_region[tgt], minlength=R)
    assert (n_per_region >= masker.min_target_hits).all()
    # Targets of one graph are pairwise geometrically disjoint.
    pair = regions_disjoint(m.region_params[:, None], m.region_params[None, :])
    same = (m.region_batch[:, None] == m.region_batch[None, :]) & ~torch.eye(R, dtype=torch.bool)
    assert pair[same].all()
    # Context.
    valid_hit = m.graph_valid[bidx]
    if masker.context == "complement":
        assert torch.equal(m.context, valid_hit & ~tgt)
    else:
        in_ctx = hits_in_region(r, phi, absz, eta, m.context_params[bidx])
        assert torch.equal(m.context, valid_hit & ~tgt & in_ctx)
        frac = m.context_params[m.graph_valid, 1] / math.pi
        lo, hi = masker.context_scale
        assert ((frac >= lo - 1e-6) & (frac <= hi + 1e-6)).all()
    n_ctx = torch.bincount(bidx[m.context], minlength=len(m.graph_valid))
    assert (n_ctx[m.graph_valid] >= masker.min_context_hits).all()


# -- membership ---------------------------------------------------------------------------------
def test_wedge_wraps_around_pi():
    params = torch.tensor([math.pi, 0.1, -INF, INF, -INF, INF, -INF, INF])
    phi = torch.tensor([-math.pi + 1e-3, 0.0, math.pi - 0.05, math.pi - 0.2, -math.pi + 0.2])
    one = torch.ones_like(phi)
    got = hits_in_region(one * 100, phi, one * 10, one * 0, params)
    assert got.tolist() == [True, False, True, False, False]


def test_ranges_half_open_and_unbounded_phi():
    # r in [100, 200), |z| in [0, 50), eta in [-1, 1), all phi.
    params = torch.tensor([0.0, math.pi, 100.0, 200.0, 0.0, 50.0, -1.0, 1.0])
    r = torch.tensor([100.0, 200.0, 150.0, 150.0, 150.0, 150.0, 150.0])
    absz = torch.tensor([10.0, 10.0, 50.0, 10.0, 10.0, 10.0, 10.0])
    eta = torch.tensor([0.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0])
    phi = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, math.pi, -math.pi + 1e-6])
    assert hits_in_region(r, phi, absz, eta, params).tolist() == [True, False, False, False,
                                                                   True, True, True]


def test_membership_broadcasts_hits_against_regions():
    params = torch.tensor([[0.0, 0.5] + ALL[2:], [math.pi, 0.5] + ALL[2:]])
    phi = torch.tensor([0.1, 3.0, -1.5])
    one = torch.ones_like(phi)
    got = hits_in_region(one[:, None], phi[:, None], one[:, None], one[:, None], params)
    assert got.tolist() == [[True, False], [False, True], [False, False]]
    with pytest.raises(ValueError, match="8 columns"):
        hits_in_region(one, phi, one, one, params[:, :7])


def test_regions_disjoint():
    w = lambda c, hw: torch.tensor([c, hw] + ALL[2:])  # noqa: E731
    assert regions_disjoint(w(0.0, 0.5), w(math.pi, 0.5))
    assert regions_disjoint(w(0.0, 0.5), w(1.0, 0.5))  # touching at phi = 0.5
    assert not regions_disjoint(w(3.1, 0.1), w(-3.1, 0.1))  # overlap across the +-pi seam
    assert not regions_disjoint(w(0.0, math.pi), w(2.0, 0.1))  # all phi overlaps any wedge
    inner = torch.tensor([0.0, 0.1, -INF, 550.0, -INF, INF, -INF, INF])
    outer = torch.tensor([0.0, 0.1, 550.0, INF, -INF, INF, -INF, INF])
    assert regions_disjoint(inner, outer)  # same wedge, r halves touch at 550
    band_a = torch.tensor(ALL[:6] + [-1.0, 0.0])
    band_b = torch.tensor(ALL[:6] + [-0.5, 0.5])
    assert not regions_disjoint(band_a, band_b)


def test_region_descriptor_values():
    params = torch.tensor([[math.pi / 2, math.pi / 8, -INF, 550.0, 1500.0, INF, -0.3, 0.3],
                           ALL])
    d = region_descriptor(params, r_extent=(0.0, 1100.0), z_extent=(0.0, 3000.0), eta_extent=(-4.0, 4.0))
    expect = torch.tensor([[1.0, 0.0, 1 / 8, 0.0, 0.5, 0.5, 1.0, -0.075, 0.075],
                           [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, -1.0, 1.0]])
    assert torch.allclose(d, expect, atol=1e-6)


# -- masker -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,k", [("wedge_eta_annulus", 4), ("wedge", 4), ("wedge_annulus", 4),
                                     ("eta_band", 3), ("annulus", 1), ("zband", 1),
                                     ("wedge_zband", 3)])
@pytest.mark.parametrize("context", ["complement", "wedge"])
def test_masker_invariants(shape, k, context):
    batch = Batch.from_data_list([make_event(800, s) for s in range(3)])
    masker = RegionMasker(num_targets=k, target_shape=shape, context=context)
    m = masker(batch, gen(7))
    assert m.graph_valid.all()
    check_masks(masker, batch, m)


def test_uniform_anchor_and_explicit_annuli():
    annuli = [[0.0, 150.0], [150.0, 400.0], [400.0, None]]
    masker = RegionMasker(num_targets=3, target_shape="wedge_annulus", annulus=annuli,
                          anchor="uniform", wedge_width=(0.3, 0.8))
    batch = Batch.from_data_list([make_event(1000, s) for s in range(2)])
    m = masker(batch, gen(3))
    check_masks(masker, batch, m)
    p = m.region_params
    assert {(a, b) for a, b in p[:, 2:4].tolist()} <= {(0.0, 150.0), (150.0, 400.0), (400.0, INF)}
    assert ((2 * p[:, 1] >= 0.3 - 1e-6) & (2 * p[:, 1] <= 0.8 + 1e-6)).all()


def test_default_region_shape():
    batch = Batch.from_data_list([make_event(1500, s) for s in range(2)])
    masker = RegionMasker()
    m = masker(batch, gen(0))
    p = m.region_params
    assert torch.allclose(p[:, 1], torch.full_like(p[:, 1], math.pi / 16))  # wedge pi/8
    assert torch.allclose(p[:, 7] - p[:, 6], torch.full_like(p[:, 1], 0.6))  # eta band 0.6
    halves = {(-INF, 550.0), (550.0, INF)}
    assert {(a, b) for a, b in p[:, 2:4].tolist()} <= halves
    assert torch.isinf(p[:, 4:6]).all()  # no |z| cut


def test_same_seed_same_masks_different_seed_different():
    batch = Batch.from_data_list([make_event(600, s) for s in range(2)])
    masker = RegionMasker()
    a, b, c = masker(batch, gen(11)), masker(batch, gen(11)), masker(batch, gen(12))
    for name in ("context", "target_region", "region_params", "region_batch", "graph_valid"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.region_params, c.region_params)
    assert not torch.equal(a.target_region, c.target_region)


def test_internal_generator_seeded_and_advancing():
    batch = make_event(600, 0)
    m1, m2, m3 = RegionMasker(seed=5), RegionMasker(seed=5), RegionMasker(seed=6)
    first = m1(batch)
    assert torch.equal(first.region_params, m2(batch).region_params)
    assert not torch.equal(first.region_params, m3(batch).region_params)
    assert not torch.equal(first.region_params, m1(batch).region_params)  # the stream advances


def test_internal_generator_differs_per_worker(monkeypatch):
    batch = make_event(600, 0)
    got = []
    for wid in (0, 1):
        info = SimpleNamespace(id=wid, seed=1234 + wid)
        monkeypatch.setattr(masks_mod.torch.utils.data, "get_worker_info", lambda info=info: info)
        got.append(RegionMasker(seed=5)(batch).region_params)
    monkeypatch.setattr(masks_mod.torch.utils.data, "get_worker_info", lambda: None)
    main = RegionMasker(seed=5)(batch).region_params
    assert not torch.equal(got[0], got[1])
    assert not torch.equal(got[0], main)


def test_batched_graphs_sampled_independently():
    ev = make_event(1000, 42)
    batch = Batch.from_data_list([ev, ev.clone(), ev.clone()])
    masker = RegionMasker()
    m = masker(batch, gen(1))
    check_masks(masker, batch, m)
    assert m.region_batch.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    per_graph = m.region_params.view(3, 4, 8)
    assert not torch.equal(per_graph[0], per_graph[1]) and not torch.equal(per_graph[1], per_graph[2])
    # Each graph's target hits are hits of that graph only (identical coordinates elsewhere).
    tr = m.target_region.view(3, -1)
    for g in range(3):
        sel = tr[g] >= 0
        assert set((tr[g][sel] // 4).tolist()) == {g}


def test_single_data_input_matches_one_graph_batch():
    ev = make_event(700, 3)
    masker = RegionMasker()
    a = masker(ev, gen(9))
    b = masker(Batch.from_data_list([ev]), gen(9))
    assert torch.equal(a.target_region, b.target_region) and torch.equal(a.context, b.context)
    check_masks(masker, ev, a)


def test_small_event_skipped_and_counted():
    # 4 targets x 5 hits + 10 context hits cannot come out of 12 hits.
    batch = Batch.from_data_list([make_event(800, 0), make_event(12, 1), make_event(800, 2)])
    masker = RegionMasker()
    m = masker(batch, gen(0))
    assert m.graph_valid.tolist() == [True, False, True]
    assert m.num_skipped == 1 and masker.total_skipped == 1 and masker.total_graphs == 3
    assert 1 not in m.region_batch.tolist()
    check_masks(masker, batch, m)
    masker(batch, gen(1))
    assert masker.total_skipped == 2 and masker.total_graphs == 6


def test_context_minimum_enforced():
    # Two annulus halves as targets leave no context: every graph is skipped.
    masker = RegionMasker(num_targets=2, target_shape="annulus", min_context_hits=1)
    m = masker(make_event(500, 0), gen(0))
    assert m.graph_valid.tolist() == [False] and m.num_regions == 0
    assert not m.context.any() and (m.target_region == -1).all()


def test_bad_configuration_and_input():
    with pytest.raises(ValueError, match="target_shape"):
        RegionMasker(target_shape="cube")
    with pytest.raises(ValueError, match="disjoint annuli"):
        RegionMasker(num_targets=3, target_shape="annulus")
    with pytest.raises(ValueError, match="annulus\\[1\\]"):
        RegionMasker(annulus=[[0, 100], [300, 200]])
    with pytest.raises(ValueError, match="wedge_width"):
        RegionMasker(wedge_width=(0.5, 0.2))
    with pytest.raises(ValueError, match="do not fit"):
        RegionMasker(target_shape="wedge", num_targets=5, wedge_width=(1.5, 1.5))
    with pytest.raises(ValueError, match="pos"):
        RegionMasker()(Data(x=torch.zeros(3, 2)))
    with pytest.raises(ValueError, match="context"):
        RegionMasker(context="ring")
    assert "wedge_eta_annulus" in repr(RegionMasker())


# -- cells --------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [(4, 4, 2), (3, 2, 1), (1, 1, 1)])
@pytest.mark.parametrize("shape", ["wedge_eta_annulus", "wedge", "zband"])
def test_cells_contain_their_hits(grid, shape):
    n_phi, n_eta, n_r = grid
    batch = Batch.from_data_list([make_event(800, s) for s in range(2)])
    masker = RegionMasker(num_targets=1 if shape == "zband" else 4, target_shape=shape)
    m = masker(batch, gen(5))
    cells = tile_regions(m, n_phi, n_eta, n_r)
    n_cells = n_phi * n_eta * n_r
    C = m.num_regions * n_cells
    assert cells.centre.shape == (C, 3) and cells.cell_size.shape == (C, 3)
    assert torch.equal(cells.cell_region, torch.arange(m.num_regions).repeat_interleave(n_cells))
    assert torch.equal(cells.cell_batch, m.region_batch[cells.cell_region])
    r, phi, _, eta = coords(batch)
    cell = assign_cells(r, phi, eta, m.target_region, m, n_phi, n_eta, n_r)
    tgt = m.target_region >= 0
    assert torch.equal(cell < 0, ~tgt)
    assert torch.equal(cells.cell_region[cell[tgt]], m.target_region[tgt])
    c, s = cells.centre[cell[tgt]], cells.cell_size[cell[tgt]]
    eps = 1e-4
    assert ((r[tgt] - c[:, 0]).abs() <= s[:, 0] / 2 + eps).all()
    assert (wrap_phi(phi[tgt] - c[:, 1]).abs() <= s[:, 1] / 2 + eps).all()
    assert ((eta[tgt] - c[:, 2]).abs() <= s[:, 2] / 2 + eps).all()
    # The cells of a region tile it: their volumes add up to the region's grid volume.
    p = m.region_params
    r_lo = torch.where(torch.isinf(p[:, 2]), torch.zeros_like(p[:, 2]), p[:, 2])
    r_hi = torch.where(torch.isinf(p[:, 3]), torch.full_like(p[:, 3], 1100.0), p[:, 3])
    e_lo = torch.where(torch.isinf(p[:, 6]), torch.full_like(p[:, 6], -4.0), p[:, 6])
    e_hi = torch.where(torch.isinf(p[:, 7]), torch.full_like(p[:, 7], 4.0), p[:, 7])
    region_vol = (r_hi - r_lo) * 2 * p[:, 1].clamp(max=math.pi) * (e_hi - e_lo)
    vol = cells.cell_size.prod(-1).view(-1, n_cells).sum(-1)
    assert torch.allclose(vol, region_vol, rtol=1e-5)
    if n_cells == 1:
        assert torch.equal(cell[tgt], m.target_region[tgt])


def test_cell_layout_by_hand():
    # One wedge at pi (half width pi/8), eta [0, 1), r unbounded -> r_extent (0, 1100).
    params = torch.tensor([[math.pi, math.pi / 8, -INF, INF, -INF, INF, 0.0, 1.0]])
    m = RegionMasks(context=torch.zeros(3, dtype=torch.bool), target_region=torch.zeros(3, dtype=torch.long),
                    region_params=params, region_descriptor=region_descriptor(params),
                    region_batch=torch.tensor([0]), graph_valid=torch.tensor([True]), num_skipped=0)
    cells = tile_regions(m, n_phi=4, n_eta=2, n_r=2)
    assert cells.centre.shape == (16, 3)
    # cell = (i_phi * n_eta + i_eta) * n_r + i_r
    assert torch.allclose(cells.centre[0], torch.tensor([275.0, math.pi - 3 * math.pi / 32, 0.25]))
    assert torch.allclose(cells.cell_size[0], torch.tensor([550.0, math.pi / 16, 0.5]))
    r = torch.tensor([100.0, 1500.0, 600.0])  # 1500 is beyond r_extent: clamps to the outer bin
    phi = torch.tensor([-math.pi + 1e-3, math.pi - 0.01, -math.pi + 0.3])
    eta = torch.tensor([0.9, 0.1, 0.6])
    got = assign_cells(r, phi, eta, m.target_region, m, n_phi=4, n_eta=2, n_r=2)
    # phi offsets from the wedge start: pi/8 + 1e-3 -> bin 2; pi/8 - 0.01 -> bin 1; pi/8 + 0.3 -> bin 3
    assert got.tolist() == [(2 * 2 + 1) * 2 + 0, (1 * 2 + 0) * 2 + 1, (3 * 2 + 1) * 2 + 1]
    assert torch.equal(assign_cells(r, phi, eta, torch.tensor([0, -1, 0]), params, 4, 2, 2),
                       torch.tensor([got[0], -1, got[2]]))
