"""The jepa_objective study (see README.md in this folder)."""
