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
``weight``         [N] f32      TrackML score weight of the hit (computed, see below, when
                                the truth column is missing, blank or all zero)
``volume_id``      [N] i64      TrackML volume id
``layer_id``       [N] i64      TrackML layer id
``hit_order``      [N] i64      index along the particle from its vertex (0 = first), -1 noise
``event_id``       [1] i64      event number
``has_truth``      [1] bool     the truth is known (False: hits only, every hit unlabelled)
``primary_pt1``    [N] bool     the hit's particle is primary (its ``primary`` column; every
                                particle when there is none) with pT > 1 GeV
``num_primary_pt1`` [1] i64     the event's primary particles with pT > 1 GeV, with or
                                without hits (the denominator of ColliderML's
                                ``physics_eff_pt1``, :mod:`gnn_jepa.tracking.colliderml_metrics`)
``mix_source``     [N] i64      only for an overlay of events (:mod:`gnn_jepa.data.mixing`):
                                the event each hit comes from
=================  ==========  =====================================================

``weight`` is the truth table's ``weight`` column as it is. An event whose column is
missing, blank or all zero (an in-memory event of another detector, say; events read by
:func:`gnn_jepa.data.trackml.read_event` come with the column already filled) gets the
TrackML weights computed from its truth (:func:`gnn_jepa.data.weights.event_hit_weights`,
with ``hit_order`` as below), with a :class:`~gnn_jepa.data.weights.ComputedWeightsWarning`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from gnn_jepa.data.event import Event
from gnn_jepa.data.weights import (bad_weight_row, event_hit_weights, hit_order,
                                   note_computed_weights, weight_column_problem)
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

    has_truth = len(truth) > 0
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
    weight = _weights(event, truth)
    # ColliderML's physics efficiency: primary particles (all without the column), pT > 1
    p_pt = np.hypot(particles["px"].to_numpy(np.float64), particles["py"].to_numpy(np.float64))
    p_primary = (particles["primary"].to_numpy(bool) if "primary" in particles.columns
                 else np.ones(len(particles), bool))
    p_sel = p_primary & (p_pt > 1.0)
    primary_pt1 = np.isin(pid, particles["particle_id"].to_numpy(np.int64)[p_sel]) & ~noise

    return Data(
        pos=torch.from_numpy(np.stack([x, y, z], 1)).float(),
        x=torch.from_numpy(feats).float(),
        hit_id=torch.tensor(hits["hit_id"].to_numpy(np.int64)),
        particle_id=torch.tensor(pid),
        pt=torch.from_numpy(pt).float(),
        particle_eta=torch.from_numpy(peta).float(),
        weight=torch.from_numpy(weight.astype(np.float32)),
        volume_id=torch.tensor(hits["volume_id"].to_numpy(np.int64)),
        layer_id=torch.tensor(hits["layer_id"].to_numpy(np.int64)),
        hit_order=torch.from_numpy(hit_order(pid, dist)),
        event_id=torch.tensor([int(event.event_id)]),
        has_truth=torch.tensor([has_truth]),
        primary_pt1=torch.from_numpy(primary_pt1),
        num_primary_pt1=torch.tensor([int(p_sel.sum())]),
        num_nodes=len(hits),
        **({"mix_source": torch.tensor(hits["mix_source"].to_numpy(np.int64))}
           if "mix_source" in hits.columns else {}),
    )


def _weights(event: Event, truth) -> np.ndarray:
    """The truth weights, or computed ones when the column is missing, blank or all zero."""
    column = truth["weight"].to_numpy(np.float64) if "weight" in truth.columns else None
    reason = weight_column_problem(column)
    if reason is None:
        bad = bad_weight_row(column)
        if bad is not None:
            raise ValueError(f"event {event.event_id}: truth weight of row {bad} (hit_id "
                             f"{truth['hit_id'].iat[bad]}) is {column[bad]}; TrackML weights are "
                             "finite and >= 0 (drop the column to have them computed)")
        return column
    computed = event_hit_weights(event.hits, truth, event.particles)
    if column is None or computed.any():  # an all-zero column that stays zero changes nothing
        note_computed_weights("events converted in memory", f"event {event.event_id}", reason)
    return computed
