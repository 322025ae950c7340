"""The track_building study (see README.md in this folder)."""
