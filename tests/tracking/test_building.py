"""Track building on hand-made graphs: components, walkthrough ambiguity resolution."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gnn_jepa.tracking.building import (build_tracks, connected_components, to_submission_ids,
                                        walkthrough_edges)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _chain(nodes: list[int]) -> list[tuple[int, int]]:
    return list(zip(nodes[:-1], nodes[1:]))


def _graph(edges: list[tuple[int, int, float]], device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    ei = torch.tensor([[a for a, _, _ in edges], [b for _, b, _ in edges]], device=device)
    s = torch.tensor([w for _, _, w in edges], device=device)
    return ei, s


@pytest.mark.parametrize("method", ["scipy", "torch"])
@pytest.mark.parametrize("device", DEVICES)
def test_connected_components_hand_graph(method, device):
    ei = torch.tensor([[0, 1, 5, 3], [1, 2, 4, 4]], device=device)
    labels = connected_components(7, ei, method=method)
    assert labels.device.type == device and labels.dtype == torch.long
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert connected_components(3, torch.zeros(2, 0, dtype=torch.long, device=device),
                                method=method).tolist() == [0, 1, 2]


def test_torch_components_equal_scipy_on_random_graphs():
    g = torch.Generator().manual_seed(0)
    for n, e in [(50, 30), (500, 400), (2000, 2500), (3000, 100)]:
        ei = torch.randint(0, n, (2, e), generator=g)
        assert torch.equal(connected_components(n, ei, method="torch"),
                           connected_components(n, ei, method="scipy"))
    # a long chain in shuffled edge order: needs the pointer jumping to converge quickly
    n = 5000
    ei = torch.stack([torch.arange(n - 1), torch.arange(1, n)])[:, torch.randperm(n - 1, generator=g)]
    assert torch.equal(connected_components(n, ei, method="torch"), torch.zeros(n, dtype=torch.long))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="outside"):
        connected_components(3, torch.tensor([[0], [3]]))
    with pytest.raises(ValueError, match="shape"):
        connected_components(3, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unknown connected-components method"):
        connected_components(3, torch.tensor([[0], [1]]), method="bfs")
    with pytest.raises(ValueError, match="order_key"):
        build_tracks(3, torch.tensor([[0], [1]]), torch.tensor([1.0]), method="walkthrough")
    with pytest.raises(ValueError, match="one per edge"):
        build_tracks(3, torch.tensor([[0], [1]]), torch.tensor([1.0, 0.2]))


def _two_tracks_with_spurious_link():
    """Tracks A = hits 0..4 and B = hits 5..9 on layers r = 1..5, joined by one fake edge.

    The fake edge 2 -> 8 (A's r=3 hit to B's r=4 hit) scores 0.7, above threshold but below
    the true B edge 7 -> 8 (0.9), so B's hit 8 keeps 7 as its predecessor. Below-threshold
    noise edges (0.3) join the tracks elsewhere and must be cut.
    """
    r = torch.tensor([1.0, 2, 3, 4, 5, 1, 2, 3, 4, 5])
    edges = [(a, b, 0.9) for a, b in _chain([0, 1, 2, 3, 4]) + _chain([5, 6, 7, 8, 9])]
    edges += [(2, 8, 0.7), (1, 6, 0.3), (4, 9, 0.3)]
    return r, edges


@pytest.mark.parametrize("device", DEVICES)
def test_cc_merges_touching_tracks_walkthrough_separates(device):
    r, edges = _two_tracks_with_spurious_link()
    ei, s = _graph(edges, device)
    cc = build_tracks(10, ei, s, method="cc")
    assert cc.tolist() == [0] * 10
    wt = build_tracks(10, ei, s, method="walkthrough", order_key=r.to(device))
    assert wt.device.type == device
    assert wt.tolist() == [0] * 5 + [1] * 5
    # edge direction and duplicated reverse edges do not matter
    both = edges + [(b, a, w) for a, b, w in edges]
    ei2, s2 = _graph(both, device)
    assert build_tracks(10, ei2, s2, method="walkthrough", order_key=r.to(device)).tolist() == wt.tolist()
    assert build_tracks(10, ei2, s2, method="walkthrough", order_key=r.to(device),
                        cc_method="torch").tolist() == wt.tolist()


def test_walkthrough_shared_hit_goes_to_the_better_track():
    """X-shaped crossing: hit 2 is on A (0,1,2,3,4) and on B (5,6,2,7,8).

    Hit 2 keeps its best incoming edge 1->2 (0.9 > 6->2 at 0.8) and then its best outgoing
    edge 2->3 (0.9 > 2->7 at 0.85): A stays whole, B breaks into 5-6 and 7-8.
    """
    r = torch.tensor([1.0, 2, 3, 4, 5, 1, 2, 4, 5])
    edges = [(a, b, 0.9) for a, b in _chain([0, 1, 2, 3, 4])]
    edges += [(5, 6, 0.8), (6, 2, 0.8), (2, 7, 0.85), (7, 8, 0.8)]
    ei, s = _graph(edges)
    assert build_tracks(9, ei, s, method="cc").tolist() == [0] * 9
    assert build_tracks(9, ei, s, method="walkthrough", order_key=r).tolist() == \
        [0, 0, 0, 0, 0, -1, -1, -1, -1]
    assert build_tracks(9, ei, s, method="walkthrough", order_key=r, min_hits=2).tolist() == \
        [0, 0, 0, 0, 0, 1, 1, 2, 2]
    chains = walkthrough_edges(9, ei, s, r)
    assert sorted(map(tuple, chains.t().tolist())) == [(0, 1), (1, 2), (2, 3), (3, 4), (5, 6), (7, 8)]


def test_threshold_is_strict_and_min_hits_dissolves():
    ei = torch.tensor([[0, 1, 3, 4], [1, 2, 4, 5]])
    s = torch.tensor([0.9, 0.5, 0.9, 0.51])
    # edge 1-2 at exactly the threshold is dropped: {0,1} has 2 hits < 3 -> unassigned
    assert build_tracks(7, ei, s, threshold=0.5).tolist() == [-1, -1, -1, 0, 0, 0, -1]
    assert build_tracks(7, ei, s, threshold=0.5, min_hits=1).tolist() == [0, 0, 1, 2, 2, 2, 3]


def test_walkthrough_recovers_random_tracks_when_true_edges_score_highest():
    """Tracks on shared layers, true segments at 0.9, random cross-layer fakes in (0.5, 0.85).

    Every hit's best incoming edge is its true predecessor when it has one; a first hit
    may keep a fake incoming edge, but its source's true outgoing edge then wins. So the
    walkthrough must return the particles exactly, while CC merges them.
    """
    rng = np.random.default_rng(3)
    n_tracks, n_layers = 40, 8
    pid = np.repeat(np.arange(n_tracks), n_layers)
    layer = np.tile(np.arange(n_layers), n_tracks)
    perm = rng.permutation(len(pid))  # hit order must not matter
    pid, layer = pid[perm], layer[perm]
    node = {(p, l): i for i, (p, l) in enumerate(zip(pid, layer))}
    edges = [(node[p, l], node[p, l + 1], 0.9) for p in range(n_tracks) for l in range(n_layers - 1)]
    for _ in range(300):
        a, b = rng.integers(0, len(pid), 2)
        if layer[a] != layer[b] and pid[a] != pid[b]:
            edges.append((int(a), int(b), float(rng.uniform(0.5, 0.85))))
    ei, s = _graph(edges)
    tid = build_tracks(len(pid), ei, s, method="walkthrough",
                       order_key=torch.tensor(layer, dtype=torch.float32)).numpy()
    # same partition as the particles: one-to-one map between track ids and particle ids
    pairs = set(zip(tid.tolist(), pid.tolist()))
    assert len(pairs) == n_tracks and len({t for t, _ in pairs}) == n_tracks and (tid >= 0).all()
    assert int(build_tracks(len(pid), ei, s, method="cc").max()) < n_tracks - 1


def test_to_submission_ids():
    t = torch.tensor([-1, 3, -1, 0])
    assert to_submission_ids(t).tolist() == [4, 3, 5, 0]
    assert to_submission_ids(np.array([-1, -1])).tolist() == [0, 1]
    out = to_submission_ids(np.array([2, -1, 2]))
    assert isinstance(out, np.ndarray) and out.tolist() == [2, 3, 2]
    assert t.tolist() == [-1, 3, -1, 0]  # input untouched


def test_walkthrough_chain_continues_through_its_next_best_edge():
    """A(0) -> B(1) -> C(2) is a track. X(3) -> C (0.85) beats B -> C (0.8) as C's best
    incoming edge, but X's better edge X -> Y(4) (0.95) takes X's only outgoing slot, so
    C must still be continued from B."""
    ei = torch.tensor([[0, 1, 3, 3], [1, 2, 2, 4]])
    s = torch.tensor([0.9, 0.8, 0.85, 0.95])
    r = torch.tensor([1.0, 2.0, 3.0, 2.5, 3.5])
    assert walkthrough_edges(5, ei, s, r).tolist() == [[0, 1, 3], [1, 2, 4]]
    assert build_tracks(5, ei, s, method="walkthrough", order_key=r, min_hits=2).tolist() == \
        [0, 0, 0, 1, 1]


def test_walkthrough_equals_sequential_greedy_matching():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        n, e = 30, 120
        ei = torch.randint(0, n, (2, e), generator=g)
        s = torch.rand(e, generator=g)  # distinct almost surely
        key = torch.rand(n, generator=g)
        u, v = ei
        fwd = (key[u] < key[v]) | ((key[u] == key[v]) & (u < v))
        src, dst = torch.where(fwd, u, v), torch.where(fwd, v, u)
        out_used, in_used, ref = set(), set(), []
        for k in sorted(range(e), key=lambda k: -float(s[k])):
            a, b = int(src[k]), int(dst[k])
            if a != b and a not in out_used and b not in in_used:
                out_used.add(a), in_used.add(b), ref.append(k)
        ref = sorted(ref)
        expected = [[int(src[k]) for k in ref], [int(dst[k]) for k in ref]]
        assert walkthrough_edges(n, ei, s, key).tolist() == expected
