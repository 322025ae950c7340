"""A learned edge filter: the graph stage's last cut, on the geometry of each hit pair.

The radius graph in a learned frame and the layer-pair filter keep nearly every true segment,
but at 1,000 simulated particles per event only ~4% of their edges are true segments (mean
degree ~37), and every later stage (encoder, edge head, track building) pays per edge. This
filter scores each remaining pair with a small MLP on the pair's geometry and keeps those at or
above a cut chosen on the fitting events so that a given share of the true segments survives
(Exa.TrkX's "filter" stage; facts, not code).

Features (:func:`pair_features`, 11 per pair, standardised with the fitting edges' mean and
standard deviation stored in the filter): the pair is oriented from the hit nearer the origin
(3-D distance, ties by hit index) to the farther one, so both directions of an edge get one
score; then inner r, z and outer r, z (m), dr, dz (100 mm), wrapped dphi (0.1 rad), dphi/dr and
dz/dr (dr clamped to >= 1 mm), the z intercept at r = 0 of the straight line through the two
hits (100 mm), and the (r, z) angle atan2(dz, dr).

Training (:func:`fit_edge_filter`): binary cross-entropy against truth segment labels
(consecutive hits of one particle) with true pairs weighted by #false / #true, Adam, random
batches of pairs of all fitting events. Cut: with ``n`` true fitting pairs and efficiency
``e``, the ``floor((1 - e) n)``-th lowest true score, so at least ``e n`` true fitting pairs
are kept (``keep``: logit >= cut).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from gnn_jepa.geometry import wrap_phi
from gnn_jepa.graph.edges import segment_labels
from gnn_jepa.graph.presets import file_digest, load_torch_artifact

__all__ = ["EdgeFilter", "NUM_FEATURES", "fit_edge_filter", "pair_features"]

FORMAT_TAG = "gnn_jepa.EdgeFilter/1"
NUM_FEATURES = 11
#: Pairs scored per chunk in :meth:`EdgeFilter.keep` (bounds memory on large graphs).
CHUNK = 1 << 20


def pair_features(pos: Tensor, edge_index: Tensor) -> Tensor:
    """[E, 11] features of each pair of ``edge_index``, the same for both directions
    (module doc)."""
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"pair_features: pos must be [N, 3], got {tuple(pos.shape)}")
    a, b = edge_index
    n = pos.shape[0]
    dist = torch.linalg.vector_norm(pos, dim=1)
    rank = torch.empty(n, dtype=torch.long, device=pos.device)
    rank[torch.argsort(dist, stable=True)] = torch.arange(n, device=pos.device)
    swap = rank[a] > rank[b]
    i, o = torch.where(swap, b, a), torch.where(swap, a, b)
    r = torch.hypot(pos[:, 0], pos[:, 1])
    phi = torch.atan2(pos[:, 1], pos[:, 0])
    z = pos[:, 2]
    dr, dz = r[o] - r[i], z[o] - z[i]
    dphi = wrap_phi(phi[o] - phi[i])
    drc = torch.where(dr >= 0, dr.clamp_min(1.0), dr.clamp_max(-1.0))
    z0 = z[i] - r[i] * dz / drc
    return torch.stack([r[i] / 1000.0, z[i] / 1000.0, r[o] / 1000.0, z[o] / 1000.0,
                        dr / 100.0, dz / 100.0, dphi / 0.1, dphi / drc.abs() * 100.0,
                        dz / drc, z0 / 100.0, torch.atan2(dz, dr)], 1)


class EdgeFilter(nn.Module):
    """Per-pair MLP score and a cut (module doc).

    Args:
        hidden: MLP width.
        num_layers: hidden layers of the MLP (>= 1).
    """

    def __init__(self, hidden: int = 64, num_layers: int = 3):
        super().__init__()
        if hidden < 1 or num_layers < 1:
            raise ValueError(f"EdgeFilter needs hidden >= 1 and num_layers >= 1, got {hidden}, {num_layers}")
        self.config = {"hidden": int(hidden), "num_layers": int(num_layers)}
        layers: list[nn.Module] = [nn.Linear(NUM_FEATURES, hidden), nn.GELU()]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(hidden, hidden), nn.GELU()]
        layers.append(nn.Linear(hidden, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(NUM_FEATURES))
        self.register_buffer("std", torch.ones(NUM_FEATURES))
        self.register_buffer("cut", torch.tensor(-math.inf))
        self.path: str | None = None
        self.digest: str | None = None

    def reset_parameters(self) -> None:
        for m in self.net:
            if isinstance(m, nn.Linear):
                m.reset_parameters()

    def forward(self, pos: Tensor, edge_index: Tensor) -> Tensor:
        """[E] logits of the pairs of ``edge_index``."""
        x = (pair_features(pos.to(self.mean.dtype), edge_index) - self.mean) / self.std
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def keep(self, pos: Tensor, edge_index: Tensor) -> Tensor:
        """[E] bool: the pairs whose logit is at or above the cut (in chunks of pairs)."""
        if self.mean.device != pos.device:
            self.to(pos.device)
        was = self.training
        self.eval()
        out = torch.cat([self(pos, edge_index[:, s:s + CHUNK]) >= self.cut
                         for s in range(0, edge_index.shape[1], CHUNK)]) if edge_index.shape[1] else \
            torch.zeros(0, dtype=torch.bool, device=edge_index.device)
        self.train(was)
        return out

    def save(self, path: str | Path, **metadata) -> None:
        """Write config, weights, statistics, cut and ``metadata`` (plain values) to ``path``."""
        torch.save({"format": FORMAT_TAG, "config": dict(self.config),
                    "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
                    "metadata": metadata}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> "EdgeFilter":
        """Read a :meth:`save` file (a path, or the name of a shipped preset).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a saved EdgeFilter (unreadable, wrong format, bad weights).
        """
        given = str(path)
        blob, path = load_torch_artifact(path, FORMAT_TAG, where="EdgeFilter.load", what="EdgeFilter")
        try:
            out = cls(**blob["config"])
            out.load_state_dict(blob["state_dict"])
        except (KeyError, TypeError, RuntimeError, ValueError) as err:
            raise ValueError(f"EdgeFilter.load: {str(path)!r}: weights do not match its config "
                             f"({type(err).__name__}: {err})") from err
        out.metadata = dict(blob.get("metadata") or {})
        out.path, out.digest = given, file_digest(path)
        return out.eval()

    def __repr__(self) -> str:
        src = f", path={self.path!r}, sha256={self.digest}" if self.path is not None else ""
        return (f"{type(self).__name__}(hidden={self.config['hidden']}, "
                f"num_layers={self.config['num_layers']}, cut={float(self.cut):.6g}{src})")


def fit_edge_filter(graphs: Sequence[tuple[object, Tensor]], *, efficiency: float = 0.995,
                    steps: int = 1500, batch_size: int = 8192, lr: float = 2e-3,
                    hidden: int = 64, num_layers: int = 3, seed: int = 0,
                    log: Callable[[str], None] | None = None) -> EdgeFilter:
    """Train an :class:`EdgeFilter` on ``(data, edge_index)`` pairs and set its cut.

    Args:
        graphs: events with ``pos``, ``particle_id`` and ``hit_order``, each with the
            candidate pairs (the graph before this filter).
        efficiency: share of the true fitting pairs at or above the cut, in (0, 1].
        steps, batch_size, lr: Adam on random batches of pairs.
        hidden, num_layers: the MLP.
        seed: initialisation and batch order (the global RNG is not touched).
        log: called with a progress line four times.

    Raises:
        ValueError: a bad argument, or no true pair among the fitting pairs.
    """
    if not 0.0 < efficiency <= 1.0:
        raise ValueError(f"fit_edge_filter: efficiency must be in (0, 1], got {efficiency}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"fit_edge_filter: steps and batch_size must be >= 1, got {steps}, {batch_size}")
    x = torch.cat([pair_features(d.pos.float(), ei) for d, ei in graphs])
    y = torch.cat([segment_labels(d.particle_id, d.hit_order, ei) for d, ei in graphs])
    n_true = int(y.sum())
    if n_true == 0:
        raise ValueError("fit_edge_filter: no true segment among the fitting pairs")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        filt = EdgeFilter(hidden=hidden, num_layers=num_layers)
    filt.mean.copy_(x.mean(0))
    filt.std.copy_(x.std(0).clamp_min(1e-6))
    xs = (x - filt.mean) / filt.std
    pos_weight = torch.tensor(max((len(y) - n_true) / n_true, 1.0))
    opt = torch.optim.Adam(filt.net.parameters(), lr=lr)
    filt.train()
    for step in range(steps):
        idx = torch.randint(0, len(y), (min(batch_size, len(y)),), generator=gen)
        loss = nn.functional.binary_cross_entropy_with_logits(
            filt.net(xs[idx]).squeeze(-1), y[idx], pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log is not None and (step == steps - 1 or step % max(steps // 4, 1) == 0):
            log(f"edge filter step={step} loss={loss.item():.4g}")
    filt.eval()
    with torch.no_grad():  # through forward(), as keep() scores them
        scores = torch.cat([filt(d.pos, ei) for d, ei in graphs])
        true_scores = torch.sort(scores[y > 0]).values
    drop = int(math.floor((1.0 - efficiency) * n_true + 1e-9))
    filt.cut.fill_(float(true_scores[min(drop, n_true - 1)]))
    return filt
