"""LightningModules: JEPA pretraining and track finding."""
from gnn_jepa.models.jepa import JEPAPretraining
from gnn_jepa.models.track_finding import TrackFinding

__all__ = ["JEPAPretraining", "TrackFinding"]
