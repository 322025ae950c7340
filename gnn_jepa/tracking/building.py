"""Track building: scored edges -> one track label per hit.

Two builders share one output convention: ``track_id`` [N] long, ``-1`` for hits in no
track, tracks numbered ``0..T-1`` in the order of their lowest hit index.

* ``"cc"``: connected components of the edges scoring above the threshold. Fast and
  simple, but one spurious edge merges two tracks.
* ``"walkthrough"``: orient each kept edge from the smaller to the larger ``order_key``
  (e.g. hit r, or distance from the origin) and resolve ambiguities so that every hit has
  at most one incoming and one outgoing edge, by a greedy matching: taking edges from the
  best score down, an edge is accepted when its source has no accepted outgoing edge yet
  and its target no accepted incoming one. What remains is a set of disjoint chains. This
  separates tracks that touch through a spurious edge or a shared hit, and, unlike "each
  hit keeps its best incoming edge, then its best outgoing one", a hit whose best
  incoming edge is taken by a better chain still continues its own through its next-best.

Everything runs in torch on the input's device (``connected_components(method="torch")``
needs no CPU round trip); ``method="scipy"`` components go through
``scipy.sparse.csgraph`` on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

CC_METHODS = ("scipy", "torch")
BUILD_METHODS = ("cc", "walkthrough")

#: The score cuts that threshold tuning tries by default.
DEFAULT_THRESHOLD_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


@dataclass(frozen=True)
class TrackBuildingConfig:
    """How edge scores become tracks (a nested ``tracks:`` block in track-finding configs).

    Args:
        building: ``"cc"`` or ``"walkthrough"`` (see the module docstring).
        threshold: edges scoring above it are kept (until a validation tunes it).
        tune_threshold: at every validation pick, from ``threshold_grid``, the cut with the
            best mean TrackML score on the validation events; test and predict use it.
        threshold_grid: the cuts that tuning tries, scores in [0, 1).
        min_hits: smaller tracks are dissolved.
    """

    building: str = "cc"
    threshold: float = 0.5
    tune_threshold: bool = False
    threshold_grid: tuple[float, ...] = DEFAULT_THRESHOLD_GRID
    min_hits: int = 3

    def __post_init__(self) -> None:
        if self.building not in BUILD_METHODS:
            raise ValueError(f"tracks.building must be one of {BUILD_METHODS}, got {self.building!r}")
        grid = tuple(self.threshold_grid)
        if not grid or not all(0.0 <= t < 1.0 for t in grid):
            raise ValueError(f"tracks.threshold_grid must be non-empty scores in [0, 1), got {grid}")
        object.__setattr__(self, "threshold_grid", tuple(float(t) for t in grid))
        if self.min_hits < 1:
            raise ValueError(f"tracks.min_hits must be >= 1, got {self.min_hits}")


def hit_order_key(pos: Tensor) -> Tensor:
    """Distance of each hit from the origin: the order along a track the walkthrough uses."""
    return torch.linalg.vector_norm(pos, dim=1)


def _check_edge_index(num_nodes: int, edge_index: Tensor) -> Tensor:
    edge_index = torch.as_tensor(edge_index)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool:
        raise ValueError(f"edge_index must hold integer node indices, got {edge_index.dtype}")
    edge_index = edge_index.long()
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(f"edge_index holds node indices in [{int(edge_index.min())}, "
                         f"{int(edge_index.max())}], outside [0, {num_nodes}) for num_nodes={num_nodes}")
    return edge_index


def connected_components(num_nodes: int, edge_index: Tensor, *, method: str = "scipy") -> Tensor:
    """Label the connected components of a graph (edge direction ignored).

    Args:
        num_nodes: N; isolated nodes form their own components.
        edge_index: [2, E] integer node indices, on any device.
        method: ``"scipy"`` (``scipy.sparse.csgraph`` on the CPU) or ``"torch"``
            (hook-and-shortcut label propagation, runs on the input's device).

    Returns:
        [N] long labels ``0..K-1`` on ``edge_index``'s device, components numbered in the
        order of their smallest node index (both methods give identical labels).
    """
    edge_index = _check_edge_index(num_nodes, edge_index)
    device = edge_index.device
    if method == "scipy":
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components as cc

        src, dst = edge_index.cpu().numpy()
        adj = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(num_nodes, num_nodes))
        _, labels = cc(adj, directed=False)
        return torch.from_numpy(labels.astype(np.int64)).to(device)
    if method == "torch":
        root = _min_label_roots(num_nodes, edge_index)
        return torch.unique(root, return_inverse=True)[1]
    raise ValueError(f"unknown connected-components method {method!r}; choose from {CC_METHODS}")


def _min_label_roots(num_nodes: int, edge_index: Tensor) -> Tensor:
    """Smallest node index of each node's component, by hooking and pointer jumping.

    ``f`` is a forest of parent pointers with ``f[x] <= x`` inside x's component. Each round
    hooks both endpoint's roots (and the endpoints themselves) onto the smaller of the two
    labels (scatter ``amin``), then jumps pointers until every tree is a star. Labels only
    decrease, so it terminates; at the fixed point every edge joins equal labels and every
    label is a root, i.e. each component carries its minimum node index. Rounds grow like
    log(diameter) thanks to the pointer jumping, not like the diameter.
    """
    f = torch.arange(num_nodes, device=edge_index.device)
    if edge_index.numel() == 0:
        return f
    u, v = edge_index
    while True:
        fu, fv = f[u], f[v]
        g = f.clone()
        g.scatter_reduce_(0, fu, fv, reduce="amin")  # hook roots
        g.scatter_reduce_(0, fv, fu, reduce="amin")
        g.scatter_reduce_(0, u, fv, reduce="amin")  # and endpoints (speeds up chains)
        g.scatter_reduce_(0, v, fu, reduce="amin")
        while True:  # shortcut to stars
            gg = g[g]
            if torch.equal(gg, g):
                break
            g = gg
        if torch.equal(g, f):
            return f
        f = g


def _best_edge_per_node(node: Tensor, score: Tensor, num_nodes: int) -> Tensor:
    """For each node, the index of its highest-scoring edge in ``node`` (ties: lowest index).

    Returns:
        [N] long edge indices, ``-1`` where a node has no edge.
    """
    num_edges = node.numel()
    best = torch.full((num_nodes,), float("-inf"), dtype=score.dtype, device=score.device)
    best.scatter_reduce_(0, node, score, reduce="amax")
    is_best = score == best[node]
    idx = torch.arange(num_edges, device=score.device)
    pick = torch.full((num_nodes,), num_edges, dtype=torch.long, device=score.device)
    pick.scatter_reduce_(0, node[is_best], idx[is_best], reduce="amin")
    return torch.where(pick == num_edges, torch.full_like(pick, -1), pick)


def walkthrough_edges(num_nodes: int, edge_index: Tensor, scores: Tensor,
                      order_key: Tensor) -> Tensor:
    """Resolve a scored graph into disjoint directed chains (the walkthrough's edges).

    The chains are the greedy matching of sources to targets by decreasing score, computed in
    parallel rounds: in each round every edge that is the best remaining edge both of its
    source's outgoing and of its target's incoming edges ("locally dominant") is accepted,
    then every remaining edge whose source or target is used up is dropped. Each round
    accepts at least the globally best remaining edge, so it ends; with distinct scores the
    result equals the sequential greedy one (ties: the lower edge index wins).

    Args:
        num_nodes: N.
        edge_index: [2, E] edges (either direction; duplicates and both directions fine).
        scores: [E] edge scores (higher = more likely a true segment).
        order_key: [N] position of each hit along a track (e.g. r); edges point from the
            smaller to the larger key, ties broken by node index; self-loops are dropped.

    Returns:
        [2, M] oriented edges sorted by their position in ``edge_index`` (M <= E), with every
        node at most once as a source and at most once as a target.
    """
    edge_index = _check_edge_index(num_nodes, edge_index)
    scores = torch.as_tensor(scores, device=edge_index.device)
    order_key = torch.as_tensor(order_key, device=edge_index.device)
    if scores.shape != (edge_index.shape[1],):
        raise ValueError(f"scores must have shape [{edge_index.shape[1]}] (one per edge), "
                         f"got {tuple(scores.shape)}")
    if order_key.shape != (num_nodes,):
        raise ValueError(f"order_key must have shape [{num_nodes}] (one per hit), "
                         f"got {tuple(order_key.shape)}")
    u, v = edge_index
    ku, kv = order_key[u], order_key[v]
    forward = (ku < kv) | ((ku == kv) & (u < v))
    src = torch.where(forward, u, v)
    dst = torch.where(forward, v, u)
    keep = src != dst
    src, dst, s = src[keep], dst[keep], scores[keep]

    device = edge_index.device
    live = torch.arange(src.numel(), device=device)  # candidate edges still open
    accepted = []
    out_used = torch.zeros(num_nodes, dtype=torch.bool, device=device)
    in_used = torch.zeros(num_nodes, dtype=torch.bool, device=device)
    while live.numel():
        ls, ld, lsc = src[live], dst[live], s[live]
        pos = torch.arange(live.numel(), device=device)
        dominant = ((_best_edge_per_node(ls, lsc, num_nodes)[ls] == pos)
                    & (_best_edge_per_node(ld, lsc, num_nodes)[ld] == pos))
        took = live[dominant]
        accepted.append(took)
        out_used[src[took]] = True
        in_used[dst[took]] = True
        live = live[~(out_used[ls] | in_used[ld])]
    kept = torch.cat(accepted).sort().values if accepted else live
    return torch.stack([src[kept], dst[kept]])


def _drop_small(labels: Tensor, min_hits: int) -> Tensor:
    """Components with < ``min_hits`` hits -> -1; the rest renumbered 0..T-1 in label order."""
    counts = torch.bincount(labels)
    big = counts >= min_hits
    new_id = torch.cumsum(big.long(), 0) - 1
    return torch.where(big[labels], new_id[labels], torch.full_like(labels, -1))


def build_tracks(num_nodes: int, edge_index: Tensor, scores: Tensor, *, threshold: float = 0.5,
                 min_hits: int = 3, method: str = "cc", order_key: Tensor | None = None,
                 cc_method: str = "scipy") -> Tensor:
    """Build tracks from scored edges.

    Args:
        num_nodes: N hits.
        edge_index: [2, E] candidate edges, any device.
        scores: [E] edge scores; edges with ``score > threshold`` are kept.
        threshold: score cut.
        min_hits: tracks with fewer hits are dissolved (their hits get -1).
        method: ``"cc"`` (connected components) or ``"walkthrough"`` (see module doc).
        order_key: [N] hit order key, required by ``"walkthrough"`` (e.g. r = hypot(x, y)).
        cc_method: ``"scipy"`` or ``"torch"`` for the component labelling.

    Returns:
        [N] long ``track_id`` on ``edge_index``'s device: ``0..T-1`` numbered by lowest hit
        index, ``-1`` for hits in no track.
    """
    edge_index = _check_edge_index(num_nodes, edge_index)
    scores = torch.as_tensor(scores, device=edge_index.device)
    if scores.shape != (edge_index.shape[1],):
        raise ValueError(f"scores must have shape [{edge_index.shape[1]}] (one per edge), "
                         f"got {tuple(scores.shape)}")
    if min_hits < 1:
        raise ValueError(f"min_hits must be >= 1, got {min_hits}")
    keep = scores > threshold
    if method == "cc":
        edges = edge_index[:, keep]
    elif method == "walkthrough":
        if order_key is None:
            raise ValueError("method='walkthrough' needs order_key (e.g. hit r) to orient edges")
        edges = walkthrough_edges(num_nodes, edge_index[:, keep], scores[keep], order_key)
    else:
        raise ValueError(f"unknown track-building method {method!r}; choose from {BUILD_METHODS}")
    if num_nodes == 0:
        return torch.zeros(0, dtype=torch.long, device=edge_index.device)
    labels = connected_components(num_nodes, edges, method=cc_method)
    return _drop_small(labels, min_hits)


def to_submission_ids(track_id: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """Give every hit a valid (non-negative) TrackML track id.

    Hits with a negative id (unassigned) each get a fresh id of their own, counting up from
    ``max(track_id) + 1`` in hit order; non-negative ids are kept. Returns the input's type
    (tensor on the same device, or numpy array), int64.
    """
    if isinstance(track_id, torch.Tensor):
        t = track_id.long().clone()
        neg = t < 0
        start = max(int(t.max()) + 1, 0) if t.numel() else 0
        t[neg] = start + torch.arange(int(neg.sum()), device=t.device)
        return t
    t = np.array(track_id, dtype=np.int64, copy=True)
    neg = t < 0
    start = max(int(t.max()) + 1, 0) if t.size else 0
    t[neg] = start + np.arange(int(neg.sum()))
    return t
