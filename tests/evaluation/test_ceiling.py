"""The ceiling of a graph: tracks from truth edge scores, on a hand-made event."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch_geometric.data import Data

from gnn_jepa.evaluation.ceiling import hit_order_key, tracking_ceiling, truth_tracks


def _event() -> Data:
    """Two 4-hit particles on straight radial lines (phi 0 and pi/2) and one noise hit.

    Hits 0-3: particle 1 at r = 30, 70, 120, 170 mm; hits 4-7: particle 2 at the same radii;
    hit 8: noise. Every particle hit weighs 1/8 (noise 0), so losing one particle costs 0.5.
    """
    radii = [30.0, 70.0, 120.0, 170.0]
    pos = [[r, 0.0, 0.1 * r] for r in radii] + [[0.0, r, -0.1 * r] for r in radii]
    pos.append([50.0, 50.0, 0.0])
    pid = torch.tensor([1] * 4 + [2] * 4 + [0])
    return Data(pos=torch.tensor(pos), particle_id=pid,
                hit_order=torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0]),
                pt=torch.tensor([2.0] * 4 + [0.5] * 4 + [0.0]),
                particle_eta=torch.tensor([0.1] * 4 + [-0.1] * 4 + [0.0]),
                weight=torch.tensor([0.125] * 8 + [0.0]))


def _complete(n: int) -> torch.Tensor:
    pairs = list(itertools.combinations(range(n), 2))
    return torch.tensor(pairs).t().contiguous()


@pytest.mark.parametrize("building", ["walkthrough", "cc"])
def test_complete_graph_reaches_a_perfect_score(building):
    data = _event()
    tid = truth_tracks(data, _complete(9), building=building)
    assert tid[:4].unique().numel() == 1 and tid[4:8].unique().numel() == 1
    assert tid[0] != tid[4] and tid[8] == -1
    m = tracking_ceiling(data, _complete(9), building=building, pt_min=1.0)
    assert m["trackml_score"] == pytest.approx(1.0)
    assert m["dm_efficiency"] == 1.0 and m["n_particles"] == 1  # only particle 1 has pT > 1
    assert m["fake_rate"] == 0.0


def test_a_missing_segment_splits_a_particle():
    """Without segment 1-2, particle 1 falls into two 2-hit pieces, both below min_hits=3:
    it is lost (score 0.5, DM efficiency 0); with min_hits=2 the pieces survive but neither
    holds more than half the particle's hits, so the score stays 0.5."""
    data = _event()
    ei = _complete(9)
    keep = ~(((ei[0] == 1) & (ei[1] == 2)) | ((ei[0] == 2) & (ei[1] == 1)))
    # the skip edges 0-2, 1-3, 0-3 are in the graph but are not segments: truth scores 0
    m = tracking_ceiling(data, ei[:, keep])
    assert m["trackml_score"] == pytest.approx(0.5)
    assert m["dm_efficiency"] == 0.0
    tid = truth_tracks(data, ei[:, keep], min_hits=2)
    assert tid[0] == tid[1] and tid[2] == tid[3] and tid[0] != tid[2]
    m2 = tracking_ceiling(data, ei[:, keep], min_hits=2)
    assert m2["trackml_score"] == pytest.approx(0.5)


def test_empty_graph_and_order_key():
    data = _event()
    m = tracking_ceiling(data, torch.zeros(2, 0, dtype=torch.long))
    assert m["trackml_score"] == 0.0 and m["n_tracks"] == 0
    assert torch.allclose(hit_order_key(data.pos)[:4],
                          torch.tensor([30.0, 70.0, 120.0, 170.0]) * (1.01 ** 0.5))


def test_missing_truth_is_named():
    data = _event()
    del data.hit_order
    with pytest.raises(ValueError, match="hit_order"):
        truth_tracks(data, _complete(9))
    data = _event()
    del data.weight
    with pytest.raises(ValueError, match="weight"):
        tracking_ceiling(data, _complete(9))
