r"""Event mixing: several unlabelled events overlaid into one, every hit marked with its event.

The pretext of :class:`~gnn_jepa.models.event_mixing.EventMixingPretraining`: on the graph of
the overlay, a segment whose two hits come from different events is always fake, and one
inside an event is true or a fake between two of its particles. Where particles are
independent (their own vertices, as the simulator draws them) a fake inside an event looks
like one across events, so the best "same event" score of a segment is

.. math::
    P(\mathrm{same} \mid s) = \rho + (1 - \rho)\, P(\mathrm{true} \mid s),

with :math:`\rho` the share of fakes inside an event: a monotone function of the trueness a
tracker needs, learned without a label. Events from a common vertex would need their
vertices aligned first (else the vertex tells the events apart); the simulator's are not.

Each event after the first is rotated about the beam axis by its own angle (seeded), so the
same pair of events never overlays alike twice across seeds. Hit ids and particle ids are
offset to stay unique; the truth, when there is one, follows its hits (for diagnostics; the
pretext never reads it).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from gnn_jepa.data.event import Event

#: The hits-table column (and ``Data`` attribute) holding each hit's event in the overlay.
MIX_COLUMN = "mix_source"


def rotate_event(event: Event, angle: float) -> Event:
    """``event`` rotated about the beam (z) axis by ``angle`` (rad): hit positions, and the
    truth's positions and momenta and the particles' vertices and momenta where present."""
    c, s = math.cos(angle), math.sin(angle)

    def turn(df: pd.DataFrame, x: str, y: str) -> None:
        if x in df.columns and y in df.columns and len(df):
            vx, vy = df[x].to_numpy(np.float64), df[y].to_numpy(np.float64)
            df[x], df[y] = c * vx - s * vy, s * vx + c * vy

    hits, truth, particles = event.hits.copy(), event.truth.copy(), event.particles.copy()
    turn(hits, "x", "y")
    turn(truth, "tx", "ty")
    turn(truth, "tpx", "tpy")
    turn(particles, "vx", "vy")
    turn(particles, "px", "py")
    return Event(hits, truth, particles, event.event_id)


def mix_events(events: Sequence[Event], angles: Sequence[float]) -> Event:
    """Overlay ``events`` (event ``j`` rotated by ``angles[j]``) into one event whose hits table
    gains the column :data:`MIX_COLUMN` (``j`` for the hits of event ``j``).

    The overlay takes the first event's ``event_id``; hit ids and nonzero particle ids of
    event ``j`` are shifted past those of events ``0 .. j-1`` (noise keeps particle id 0).

    Raises:
        ValueError: fewer than two events, or not one angle per event.
    """
    if len(events) < 2:
        raise ValueError(f"mix_events needs at least 2 events, got {len(events)}")
    if len(angles) != len(events):
        raise ValueError(f"mix_events: {len(angles)} angles for {len(events)} events")
    hits, truth, particles = [], [], []
    hit_off = pid_off = 0
    for j, (ev, angle) in enumerate(zip(events, angles)):
        ev = rotate_event(ev, float(angle)) if angle else ev
        h = ev.hits.copy()
        h["hit_id"] = h["hit_id"].to_numpy(np.int64) + hit_off
        h[MIX_COLUMN] = np.full(len(h), j, dtype=np.int64)
        t = ev.truth.copy()
        if len(t):
            t["hit_id"] = t["hit_id"].to_numpy(np.int64) + hit_off
            pid = t["particle_id"].to_numpy(np.int64)
            t["particle_id"] = np.where(pid != 0, pid + pid_off, 0)
        p = ev.particles.copy()
        if len(p):
            p["particle_id"] = p["particle_id"].to_numpy(np.int64) + pid_off
        hits.append(h)
        truth.append(t)
        particles.append(p)
        hit_off = int(h["hit_id"].max()) if len(h) else hit_off
        pid_off = max(pid_off, int(p["particle_id"].max()) if len(p) else 0,
                      int(t["particle_id"].max()) if len(t) else 0)
    labelled = all(len(t) for t in truth)
    out_truth = pd.concat(truth, ignore_index=True) if labelled else events[0].truth.iloc[0:0].copy()
    out_particles = pd.concat(particles, ignore_index=True) if labelled else events[0].particles.iloc[0:0].copy()
    return Event(pd.concat(hits, ignore_index=True), out_truth, out_particles, events[0].event_id)


def mix_angles(seed: int, index: int, k: int) -> np.ndarray:
    """The rotation of each of the ``k`` events of overlay ``index``: 0 for the first, uniform
    in [0, 2 pi) for the others, from ``(seed, index)`` alone (the same in any worker)."""
    rng = np.random.default_rng([int(seed), int(index), 0x6D6978])
    return np.r_[0.0, rng.uniform(0.0, 2.0 * math.pi, k - 1)]


class MixedEventSource:
    """An :class:`~gnn_jepa.data.dataset.EventSource` whose event ``i`` is the overlay of the
    wrapped source's events ``k i .. k i + k - 1`` (:func:`mix_events`, rotations from
    :func:`mix_angles`). Holds ``len(source) // k`` events.

    Args:
        source: the events to overlay.
        k: events per overlay (>= 2).
    """

    def __init__(self, source, k: int = 2):
        if k < 2:
            raise ValueError(f"MixedEventSource: k must be >= 2 events per overlay, got {k}")
        self.source, self.k = source, int(k)
        self.kind = source.kind

    def members(self, index: int) -> list[int]:
        """The wrapped source's events of overlay ``index``."""
        return [self.k * index + j for j in range(self.k)]

    def describe(self) -> dict:
        return {**self.source.describe(), "mix_events": self.k}

    def __len__(self) -> int:
        return len(self.source) // self.k

    def name(self, index: int) -> str:
        return f"overlay {index} of {' + '.join(self.source.name(m) for m in self.members(index))}"

    def files(self, index: int):
        parts = [self.source.files(m) for m in self.members(index)]
        return None if all(p is None for p in parts) else [f for p in parts if p for f in p]

    def event(self, index: int) -> Event:
        return mix_events([self.source.event(m) for m in self.members(index)],
                          mix_angles(self.source.seed, index, self.k))
