"""LayerPairFilter: hand-made geometry, fit/save/load, and its use in BuildGraph."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import is_undirected

from gnn_jepa.data.convert import event_to_data
from gnn_jepa.data.simulator import Simulator
from gnn_jepa.graph.edges import edge_features, edge_labels, true_segments
from gnn_jepa.graph.metric_learning import HitEmbedding
from gnn_jepa.graph.pair_filter import (FORMAT_TAG, LayerPairFilter, UnseenLayerWarning,
                                       hit_geometry, pair_geometry, pair_key)
from gnn_jepa.graph.radius import radius_graph
from gnn_jepa.graph.transform import BuildGraph


def _hits(rows) -> Data:
    """Data from rows (r, phi, z, volume, layer)."""
    t = torch.tensor([row[:3] for row in rows], dtype=torch.float64)
    r, phi, z = t.unbind(1)
    pos = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], 1).float()
    return Data(pos=pos, volume_id=torch.tensor([row[3] for row in rows]),
                layer_id=torch.tensor([row[4] for row in rows]), num_nodes=len(rows))


def _both_ways(ei: torch.Tensor) -> torch.Tensor:
    return torch.cat([ei, ei.flip(0)], 1)


@pytest.fixture()
def hand():
    """Inner hit 0 at r=100, z=10; outer hits at r=200 on layer (8, 4) unless noted."""
    data = _hits([
        (100.0, 0.0, 10.0, 8, 2),               # 0 inner
        (200.0, 0.01, 30.0, 8, 4),              # 1 z0 = 10 - 100 * 20 / 100 = -10, slope 1e-4
        (200.0, 0.0, 60.0, 8, 4),               # 2 z0 = -40: outside the z0 window
        (200.0, 0.05, 30.0, 8, 4),              # 3 slope 5e-4: above slope_max
        (200.0, 0.01, 30.0, 8, 6),              # 4 layer pair (8,2)->(8,6) never seen
        (100.0, math.pi - 0.005, 10.0, 8, 2),   # 5 inner, just below +pi
        (200.0, -math.pi + 0.005, 30.0, 8, 4),  # 6 dphi wraps to 0.01: slope 1e-4
    ])
    # one window, for (8, 2) -> (8, 4): z0 in [-15, 15] mm, |dphi/dr| <= 2e-4
    filt = LayerPairFilter(torch.tensor([pair_key(8, 2, 8, 4)]), torch.tensor([-15.0]),
                           torch.tensor([15.0]), torch.tensor([2e-4]), torch.tensor([1]))
    return data, filt


def test_hand_geometry_values(hand):
    data, _ = hand
    ei = torch.tensor([[0, 0, 0, 5], [1, 2, 3, 6]])
    key, z0, slope = pair_geometry(data.pos, data.volume_id, data.layer_id, ei)
    assert torch.allclose(z0, torch.tensor([-10.0, -40.0, -10.0, -10.0], dtype=torch.float64),
                          atol=1e-4)
    assert torch.allclose(slope, torch.tensor([1e-4, 0.0, 5e-4, 1e-4], dtype=torch.float64),
                          atol=1e-7)
    assert key.unique().numel() == 1


def test_hand_case_kept_and_rejected(hand):
    data, filt = hand
    ei = torch.tensor([[0, 0, 0, 0, 5], [1, 2, 3, 4, 6]])
    keep = filt(data, ei)
    # kept: in-window pair and the phi-wrapped pair; rejected: z0, slope, unseen layer pair
    assert keep.tolist() == [True, False, False, False, True]


def test_orientation_independent(hand):
    data, filt = hand
    ei = torch.tensor([[0, 0, 0, 0, 5, 0], [1, 2, 3, 4, 6, 6]])
    keep = filt(data, _both_ways(ei))
    assert torch.equal(keep[:6], keep[6:])
    k1, z1, s1 = pair_geometry(data.pos, data.volume_id, data.layer_id, ei)
    k2, z2, s2 = pair_geometry(data.pos, data.volume_id, data.layer_id, ei.flip(0))
    assert torch.equal(k1, k2) and torch.equal(z1, z2) and torch.equal(s1, s2)


def test_fit_windows_on_hand_tracks():
    # two pT > 1 tracks (z0 = -10 and +20, slopes 1e-4 and 3e-4) and a pT = 0.5 one (z0=500)
    data = _hits([
        (100.0, 0.0, 10.0, 8, 2), (200.0, 0.01, 30.0, 8, 4),    # z0 = -10
        (100.0, 1.0, 40.0, 8, 2), (200.0, 1.03, 60.0, 8, 4),    # z0 = 20, slope 3e-4
        (100.0, 2.0, -200.0, 8, 2), (200.0, 2.2, -900.0, 8, 4),  # low pT, z0 = 500
    ])
    data.particle_id = torch.tensor([1, 1, 2, 2, 3, 3])
    data.hit_order = torch.tensor([0, 1, 0, 1, 0, 1])
    data.pt = torch.tensor([2.0, 2.0, 5.0, 5.0, 0.5, 0.5])
    filt = LayerPairFilter.fit([data], pt_min=1.0, quantile=1.0, pad=0.0, pad_z0=0.0,
                               pad_slope=0.0)
    assert len(filt) == 1 and filt.counts.tolist() == [2]
    assert filt.z0_min.item() == pytest.approx(-10.0, abs=1e-4)
    assert filt.z0_max.item() == pytest.approx(20.0, abs=1e-4)
    assert filt.slope_max.item() == pytest.approx(3e-4, rel=1e-4)
    padded = LayerPairFilter.fit([data], quantile=1.0, pad=0.1, pad_z0=5.0, pad_slope=1e-5)
    # w = 0.1 * 30 + 5 = 8 mm each side; slope 3e-4 * 1.1 + 1e-5
    assert padded.z0_min.item() == pytest.approx(-18.0, abs=1e-4)
    assert padded.z0_max.item() == pytest.approx(28.0, abs=1e-4)
    assert padded.slope_max.item() == pytest.approx(3.4e-4, rel=1e-4)
    keep = filt(data, torch.tensor([[0, 2, 4], [1, 3, 5]]))
    assert keep.tolist() == [True, True, False]
    assert "pairs=1" in repr(filt) and "segments=2" in repr(filt)


def test_fit_and_apply_errors(hand):
    data, filt = hand
    with pytest.raises(ValueError, match="no events"):
        LayerPairFilter.fit([])
    with pytest.raises(ValueError, match="particle_id"):
        LayerPairFilter.fit([data])
    with pytest.raises(ValueError, match="quantile"):
        LayerPairFilter.fit([data], quantile=0.2)
    bare = Data(pos=data.pos, num_nodes=data.num_nodes)
    with pytest.raises(ValueError, match="volume_id"):
        filt(bare, torch.tensor([[0], [1]]))


def test_save_load_round_trip(tmp_path, events):
    filt = LayerPairFilter.fit(events[:2])
    path = tmp_path / "pairs.json"
    filt.save(path)
    assert json.loads(path.read_text())["format"] == FORMAT_TAG
    back = LayerPairFilter.load(path)
    assert torch.equal(back.keys, filt.keys)
    for name in ("z0_min", "z0_max", "slope_max", "counts"):
        assert torch.equal(getattr(back, name), getattr(filt, name)), name
    assert back.config == filt.config and back.path == str(path)
    d = events[2]
    ei = BuildGraph(radius=0.09)(d.clone()).edge_index
    assert torch.equal(back(d, ei), filt(d, ei))


def test_load_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        LayerPairFilter.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("not json {")
    with pytest.raises(ValueError, match="bad.json.*not a JSON file"):
        LayerPairFilter.load(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something/1", "pairs": []}))
    with pytest.raises(ValueError, match="other.json.*not a saved LayerPairFilter"):
        LayerPairFilter.load(other)
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"format": FORMAT_TAG, "pairs": [{"volume_1": 8}]}))
    with pytest.raises(ValueError, match="broken.json.*malformed pair"):
        LayerPairFilter.load(broken)
    emb = tmp_path / "emb.pt"
    HitEmbedding(hidden=4, num_layers=1).save(emb)
    with pytest.raises(ValueError, match="emb.pt"):
        LayerPairFilter.load(emb)
    with pytest.raises(ValueError, match="emb.pt"):
        BuildGraph(pair_filter=str(emb))


# --------------------------------------------------------------------------- simulated events
@pytest.fixture(scope="module")
def events():
    sim = Simulator.from_preset("trackml", num_particles=150)
    return [event_to_data(sim.simulate(seed, seed)) for seed in (21, 22, 23)]


def _pt1_segment_keys(d, ei):
    n = d.num_nodes
    seg = true_segments(d.particle_id, d.hit_order, pt=d.pt, pt_min=1.0)
    seg_k = torch.minimum(seg[0], seg[1]) * n + torch.maximum(seg[0], seg[1])
    e_k = torch.minimum(ei[0], ei[1]) * n + torch.maximum(ei[0], ei[1])
    return seg_k, e_k


def test_self_fitted_filter_keeps_every_pt1_segment(events):
    d = events[0]
    ei = BuildGraph(radius=0.09)(d.clone()).edge_index
    seg_k, e_k = _pt1_segment_keys(d, ei)
    in_graph = torch.isin(seg_k, e_k)
    assert int(in_graph.sum()) > 100
    filt = LayerPairFilter.fit([d], quantile=1.0, pad=0.0, pad_z0=0.0, pad_slope=0.0)
    keep = filt(d, ei)
    kept_k = e_k[keep]
    assert bool(torch.isin(seg_k[in_graph], kept_k).all())
    # and it is a real filter: most candidate edges go
    assert keep.float().mean() < 0.5


@pytest.fixture(scope="module")
def fit_events():
    sim = Simulator.from_preset("trackml", num_particles=150)
    return [event_to_data(sim.simulate(seed, seed)) for seed in range(31, 39)]


def test_filter_on_held_out_event(events, fit_events):
    """Fitted on 8 other events (150 particles each: ~1,500 pT > 1 segments), applied to a
    held-out one: keeps >= 98% of the pT > 1 segments of the candidate graph and removes
    most edges; the per-pair windows alone (no pooled floor) lose more."""
    filt = LayerPairFilter.fit(fit_events)
    d = events[2]
    ei = BuildGraph(radius=0.09)(d.clone()).edge_index
    seg_k, e_k = _pt1_segment_keys(d, ei)
    in_graph = torch.isin(seg_k, e_k)
    keep = filt(d, ei)
    eff = torch.isin(seg_k[in_graph], e_k[keep]).float().mean()
    print("held-out eff", float(eff), "kept", float(keep.float().mean()))
    assert eff >= 0.98
    assert keep.float().mean() < 0.5
    alone = LayerPairFilter.fit(fit_events, pool=False)
    eff_alone = torch.isin(seg_k[in_graph], e_k[alone(d, ei)]).float().mean()
    print("held-out eff without pool", float(eff_alone))
    assert eff_alone < eff


# --------------------------------------------------------------------------- BuildGraph
def _filtered_reference(transform: BuildGraph, filt: LayerPairFilter, data: Data) -> Data:
    out = transform(data.clone())
    ei = out.edge_index[:, filt(data, out.edge_index)]
    return ei


@pytest.mark.parametrize("kwargs", [{"radius": 0.09},
                                    {"radius": 0.12, "max_num_neighbors": 20},
                                    {"radius": 0.4, "kind": "cylindrical", "w_r": 1e-3,
                                     "w_z": 1e-3}])
def test_build_graph_pair_filter_geometric(tmp_path, events, kwargs):
    filt = LayerPairFilter.fit(events[:2])
    path = tmp_path / "pairs.json"
    filt.save(path)
    d = events[2]
    t = BuildGraph(pair_filter=str(path), **kwargs)
    out = t(d.clone())
    ref = _filtered_reference(BuildGraph(**kwargs), filt, d)
    assert torch.equal(out.edge_index, ref)
    assert torch.equal(out.edge_attr, edge_features(d.pos, ref))
    assert torch.equal(out.y, edge_labels(d.particle_id, ref))
    assert 0 < ref.shape[1] < BuildGraph(**kwargs)(d.clone()).edge_index.shape[1]
    if "max_num_neighbors" not in kwargs:
        assert is_undirected(out.edge_index)
    assert "pair_filter=LayerPairFilter(" in repr(t)


def test_build_graph_pair_filter_learned_and_batch(tmp_path, events):
    torch.manual_seed(0)
    emb = tmp_path / "emb.pt"
    HitEmbedding(hidden=8, num_layers=1).save(emb)
    filt = LayerPairFilter.fit(events[:2])
    path = tmp_path / "pairs.json"
    filt.save(path)
    kw = {"kind": "learned", "embedding": str(emb), "radius": 0.05}
    t = BuildGraph(pair_filter=str(path), **kw)
    a, b = events[1], events[2]
    ref_a = _filtered_reference(BuildGraph(**kw), filt, a)
    ref_b = _filtered_reference(BuildGraph(**kw), filt, b)
    assert ref_a.shape[1] > 0 and ref_b.shape[1] > 0
    assert torch.equal(t(a.clone()).edge_index, ref_a)
    out = t(Batch.from_data_list([a, b]))
    # a batch gives each event's own filtered graph (b's nodes offset by a's)
    got = out.edge_index
    sort = lambda e: e[:, torch.argsort(e[0] * (out.num_nodes + 1) + e[1])]  # noqa: E731
    assert torch.equal(sort(got), sort(torch.cat([ref_a, ref_b + a.num_nodes], 1)))


def test_build_graph_pair_filter_keeps_loops(tmp_path, events):
    filt = LayerPairFilter.fit(events[:2])
    path = tmp_path / "pairs.json"
    filt.save(path)
    d = events[2]
    out = BuildGraph(radius=0.09, loop=True, pair_filter=str(path))(d.clone())
    assert int((out.edge_index[0] == out.edge_index[1]).sum()) == d.num_nodes


def test_fit_pool_floors_sparse_pairs():
    # pair A (8,2)->(8,4): z0 = -10 and +20; pair B (8,4)->(8,6): one segment, z0 = 0
    data = _hits([
        (100.0, 0.0, 10.0, 8, 2), (200.0, 0.01, 30.0, 8, 4),
        (100.0, 1.0, 40.0, 8, 2), (200.0, 1.03, 60.0, 8, 4),
        (200.0, 2.0, 0.0, 8, 4), (300.0, 2.01, 0.0, 8, 6),
    ])
    data.particle_id = torch.tensor([1, 1, 2, 2, 3, 3])
    data.hit_order = torch.tensor([0, 1, 0, 1, 0, 1])
    data.pt = torch.full((6,), 2.0)
    kw = {"quantile": 1.0, "pad": 0.0, "pad_z0": 0.0, "pad_slope": 0.0}
    alone = LayerPairFilter.fit([data], pool=False, **kw)
    pooled = LayerPairFilter.fit([data], pool=True, **kw)
    b = int(torch.searchsorted(alone.keys, torch.tensor(pair_key(8, 4, 8, 6))))
    assert alone.z0_min[b].item() == pytest.approx(0.0, abs=1e-4)
    assert alone.z0_max[b].item() == pytest.approx(0.0, abs=1e-4)
    # pooled: B's window becomes [-10, 20] and its slope bound 3e-4 (pair A's)
    assert pooled.z0_min[b].item() == pytest.approx(-10.0, abs=1e-4)
    assert pooled.z0_max[b].item() == pytest.approx(20.0, abs=1e-4)
    assert pooled.slope_max[b].item() == pytest.approx(3e-4, rel=1e-4)
    probe = _hits([(200.0, 0.0, 10.0, 8, 4), (300.0, 0.0, 12.5, 8, 6)])  # z0 = 5
    assert alone(probe, torch.tensor([[0], [1]])).tolist() == [False]
    assert pooled(probe, torch.tensor([[0], [1]])).tolist() == [True]


# --------------------------------------------------------------------------- fast path
def _reference_keep(filt: LayerPairFilter, data: Data, ei: torch.Tensor) -> torch.Tensor:
    """The decision as stated: pair_geometry, then the key lookup and the window test."""
    key, z0, slope = pair_geometry(data.pos, data.volume_id, data.layer_id, ei)
    idx = torch.searchsorted(filt.keys, key).clamp_max(filt.keys.numel() - 1)
    return ((filt.keys[idx] == key) & (z0 >= filt.z0_min[idx]) & (z0 <= filt.z0_max[idx])
            & (slope <= filt.slope_max[idx]))


def _awkward(d: Data) -> tuple[Data, torch.Tensor]:
    """d plus hits that stress orientation and z0, and the edges [2, 62] pairing each with
    a hit of d: 40 exact copies (dr == 0, equal |pos|), 20 hits mirrored in z (equal |pos|,
    same r), one on the beam axis (r = 0) and one on an unknown id."""
    g = torch.Generator().manual_seed(5)
    n = d.num_nodes
    pick = torch.randint(0, n, (40,), generator=g)
    mirrored = d.pos[pick[:20]] * torch.tensor([1.0, 1.0, -1.0])
    axis = torch.tensor([[0.0, 0.0, 350.0]])
    pos = torch.cat([d.pos, d.pos[pick], mirrored, axis, d.pos[:1] * 1.01])
    vol = torch.cat([d.volume_id, d.volume_id[pick], d.volume_id[pick[:20]],
                     d.volume_id[:1], torch.tensor([99])])
    lay = torch.cat([d.layer_id, d.layer_id[pick], d.layer_id[pick[:20]], d.layer_id[:1],
                     d.layer_id[:1]])
    partner = torch.cat([pick, pick[:20], torch.randint(0, n, (2,), generator=g)])
    ei = torch.stack([torch.arange(n, n + 62), partner])
    return Data(pos=pos, volume_id=vol, layer_id=lay, num_nodes=n + 62), ei


def test_apply_is_bit_for_bit_the_reference_decision(events):
    """apply() (hit_geometry + kept_pairs: rank orientation, layer pair first, float64 on
    the fitted pairs only) equals pair_geometry's decision on every candidate edge, with
    ties in |pos|, coincident hits, a hit on the beam axis and an unknown id."""
    filt = LayerPairFilter.fit(events[:2], pt_min=0.0)
    d, odd = _awkward(events[2])
    ei = torch.cat([radius_graph(d.pos / 1000.0, 0.12), odd], 1)  # pairs within 12 cm
    ei = torch.cat([ei, ei.flip(0)], 1)
    ref = _reference_keep(filt, d, ei)
    with pytest.warns(UnseenLayerWarning):
        keep = filt(d, ei)
    assert torch.equal(keep, ref)
    assert 0 < int(keep.sum()) < keep.numel()
    # int64 hit codes (large events) give the same; so does the |pos| rule without ranks
    geo = hit_geometry(d.pos, d.volume_id, d.layer_id)
    assert torch.equal(filt.kept_pairs(geo, ei[0], ei[1], filt.hit_codes(geo).long()),
                       ref.nonzero().squeeze(1))
    no_rank = geo._replace(rank=None, order=None)
    assert torch.equal(filt.kept_pairs(no_rank, ei[0], ei[1]), ref.nonzero().squeeze(1))
    filt.chunk_size = 1000  # chunks change nothing
    assert torch.equal(filt.kept_pairs(geo, ei[0], ei[1]), ref.nonzero().squeeze(1))


def test_apply_with_nan_positions_follows_pair_geometry(hand):
    data, filt = hand
    data.pos[3] = float("nan")
    ei = _both_ways(torch.tensor([[0, 0, 0, 0, 5, 3], [1, 2, 3, 4, 6, 1]]))
    assert hit_geometry(data.pos, data.volume_id, data.layer_id).rank is None
    assert torch.equal(filt(data, ei), _reference_keep(filt, data, ei))


@pytest.mark.parametrize("p_first", [True, False])
def test_equal_distance_pairs_orient_by_index(p_first):
    """Hits P = (r 32, z 40) and Q = (r 40, z 32) lie at the same |pos|: the smaller index is
    the inner hit, so only the order with P first matches the fitted (8, 2) -> (8, 4)."""
    rows = [(32.0, 0.0, 40.0, 8, 2), (40.0, 0.0, 32.0, 8, 4)]
    data = _hits(rows if p_first else rows[::-1])
    filt = LayerPairFilter(torch.tensor([pair_key(8, 2, 8, 4)]), torch.tensor([-100.0]),
                           torch.tensor([100.0]), torch.tensor([1.0]))
    ei = _both_ways(torch.tensor([[0], [1]]))
    assert torch.equal(filt(data, ei), _reference_keep(filt, data, ei))
    assert filt(data, ei).tolist() == [p_first, p_first]  # z0 = 72 when P is inner
