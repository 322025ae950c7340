"""Research studies of gnn_jepa, one folder each (run from the repository root as
``python -m studies.<name>.run``)."""
