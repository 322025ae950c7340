"""The in-memory event: three TrackML-format tables (hits, truth, particles).

Column names follow the TrackML challenge exactly, so simulated events and real TrackML
events flow through the same code, and :mod:`gnn_jepa.data.trackml` writes and reads them
without renaming anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

HIT_COLUMNS = ("hit_id", "x", "y", "z", "volume_id", "layer_id", "module_id")
TRUTH_COLUMNS = ("hit_id", "particle_id", "tx", "ty", "tz", "tpx", "tpy", "tpz", "weight")
PARTICLE_COLUMNS = ("particle_id", "vx", "vy", "vz", "px", "py", "pz", "q", "nhits")


@dataclass
class Event:
    """One detector event.

    Attributes:
        hits: one row per hit, columns :data:`HIT_COLUMNS` (x, y, z in mm).
        truth: one row per hit (same order as ``hits``), columns :data:`TRUTH_COLUMNS`;
            ``particle_id == 0`` marks noise. ``tpx, tpy, tpz`` (GeV) is the particle's
            momentum at the hit.
        particles: one row per particle, columns :data:`PARTICLE_COLUMNS` (vertex in mm,
            momentum at the vertex in GeV, charge ``q`` in units of e).
        event_id: the TrackML event number (``event000001000`` -> 1000).
        cells: the optional TrackML cells table, passed through untouched.
    """

    hits: pd.DataFrame
    truth: pd.DataFrame
    particles: pd.DataFrame
    event_id: int = 0
    cells: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def num_hits(self) -> int:
        return len(self.hits)

    @property
    def has_truth(self) -> bool:
        """Whether the truth is known (a truth table with rows): hits-only events have none."""
        return len(self.truth) > 0

    def without_truth(self) -> "Event":
        """The same hits with no truth and no particles (zero-row tables of the same columns):
        an unlabelled event, as a TrackML folder of ``-hits.csv`` files only gives."""
        return Event(self.hits, self.truth.iloc[0:0].copy(), self.particles.iloc[0:0].copy(),
                     self.event_id, self.cells)

    def __repr__(self) -> str:
        return (f"Event(event_id={self.event_id}, hits={len(self.hits)}, "
                f"particles={len(self.particles)}, "
                f"noise={int((self.truth['particle_id'] == 0).sum())})")
