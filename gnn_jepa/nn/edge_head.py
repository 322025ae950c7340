"""Edge scoring head: is this graph edge a true track segment?"""
from __future__ import annotations

import torch
from torch import Tensor, nn


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

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        """Return one logit per edge, [E]."""
        hi, hj = h[edge_index[0]], h[edge_index[1]]
        parts = [hi, hj, (hi - hj).abs(), hi * hj]
        if self.d_edge:
            parts.append(edge_attr)
        return self.mlp(torch.cat(parts, dim=-1)).squeeze(-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(d_embedding={self.d_embedding}, d_edge={self.d_edge}, hidden={self.hidden})"
