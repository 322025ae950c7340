"""The learned_graph study (see README.md in this folder)."""
