"""TrackML challenge hit weights (the scoring weights of the TrackML score).

Each truth hit gets ``w = w_pt(pT) * w_order(index along particle, nhits)``, normalised to
sum to one over the event. ``w_order`` stretches the profile :data:`ORDER_PROFILE` over the
particle's hits by linear interpolation (profile point ``k`` sits at hit position
``k * (n - 1) / 8``) and is normalised per particle. ``w_pt`` is 0.2 up to 0.5 GeV, rises
linearly to 1.0 at 3 GeV and stays 1.0 above. Noise hits and particles with fewer than
:data:`MIN_HITS` hits weigh zero.

Events whose truth ``weight`` column is missing, blank or all zero (e.g. TrackML-format
files of another detector) get these weights computed from their truth and particles
(:func:`event_hit_weights`); :func:`note_computed_weights` says so once per dataset with a
:class:`ComputedWeightsWarning`.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np

log = logging.getLogger(__name__)

ORDER_PROFILE = np.array([10.0, 8.0, 6.0, 5.0, 3.0, 3.0, 3.0, 5.0, 6.0])
MIN_HITS = 4


def order_weights(nhits: int) -> np.ndarray:
    """Per-hit order weights of a particle with ``nhits`` hits (normalised to sum 1)."""
    if nhits < MIN_HITS:
        return np.zeros(nhits)
    supports = np.arange(len(ORDER_PROFILE)) * (nhits - 1) / (len(ORDER_PROFILE) - 1)
    w = np.interp(np.arange(nhits), supports, ORDER_PROFILE)
    return w / w.sum()


def pt_weight(pt: np.ndarray) -> np.ndarray:
    """TrackML pT weight: 0.2 below 0.5 GeV, linear to 1.0 at 3 GeV, 1.0 above."""
    pt = np.asarray(pt, dtype=np.float64)
    return np.clip(0.2 + (pt - 0.5) * (0.8 / 2.5), 0.2, 1.0)


def trackml_hit_weights(particle_id: np.ndarray, pt: np.ndarray, hit_order: np.ndarray) -> np.ndarray:
    """Normalised TrackML weight of every hit.

    Args:
        particle_id: [N] particle of each hit, 0 for noise.
        pt: [N] transverse momentum (GeV) of each hit's particle.
        hit_order: [N] index of each hit along its particle from the vertex (0 = first).

    Returns:
        [N] float64 weights summing to 1 (or all zero if no particle has >= 4 hits).
    """
    particle_id = np.asarray(particle_id)
    hit_order = np.asarray(hit_order)
    w = np.zeros(len(particle_id))
    real = particle_id != 0
    if not real.any():
        return w
    uniq, inv, counts = np.unique(particle_id[real], return_inverse=True, return_counts=True)
    nh = counts[inv]
    maxn = int(counts.max())
    table = np.zeros((maxn + 1, maxn))
    for n in np.unique(counts):
        table[n, :n] = order_weights(int(n))
    ow = table[nh, np.clip(hit_order[real], 0, maxn - 1)]
    w[real] = ow * pt_weight(np.asarray(pt)[real])
    total = w.sum()
    return w / total if total > 0 else w


# ------------------------------------------------------------------ weights from an event's truth
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


def event_hit_weights(hits, truth, particles=None) -> np.ndarray:
    """TrackML weights of an event's hits, computed from its truth as the simulator assigns them.

    ``pT`` is the particle's transverse momentum at its vertex, ``sqrt(px^2 + py^2)`` from
    the particles table (the simulator's formula, so a simulated event gets its own weights
    back bit for bit); the hit order is :func:`hit_order` of the hits' distances from the
    particle's vertex, as :func:`gnn_jepa.data.convert.event_to_data` computes ``hit_order``.

    Args:
        hits: the hits table (``x, y, z``), row for row with ``truth``.
        truth: the truth table (``particle_id``; also ``tpx, tpy`` without particles).
        particles: the particles table (``particle_id, vx, vy, vz, px, py``), or ``None``
            when it is unknown: then each particle's vertex is taken at the origin and its
            pT is the truth momentum ``(tpx, tpy)`` at its hit nearest to the origin.

    Returns:
        [N] float64 weights summing to 1 (all zero if no particle has >= 4 hits).

    Raises:
        ValueError: a truth particle is absent from ``particles``.
    """
    pid = truth["particle_id"].to_numpy(np.int64)
    x, y, z = (hits[c].to_numpy(np.float64) for c in ("x", "y", "z"))
    real = pid != 0
    if particles is not None:
        ids = particles["particle_id"].to_numpy(np.int64)
        sort = np.argsort(ids, kind="stable")
        pos = np.searchsorted(ids[sort], pid[real])
        found = pos < len(ids)
        found[found] = ids[sort][pos[found]] == pid[real][found]
        if not found.all():
            bad = pid[real][~found][0]
            raise ValueError(f"truth particle_id {bad} is absent from the particles table")
        row = sort[pos]
        col = {c: particles[c].to_numpy(np.float64)[row] for c in ("vx", "vy", "vz", "px", "py")}
        dist = np.zeros(len(pid))
        dist[real] = np.sqrt((x[real] - col["vx"]) ** 2 + (y[real] - col["vy"]) ** 2
                             + (z[real] - col["vz"]) ** 2)
        pt = np.zeros(len(pid))
        pt[real] = np.sqrt(col["px"] * col["px"] + col["py"] * col["py"])
        order = hit_order(pid, dist)
    else:
        order = hit_order(pid, np.sqrt(x * x + y * y + z * z))
        tpx, tpy = truth["tpx"].to_numpy(np.float64), truth["tpy"].to_numpy(np.float64)
        first = real & (order == 0)
        uniq, inv = np.unique(pid[real], return_inverse=True)
        first_pt = np.zeros(len(uniq))
        first_pt[np.searchsorted(uniq, pid[first])] = np.hypot(tpx[first], tpy[first])
        pt = np.zeros(len(pid))
        pt[real] = first_pt[inv]
    return trackml_hit_weights(pid, pt, order)


def weight_column_problem(weight) -> str | None:
    """Why a truth ``weight`` column cannot serve as TrackML weights, ``None`` if it can.

    ``"is missing"`` (``weight`` is ``None``), ``"is blank (no value in any row)"`` (all NaN)
    or ``"sums to 0"`` (all zero: no hit would count). A column with a positive sum is
    usable as it is (it need not sum to 1: the score divides by the sum). Other bad values
    (some non-finite, negative) are not a reason to compute weights but an error of the
    file, for its reader to report.
    """
    if weight is None:
        return "is missing"
    w = np.asarray(weight, dtype=np.float64)
    if len(w) == 0:
        return None
    if np.isnan(w).all():
        return "is blank (no value in any row)"
    if (w == 0).all():
        return "sums to 0"
    return None


def bad_weight_row(weight) -> int | None:
    """First row whose weight is non-finite or negative (weights are >= 0), else ``None``."""
    w = np.asarray(weight, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    return int(bad[0]) if len(bad) else None


class ComputedWeightsWarning(UserWarning):
    """Events whose truth ``weight`` column was unusable got computed TrackML weights."""


_COMPUTED: dict[str, int] = {}


def note_computed_weights(dataset: str, event: str, reason: str) -> int:
    """Record that ``event`` of ``dataset`` got computed weights; warn on the 1st, 10th, 100th...

    One :class:`ComputedWeightsWarning` for the first such event of each dataset (a folder
    of events, say) in this process, naming the event and why, then one more with the
    running count each time it reaches a power of ten; every event is logged at DEBUG.

    Returns:
        The number of events of ``dataset`` with computed weights so far in this process.
    """
    n = _COMPUTED[dataset] = _COMPUTED.get(dataset, 0) + 1
    log.debug("%s: truth 'weight' column %s; TrackML weights computed (%d of %s so far)",
              event, reason, n, dataset)
    if n == 1:
        warnings.warn(
            f"{event}: the truth 'weight' column {reason}; computed the TrackML hit weights "
            "from its truth and particles as the simulator does (pT at the vertex, hit order "
            "from the vertex: gnn_jepa.data.weights.event_hit_weights). Further events of "
            f"{dataset} that need this are not reported one by one: their count follows at "
            "10, 100, 1000, ... events (gnn_jepa.data.weights.computed_weight_counts()).",
            ComputedWeightsWarning, stacklevel=3)
    elif str(n).rstrip("0") == "1":  # 10, 100, 1000, ...
        warnings.warn(
            f"{dataset}: TrackML hit weights computed from truth for {n} events so far, the "
            f"truth 'weight' column being missing, blank or zero (latest: {event}, {reason})",
            ComputedWeightsWarning, stacklevel=3)
    return n


def computed_weight_counts() -> dict[str, int]:
    """Dataset -> number of its events that got computed weights so far in this process."""
    return dict(_COMPUTED)
