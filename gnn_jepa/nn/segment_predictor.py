r"""The predictor of segment-level JEPA: target segments' states from the context's segments.

Segment-level JEPA (:class:`~gnn_jepa.models.segment_jepa.SegmentJEPA`) hides the hits of
some target regions, runs the segment-pair trunk on the rest (the context) and asks this
predictor for the state that the EMA trunk, run on the whole event, gives each *target
segment*. The predictor is told where a target segment lies (its two hits' positions, which
are the tracker's input anyway) and nothing of the other target hits: the state it must
predict depends on which track the segment belongs to, which it can only learn by following
the context's tracks up to the segment.

Nodes are the context segments (their context-trunk states) and one query per target segment.
A query starts as

.. math::
    q_s = t_\text{mask} + \phi_\text{seg}(g_s) + \phi_\text{region}(d_{k(s)})

with a learned mask token, the segment's geometry :math:`g_s` (:func:`segment_features` and
both hits' :func:`~gnn_jepa.nn.predictor.position_features`) and its target region's
descriptor. Each query is linked to its ``knn`` nearest context segments of the same event
(segment midpoints in position-feature space); a link carries the geometry of the virtual
chain the two segments would form (:func:`link_geometry`), so "does this context segment lead
to that target segment" is at hand. ``rounds`` updates follow:

.. math::
    m_{js} &= \mathrm{MLP}_m\big([c_j, q_s, \ell_{js}]\big) \\
    q_s &\leftarrow q_s + \mathrm{MLP}_q\big([\mathrm{LN}(q_s), \max_j m_{js}, \overline{m}_{js}]\big)

and the prediction is :math:`W\,\mathrm{LN}(q_s)`. Queries never exchange messages: linked,
they would see every target hit and could rebuild the target trunk without the context.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gnn_jepa.nn.layers import mlp
from gnn_jepa.nn.predictor import knn_bipartite, position_features
from gnn_jepa.nn.segment_pairs import (SEGMENT_FEATURES, _counts, _mlp_of_sum, _scatter_max,
                                       _scatter_sum, chain_geometry, segment_features)

#: Features of one context -> query link (see :func:`link_geometry`).
LINK_FEATURES = 17


def _position(p: Tensor) -> Tensor:
    r = torch.hypot(p[:, 0], p[:, 1])
    phi = torch.atan2(p[:, 1], p[:, 0])
    eta = torch.asinh(p[:, 2] / r.clamp_min(1e-6))
    return position_features(r, phi, eta)


def segment_query_features(a: Tensor, b: Tensor) -> Tensor:
    """[S, 15] geometry of segments ``a -> b``: :func:`segment_features` and both hits'
    position features."""
    return torch.cat([segment_features(a, b), _position(a), _position(b)], 1)


def link_geometry(ca: Tensor, cb: Tensor, qa: Tensor, qb: Tensor) -> Tensor:
    """[L, 17] geometry of links from context segments ``ca -> cb`` to query segments
    ``qa -> qb`` (hit positions, mm): the :func:`chain_geometry` of the two triplets of the
    four-hit chain the segments would form, ordered outwards (context first when its midpoint
    lies at the smaller radius, else the query), a flag (+1: context inside, -1: outside) and
    the offset between the two midpoints in position-feature space."""
    mid_c, mid_q = _position((ca + cb) / 2), _position((qa + qb) / 2)
    inside = (mid_c[:, 0] <= mid_q[:, 0])[:, None]
    # chain p0 -> p1 -> p2 -> p3, outwards
    p0 = torch.where(inside, ca, qa)
    p1 = torch.where(inside, cb, qb)
    p2 = torch.where(inside, qa, ca)
    p3 = torch.where(inside, qb, cb)
    flag = inside.to(ca.dtype) * 2 - 1
    return torch.cat([chain_geometry(p0, p1, p2), chain_geometry(p1, p2, p3), flag, mid_q - mid_c], 1)


@dataclass(frozen=True)
class SegmentPredictorConfig:
    """What a user tunes of the :class:`SegmentPredictor` (a nested ``predictor:`` block).

    Args:
        hidden: width of the query states and MLPs.
        rounds: query updates.
        knn: context segments linked to each query.
        link: ``"chain"`` (links carry :func:`link_geometry`) or ``"offset"`` (only the flag
            and the midpoints' offset: the predictor must get the tracks' directions from the
            context states, not from hand-made turning angles).
    """

    hidden: int = 64
    rounds: int = 3
    knn: int = 16
    link: str = "chain"

    def build(self, d_state: int, d_descriptor: int, d_out: int | None = None) -> "SegmentPredictor":
        return SegmentPredictor(d_state, self.hidden, self.rounds, self.knn, d_descriptor,
                                d_out=d_out, link=self.link)


class SegmentPredictor(nn.Module):
    """Predicts target segments' trunk states from context segments' states (module doc).

    Args:
        d_state: width of the trunk's segment states (input and output).
        hidden: width of the query states.
        rounds: query updates.
        knn: context segments linked to each query.
        d_descriptor: size of a target region's descriptor.
        d_out: size of a prediction (default ``d_state``).
        link: ``"chain"`` or ``"offset"`` (:class:`SegmentPredictorConfig`).

    A query may be a single hit (``query_a == query_b``): a segment of length 0.
    """

    def __init__(self, d_state: int, hidden: int = 64, rounds: int = 3, knn: int = 16,
                 d_descriptor: int = 9, d_out: int | None = None, link: str = "chain"):
        super().__init__()
        if hidden <= 0 or rounds < 1 or knn < 1:
            raise ValueError(f"SegmentPredictor needs hidden > 0, rounds >= 1, knn >= 1, got "
                             f"{hidden}, {rounds}, {knn}")
        if link not in ("chain", "offset"):
            raise ValueError(f"predictor.link must be 'chain' or 'offset', got {link!r}")
        self.d_state, self.hidden, self.rounds, self.knn = d_state, hidden, rounds, knn
        self.d_descriptor, self.link = d_descriptor, link
        self.d_out = d_state if d_out is None else d_out
        d_geo = SEGMENT_FEATURES + 8
        self.context_in = nn.Linear(d_state, hidden)
        self.geometry_in = mlp(d_geo, hidden, hidden)
        self.region_in = mlp(d_descriptor, hidden, hidden)
        self.mask_token = nn.Parameter(torch.zeros(hidden))
        self.message_mlps = nn.ModuleList(mlp(2 * hidden + LINK_FEATURES, hidden, hidden)
                                          for _ in range(rounds))
        self.query_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(rounds))
        self.query_mlps = nn.ModuleList(mlp(3 * hidden, hidden, hidden) for _ in range(rounds))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, self.d_out)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm)):
                m.reset_parameters()
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, context_state: Tensor, context_a: Tensor, context_b: Tensor,
                context_batch: Tensor, query_a: Tensor, query_b: Tensor, query_batch: Tensor,
                query_desc: Tensor) -> Tensor:
        """Predict one state per query segment.

        Args:
            context_state: [Sc, d_state] context segments' trunk states.
            context_a, context_b: [Sc, 3] their inner and outer hits (mm).
            context_batch: [Sc] graph index of each context segment.
            query_a, query_b: [Q, 3] inner and outer hits of the target segments (mm).
            query_batch: [Q] graph index. query_desc: [Q, d_descriptor] region descriptors.

        Returns:
            [Q, d_out] predicted states.
        """
        q = (self.mask_token + self.geometry_in(segment_query_features(query_a, query_b))
             + self.region_in(query_desc))
        c = self.context_in(context_state) + self.geometry_in(segment_query_features(context_a, context_b))
        links = knn_bipartite(_position((query_a + query_b) / 2), query_batch,
                              _position((context_a + context_b) / 2), context_batch, self.knn,
                              chunk=512)
        src, dst = links
        geo = link_geometry(context_a[src], context_b[src], query_a[dst], query_b[dst]).to(q.dtype)
        if self.link == "offset":  # withhold the turning angles of the virtual chain
            geo = torch.cat([torch.zeros_like(geo[:, :12]), geo[:, 12:]], 1)
        nq = q.shape[0]
        n_in, g_in = _counts(dst, nq, q)
        for t in range(self.rounds):
            m = _mlp_of_sum(self.message_mlps[t], [(c, src), (q, dst), (geo, None)])
            q = q + self.query_mlps[t](torch.cat([
                self.query_norms[t](q), _scatter_max(m, dst, nq, g_in),
                _scatter_sum(m, dst, nq) / n_in], 1))
        return self.out(self.out_norm(q))

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(d_state={self.d_state}, hidden={self.hidden}, "
                f"rounds={self.rounds}, knn={self.knn}, d_out={self.d_out}, link={self.link!r})")
