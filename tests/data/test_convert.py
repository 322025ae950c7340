import numpy as np
import pandas as pd
import pytest
import torch

from gnn_jepa.data.convert import event_to_data, hit_order
from gnn_jepa.data.event import Event
from gnn_jepa.data import weights
from gnn_jepa.data.weights import ComputedWeightsWarning


def hand_event():
    # particle 7: three hits moving outwards from the vertex (0, 0, 0); one noise hit
    hits = pd.DataFrame({"hit_id": [1, 2, 3, 4], "x": [100.0, 30.0, 0.0, 60.0], "y": [0.0, 0.0, 50.0, 0.0],
                         "z": [10.0, 3.0, 0.0, 6.0], "volume_id": [8, 8, 8, 8],
                         "layer_id": [6, 2, 2, 4], "module_id": [1, 1, 2, 1]})
    truth = pd.DataFrame({"hit_id": [1, 2, 3, 4], "particle_id": [7, 7, 0, 7],
                          "tx": hits.x, "ty": hits.y, "tz": hits.z, "tpx": 1.0, "tpy": 0.0, "tpz": 0.1,
                          "weight": [0.3, 0.4, 0.0, 0.3]})
    particles = pd.DataFrame({"particle_id": [7], "vx": [0.0], "vy": [0.0], "vz": [0.0], "px": [3.0],
                              "py": [4.0], "pz": [5.0], "q": [1], "nhits": [3]})
    return Event(hits, truth, particles, event_id=42)


def test_event_to_data_fields():
    d = event_to_data(hand_event())
    assert d.num_nodes == 4 and d.pos.shape == (4, 3) and d.x.shape == (4, 4)
    assert d.hit_order.tolist() == [2, 0, -1, 1]
    torch.testing.assert_close(d.pt, torch.tensor([5.0, 5.0, 0.0, 5.0]))
    eta = float(np.arcsinh(5.0 / 5.0))
    torch.testing.assert_close(d.particle_eta, torch.tensor([eta, eta, 0.0, eta]))
    torch.testing.assert_close(d.x[0], torch.tensor([0.1, 0.0, 0.01, float(np.arcsinh(0.1)) / 3]))
    assert int(d.event_id) == 42


def test_event_without_truth_is_unlabelled():
    ev = hand_event()
    ev.truth = ev.truth.iloc[0:0]
    d = event_to_data(ev)
    assert (d.particle_id == 0).all() and (d.hit_order == -1).all()


def test_bad_inputs():
    ev = hand_event()
    ev.particles = ev.particles.iloc[0:0]
    with pytest.raises(ValueError, match="particle_id 7"):
        event_to_data(ev)
    with pytest.raises(ValueError, match="unknown node feature"):
        event_to_data(hand_event(), features=("r", "colour"))


def test_hit_order_groups():
    pid = np.array([5, 5, 0, 9, 5, 9])
    dist = np.array([3.0, 1.0, 0.5, 2.0, 2.0, 1.0])
    assert hit_order(pid, dist).tolist() == [2, 0, -1, 1, 1, 0]


def _long_event(weight):
    """Particle 7 with 4 hits at x = 10, 20, 30, 40 mm from its vertex at the origin (pT 5:
    order weights [30, 16, 9, 18] / 73 are the whole event's), one noise hit."""
    hits = pd.DataFrame({"hit_id": [1, 2, 3, 4, 5], "x": [30.0, 10.0, 40.0, 20.0, 5.0],
                         "y": [0.0] * 5, "z": [0.0] * 5, "volume_id": [8] * 5,
                         "layer_id": [2, 4, 6, 8, 2], "module_id": [1] * 5})
    truth = pd.DataFrame({"hit_id": hits.hit_id, "particle_id": [7, 7, 7, 7, 0],
                          "tx": hits.x, "ty": hits.y, "tz": hits.z,
                          "tpx": 3.0, "tpy": 4.0, "tpz": 0.0})
    if weight is not None:
        truth["weight"] = weight
    particles = pd.DataFrame({"particle_id": [7], "vx": [0.0], "vy": [0.0], "vz": [0.0],
                              "px": [3.0], "py": [4.0], "pz": [0.0], "q": [1], "nhits": [4]})
    return Event(hits, truth, particles, event_id=43)


@pytest.mark.parametrize("weight, reason", [(None, "is missing"), (0.0, "sums to 0")])
def test_unusable_weights_are_computed(weight, reason, monkeypatch):
    monkeypatch.setattr(weights, "_COMPUTED", {})  # as if first in this process: a warning
    with pytest.warns(ComputedWeightsWarning, match=f"event 43: the truth 'weight' column "
                                                    f"{reason}"):
        d = event_to_data(_long_event(weight))
    expected = torch.tensor([9, 30, 18, 16, 0], dtype=torch.float64) / 73
    torch.testing.assert_close(d.weight, expected.float(), rtol=0, atol=0)


def test_usable_and_bad_weights():
    d = event_to_data(_long_event([0.1, 0.2, 0.3, 0.4, 0.0]))  # kept as they are
    assert d.weight.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.0])
    with pytest.raises(ValueError, match=r"event 43: truth weight of row 2 \(hit_id 3\) is -0.3"):
        event_to_data(_long_event([0.1, 0.2, -0.3, 0.4, 0.0]))
