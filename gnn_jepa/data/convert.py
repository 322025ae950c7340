"""Event tables -> PyG :class:`~torch_geometric.data.Data` (one graph per event).

Every later stage reads these attributes (N hits):

=================  ==========  =====================================================
attribute          shape        meaning
=================  ==========  =====================================================
``pos``            [N, 3] f32   x, y, z in mm
``x``              [N, F] f32   node features (see :data:`FEATURE_SCALES`)
``hit_id``         [N] i64      TrackML hit id
``particle_id``    [N] i64      0 = noise
``pt``             [N] f32      transverse momentum of the hit's particle (GeV), 0 for noise
``particle_eta``   [N] f32      pseudorapidity of the hit's particle at its vertex, 0 for noise
``weight``         [N] f32      TrackML score weight of the hit
``volume_id``      [N] i64      TrackML volume id
``layer_id``       [N] i64      TrackML layer id
``hit_order``      [N] i64      index along the particle from its vertex (0 = first), -1 noise
``event_id``       [1] i64      event number
=================  ==========  =====================================================
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from gnn_jepa.data.event import Event
from gnn_jepa.geometry import cylindrical_np

#: Feature name -> scale dividing the raw value, so every feature is O(1).
FEATURE_SCALES = {
    "r": 1000.0,  # mm
    "phi": np.pi,
    "z": 1000.0,  # mm
    "eta": 3.0,
    "x": 1000.0,
    "y": 1000.0,
}
DEFAULT_FEATURES = ("r", "phi", "z", "eta")


def hit_order(particle_id: np.ndarray, dist_from_vertex: np.ndarray) -> np.ndarray:
    """Index of each hit along its particle, ordered by distance from the particle's vertex.

    Before the first half turn (loopers are cut there) the chord length from the vertex
    grows monotonically with the arc length, so it orders hits along the trajectory.
    Noise hits (``particle_id == 0``) get -1.
    """
    n = len(particle_id)
    order = np.full(n, -1, dtype=np.int64)
    idx = np.lexsort((dist_from_vertex, particle_id))
    pid_sorted = particle_id[idx]
    starts = np.r_[0, np.flatnonzero(np.diff(pid_sorted)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    order[idx] = np.arange(n) - group_start
    order[particle_id == 0] = -1
    return order


def event_to_data(event: Event, features: Sequence[str] = DEFAULT_FEATURES) -> Data:
    """Convert an :class:`Event` to a PyG ``Data`` with the attributes in the module table."""
    unknown = [f for f in features if f not in FEATURE_SCALES]
    if unknown:
        raise ValueError(f"unknown node feature(s) {unknown}; choose from {sorted(FEATURE_SCALES)}")
    hits, truth, particles = event.hits, event.truth, event.particles
    x = hits["x"].to_numpy(np.float64)
    y = hits["y"].to_numpy(np.float64)
    z = hits["z"].to_numpy(np.float64)
    r, phi, _, eta = cylindrical_np(x, y, z)
    raw = {"r": r, "phi": phi, "z": z, "eta": eta, "x": x, "y": y}
    feats = np.stack([raw[f] / FEATURE_SCALES[f] for f in features], axis=1)

    if len(truth) == 0 and len(hits) > 0:
        # an event without truth (e.g. the TrackML test set): fine for pretraining and
        # inference, every hit is treated as unlabelled noise.
        truth = truth.reindex(range(len(hits))).assign(
            hit_id=hits["hit_id"].to_numpy(), particle_id=0, weight=0.0)
    elif len(truth) != len(hits):
        raise ValueError(f"event {event.event_id}: {len(truth)} truth rows for {len(hits)} hits")
    pid = truth["particle_id"].to_numpy(np.int64)
    p = particles.set_index("particle_id")
    known = np.isin(pid, p.index.to_numpy()) | (pid == 0)
    if not known.all():
        bad = pid[~known][0]
        raise ValueError(f"event {event.event_id}: truth references particle_id {bad} "
                         "absent from the particles table")
    lookup = p.reindex(pid)  # noise rows become NaN
    px = lookup["px"].to_numpy(np.float64)
    py = lookup["py"].to_numpy(np.float64)
    pz = lookup["pz"].to_numpy(np.float64)
    pt = np.nan_to_num(np.hypot(px, py))
    peta = np.nan_to_num(np.arcsinh(pz / np.maximum(pt, 1e-9)))
    dist = np.sqrt((x - np.nan_to_num(lookup["vx"].to_numpy())) ** 2
                   + (y - np.nan_to_num(lookup["vy"].to_numpy())) ** 2
                   + (z - np.nan_to_num(lookup["vz"].to_numpy())) ** 2)
    noise = pid == 0
    pt[noise] = 0.0
    peta[noise] = 0.0

    return Data(
        pos=torch.from_numpy(np.stack([x, y, z], 1)).float(),
        x=torch.from_numpy(feats).float(),
        hit_id=torch.tensor(hits["hit_id"].to_numpy(np.int64)),
        particle_id=torch.tensor(pid),
        pt=torch.from_numpy(pt).float(),
        particle_eta=torch.from_numpy(peta).float(),
        weight=torch.tensor(truth["weight"].to_numpy(np.float32)),
        volume_id=torch.tensor(hits["volume_id"].to_numpy(np.int64)),
        layer_id=torch.tensor(hits["layer_id"].to_numpy(np.int64)),
        hit_order=torch.from_numpy(hit_order(pid, dist)),
        event_id=torch.tensor([int(event.event_id)]),
        num_nodes=len(hits),
    )
