"""What a graph allows: the tracking metrics of perfect edge scores on it.

A track builder can only join hits that the graph connects. Scoring every edge with its
truth (1 for a true segment, i.e. consecutive hits of one particle, else 0) and building
tracks from those scores gives the best result any edge classifier could reach on that
graph with that builder: the *ceiling* of graph + builder. The gap between a trained
model's TrackML score and this ceiling is the classifier's; the gap between the ceiling and
1 is the graph's (segments it misses split particles into pieces) or the builder's.

Example: the simulator's ``trackml`` preset puts ~60% of the TrackML hit weight on particles
with pT < 1 GeV, whose segments bend out of a narrow (eta, phi) radius graph; the ceiling
of such a graph stays far below 1 even though it holds 99% of the pT > 1 GeV segments
(``python -m gnn_jepa.evaluation.graph_scan --ceiling ...``).

:func:`~gnn_jepa.tracking.building.hit_order_key` gives the hit order the walkthrough uses.
"""
from __future__ import annotations

import torch

from gnn_jepa.graph.edges import segment_labels
from gnn_jepa.tracking.building import build_tracks, hit_order_key
from gnn_jepa.tracking.metrics import tracking_metrics

__all__ = ["truth_tracks", "tracking_ceiling"]


def truth_tracks(data, edge_index: torch.Tensor, *, building: str = "walkthrough",
                 min_hits: int = 3) -> torch.Tensor:
    """Track id per hit (-1: none) built from truth segment scores on ``edge_index``.

    Args:
        data: one event with ``pos``, ``particle_id`` and ``hit_order``.
        edge_index: [2, E] the graph (either direction).
        building: ``"walkthrough"`` or ``"cc"`` (:func:`~gnn_jepa.tracking.building.build_tracks`).
        min_hits: smallest track kept.
    """
    for attr in ("pos", "particle_id", "hit_order"):
        if getattr(data, attr, None) is None:
            raise ValueError(f"truth_tracks: data has no {attr!r} attribute")
    scores = segment_labels(data.particle_id, data.hit_order, edge_index)
    return build_tracks(data.pos.shape[0], edge_index, scores, threshold=0.5,
                        min_hits=min_hits, method=building, order_key=hit_order_key(data.pos))


def tracking_ceiling(data, edge_index: torch.Tensor, *, building: str = "walkthrough",
                     min_hits: int = 3, pt_min: float = 1.0) -> dict[str, float | int]:
    """:func:`~gnn_jepa.tracking.metrics.tracking_metrics` of :func:`truth_tracks`.

    ``data`` also needs ``pt``, ``particle_eta`` and ``weight`` (TrackML hit weights);
    ``pt_min`` and ``min_hits`` define the reconstructable particles, as in training.
    """
    for attr in ("pt", "particle_eta", "weight"):
        if getattr(data, attr, None) is None:
            raise ValueError(f"tracking_ceiling: data has no {attr!r} attribute")
    tid = truth_tracks(data, edge_index, building=building, min_hits=min_hits)
    return tracking_metrics(tid.cpu().numpy(), data.particle_id.cpu().numpy(),
                            data.pt.cpu().numpy(), data.particle_eta.cpu().numpy(),
                            data.weight.cpu().numpy(), pt_min=pt_min, min_hits=min_hits)
