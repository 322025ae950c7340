"""BuildGraph transform on small PyG Data objects."""
from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import is_undirected

from gnn_jepa.graph.edges import edge_features, edge_labels
from gnn_jepa.graph.frames import GraphFrame
from gnn_jepa.graph.radius import radius_graph
from gnn_jepa.graph.transform import BuildGraph, union_edges


def small_event(seed: int = 0, n_tracks: int = 6) -> Data:
    """Straight radial tracks through 5 layers plus 4 noise hits."""
    g = torch.Generator().manual_seed(seed)
    layers = torch.tensor([32.0, 72.0, 116.0, 172.0, 260.0])
    phi0 = torch.rand(n_tracks, generator=g) * 2 * math.pi - math.pi
    eta0 = torch.rand(n_tracks, generator=g) * 2 - 1
    r = layers.repeat(n_tracks)
    phi = phi0.repeat_interleave(5)
    z = r * torch.sinh(eta0.repeat_interleave(5))
    pos = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], 1)
    noise = torch.rand(4, 3, generator=g) * 200 - 100
    pid = torch.cat([torch.arange(1, n_tracks + 1).repeat_interleave(5),
                     torch.zeros(4, dtype=torch.long)])
    order = torch.cat([torch.arange(5).repeat(n_tracks), torch.full((4,), -1)])
    return Data(pos=torch.cat([pos, noise]), particle_id=pid, hit_order=order,
                num_nodes=pos.shape[0] + 4)


def test_build_graph_sets_edges_features_labels():
    data = small_event()
    t = BuildGraph(radius=0.3, kind="eta_phi", w_eta=1.0, w_phi=1.0, w_r=1e-3)
    out = t(data.clone())
    frame = GraphFrame("eta_phi", w_eta=1.0, w_phi=1.0, w_r=1e-3)
    ref = radius_graph(frame.coords(data.pos), 0.3, periods=frame.periods)
    assert torch.equal(out.edge_index, ref)
    assert torch.equal(out.edge_attr, edge_features(data.pos, ref))
    assert torch.equal(out.y, edge_labels(data.particle_id, ref))
    assert out.edge_index.shape[1] > 0 and out.y.sum() > 0
    assert is_undirected(out.edge_index)  # edge_attr is antisymmetric by design


def test_build_graph_without_truth_and_without_pos():
    data = small_event()
    del data.particle_id
    out = BuildGraph(radius=0.3)(data)
    assert out.y is None and out.edge_attr.shape == (out.edge_index.shape[1], 5)
    with pytest.raises(ValueError, match="'pos'"):
        BuildGraph()(Data(x=torch.zeros(3, 1)))


def test_build_graph_batch_never_mixes_events():
    a, b = small_event(1), small_event(2)
    batch = Batch.from_data_list([a, b])
    out = BuildGraph(radius=0.3, kind="cylindrical", w_r=1e-3, w_z=1e-3)(batch)
    src_graph = out.batch[out.edge_index[0]]
    assert torch.equal(src_graph, out.batch[out.edge_index[1]])
    single = BuildGraph(radius=0.3, kind="cylindrical", w_r=1e-3, w_z=1e-3)(a.clone())
    first = out.edge_index[:, src_graph == 0]
    assert torch.equal(first, single.edge_index)


def test_build_graph_cap_and_repr():
    t = BuildGraph(radius=0.5, kind="eta_phi", w_eta=1.0, w_r=1e-3, max_num_neighbors=2,
                   undirected=False)
    out = t(small_event())
    assert int(torch.bincount(out.edge_index[1]).max()) <= 2
    assert repr(t) == ("BuildGraph(radius=0.5, frame=GraphFrame('eta_phi', w_eta=1, w_phi=1, "
                       "w_r=0.001), max_num_neighbors=2, undirected=False)")
    with pytest.raises(ValueError, match="radius"):
        BuildGraph(radius=-1.0)


def test_union_is_the_set_union_of_its_members_edges():
    data = small_event(3, n_tracks=8)
    narrow = dict(radius=0.15, kind="eta_phi", w_eta=1.0, w_r=1e-3)
    other = dict(radius=0.4, kind="cylindrical", w_r=1e-3, w_z=1e-3, max_num_neighbors=3)
    a = BuildGraph(**narrow)(data.clone()).edge_index
    b = BuildGraph(**other)(data.clone()).edge_index
    out = BuildGraph(**narrow, union=[other])(data.clone())
    # Reference: a Python set of pairs, sorted by (source, target) like radius_graph.
    ref = sorted(set(map(tuple, a.t().tolist())) | set(map(tuple, b.t().tolist())))
    assert out.edge_index.t().tolist() == [list(p) for p in ref]
    assert len(ref) > max(a.shape[1], b.shape[1])  # each member adds edges of its own
    assert torch.equal(out.edge_attr, edge_features(data.pos, out.edge_index))
    assert torch.equal(out.y, edge_labels(data.particle_id, out.edge_index))
    assert is_undirected(out.edge_index)
    # A single dict works like a one-element list; the order of members does not matter.
    swapped = BuildGraph(**other, union=narrow)(data.clone())
    assert torch.equal(swapped.edge_index, out.edge_index)
    # The members show in the repr, so the dataset cache key follows them.
    assert "union=[BuildGraph(radius=0.4, frame=GraphFrame('cylindrical'" in repr(
        BuildGraph(**narrow, union=[other]))


def test_union_rejects_nesting_and_non_dicts():
    with pytest.raises(ValueError, match="own 'union'"):
        BuildGraph(radius=0.1, union=[{"radius": 0.2, "union": {"radius": 0.3}}])
    with pytest.raises(TypeError, match=r"union\[0\]"):
        BuildGraph(radius=0.1, union=[0.2])


def test_union_edges_of_batched_events_stays_within_events():
    a, b = small_event(1), small_event(2)
    batch = Batch.from_data_list([a, b])
    t = BuildGraph(radius=0.15, kind="eta_phi", w_eta=1.0, w_r=1e-3,
                   union={"radius": 0.4, "kind": "cylindrical", "w_r": 1e-3, "w_z": 1e-3})
    out = t(batch)
    assert torch.equal(out.batch[out.edge_index[0]], out.batch[out.edge_index[1]])
    single = t(a.clone())
    assert torch.equal(out.edge_index[:, out.batch[out.edge_index[0]] == 0], single.edge_index)


@pytest.fixture(scope="module")
def sim_events():
    from gnn_jepa.data.convert import event_to_data
    from gnn_jepa.data.simulator import Simulator

    sim = Simulator.from_preset("trackml", num_particles=300)
    return [event_to_data(sim.simulate(seed, seed)) for seed in (41, 42)]


SHIPPED = {"kind": "learned", "embedding": "trackml_pt1", "pair_filter": "trackml_pt1",
           "radius": 0.06}
ALL_PT = {"kind": "learned", "embedding": "trackml", "pair_filter": "trackml_all_pt",
          "radius": 0.08}


@pytest.mark.parametrize("block", [
    {**SHIPPED, "union": [ALL_PT]},                       # the GPU configs' graph
    {**ALL_PT},                                           # one member
    {**ALL_PT, "loop": True, "union": [{"radius": 0.05, "kind": "eta_phi", "w_eta": 0.1,
                                        "w_r": 2e-4, "pair_filter": "trackml_all_pt"}]},
    {**SHIPPED, "union": [{"radius": 0.1, "kind": "eta_phi", "w_eta": 0.1, "w_r": 2e-4,
                           "max_num_neighbors": 6, "undirected": False}]},
])
@pytest.mark.parametrize("batched", [False, True])
def test_pair_path_gives_the_edge_index_path_edges(monkeypatch, sim_events, block, batched):
    """Members without a cap or edge filter work on pairs (filter once per pair, one merge
    sort); the result is identical to building each member's sorted edge_index and taking
    the coalesced union, as BuildGraph did before."""
    data = Batch.from_data_list(sim_events) if batched else sim_events[0]
    out = BuildGraph(**block)(data.clone())
    monkeypatch.setattr(BuildGraph, "_pair_path", lambda self: False)
    build = BuildGraph(**block)
    ref = build._edge_index(data, data.pos)
    if build.union:
        ref = union_edges([ref] + [m._edge_index(data, data.pos) for m in build.union],
                          data.num_nodes)
    assert ref.shape[1] > 1000
    assert torch.equal(out.edge_index, ref)
    assert torch.equal(BuildGraph(**block)(data.clone()).edge_index, ref)
    assert torch.equal(out.edge_attr, edge_features(data.pos, ref))
    assert torch.equal(out.y, edge_labels(data.particle_id, ref))


@pytest.mark.parametrize("loops", [False, True])
def test_symmetric_union_is_the_coalesced_union(loops):
    """Both directions of several lists of unordered pairs (repeats across lists, either
    orientation), plus self-loops: the same as PyG's coalesce of all directed edges."""
    from torch_geometric.utils import coalesce

    from gnn_jepa.graph.transform import _symmetric_union

    g = torch.Generator().manual_seed(4)
    n = 500
    base = torch.randint(0, n, (2, 3000), generator=g)
    base = base[:, base[0] != base[1]]
    key = torch.unique(torch.minimum(base[0], base[1]) * n + torch.maximum(base[0], base[1]))
    pairs = torch.stack([key // n, key % n])[:, torch.randperm(key.numel(), generator=g)]
    parts = [pairs[:, :2000].flip(0), pairs[:, 1500:], pairs[:, :0]]
    directed = torch.cat([torch.cat([p, p.flip(0)], 1) for p in parts], 1)
    if loops:
        directed = torch.cat([directed, torch.arange(n).repeat(2, 1)], 1)
    ref = coalesce(directed, num_nodes=n)
    assert torch.equal(_symmetric_union(parts, loops, n), ref)
    assert torch.equal(_symmetric_union(parts[1:2], loops, n),
                       coalesce(torch.cat([parts[1], parts[1].flip(0)]
                                          + ([torch.arange(n).repeat(2, 1)] if loops else []),
                                          1), num_nodes=n))
    empty = _symmetric_union([torch.zeros(2, 0, dtype=torch.long)], loops, 3)
    assert empty.tolist() == ([[0, 1, 2], [0, 1, 2]] if loops else [[], []])
