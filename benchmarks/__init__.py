"""Speed and memory benchmarks of gnn_jepa (run from the repository root as
``python -m benchmarks.<name>``; shared helpers in :mod:`benchmarks.common`)."""
