"""Edge scoring head: is this graph edge a true track segment?"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from gnn_jepa.nn.layers import MessagePassingHead, mlp
from gnn_jepa.nn.segment_pairs import SegmentPairEdgeHead


class EdgeHead(nn.Module):
    r"""MLP on the two hits' embeddings and the edge features.

    .. math::
        s_{ij} = \mathrm{MLP}([h_i,\ h_j,\ |h_i - h_j|,\ h_i \odot h_j,\ e_{ij}])

    Args:
        d_embedding: hit embedding size.
        d_edge: edge feature size (0: none).
        hidden: hidden width; ``0`` makes the head linear.
    """

    def __init__(self, d_embedding: int, d_edge: int = 5, hidden: int = 64, n_layers: int = 2):
        super().__init__()
        self.d_embedding, self.d_edge, self.hidden = d_embedding, d_edge, hidden
        d_in = 4 * d_embedding + d_edge
        if hidden <= 0:
            self.mlp = nn.Linear(d_in, 1)
        else:
            layers, d = [], d_in
            for _ in range(n_layers):
                layers += [nn.Linear(d, hidden), nn.GELU()]
                d = hidden
            layers.append(nn.Linear(d, 1))
            self.mlp = nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                pos: Tensor | None = None) -> Tensor:
        """Return one logit per edge, [E] (``pos`` is not used)."""
        hi, hj = h[edge_index[0]], h[edge_index[1]]
        parts = [hi, hj, (hi - hj).abs(), hi * hj]
        if self.d_edge:
            parts.append(edge_attr)
        return self.mlp(torch.cat(parts, dim=-1)).squeeze(-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(d_embedding={self.d_embedding}, d_edge={self.d_edge}, hidden={self.hidden})"


class InteractionEdgeHead(MessagePassingHead):
    r"""Edge scoring by an interaction network: edges and hits update each other.

    An MLP head judges each edge alone. A track segment is true when it *continues* into the
    neighbouring segments (a helix through three hits), so here edges exchange information
    through their hits for ``rounds`` rounds before scoring (the edge-classifier design of
    GNN-based tracking pipelines, e.g. Exa.TrkX's interaction network). With
    :math:`n_i^0 = W h_i` and :math:`e_{ij}^0 = \mathrm{MLP}([h_i, h_j, a_{ij}])`,

    .. math::
        n_i^{t+1} &= n_i^t + \mathrm{MLP}_n\big(\big[\mathrm{LN}(n_i^t),
            \overline{e}_{\to i}^t, \overline{e}_{i \to}^t\big]\big) \\
        e_{ij}^{t+1} &= e_{ij}^t + \mathrm{MLP}_e\big(\big[n_i^{t+1}, n_j^{t+1},
            \mathrm{LN}(e_{ij}^t)\big]\big) \\
        s_{ij} &= w^\top \mathrm{LN}(e_{ij}^T) + b

    where :math:`\overline{e}_{\to i}` and :math:`\overline{e}_{i \to}` are the means over the
    hit's incoming and outgoing edges (means, not sums, keep the scale the same from 4 to 40
    edges per hit). Cost is linear in hits and edges per round.

    Args:
        d_embedding: hit embedding size.
        d_edge: edge feature size (0: none).
        hidden: width of the hit and edge states and of every MLP.
        rounds: message-passing rounds :math:`T` (0: the initial edge MLP alone).
    """

    def __init__(self, d_embedding: int, d_edge: int = 5, hidden: int = 64, rounds: int = 3):
        super().__init__()
        if hidden <= 0 or rounds < 0:
            raise ValueError(f"InteractionEdgeHead needs hidden > 0 and rounds >= 0, got {hidden}, {rounds}")
        self.d_embedding, self.d_edge, self.hidden, self.rounds = d_embedding, d_edge, hidden, rounds
        self.node_in = nn.Linear(d_embedding, hidden)
        self.edge_in = mlp(2 * d_embedding + d_edge, hidden, hidden)
        self.node_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(rounds))
        self.edge_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(rounds))
        self.node_mlps = nn.ModuleList(mlp(3 * hidden, hidden, hidden) for _ in range(rounds))
        self.edge_mlps = nn.ModuleList(mlp(3 * hidden, hidden, hidden) for _ in range(rounds))
        self._add_output(hidden)

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                pos: Tensor | None = None) -> Tensor:
        """Return one logit per edge, [E] (``pos`` is not used)."""
        src, dst = edge_index
        n = self.node_in(h)
        parts = [h[src], h[dst]] + ([edge_attr] if self.d_edge else [])
        e = self.edge_in(torch.cat(parts, dim=-1))
        rounds = zip(self.node_norms, self.edge_norms, self.node_mlps, self.edge_mlps)
        for node_norm, edge_norm, node_mlp, edge_mlp in rounds:
            incoming = scatter(e, dst, dim=0, dim_size=h.size(0), reduce="mean")
            outgoing = scatter(e, src, dim=0, dim_size=h.size(0), reduce="mean")
            n = n + node_mlp(torch.cat([node_norm(n), incoming, outgoing], dim=-1))
            e = e + edge_mlp(torch.cat([n[src], n[dst], edge_norm(e)], dim=-1))
        return self.logits(e)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(d_embedding={self.d_embedding}, d_edge={self.d_edge}, "
                f"hidden={self.hidden}, rounds={self.rounds})")


#: Edge heads by name (``HeadConfig.kind``).
EDGE_HEADS = ("mlp", "interaction", "segment_pairs")


@dataclass(frozen=True)
class HeadConfig:
    """The edge head of track finding (a nested ``head:`` block in configs).

    Args:
        kind: ``"mlp"`` (:class:`EdgeHead`: each edge judged alone), ``"interaction"``
            (:class:`InteractionEdgeHead`: edges and hits exchange messages first) or
            ``"segment_pairs"`` (:class:`~gnn_jepa.nn.segment_pairs.SegmentPairEdgeHead`:
            segments exchange messages with their continuations through the shared hit).
        hidden: hidden width.
        layers: MLP depth (``mlp`` only).
        rounds: message-passing rounds (``interaction``, ``segment_pairs``).
        pairs_per_segment: continuations kept per segment and direction (``segment_pairs``).
    """

    kind: str = "mlp"
    hidden: int = 64
    layers: int = 2
    rounds: int = 3
    pairs_per_segment: int = 4

    def __post_init__(self) -> None:
        if self.kind not in EDGE_HEADS:
            raise ValueError(f"head.kind must be one of {EDGE_HEADS}, got {self.kind!r}")

    def build(self, d_embedding: int, d_edge: int) -> nn.Module:
        if self.kind == "mlp":
            return EdgeHead(d_embedding, d_edge, self.hidden, self.layers)
        if self.kind == "interaction":
            return InteractionEdgeHead(d_embedding, d_edge, self.hidden, self.rounds)
        return SegmentPairEdgeHead(d_embedding, self.hidden, self.rounds, self.pairs_per_segment)
