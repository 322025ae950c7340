r"""The JEPA predictor: message passing over context hits and target-cell queries.

Nodes are the context hits (their context-encoder embeddings) and one query node per target
cell. A query starts as

.. math::
    q_c = t_\text{mask} + \phi_\text{pos}(g(c)) + \phi_\text{region}(d_{k(c)})

with a learned mask token :math:`t_\text{mask}`, the geometric features :math:`g(c)` of the
cell centre and the descriptor :math:`d_k` of its target region; it never sees the target
hits themselves (hits are only coordinates: showing them could hand over the answer). Edges:
the context subgraph's own edges, each query's ``k`` nearest context hits (same event only,
in the position feature space) and all query pairs of one region (cell queries carry only
fixed cell centres, so linking them shows nothing of the masked hits). ``n_layers`` pre-norm
TransformerConv blocks then map each query to a predicted target embedding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import TransformerConv


@dataclass(frozen=True)
class PredictorConfig:
    """What a user tunes of the :class:`CellPredictor` (a nested ``predictor:`` block in configs).

    Args:
        d_model: width of the predictor (narrower than the encoder).
        layers: number of TransformerConv blocks.
        heads: attention heads (``d_model`` must be divisible by them).
        knn: context hits connected to each query.
    """

    d_model: int = 48
    layers: int = 3
    heads: int = 4
    knn: int = 16

    def build(self, d_embedding: int, d_descriptor: int) -> "CellPredictor":
        """The predictor for encoders of output size ``d_embedding``."""
        return CellPredictor(d_embedding, self.d_model, self.layers, self.heads,
                             d_descriptor=d_descriptor, knn=self.knn)


def position_features(r: Tensor, phi: Tensor, eta: Tensor) -> Tensor:
    """[N, 4] O(1) position features: (r / 1000 mm, cos phi, sin phi, eta / 3).

    cos/sin make phi continuous across +-pi, so Euclidean distances in this space need
    no wrap-around.
    """
    return torch.stack([r / 1000.0, torch.cos(phi), torch.sin(phi), eta / 3.0], dim=-1)


def knn_bipartite(query: Tensor, query_batch: Tensor, ref: Tensor, ref_batch: Tensor,
                  k: int, chunk: int = 4096) -> Tensor:
    """For every query, its ``k`` nearest reference points of the same graph (exact).

    Returns edge_index [2, E] with row = reference index (source), col = query index (target).
    Queries are processed in chunks so the distance matrix stays ``chunk x N_ref``.
    """
    if query.numel() == 0 or ref.numel() == 0 or k <= 0:
        return torch.empty(2, 0, dtype=torch.long, device=query.device)
    k = min(k, ref.size(0))
    rows, cols = [], []
    for start in range(0, query.size(0), chunk):
        q = query[start:start + chunk]
        d = torch.cdist(q, ref)
        d = d.masked_fill(query_batch[start:start + chunk, None] != ref_batch[None, :], float("inf"))
        dist, idx = d.topk(k, dim=1, largest=False)
        keep = torch.isfinite(dist)
        qi = torch.arange(start, start + q.size(0), device=query.device)[:, None].expand_as(idx)
        rows.append(idx[keep])
        cols.append(qi[keep])
    return torch.stack([torch.cat(rows), torch.cat(cols)])


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, d_edge: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.conv = TransformerConv(d, d // heads, heads=heads, edge_dim=d_edge, dropout=dropout)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        h = h + self.conv(self.norm1(h), edge_index, edge_attr)
        return h + self.ff(self.norm2(h))


class CellPredictor(nn.Module):
    """Predicts target-cell embeddings from context embeddings.

    Args:
        d_embedding: embedding size of the encoders (input and output).
        d_predictor: width of the predictor (narrower than the encoder).
        n_layers: number of TransformerConv blocks.
        heads: attention heads.
        d_descriptor: size of a region descriptor.
        knn: context hits connected to each query.
        dropout: attention dropout.

    The attention score of sender :math:`j` at receiver :math:`i` is
    :math:`(W_q h_i)^\top (W_k h_j + W_e e_{ij})` with :math:`e_{ij}` the offset of their
    position features.
    """

    def __init__(self, d_embedding: int, d_predictor: int = 48, n_layers: int = 3, heads: int = 4,
                 d_descriptor: int = 11, knn: int = 16, dropout: float = 0.0):
        super().__init__()
        if d_predictor % heads:
            raise ValueError(f"d_predictor={d_predictor} must be divisible by heads={heads}")
        self.d_embedding, self.d_predictor, self.knn = d_embedding, d_predictor, knn
        self.n_layers, self.heads, self.d_descriptor = n_layers, heads, d_descriptor
        self.context_in = nn.Linear(d_embedding, d_predictor)
        self.pos_in = nn.Sequential(nn.Linear(4, d_predictor), nn.GELU(), nn.Linear(d_predictor, d_predictor))
        self.region_in = nn.Sequential(nn.Linear(d_descriptor, d_predictor), nn.GELU(),
                                       nn.Linear(d_predictor, d_predictor))
        self.mask_token = nn.Parameter(torch.zeros(d_predictor))
        self.blocks = nn.ModuleList(_Block(d_predictor, heads, 4, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_predictor)
        self.out = nn.Linear(d_predictor, d_embedding)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, context_emb: Tensor, context_pos: Tensor, context_batch: Tensor,
                context_edge_index: Tensor, query_pos: Tensor, query_desc: Tensor,
                query_batch: Tensor, query_region: Tensor) -> Tensor:
        """Predict one embedding per query.

        Args:
            context_emb: [Nc, d_embedding] context-encoder output.
            context_pos: [Nc, 4] :func:`position_features` of the context hits.
            context_batch: [Nc] graph index.
            context_edge_index: [2, Ec] edges among context hits (indices into the context).
            query_pos: [Q, 4] position features of the query cells' centres.
            query_desc: [Q, d_descriptor] descriptor of each query's region.
            query_batch: [Q] graph index. query_region: [Q] region index.

        Returns:
            [Q, d_embedding] predicted target embeddings.
        """
        nc = context_emb.size(0)
        h_ctx = self.context_in(context_emb) + self.pos_in(context_pos)
        h_q = self.mask_token + self.pos_in(query_pos) + self.region_in(query_desc)
        h = torch.cat([h_ctx, h_q])
        pos = torch.cat([context_pos, query_pos])
        # context -> query: k nearest context hits of the same event
        cq = self.context_query_edges(query_pos, query_batch, context_pos, context_batch)
        cq = torch.stack([cq[0], cq[1] + nc])
        # query <-> query: all pairs inside one region (regions hold few cells)
        edge_index = torch.cat([context_edge_index, cq, _pairs_within_groups(query_region) + nc], dim=1)
        edge_attr = pos[edge_index[1]] - pos[edge_index[0]]
        for block in self.blocks:
            h = block(h, edge_index, edge_attr)
        return self.out(self.norm(h[nc:]))

    def context_query_edges(self, query_pos: Tensor, query_batch: Tensor, context_pos: Tensor,
                            context_batch: Tensor) -> Tensor:
        """[2, E] edges (context hit -> query) to each query's ``knn`` nearest context hits of
        its event, distances in :func:`position_features`."""
        return knn_bipartite(query_pos, query_batch, context_pos, context_batch, self.knn)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(d_embedding={self.d_embedding}, "
                f"d_predictor={self.d_predictor}, n_layers={self.n_layers}, heads={self.heads}, "
                f"knn={self.knn})")


def _pairs_within_groups(group: Tensor) -> Tensor:
    """Directed edges between all distinct members of each group (group ids need not be sorted)."""
    if group.numel() == 0:
        return torch.empty(2, 0, dtype=torch.long, device=group.device)
    order = torch.argsort(group, stable=True)
    g = group[order]
    _, counts = torch.unique_consecutive(g, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    # for each member, pair with every member of its group
    size = counts.repeat_interleave(counts)
    src_local = torch.arange(g.numel(), device=g.device)
    src = src_local.repeat_interleave(size)
    first = starts.repeat_interleave(counts).repeat_interleave(size)
    offs = torch.arange(size.sum(), device=g.device) - torch.repeat_interleave(torch.cumsum(size, 0) - size, size)
    dst = first + offs
    keep = src != dst
    return torch.stack([order[src[keep]], order[dst[keep]]])
