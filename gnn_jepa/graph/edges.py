"""Edge features, edge truth labels, true track segments and graph-construction metrics.

Conventions: ``edge_index[0]`` is the source ``j`` and ``edge_index[1]`` the target ``i``
(PyG ``source_to_target``); an edge's features are target minus source. A *true segment*
joins two consecutive hits of one particle (``hit_order`` k -> k + 1, noise excluded).
Metric definitions follow DESIGN.md: edge efficiency = fraction of true segments present in
the graph in either direction; purity = fraction of graph edges joining two hits of the
same (non-noise) particle.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from gnn_jepa.geometry import cylindrical, wrap_phi

__all__ = ["EDGE_FEATURES", "EDGE_FEATURE_SCALES", "edge_features", "edge_labels", "segment_labels",
           "graph_truth_metrics", "true_segments"]

#: Edge feature columns, in order.
EDGE_FEATURES = ("dr", "dphi", "dz", "deta", "dist")
#: Scale dividing each raw difference so graph edges have O(1) features: neighbouring
#: detector layers are ~40-200 mm apart in r or |z| (mm scales), and graph edges span
#: |dphi|, |deta| up to ~0.1 (angle scales).
EDGE_FEATURE_SCALES = {"dr": 100.0, "dphi": 0.1, "dz": 100.0, "deta": 0.1, "dist": 100.0}
#: Edges per chunk in :func:`edge_features` on CPU (temporaries of ~1 MB stay in cache).
FEATURE_CHUNK = 1 << 15


def _check_edge_index(edge_index: torch.Tensor, num_nodes: int, where: str) -> None:
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{where}: edge_index must be [2, E], got {tuple(edge_index.shape)}")
    if edge_index.dtype != torch.long:
        raise ValueError(f"{where}: edge_index must be int64, got {edge_index.dtype}")
    if edge_index.numel():
        lo, hi = (int(v) for v in torch.aminmax(edge_index))  # one pass
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"{where}: edge_index holds node {hi} or {lo} outside "
                             f"[0, {num_nodes})")


def edge_features(pos: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Geometric features of every edge, target minus source, scaled to O(1).

    Columns (:data:`EDGE_FEATURES`), each divided by :data:`EDGE_FEATURE_SCALES`:
    ``dr = r_i - r_j``, ``dphi = wrap(phi_i - phi_j)`` in (-pi, pi], ``dz = z_i - z_j``,
    ``deta = eta_i - eta_j``, ``dist = |pos_i - pos_j|`` (3D, mm).

    Args:
        pos: [N, 3] hit positions x, y, z in mm.
        edge_index: [2, E] long, ``(source j, target i)``.

    Returns:
        [E, 5] tensor in pos' dtype.
    """
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"edge_features: pos must be [N, 3], got {tuple(pos.shape)}")
    _check_edge_index(edge_index, pos.shape[0], "edge_features")
    src, dst = edge_index
    r, phi, z, eta = cylindrical(pos)
    if (pos.device.type != "cpu" or pos.dtype not in (torch.float32, torch.float64)
            or (pos.requires_grad and torch.is_grad_enabled())):
        return torch.stack([
            (r[dst] - r[src]) / EDGE_FEATURE_SCALES["dr"],
            wrap_phi(phi[dst] - phi[src]) / EDGE_FEATURE_SCALES["dphi"],
            (z[dst] - z[src]) / EDGE_FEATURE_SCALES["dz"],
            (eta[dst] - eta[src]) / EDGE_FEATURE_SCALES["deta"],
            torch.linalg.vector_norm(pos[dst] - pos[src], dim=1) / EDGE_FEATURE_SCALES["dist"],
        ], 1)
    return _edge_features_cpu(pos, src, dst, r, phi, z, eta)


def _edge_features_cpu(pos, src, dst, r, phi, z, eta) -> torch.Tensor:
    """:func:`edge_features` on CPU: the same operations on the same values (bit for bit),
    by chunks of edges with cache-sized temporaries. The per-hit values (r, phi, z, eta, x,
    y, z) are one 32-byte row (float32) per hit, so one numpy gather per edge end fetches
    them all; one subtraction gives every difference; the results go straight into the
    [E, 5] output. ~3x the expression above on millions of edges (one thread)."""
    num = src.numel()
    feats = torch.empty(num, len(EDGE_FEATURES), dtype=pos.dtype)
    if num == 0:
        return feats
    table = torch.stack([r, phi, z, eta, pos[:, 0], pos[:, 1], pos[:, 2], torch.zeros_like(r)],
                        1).numpy()
    rows = table.view(np.dtype((np.void, table.shape[1] * table.itemsize))).reshape(-1)
    src_np, dst_np = src.numpy(), dst.numpy()
    for lo in range(0, num, FEATURE_CHUNK):
        hi = min(lo + FEATURE_CHUNK, num)
        at_dst = torch.from_numpy(np.take(rows, dst_np[lo:hi]).view(table.dtype))
        at_src = torch.from_numpy(np.take(rows, src_np[lo:hi]).view(table.dtype))
        diff = at_dst.view(hi - lo, -1).sub_(at_src.view(hi - lo, -1))  # target - source
        out = feats[lo:hi]
        torch.div(diff[:, 0], EDGE_FEATURE_SCALES["dr"], out=out[:, 0])
        torch.div(wrap_phi(diff[:, 1]), EDGE_FEATURE_SCALES["dphi"], out=out[:, 1])
        torch.div(diff[:, 2], EDGE_FEATURE_SCALES["dz"], out=out[:, 2])
        torch.div(diff[:, 3], EDGE_FEATURE_SCALES["deta"], out=out[:, 3])
        # contiguous [m, 3] like pos[dst] - pos[src]: the norm reduces it the same way
        torch.div(torch.linalg.vector_norm(diff[:, 4:7].contiguous(), dim=1),
                  EDGE_FEATURE_SCALES["dist"], out=out[:, 4])
    return feats


def edge_labels(particle_id: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """1.0 where an edge joins two hits of the same non-noise particle, else 0.0 ([E] float)."""
    _check_edge_index(edge_index, particle_id.shape[0], "edge_labels")
    a = particle_id.index_select(0, edge_index[0])
    b = particle_id.index_select(0, edge_index[1])
    return ((a == b) & (a != 0)).float()


def segment_labels(particle_id: torch.Tensor, hit_order: torch.Tensor,
                   edge_index: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
    """1.0 where an edge is a true segment (:func:`true_segments`, either direction): two
    hits of one non-noise particle that follow each other along it; else 0.0 ([E] float).

    Stricter than :func:`edge_labels`: an edge that skips a hit of its particle is 0, so a
    classifier trained on these labels ranks a hit's next hit above hits further along.
    ``batch`` keeps graphs apart when particle ids repeat across a batch.
    """
    n = particle_id.shape[0]
    _check_edge_index(edge_index, n, "segment_labels")
    seg = true_segments(particle_id, hit_order, batch=batch)
    keys = _undirected_keys(seg, max(n, 1))
    return torch.isin(_undirected_keys(edge_index, max(n, 1)), keys).float()


def true_segments(particle_id: torch.Tensor, hit_order: torch.Tensor, *,
                  pt: torch.Tensor | None = None, pt_min: float = 0.0,
                  batch: torch.Tensor | None = None) -> torch.Tensor:
    """Consecutive-hit segments of every particle: the hit of order k -> the next one.

    Hits are grouped by (graph, particle) and ordered by ``hit_order`` (ties by index); a
    particle whose hits skip an order (a hole, a filtered hit) is joined across the gap.

    Args:
        particle_id: [N] long, 0 = noise (excluded).
        hit_order: [N] long, index of the hit along its particle from the vertex.
        pt: [N] particle pT of each hit (GeV); needed when ``pt_min > 0``.
        pt_min: keep particles with ``pt > pt_min`` only.
        batch: optional [N] graph index (particle ids may repeat across graphs).

    Returns:
        [2, S] long ``(hit k, hit k+1)``, sorted by (graph, particle, order).
    """
    n = particle_id.shape[0]
    if hit_order.shape != (n,):
        raise ValueError(f"true_segments: hit_order has shape {tuple(hit_order.shape)}, "
                         f"particle_id {tuple(particle_id.shape)}")
    if batch is not None and batch.shape != (n,):
        raise ValueError(f"true_segments: batch has shape {tuple(batch.shape)}, expected [{n}]")
    keep = particle_id != 0
    if pt_min > 0:
        if pt is None:
            raise ValueError(f"true_segments: pt_min={pt_min} needs the pt tensor")
        if pt.shape != (n,):
            raise ValueError(f"true_segments: pt has shape {tuple(pt.shape)}, expected [{n}]")
        keep &= pt > pt_min
    idx = keep.nonzero().squeeze(1)
    # Lexicographic (batch, particle, order) by stable sorts from the last key.
    idx = idx[torch.sort(hit_order[idx], stable=True).indices]
    idx = idx[torch.sort(particle_id[idx], stable=True).indices]
    if batch is not None:
        idx = idx[torch.sort(batch[idx], stable=True).indices]
    a, b = idx[:-1], idx[1:]
    same = particle_id[a] == particle_id[b]
    if batch is not None:
        same &= batch[a] == batch[b]
    return torch.stack([a[same], b[same]])


def _undirected_keys(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    lo = torch.minimum(edge_index[0], edge_index[1])
    hi = torch.maximum(edge_index[0], edge_index[1])
    return lo * n + hi


def graph_truth_metrics(edge_index: torch.Tensor, particle_id: torch.Tensor,
                        hit_order: torch.Tensor, pt: torch.Tensor,
                        pt_bins: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 5.0, math.inf), *,
                        pt_min: float = 1.0, batch: torch.Tensor | None = None) -> dict:
    """Edge efficiency, purity and degree of a graph against the true segments.

    * efficiency: fraction of true segments (:func:`true_segments`) present in the graph
      in either direction; ``efficiency_pt_min`` counts only particles with pT > ``pt_min``;
      ``per_pt_bin`` gives it for each ``[lo, hi)`` pT bin.
    * purity: fraction of the graph's edges (self-loops excluded) joining two hits of the
      same non-noise particle.
    * mean_degree: mean number of distinct neighbours per node (self-loops excluded), so a
      symmetric edge_index and its one-direction half give the same value.

    Returns:
        dict of plain Python numbers (NaN where a ratio has no denominator).
    """
    n = particle_id.shape[0]
    _check_edge_index(edge_index, n, "graph_truth_metrics")
    if pt.shape != (n,) or hit_order.shape != (n,):
        raise ValueError(f"graph_truth_metrics: pt {tuple(pt.shape)} and hit_order "
                         f"{tuple(hit_order.shape)} must both be [{n}]")
    no_loop = edge_index[:, edge_index[0] != edge_index[1]]
    edge_keys = torch.unique(_undirected_keys(no_loop, max(n, 1)))
    seg = true_segments(particle_id, hit_order, batch=batch)
    found = torch.isin(_undirected_keys(seg, max(n, 1)), edge_keys)
    seg_pt = pt[seg[0]]

    def ratio(num: torch.Tensor, den: int) -> float:
        return float(num) / den if den else math.nan

    bins = []
    for lo, hi in zip(pt_bins[:-1], pt_bins[1:]):
        m = (seg_pt >= lo) & (seg_pt < hi)
        k = int(m.sum())
        bins.append({"pt_lo": float(lo), "pt_hi": float(hi), "num_segments": k,
                     "efficiency": ratio(found[m].sum(), k)})
    high = seg_pt > pt_min
    labels = edge_labels(particle_id, no_loop)
    return {
        "num_nodes": n,
        "num_edges": int(edge_index.shape[1]),
        "mean_degree": 2.0 * edge_keys.numel() / n if n else math.nan,
        "purity": ratio(labels.sum(), labels.numel()),
        "num_segments": int(seg.shape[1]),
        "efficiency": ratio(found.sum(), seg.shape[1]),
        "pt_min": float(pt_min),
        "num_segments_pt_min": int(high.sum()),
        "efficiency_pt_min": ratio(found[high].sum(), int(high.sum())),
        "per_pt_bin": bins,
    }
