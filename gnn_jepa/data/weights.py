"""TrackML challenge hit weights (the scoring weights of the TrackML score).

Each truth hit gets ``w = w_pt(pT) * w_order(index along particle, nhits)``, normalised to
sum to one over the event. ``w_order`` stretches the profile :data:`ORDER_PROFILE` over the
particle's hits by linear interpolation (profile point ``k`` sits at hit position
``k * (n - 1) / 8``) and is normalised per particle. ``w_pt`` is 0.2 up to 0.5 GeV, rises
linearly to 1.0 at 3 GeV and stays 1.0 above. Noise hits and particles with fewer than
:data:`MIN_HITS` hits weigh zero.
"""
from __future__ import annotations

import numpy as np

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
