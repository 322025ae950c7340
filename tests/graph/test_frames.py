"""Graph frames: coordinate values, periods, validation."""
from __future__ import annotations

import math

import pytest
import torch

from gnn_jepa.graph.frames import GraphFrame
from gnn_jepa.graph.radius import radius_graph

# x = 30, y = 40 -> r = 50 mm, phi = atan2(40, 30); z = 120 -> eta = asinh(120 / 50).
POS = torch.tensor([[30.0, 40.0, 120.0]], dtype=torch.float64)
R, PHI, Z = 50.0, math.atan2(40.0, 30.0), 120.0
ETA = math.asinh(Z / R)


def test_cartesian_scales_by_unit():
    c = GraphFrame("cartesian", scale=10.0).coords(POS)
    assert c.tolist() == [[3.0, 4.0, 12.0]]
    assert GraphFrame("cartesian").periods == [None, None, None]


def test_cylindrical_weights_each_axis():
    f = GraphFrame("cylindrical", w_r=0.01, w_phi=2.0, w_z=0.001)
    c = f.coords(POS)[0].tolist()
    assert c == pytest.approx([0.5, 2.0 * PHI, 0.12], rel=1e-12)
    assert f.periods == [None, pytest.approx(4 * math.pi), None]
    assert f.axis_names == ["r", "phi", "z"]


def test_eta_phi_with_and_without_r():
    two = GraphFrame("eta_phi", w_eta=0.5, w_phi=1.0)
    assert two.dim == 2 and two.periods == [None, pytest.approx(2 * math.pi)]
    assert two.coords(POS)[0].tolist() == pytest.approx([0.5 * ETA, PHI], rel=1e-12)
    three = GraphFrame("eta_phi", w_eta=1.0, w_phi=1.0, w_r=1e-3)
    assert three.dim == 3 and three.periods[2] is None
    assert three.coords(POS)[0].tolist() == pytest.approx([ETA, PHI, 0.05], rel=1e-12)


def test_frame_radius_graph_wraps_phi():
    # Two hits on one layer 0.02 rad apart across phi = +-pi: neighbours in every phi frame.
    phi = torch.tensor([math.pi - 0.01, -math.pi + 0.01])
    pos = torch.stack([100 * torch.cos(phi), 100 * torch.sin(phi), torch.zeros(2)], 1)
    for frame in (GraphFrame("cylindrical"), GraphFrame("eta_phi", w_r=1e-3)):
        ei = radius_graph(frame.coords(pos), 0.03, periods=frame.periods)
        assert ei.tolist() == [[0, 1], [1, 0]]


def test_round_trip_and_repr():
    f = GraphFrame("eta_phi", w_eta=0.1, w_phi=1.0, w_r=2e-4)
    assert GraphFrame(**f.to_dict()) == f
    assert repr(f) == "GraphFrame('eta_phi', w_eta=0.1, w_phi=1, w_r=0.0002)"
    assert GraphFrame("eta_phi") != GraphFrame("cylindrical")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown kind"):
        GraphFrame("spherical")
    with pytest.raises(ValueError, match="w_phi"):
        GraphFrame("cylindrical", w_phi=0.0)
    with pytest.raises(ValueError, match="w_r"):
        GraphFrame("eta_phi", w_r=-1.0)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        GraphFrame("eta_phi").coords(torch.zeros(4, 2))
