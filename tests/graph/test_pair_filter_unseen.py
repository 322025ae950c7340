"""LayerPairFilter on events holding (volume, layer) ids it never saw: a warning, once per
filter (and so once per BuildGraph), naming the ids and counting hits and edges; the
decisions on known layers do not change."""
from __future__ import annotations

import warnings

import pytest
import torch

from gnn_jepa.data.convert import event_to_data
from gnn_jepa.data.simulator import Simulator
from gnn_jepa.graph.pair_filter import LayerPairFilter, UnseenLayerWarning, pair_key
from gnn_jepa.graph.transform import BuildGraph
from tests.graph.test_pair_filter import _both_ways, _hits  # the hand-made-hit helpers


@pytest.fixture()
def hand():
    """One window, (8, 2) -> (8, 4); hits 2 and 3 lie on ids it never saw."""
    data = _hits([
        (100.0, 0.0, 10.0, 8, 2),     # 0
        (200.0, 0.01, 30.0, 8, 4),    # 1: kept with 0 (z0 -10, slope 1e-4)
        (300.0, 0.02, 50.0, 8, 6),    # 2: (8, 6) unknown
        (200.0, 0.01, 30.0, 9, 2),    # 3: (9, 2) unknown
        (200.0, 0.0, 60.0, 8, 4),     # 4: known pair, z0 -40 outside the window
    ])
    filt = LayerPairFilter(torch.tensor([pair_key(8, 2, 8, 4)]), torch.tensor([-15.0]),
                           torch.tensor([15.0]), torch.tensor([2e-4]), torch.tensor([1]))
    ei = _both_ways(torch.tensor([[0, 0, 0, 1, 0], [1, 2, 3, 2, 4]]))
    return data, filt, ei


def _no_warning(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    assert not [w for w in caught if issubclass(w.category, UnseenLayerWarning)]
    return out


def test_unseen_layers_are_counted_and_named(hand):
    data, filt, ei = hand
    assert [tuple(i) for i in filt.unseen_layers(data)["ids"]] == [(8, 6), (9, 2)]
    info = filt.unseen_layers(data, ei)
    assert info == {"ids": [(8, 6), (9, 2)], "hits": 2, "num_hits": 5,
                    "edges": 6, "num_edges": 10}
    assert filt.unseen_layers(_hits([(100.0, 0.0, 0.0, 8, 2), (200.0, 0.0, 0.0, 8, 4)])) is None


def test_warns_once_per_filter_with_the_counts(hand):
    data, filt, ei = hand
    with pytest.warns(UnseenLayerWarning) as rec:
        keep = filt(data, ei)
    msg = str(rec[0].message)
    assert len(rec) == 1
    assert "(8, 6), (9, 2)" in msg and "2 of the 5 hits" in msg
    assert "6 of the 10 candidate edges" in msg and "gnn-jepa fit-graph" in msg
    # the decisions themselves: only 0-1 kept, every edge touching hits 2 or 3 dropped
    assert keep.tolist() == [True, False, False, False, False] * 2
    # the same filter says it once; another instance says it again
    assert torch.equal(_no_warning(lambda: filt(data, ei)), keep)
    other = LayerPairFilter(filt.keys, filt.z0_min, filt.z0_max, filt.slope_max)
    with pytest.warns(UnseenLayerWarning, match=r"2 of the 5 hits"):
        assert torch.equal(other(data, ei), keep)


def test_many_unknown_ids_are_listed_then_counted():
    rows = [(100.0 + 10 * k, 0.0, 0.0, 1, k + 1) for k in range(25)]
    filt = LayerPairFilter(torch.tensor([pair_key(8, 2, 8, 4)]), torch.tensor([-1.0]),
                           torch.tensor([1.0]), torch.tensor([1.0]))
    ei = torch.tensor([[0, 1], [1, 2]])
    with pytest.warns(UnseenLayerWarning, match=r"\(1, 20\), \.\.\. \(25 in all\)") as rec:
        assert not filt(_hits(rows), ei).any()
    assert "(1, 21)" not in str(rec[0].message)


@pytest.fixture(scope="module")
def events():
    sim = Simulator.from_preset("trackml", num_particles=150)
    return [event_to_data(sim.simulate(seed, seed)) for seed in (11, 12, 13)]


def test_known_layers_keep_identical_edges(events):
    """Moving some hits onto an unknown id drops exactly their edges: every other edge gets
    the decision it had before."""
    filt = LayerPairFilter.fit(events, pt_min=0.0)  # knows every layer of d
    d = events[2]
    ei = BuildGraph(radius=0.09)(d.clone()).edge_index
    before = _no_warning(lambda: filt(d, ei))
    moved = d.clone()
    outer = moved.volume_id == 17  # the long-strip barrel layers
    moved.volume_id = torch.where(outer, torch.full_like(moved.volume_id, 99), moved.volume_id)
    touch = outer[ei[0]] | outer[ei[1]]
    with pytest.warns(UnseenLayerWarning) as rec:
        after = filt(moved, ei)
    assert f"(99, 2), (99, 4) in fitting: {int(outer.sum())} of the {d.num_nodes} hits" \
        in str(rec[0].message)
    assert f"{int(touch.sum())} of the {ei.shape[1]} candidate edges" in str(rec[0].message)
    assert before[touch].any() and not after[touch].any()
    assert torch.equal(after[~touch], before[~touch])


def test_build_graph_warns_once_and_shipped_presets_stay_quiet(events):
    d = events[2]
    kw = {"kind": "learned", "embedding": "trackml", "pair_filter": "trackml_all_pt",
          "radius": 0.16}
    shipped = BuildGraph(**kw)
    ref = _no_warning(lambda: shipped(d.clone()).edge_index)  # every trackml id is known
    other = d.clone()
    other.volume_id = torch.ones_like(other.volume_id)   # another numbering: one volume
    other.layer_id = other.layer_id + 100
    build = BuildGraph(**kw)
    with pytest.warns(UnseenLayerWarning, match=f"{d.num_nodes} of the {d.num_nodes} hits"):
        assert build(other.clone()).edge_index.shape[1] == 0
    _no_warning(lambda: build(other.clone()))  # once per BuildGraph
    assert ref.shape[1] > 0
    with pytest.warns(UnseenLayerWarning):
        BuildGraph(**kw)(other.clone())  # a new BuildGraph says it again
