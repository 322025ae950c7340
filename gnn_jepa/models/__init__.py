"""LightningModules: JEPA pretraining (hit-level and segment-level), event-mixing pretraining
and track finding."""
from gnn_jepa.models.event_mixing import EventMixingPretraining
from gnn_jepa.models.jepa import JEPAPretraining
from gnn_jepa.models.segment_jepa import SegmentJEPA
from gnn_jepa.models.track_finding import TrackFinding

__all__ = ["EventMixingPretraining", "JEPAPretraining", "SegmentJEPA", "TrackFinding"]
