"""gnn_jepa: JEPA pretraining of graph transformers for charged-particle tracking."""
__version__ = "0.1.0"
