"""Edge features, labels, true segments and graph metrics on hand-made events."""
from __future__ import annotations

import math

import pytest
import torch

from gnn_jepa.graph.edges import (EDGE_FEATURE_SCALES as S, edge_features, edge_labels,
                                  graph_truth_metrics, segment_labels, true_segments)


def polar(r, phi, z):
    return [r * math.cos(phi), r * math.sin(phi), z]


def test_edge_features_values_and_phi_wrap():
    # Source at phi = pi - 0.01, target at -pi + 0.01: dphi = +0.02 across the seam.
    pos = torch.tensor([polar(100.0, math.pi - 0.01, 0.0),
                        polar(150.0, -math.pi + 0.01, 50.0)], dtype=torch.float64)
    f = edge_features(pos, torch.tensor([[0], [1]]))[0].tolist()
    dist = float(torch.linalg.vector_norm(pos[1] - pos[0]))
    expected = [50.0 / S["dr"], 0.02 / S["dphi"], 50.0 / S["dz"],
                math.asinh(50.0 / 150.0) / S["deta"], dist / S["dist"]]
    assert f == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # Reversed edge: every difference flips sign, the distance does not.
    back = edge_features(pos, torch.tensor([[1], [0]]))[0].tolist()
    assert back == pytest.approx([-v for v in expected[:4]] + [expected[4]], rel=1e-9)


def test_edge_features_empty_and_bad_index():
    pos = torch.rand(3, 3)
    assert edge_features(pos, torch.zeros(2, 0, dtype=torch.long)).shape == (0, 5)
    with pytest.raises(ValueError, match="outside"):
        edge_features(pos, torch.tensor([[0], [3]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_features_chunks_match_the_plain_expression(monkeypatch, dtype):
    """The CPU path (32-byte rows gathered by numpy, chunks, results written in place) is
    bit for bit the plain expression, across chunk boundaries and the phi seam."""
    from gnn_jepa.graph import edges as edges_mod
    from gnn_jepa.geometry import cylindrical, wrap_phi

    g = torch.Generator().manual_seed(3)
    n, e = 300, 5000
    r = torch.rand(n, generator=g) * 1000 + 30
    phi = (torch.rand(n, generator=g) * 2 - 1) * math.pi
    phi[:10] = math.pi  # hits on the seam
    pos = torch.stack([r * torch.cos(phi), r * torch.sin(phi),
                       (torch.rand(n, generator=g) - 0.5) * 4000], 1).to(dtype)
    ei = torch.randint(0, n, (2, e), generator=g)
    rr, pp, zz, ee = cylindrical(pos)
    src, dst = ei
    ref = torch.stack([(rr[dst] - rr[src]) / S["dr"], wrap_phi(pp[dst] - pp[src]) / S["dphi"],
                       (zz[dst] - zz[src]) / S["dz"], (ee[dst] - ee[src]) / S["deta"],
                       torch.linalg.vector_norm(pos[dst] - pos[src], dim=1) / S["dist"]], 1)
    bits = torch.int32 if dtype == torch.float32 else torch.int64
    for chunk in (7, 1024, 1 << 20):
        monkeypatch.setattr(edges_mod, "FEATURE_CHUNK", chunk)
        got = edge_features(pos, ei)
        assert got.is_contiguous() and got.dtype == dtype
        assert torch.equal(got.view(bits), ref.view(bits))
    # with gradients the differentiable expression runs
    grad_pos = pos.clone().requires_grad_(True)
    assert torch.equal(edge_features(grad_pos, ei).detach().view(bits), ref.view(bits))


def test_edge_labels_same_non_noise_particle():
    pid = torch.tensor([5, 5, 9, 0, 0])
    ei = torch.tensor([[0, 1, 3, 2], [1, 2, 4, 2]])
    assert edge_labels(pid, ei).tolist() == [1.0, 0.0, 0.0, 1.0]


def hand_event():
    """Particle 7: hits 4, 0, 2 (orders 2, 0, 1, so 0 -> 2 -> 4); particle 3: hits 1, 5
    with a hole (orders 0, 2); particle 8: one hit; hit 6 is noise."""
    pid = torch.tensor([7, 3, 7, 8, 7, 3, 0])
    order = torch.tensor([0, 0, 1, 0, 2, 2, -1])
    pt = torch.tensor([2.0, 0.6, 2.0, 5.0, 2.0, 0.6, 0.0])
    return pid, order, pt


def test_true_segments_hand_event():
    pid, order, pt = hand_event()
    seg = true_segments(pid, order)
    assert seg.tolist() == [[1, 0, 2], [5, 2, 4]]  # sorted by particle: 3 then 7
    high = true_segments(pid, order, pt=pt, pt_min=1.0)
    assert high.tolist() == [[0, 2], [2, 4]]
    with pytest.raises(ValueError, match="needs the pt"):
        true_segments(pid, order, pt_min=1.0)


def test_segment_labels_only_consecutive_hits():
    pid, order, _ = hand_event()
    # 0-2 and 4->2 follow each other along particle 7; 0-4 skips hit 2; 1-5 crosses a hole
    # (still consecutive among the recorded hits); 3-3 is a loop; 6 is noise.
    ei = torch.tensor([[0, 4, 0, 1, 3, 6], [2, 2, 4, 5, 3, 0]])
    assert segment_labels(pid, order, ei).tolist() == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert edge_labels(pid, ei).tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    # the same particle id in two graphs of a batch is two particles
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    assert segment_labels(pid, order, ei, batch).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_true_segments_batch_keeps_graphs_apart():
    # The same particle id in two graphs: two separate 2-hit tracks, never joined.
    pid = torch.tensor([4, 4, 4, 4])
    order = torch.tensor([0, 1, 0, 1])
    batch = torch.tensor([0, 0, 1, 1])
    assert true_segments(pid, order, batch=batch).tolist() == [[0, 2], [1, 3]]
    assert true_segments(pid, order).shape[1] == 3  # without batch they would merge


def test_graph_truth_metrics_hand_graph():
    pid, order, pt = hand_event()
    # Segments: (1,5) pt 0.6, (0,2) and (2,4) pt 2. Graph: 0-2 both ways, 4->2 one way,
    # 1-6 (particle-noise), 3 self-loop (ignored).
    ei = torch.tensor([[0, 2, 4, 1, 6, 3], [2, 0, 2, 6, 1, 3]])
    m = graph_truth_metrics(ei, pid, order, pt, pt_bins=(0.0, 1.0, math.inf))
    assert m["num_segments"] == 3
    assert m["efficiency"] == pytest.approx(2 / 3)
    assert m["efficiency_pt_min"] == 1.0 and m["num_segments_pt_min"] == 2
    assert m["purity"] == pytest.approx(3 / 5)  # 0->2, 2->0, 4->2 true; 1->6, 6->1 not
    assert m["mean_degree"] == pytest.approx(2 * 3 / 7)  # pairs {0,2}, {2,4}, {1,6}
    assert [b["efficiency"] for b in m["per_pt_bin"]] == [0.0, 1.0]
    assert [b["num_segments"] for b in m["per_pt_bin"]] == [1, 2]


def test_graph_truth_metrics_empty_graph_is_nan_purity():
    pid, order, pt = hand_event()
    m = graph_truth_metrics(torch.zeros(2, 0, dtype=torch.long), pid, order, pt)
    assert m["efficiency"] == 0.0 and math.isnan(m["purity"]) and m["mean_degree"] == 0.0
