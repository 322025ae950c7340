"""The learned edge filter: features, the cut's efficiency, save/load, BuildGraph."""
import math

import pytest
import torch
from torch_geometric.data import Data

from gnn_jepa.graph.edge_filter import NUM_FEATURES, EdgeFilter, fit_edge_filter, pair_features
from gnn_jepa.graph.edges import segment_labels
from gnn_jepa.graph.transform import BuildGraph


def tracks_event(seed: int, n_tracks: int = 30) -> tuple[Data, torch.Tensor]:
    """Straight radial tracks through 8 barrel layers; candidate pairs: each true segment plus
    every pair of hits on consecutive layers within 0.6 rad in phi (the fakes)."""
    g = torch.Generator().manual_seed(seed)
    radii = torch.tensor([40.0, 80, 120, 170, 260, 360, 500, 660])
    phi0 = (torch.rand(n_tracks, generator=g) * 2 - 1) * math.pi
    cot = (torch.rand(n_tracks, generator=g) * 2 - 1) * 1.5
    z0 = (torch.rand(n_tracks, generator=g) * 2 - 1) * 50
    r = radii.repeat(n_tracks)
    phi = phi0.repeat_interleave(len(radii))
    z = z0.repeat_interleave(len(radii)) + r * cot.repeat_interleave(len(radii))
    pos = torch.stack([r * phi.cos(), r * phi.sin(), z], 1)
    pid = torch.arange(1, n_tracks + 1).repeat_interleave(len(radii))
    order = torch.arange(len(radii)).repeat(n_tracks)
    layer = order
    a, b = torch.meshgrid(torch.arange(len(r)), torch.arange(len(r)), indexing="ij")
    dphi = torch.remainder(phi[a] - phi[b] + math.pi, 2 * math.pi) - math.pi
    cand = ((layer[b] - layer[a]) == 1) & (dphi.abs() < 0.6)
    ei = torch.stack([a[cand], b[cand]])
    ei = torch.cat([ei, ei.flip(0)], 1)
    return Data(pos=pos, particle_id=pid, hit_order=order, num_nodes=len(r)), ei


def test_pair_features_are_the_same_for_both_directions():
    data, ei = tracks_event(0)
    f = pair_features(data.pos, ei)
    assert f.shape == (ei.shape[1], NUM_FEATURES)
    torch.testing.assert_close(f, pair_features(data.pos, ei.flip(0)), rtol=0, atol=0)
    # a radial straight line through the origin: no turn, z0 = 0, dz/dr = cot
    pos = torch.tensor([[100.0, 0, 50], [200.0, 0, 100]])
    f = pair_features(pos, torch.tensor([[1], [0]]))[0]
    assert f[6].item() == 0.0 and f[7].item() == 0.0
    assert f[8].item() == pytest.approx(0.5) and f[9].item() == pytest.approx(0.0, abs=1e-6)


def test_fit_keeps_the_target_share_of_true_pairs_and_drops_most_fakes():
    graphs = [tracks_event(s) for s in range(3)]
    filt = fit_edge_filter(graphs, efficiency=0.98, steps=300, batch_size=2048, hidden=16,
                           num_layers=2, seed=0)
    y = torch.cat([segment_labels(d.particle_id, d.hit_order, ei) for d, ei in graphs])
    keep = torch.cat([filt.keep(d.pos, ei) for d, ei in graphs])
    n_true = int(y.sum())
    # the cut is the floor(0.02 n)-th lowest true score: at least 98% kept, exactly that many
    # below it (ties aside)
    assert int((keep & (y > 0)).sum()) >= math.ceil(0.98 * n_true)
    assert int((~keep & (y > 0)).sum()) <= math.floor(0.02 * n_true)
    assert float((~keep)[y == 0].float().mean()) > 0.5
    # on a held-out event too, and the same answer for both directions of each pair
    d, ei = tracks_event(7)
    k = filt.keep(d.pos, ei)
    assert torch.equal(k, filt.keep(d.pos, ei.flip(0)))
    assert float(k[segment_labels(d.particle_id, d.hit_order, ei) > 0].float().mean()) > 0.9
    with pytest.raises(ValueError, match="efficiency must be in"):
        fit_edge_filter(graphs, efficiency=1.5)


def test_save_load_round_trip_and_build_graph(tmp_path):
    graphs = [tracks_event(s) for s in range(2)]
    filt = fit_edge_filter(graphs, efficiency=0.99, steps=50, batch_size=512, hidden=8, num_layers=1)
    path = tmp_path / "ef.pt"
    filt.save(path, note="test")
    back = EdgeFilter.load(path)
    d, ei = graphs[0]
    torch.testing.assert_close(back(d.pos, ei), filt.eval()(d.pos, ei), rtol=0, atol=0)
    assert float(back.cut) == float(filt.cut) and back.metadata == {"note": "test"}
    assert "sha256=" in repr(back) and str(path) in repr(back)
    torch.save({"not": "a filter"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt.*is not a saved EdgeFilter"):
        EdgeFilter.load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="no file"):
        EdgeFilter.load(tmp_path / "missing.pt")
    # in BuildGraph: the filtered graph is the unfiltered one masked by keep()
    block = {"kind": "eta_phi", "radius": 0.5}
    plain = BuildGraph(**block).edges(d)
    filtered = BuildGraph(**block, edge_filter=str(path)).edges(d)
    assert torch.equal(filtered, plain[:, back.keep(d.pos, plain)])
    assert filtered.shape[1] < plain.shape[1]
    assert "edge_filter=EdgeFilter(" in repr(BuildGraph(**block, edge_filter=str(path)))
