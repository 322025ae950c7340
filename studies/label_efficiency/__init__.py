"""The label_efficiency study (see README.md in this folder)."""
