"""Radius graphs of detector hits: frames, exact radius search, edge features and truth."""
from gnn_jepa.graph.edges import (EDGE_FEATURE_SCALES, EDGE_FEATURES, edge_features, edge_labels,
                                  graph_truth_metrics, true_segments)
from gnn_jepa.graph.frames import FRAME_KINDS, GraphFrame
from gnn_jepa.graph.radius import available_backends, pair_distance2, radius_graph, radius_pairs
from gnn_jepa.graph.transform import DEFAULT_GRAPH, BuildGraph

__all__ = [
    "BuildGraph", "DEFAULT_GRAPH", "EDGE_FEATURES", "EDGE_FEATURE_SCALES", "FRAME_KINDS",
    "GraphFrame", "available_backends", "edge_features", "edge_labels", "graph_truth_metrics",
    "pair_distance2", "radius_graph", "radius_pairs", "true_segments",
]
