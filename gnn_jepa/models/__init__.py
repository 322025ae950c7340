"""LightningModules: JEPA pretraining (hit-level and segment-level) and track finding."""
from gnn_jepa.models.jepa import JEPAPretraining
from gnn_jepa.models.segment_jepa import SegmentJEPA
from gnn_jepa.models.track_finding import TrackFinding

__all__ = ["JEPAPretraining", "SegmentJEPA", "TrackFinding"]
