"""Graph-transformer encoder: per-hit embeddings from a hit graph.

Each block is pre-norm residual (the layout of Particle-JEPA's encoder):

.. math::

    h &\\leftarrow h + \\mathrm{Drop}\\big(\\mathrm{TransformerConv}(\\mathrm{LN}(h), E, e)\\big) \\\\
    h &\\leftarrow h + \\mathrm{Drop}\\big(\\mathrm{MHA}_{\\text{graph}}(\\mathrm{LN}(h))\\big)
        \\quad (\\texttt{attention="global"} \\text{ only}) \\\\
    h &\\leftarrow h + \\mathrm{Drop}\\big(W_2\\,\\mathrm{GELU}(W_1\\,\\mathrm{LN}(h))\\big)

with an input projection ``Linear(d_input, d_model)`` before the blocks and
``LN -> Linear(d_model, d_embedding)`` after them. TransformerConv attends over graph
neighbours only, so the cost of the local variant is O(N d^2 + E d): linear in hits and
edges. The global variant adds dense attention over all hits of each graph, O(N_g^2 d) per
graph, and is therefore refused for graphs above ``max_global_nodes`` hits.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor, nn
from torch_geometric.nn import TransformerConv
from torch_geometric.utils import to_dense_batch

from gnn_jepa.config import merge_config

ATTENTION_KINDS = ("local", "global")


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder's hyperparameters: one block shared by pretraining, fine-tuning and checkpoints.

    A nested ``encoder:`` block in configs. Fine-tuning must use the pretrained encoder's
    config (:mod:`gnn_jepa.models.checkpoints` checks it). ``d_input`` is the number of hit
    features; the CLI sets it from ``data.features``.

    Args:
        d_input: hit features in.
        d_model: width of the blocks.
        d_embedding: output embedding size.
        n_layers: TransformerConv blocks.
        heads: attention heads per block.
        dropout: dropout on every residual branch.
        d_edge: edge features (0: none).
        attention: ``"local"`` (graph neighbours only, linear cost) or ``"global"``.
    """

    d_input: int = 4
    d_model: int = 64
    d_embedding: int = 32
    n_layers: int = 3
    heads: int = 4
    dropout: float = 0.0
    d_edge: int = 5
    attention: str = "local"

    @classmethod
    def coerce(cls, value: Union["EncoderConfig", Mapping[str, Any], None]) -> "EncoderConfig":
        """An :class:`EncoderConfig` from itself, a mapping of some of its fields (the others
        default), or ``None`` (defaults). Unknown keys are an error that names them."""
        return merge_config(value, cls(), "encoder")

    def as_dict(self) -> dict:
        return asdict(self)

    def build(self) -> "GraphTransformerEncoder":
        """A freshly initialised encoder (draws from torch's global RNG)."""
        return GraphTransformerEncoder(**asdict(self))


class _FeedForward(nn.Sequential):
    """Position-wise MLP ``Linear(d, m d) -> GELU -> Linear(m d, d)``."""

    def __init__(self, d_model: int, ff_mult: int) -> None:
        super().__init__(
            nn.Linear(d_model, ff_mult * d_model),
            nn.GELU(),
            nn.Linear(ff_mult * d_model, d_model),
        )


class GraphTransformerEncoder(nn.Module):
    """Stack of pre-norm residual TransformerConv blocks mapping hits to embeddings.

    Args:
        d_input: Number of node features (``data.x.size(1)``).
        d_model: Hidden width; must be divisible by ``heads`` (each head has
            ``d_model // heads`` channels, heads are concatenated).
        d_embedding: Output embedding size.
        n_layers: Number of residual blocks.
        heads: Attention heads per block (local and, if used, global attention).
        dropout: Dropout probability on every residual branch (and on the dense
            attention weights of the global variant).
        d_edge: Edge feature size fed to TransformerConv (added to keys and values);
            0 disables edge features.
        ff_mult: Hidden width multiplier of the feed-forward sublayer.
        attention: ``"local"`` (neighbour attention only, linear cost) or ``"global"``
            (adds dense self-attention over each whole graph; small events only).
        max_global_nodes: Largest graph, in hits, the global variant accepts.

    Raises:
        ValueError: On non-positive sizes, ``d_model % heads != 0`` or an unknown
            ``attention``.
    """

    def __init__(
        self,
        d_input: int,
        d_model: int = 64,
        d_embedding: int = 32,
        n_layers: int = 3,
        heads: int = 4,
        dropout: float = 0.0,
        d_edge: int = 5,
        ff_mult: int = 2,
        attention: str = "local",
        max_global_nodes: int = 4096,
    ) -> None:
        super().__init__()
        for name, value in (
            ("d_input", d_input),
            ("d_model", d_model),
            ("d_embedding", d_embedding),
            ("n_layers", n_layers),
            ("heads", heads),
            ("ff_mult", ff_mult),
            ("max_global_nodes", max_global_nodes),
        ):
            if value < 1:
                raise ValueError(f"GraphTransformerEncoder: {name} must be >= 1, got {value}")
        if d_edge < 0:
            raise ValueError(f"GraphTransformerEncoder: d_edge must be >= 0, got {d_edge}")
        if d_model % heads != 0:
            raise ValueError(
                f"GraphTransformerEncoder: d_model={d_model} is not divisible by heads={heads}"
            )
        if attention not in ATTENTION_KINDS:
            raise ValueError(
                f"GraphTransformerEncoder: attention={attention!r}; choose from {ATTENTION_KINDS}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GraphTransformerEncoder: dropout must be in [0, 1), got {dropout}")

        self.d_input = d_input
        self.d_model = d_model
        self.d_embedding = d_embedding
        self.n_layers = n_layers
        self.heads = heads
        self.dropout = dropout
        self.d_edge = d_edge
        self.ff_mult = ff_mult
        self.attention = attention
        self.max_global_nodes = max_global_nodes

        self.input_proj = nn.Linear(d_input, d_model)
        # root_weight=True: TransformerConv has no self-loops, so the root term W_1 LN(h_i)
        # is a node's only view of itself inside the branch (and an isolated hit still gets
        # a learned update). It is not redundant with the residual, which bypasses the LN.
        self.convs = nn.ModuleList(
            TransformerConv(
                d_model,
                d_model // heads,
                heads=heads,
                concat=True,
                edge_dim=d_edge if d_edge > 0 else None,
                root_weight=True,
            )
            for _ in range(n_layers)
        )
        self.conv_norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        if attention == "global":
            self.global_attns = nn.ModuleList(
                nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
                for _ in range(n_layers)
            )
            self.global_norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        else:
            self.global_attns = None
            self.global_norms = None
        self.ff_norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.ffs = nn.ModuleList(_FeedForward(d_model, ff_mult) for _ in range(n_layers))
        self.drop = nn.Dropout(dropout)
        self.out_norm = nn.LayerNorm(d_model)
        self.out_proj = nn.Linear(d_model, d_embedding)

    def reset_parameters(self) -> None:
        """Re-initialise every learnable parameter (fresh draws from the global RNG)."""
        self.input_proj.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()
        for ln in (*self.conv_norms, *self.ff_norms, self.out_norm):
            ln.reset_parameters()
        for ff in self.ffs:
            ff[0].reset_parameters()
            ff[2].reset_parameters()
        if self.global_attns is not None:
            for attn in self.global_attns:
                # MultiheadAttention._reset_parameters re-draws the in-projection and zeroes
                # the out-projection bias but leaves the out-projection weight as it was.
                attn.out_proj.reset_parameters()
                attn._reset_parameters()
            for ln in self.global_norms:
                ln.reset_parameters()
        self.out_proj.reset_parameters()

    def _dense_layout(self, n: int, batch: Optional[Tensor], device: torch.device) -> Tensor:
        """Check graph sizes for the global variant and return a sorted batch vector."""
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=device)
        elif batch.shape != (n,):
            raise ValueError(
                f"GraphTransformerEncoder: batch has shape {tuple(batch.shape)}, expected ({n},)"
            )
        if n > 1 and bool((batch[1:] < batch[:-1]).any()):
            raise ValueError("GraphTransformerEncoder: batch vector must be sorted (PyG layout)")
        sizes = torch.bincount(batch)
        largest = int(sizes.max()) if sizes.numel() else 0
        if largest > self.max_global_nodes:
            graph = int(sizes.argmax())
            raise ValueError(
                f"GraphTransformerEncoder(attention='global'): graph {graph} has {largest} hits, "
                f"above max_global_nodes={self.max_global_nodes}; dense attention is O(N^2) - "
                "use attention='local' for full events"
            )
        return batch

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Optional[Tensor] = None,
        batch: Optional[Tensor] = None,
    ) -> Tensor:
        """Embed every hit.

        Args:
            x: Node features [N, d_input].
            edge_index: Directed edges [2, E] (source row 0 -> target row 1); messages
                flow from source to target, so pass both directions for an undirected graph.
            edge_attr: Edge features [E, d_edge]; required when ``d_edge > 0``.
            batch: Graph index of each node [N] (sorted); only the global variant reads
                it (local attention never crosses graphs since no edge does).

        Returns:
            Embeddings [N, d_embedding].
        """
        if x.dim() != 2 or x.size(1) != self.d_input:
            raise ValueError(
                f"GraphTransformerEncoder: x has shape {tuple(x.shape)}, expected [N, {self.d_input}]"
            )
        if self.d_edge > 0:
            if edge_attr is None:
                raise ValueError(
                    f"GraphTransformerEncoder: d_edge={self.d_edge} but edge_attr is None "
                    "(build the encoder with d_edge=0 to use no edge features)"
                )
            if edge_attr.dim() != 2 or edge_attr.size(1) != self.d_edge:
                raise ValueError(
                    f"GraphTransformerEncoder: edge_attr has shape {tuple(edge_attr.shape)}, "
                    f"expected [E, {self.d_edge}]"
                )
        else:
            # No edge projection exists: silently dropping features would hide a config error.
            if edge_attr is not None:
                raise ValueError(
                    "GraphTransformerEncoder: edge_attr given but d_edge=0; set d_edge to "
                    f"{edge_attr.size(-1)} to use it"
                )

        dense_batch = None
        if self.global_attns is not None:
            dense_batch = self._dense_layout(x.size(0), batch, x.device)

        h = self.input_proj(x)
        for i in range(self.n_layers):
            h = h + self.drop(self.convs[i](self.conv_norms[i](h), edge_index, edge_attr))
            if self.global_attns is not None:
                hd, mask = to_dense_batch(self.global_norms[i](h), dense_batch)
                out, _ = self.global_attns[i](
                    hd, hd, hd, key_padding_mask=~mask, need_weights=False
                )
                h = h + self.drop(out[mask])
            h = h + self.drop(self.ffs[i](self.ff_norms[i](h)))
        return self.out_proj(self.out_norm(h))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(d_input={self.d_input}, d_model={self.d_model}, "
            f"d_embedding={self.d_embedding}, n_layers={self.n_layers}, heads={self.heads}, "
            f"dropout={self.dropout}, d_edge={self.d_edge}, ff_mult={self.ff_mult}, "
            f"attention={self.attention!r})"
        )
