"""PyG transform that builds an event's radius graph, edge features and edge labels."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import coalesce

from gnn_jepa.graph.edge_filter import EdgeFilter
from gnn_jepa.graph.edges import edge_features, edge_labels
from gnn_jepa.graph.frames import GraphFrame
from gnn_jepa.graph.metric_learning import LearnedFrame
from gnn_jepa.graph.pair_filter import HitGeometry, LayerPairFilter, _check_data, hit_geometry
from gnn_jepa.graph.radius import (_key_bits, _nonzero, _pack, _sort_keys, _unpack, radius_graph,
                                   radius_pairs)

__all__ = ["BuildGraph", "DEFAULT_GRAPH", "union_edges"]

#: Default graph, from radius scans (``python -m gnn_jepa.evaluation.graph_scan``) on the simulator's
#: trackml preset. (0.1 eta, phi, 2e-4 r[mm]) beat every cylindrical and eta_phi weighting
#: tried: eta barely counts because the vertex spread (55 mm in z) makes the first
#: segments long in eta. At 1,000 particles (~9.3k hits) radius 0.09 keeps 99.2% of the
#: pT > 1 GeV segments at mean degree 33. At 10,000 particles it keeps 99.1% at degree ~307;
#: ``max_num_neighbors=35`` brings the degree to 40 but the efficiency to 92%.
#: It needs no trained file, but keeps only ~74% of *all* segments (low-pT ones bend out of
#: the cone), which caps the TrackML score; the trackml configs therefore use the shipped
#: learned graph ``kind="learned", embedding="trackml", pair_filter="trackml_all_pt"``
#: (:mod:`gnn_jepa.graph.presets`).
DEFAULT_GRAPH = {"kind": "eta_phi", "w_eta": 0.1, "w_phi": 1.0, "w_r": 2e-4, "radius": 0.09,
                 "max_num_neighbors": None}


class BuildGraph(BaseTransform):
    """Set ``edge_index`` (exact radius graph in a :class:`GraphFrame`), ``edge_attr``
    (:func:`edge_features`) and, when ``particle_id`` exists, ``y`` (:func:`edge_labels`).

    Plain arguments, so the transform is written directly in a YAML config. ``data.pos``
    [N, 3] (mm) is required; ``data.batch``, when present, keeps graphs apart.

    Args:
        radius: radius in frame units.
        kind, scale, w_r, w_phi, w_z, w_eta: the :class:`GraphFrame`; ``kind="learned"``
            uses the :class:`~gnn_jepa.graph.metric_learning.LearnedFrame` of ``embedding``
            instead (the weights are then ignored).
        embedding: path of a saved
            :class:`~gnn_jepa.graph.metric_learning.HitEmbedding`, or the name of a shipped
            one (:mod:`gnn_jepa.graph.presets`; ``kind="learned"`` only).
        max_num_neighbors: optional per-node cap (nearest kept), see :func:`radius_graph`.
        undirected: symmetric graph (both directions of each pair), see :func:`radius_graph`.
        loop: add self-loops.
        backend: radius-graph backend ("auto", "builtin", "torch_cluster", "pyg_lib").
        pair_filter: path (or shipped preset name) of a saved
            :class:`~gnn_jepa.graph.pair_filter.LayerPairFilter`: after the radius graph
            (and its neighbour cap) only the edges it keeps remain (self-loops are kept
            when ``loop``); then features and labels. Needs ``data.volume_id`` and
            ``data.layer_id``. Its decision does not depend on edge direction, so an
            undirected graph stays undirected. Hits on (volume, layer) ids the filter never
            saw in fitting lose all their edges, and the first event holding such hits
            raises an :class:`~gnn_jepa.graph.pair_filter.UnseenLayerWarning` (once per
            BuildGraph and per filter; ``gnn-jepa fit-graph`` fits one for a new detector).
        edge_filter: path (or shipped preset name) of a saved
            :class:`~gnn_jepa.graph.edge_filter.EdgeFilter`: after the pair filter, only the
            pairs its MLP scores at or above its cut remain (both directions alike).
            ``gnn-jepa fit-graph --edge-filter-efficiency`` fits one.
        union: more graphs whose edges are added to this one's, each a dict of these same
            arguments (without ``union``), e.g. a narrow graph that keeps the high-pT
            segments plus a sparse one that keeps low-pT segments. Each member builds its
            own radius graph (frame, radius, cap, filter); the result is the set union of
            all edges (duplicates removed, sorted), then one set of features and labels.
    """

    def __init__(self, radius: float = DEFAULT_GRAPH["radius"], kind: str = DEFAULT_GRAPH["kind"],
                 *, scale: float = 1000.0, w_r: float | None = DEFAULT_GRAPH["w_r"],
                 w_phi: float = DEFAULT_GRAPH["w_phi"], w_z: float = 1e-3,
                 w_eta: float = DEFAULT_GRAPH["w_eta"],
                 max_num_neighbors: int | None = DEFAULT_GRAPH["max_num_neighbors"],
                 undirected: bool = True, loop: bool = False, backend: str = "auto",
                 embedding: str | None = None, pair_filter: str | None = None,
                 edge_filter: str | None = None,
                 union: list[dict] | dict | None = None) -> None:
        if not float(radius) > 0:
            raise ValueError(f"BuildGraph: radius must be > 0, got {radius}")
        if kind == "learned":
            if embedding is None:
                raise ValueError("BuildGraph(kind='learned'): needs embedding=<path of a saved "
                                 "HitEmbedding>")
            self.frame = LearnedFrame(embedding)
        else:
            if embedding is not None:
                raise ValueError(f"BuildGraph: embedding={embedding!r} needs kind='learned', "
                                 f"got kind={kind!r}")
            self.frame = GraphFrame(kind, scale=scale, w_r=w_r, w_phi=w_phi, w_z=w_z,
                                    w_eta=w_eta)
        self.radius = float(radius)
        self.max_num_neighbors = max_num_neighbors
        self.undirected = undirected
        self.loop = loop
        self.backend = backend
        self.pair_filter = None
        if pair_filter is not None:
            self.pair_filter = LayerPairFilter.load(pair_filter)
        self.edge_filter = None if edge_filter is None else EdgeFilter.load(edge_filter)
        if isinstance(union, dict):
            union = [union]
        self.union: list[BuildGraph] = []
        for k, member in enumerate(union or []):
            if not isinstance(member, dict):
                raise TypeError(f"BuildGraph: union[{k}] must be a dict of BuildGraph "
                                f"arguments, got {type(member).__name__}")
            if "union" in member:
                raise ValueError(f"BuildGraph: union[{k}] has its own 'union'; list every "
                                 "member at the top level instead")
            self.union.append(BuildGraph(**member))

    def edges(self, data: Data) -> Tensor:
        """This graph's ``edge_index`` [2, E] for ``data`` (members of ``union`` included),
        without touching ``data``.

        Every member without a neighbour cap or an edge filter takes the *pair path*: its
        radius search yields each pair once (unsorted), the pair filter tests each pair once
        (:meth:`LayerPairFilter.kept_pairs`, on per-hit quantities computed once per event
        for all members), and both directions of the kept pairs of all members are merged
        in one sort. Other members build their sorted edge_index as a lone BuildGraph does.
        The edges are the same either way (``tests/graph/test_transform.py``).
        """
        pos = getattr(data, "pos", None)
        if pos is None:
            raise ValueError("BuildGraph: data has no 'pos' attribute (x, y, z of each hit)")
        members = [self, *self.union]
        if len(members) == 1 and not self._pair_path():
            return self._edge_index(data, pos)
        geo: list[HitGeometry] = []  # filled by the first member that needs it
        parts = [m._pairs(data, pos, geo) if m._pair_path() else m._edge_index(data, pos)
                 for m in members]
        return _merge(parts, pos.size(0))

    def _pair_path(self) -> bool:
        """Whether this member's edges are its radius pairs' both directions (no cap, no
        edge filter), so it can work on pairs."""
        return self.max_num_neighbors is None and self.edge_filter is None

    def _edge_index(self, data: Data, pos: Tensor) -> Tensor:
        """This member's own sorted edge_index (radius graph, pair filter, edge filter)."""
        batch = getattr(data, "batch", None)
        coords = self.frame.coords(pos)
        ei = radius_graph(coords, self.radius, batch=batch, periods=self.frame.periods,
                          max_num_neighbors=self.max_num_neighbors, loop=self.loop,
                          undirected=self.undirected, backend=self.backend)
        if self.pair_filter is not None:
            keep = self.pair_filter(data, ei)
            if self.loop:
                keep |= ei[0] == ei[1]
            ei = ei[:, keep]
        if self.edge_filter is not None:
            ei = ei[:, self.edge_filter.keep(pos, ei)]
        return ei

    def _pairs(self, data: Data, pos: Tensor, geo: list[HitGeometry]) -> tuple[Tensor, bool]:
        """This member's kept pairs [2, P] (each once, any orientation and order) and
        whether it adds self-loops: its graph is both directions of each pair (+ loops)."""
        coords = self.frame.coords(pos)
        pairs = radius_pairs(coords, self.radius, batch=getattr(data, "batch", None),
                             periods=self.frame.periods, backend=self.backend, sort=False)
        if self.pair_filter is not None:
            filt = self.pair_filter
            _check_data(data, "LayerPairFilter")
            if not filt._warned:  # counted in the edges of the graph, as apply() counts
                filt._warn_unseen(data, pairs, per_pair=2, loops=self.loop)
            if not geo:
                geo.append(hit_geometry(pos, data.volume_id, data.layer_id))
            pairs = pairs.index_select(1, filt.kept_pairs(geo[0], pairs[0], pairs[1]))
        return pairs, self.loop

    def forward(self, data: Data) -> Data:
        pos = getattr(data, "pos", None)
        data.edge_index = self.edges(data)
        data.edge_attr = edge_features(pos, data.edge_index)
        if getattr(data, "particle_id", None) is not None:
            data.y = edge_labels(data.particle_id, data.edge_index)
        return data

    def __repr__(self) -> str:
        extra = ""
        if self.max_num_neighbors is not None:
            extra += f", max_num_neighbors={self.max_num_neighbors}"
        if not self.undirected:
            extra += ", undirected=False"
        if self.loop:
            extra += ", loop=True"
        if self.backend != "auto":
            extra += f", backend={self.backend!r}"
        if self.pair_filter is not None:
            extra += f", pair_filter={self.pair_filter!r}"
        if self.edge_filter is not None:
            extra += f", edge_filter={self.edge_filter!r}"
        if self.union:
            extra += f", union={self.union!r}"
        return f"{type(self).__name__}(radius={self.radius:g}, frame={self.frame!r}{extra})"


def _merge(parts: list, num_nodes: int) -> Tensor:
    """Sorted set union of members' edges: a ``(pairs, loop)`` part stands for both
    directions of its pairs (plus every self-loop when ``loop``), a tensor part for its
    own edge_index."""
    if all(isinstance(part, tuple) for part in parts):
        return _symmetric_union([p for p, _ in parts], any(loop for _, loop in parts),
                                num_nodes)
    device = parts[0][0].device if isinstance(parts[0], tuple) else parts[0].device
    bits = _key_bits(max(num_nodes, 1))
    loops = any(isinstance(part, tuple) and part[1] for part in parts)
    total = sum(2 * part[0].shape[1] if isinstance(part, tuple) else part.shape[1]
                for part in parts) + (num_nodes if loops else 0)
    keys = torch.empty(total, dtype=torch.long, device=device)
    at = 0
    for part in parts:
        if isinstance(part, tuple):
            (a, b), m = part[0], part[0].shape[1]
            _pack(a, b, bits, out=keys[at:at + m])
            _pack(b, a, bits, out=keys[at + m:at + 2 * m])
            at += 2 * m
        else:
            m = part.shape[1]
            _pack(part[0], part[1], bits, out=keys[at:at + m])
            at += m
    if loops:
        ar = torch.arange(num_nodes, device=device)
        _pack(ar, ar, bits, out=keys[at:])
    return _unpack(_unique_sorted(_sort_keys(keys)), bits)


def _unique_sorted(keys: Tensor) -> Tensor:
    """Sorted keys without repeats."""
    if keys.numel() < 2:
        return keys
    first = torch.ones(keys.numel(), dtype=torch.bool, device=keys.device)
    torch.ne(keys[1:], keys[:-1], out=first[1:])
    return keys.index_select(0, _nonzero(first))


def _symmetric_union(pairs: list[Tensor], loops: bool, num_nodes: int) -> Tensor:
    """Both directions of the union of unordered ``pairs`` (+ every self-loop), sorted by
    (source, target), as PyG's coalesce would give, from two sorts of half the size.

    The pairs as ``lo < hi`` keys, sorted and deduplicated, list every node's larger
    neighbours in order; a stable sort of the same list by ``hi`` lists every node's smaller
    neighbours in order. Row ``s`` of the result is its smaller neighbours, then ``s``
    itself with ``loops``, then its larger neighbours: each part is copied to its place.
    (Sorting packed keys of twice the length costs ~1.5x as much: it leaves the cache.)
    """
    device = pairs[0].device
    n = num_nodes
    bits = _key_bits(max(n, 1))
    total = sum(p.shape[1] for p in pairs)
    keys = torch.empty(total, dtype=torch.long, device=device)
    at = 0
    for p in pairs:
        m = p.shape[1]
        _pack(torch.minimum(p[0], p[1]), torch.maximum(p[0], p[1]), bits, out=keys[at:at + m])
        at += m
    keys = _sort_keys(keys)
    if len(pairs) > 1:
        keys = _unique_sorted(keys)
    lo, hi = _unpack(keys, bits)
    # hi < 2^bits: a short radix sort, shorter still on int32 (~0.6x the time on int64)
    by_hi = torch.sort(hi.int() if n < 2 ** 31 else hi, stable=True).indices
    lo_by_hi = lo.index_select(0, by_hi)
    hi_sorted = hi.index_select(0, by_hi)
    n_up = torch.bincount(lo, minlength=n)    # larger neighbours of each node
    n_down = torch.bincount(hi, minlength=n)  # smaller neighbours
    deg = n_up + n_down + (1 if loops else 0)
    start = torch.cumsum(deg, 0) - deg
    num = int(deg.sum())
    out = torch.empty(2, num, dtype=torch.long, device=device)
    # k-th entry of a sorted list sits at start[node] + offset + (k - first[node])
    first_up = torch.cumsum(n_up, 0) - n_up
    first_down = torch.cumsum(n_down, 0) - n_down
    ar = torch.arange(keys.numel(), device=device)
    pos_down = (start - first_down).index_select(0, hi_sorted).add_(ar)
    pos_up = (start + n_down - first_up + (1 if loops else 0)).index_select(0, lo).add_(ar)
    for at, src, dst in ((pos_down, hi_sorted, lo_by_hi), (pos_up, lo, hi)):
        out[0].index_copy_(0, at, src)
        out[1].index_copy_(0, at, dst)
    if loops:
        nodes = torch.arange(n, device=device)
        out[0].index_copy_(0, start + n_down, nodes)
        out[1].index_copy_(0, start + n_down, nodes)
    return out


def union_edges(edge_indices: list[Tensor], num_nodes: int) -> Tensor:
    """Set union of several ``edge_index`` tensors on the same ``num_nodes`` nodes.

    Each directed pair (i, j) appears once, sorted by (i, j) (PyG's ``coalesce``, the order
    :func:`radius_graph` returns), so the result does not depend on the order of the inputs.
    """
    return coalesce(torch.cat(edge_indices, dim=1), num_nodes=num_nodes)


def load_graph_block(path: str) -> dict:
    """The ``graph:`` block of a YAML file (what ``gnn-jepa fit-graph`` writes as
    ``OUT/graph.yaml``): the file's ``graph`` key, or the whole file when it has none.
    Paths inside the block are used as written (relative to the working directory).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file does not hold a mapping (names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data.graph: {path} is not a file (give a graph: block, or the "
                                "path of a YAML file holding one, such as fit-graph's graph.yaml)")
    doc = yaml.safe_load(p.read_text())
    block = doc.get("graph", doc) if isinstance(doc, dict) else doc
    if not isinstance(block, dict):
        raise ValueError(f"{path}: expected a graph: block (a mapping of BuildGraph arguments), "
                         f"got {type(block).__name__}")
    return block
