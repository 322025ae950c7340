"""Radius graphs of detector hits: frames, exact radius search, edge features and truth."""
from gnn_jepa.graph.edges import (EDGE_FEATURE_SCALES, EDGE_FEATURES, edge_features, edge_labels,
                                  graph_truth_metrics, segment_labels, true_segments)
from gnn_jepa.graph.frames import FRAME_KINDS, GraphFrame
from gnn_jepa.graph.metric_learning import HitEmbedding, LearnedFrame, train_hit_embedding
from gnn_jepa.graph.pair_filter import LayerPairFilter
from gnn_jepa.graph.radius import available_backends, pair_distance2, radius_graph, radius_pairs
from gnn_jepa.graph.transform import DEFAULT_GRAPH, BuildGraph

__all__ = [
    "BuildGraph", "DEFAULT_GRAPH", "EDGE_FEATURES", "EDGE_FEATURE_SCALES", "FRAME_KINDS",
    "GraphFrame", "HitEmbedding", "LayerPairFilter", "LearnedFrame", "available_backends", "edge_features", "edge_labels", "graph_truth_metrics",
    "pair_distance2", "radius_graph", "radius_pairs", "segment_labels", "train_hit_embedding",
    "true_segments",
]
