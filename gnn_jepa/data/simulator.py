"""A vectorised, seeded detector simulator producing TrackML-format :class:`Event` objects.

Particles come from a primary vertex with a falling pT spectrum; each one is propagated
as a helix in the solenoid field through the surfaces of a :class:`DetectorGeometry`,
crossing them in path order. Optional effects: multiple scattering at every crossing
(Highland formula, the helix is re-seeded after each kink), hit inefficiency, Gaussian
position resolution along the surface, and uniform noise hits. Every particle stops after
its first half turn in the transverse plane (loopers) or when no surface lies ahead.

Helix conventions (B along +z, charge ``q = +-1``): with ``phi`` the transverse direction
of motion and ``s`` the transverse arc length, ``dphi/ds = -q / R`` and
``R[mm] = 1000 pT[GeV] / (0.3 B[T])``, so a positive charge turns clockwise seen from +z.
Writing ``sigma = -q`` and ``psi = s / R`` (the turning angle) from a point ``p0`` with
direction ``u = (cos phi, sin phi)`` and left normal ``n = (-sin phi, cos phi)``::

    p(psi) = p0 + R (u sin psi + sigma n (1 - cos psi)),   z(psi) = z0 + R psi tan(lambda)

where ``tan(lambda) = pz / pT``. Cylinder crossings use the exact circle-circle
intersection, disk crossings ``psi = (z_disk - z0) / (R tan lambda)``; both avoid
large-number cancellation for stiff tracks.

Speed (the simulator must not hold up training): every step is vectorised over particles
and works surface by surface, so numpy's inner loops run over particles. Without
scattering each helix is intersected with all surfaces in one pass; with scattering a
step loop finds each particle's next crossing by trying surfaces in radius / z order
(a few candidates per particle instead of all of them). The TrackML row order comes from
one ``np.sort`` of packed int64 keys. See ``python -m benchmarks.simulate``.

Reproducibility: everything random is drawn from one ``numpy.random.Generator`` (PCG64)
seeded with the event seed, in a fixed order (fixed chunk sizes included), so the same
seed gives bit-identical tables (on one machine and numpy build: numpy's transcendental
functions may differ in the last bit between CPU instruction sets).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gnn_jepa.data.detector import CYLINDER, DISK, PRESETS, DetectorGeometry, pseudo_angle
from gnn_jepa.data.event import Event
from gnn_jepa.data.weights import MIN_HITS, order_weights, pt_weight
from gnn_jepa.geometry import PT_TO_RADIUS

#: Mass used for the velocity in the Highland formula (charged pion), GeV.
PION_MASS = 0.13957
#: Path lengths (mm) below this are "the point we are standing on", not a new crossing.
_PATH_TOL = 1e-6
#: Loopers are cut after this transverse turning angle (half a turn).
MAX_TURN = math.pi

_PT_SPECTRA = ("power", "uniform")


@dataclass
class SimulatorConfig:
    """Everything that defines the simulated events (plain types only, YAML friendly).

    Attributes:
        preset: detector geometry name (``"trackml"`` or ``"toy2d"``). ``toy2d`` is a
            planar (z = 0) detector: ``eta_range``, ``vertex_sigma_z`` and ``resolution_z``
            are ignored there, and scattering stays in the transverse plane.
        num_particles: particles per event (the Poisson mean when ``poisson``).
        poisson: draw the particle count from a Poisson distribution (the pileup knob);
            otherwise exactly ``num_particles``.
        pt_min: lowest transverse momentum in GeV.
        pt_max: highest transverse momentum in GeV.
        pt_spectrum: ``"power"`` (default) draws ``dN/dpT ~ (1 + pT / pt_scale) ** -pt_power``
            on ``[pt_min, pt_max]``; ``"uniform"`` draws pT uniformly there. The power form
            is the low-pT end of the Hagedorn/Tsallis shape fitted to LHC charged hadrons.
            The defaults (``pt_scale = 1 GeV``, ``pt_power = 4``, ``pt_min = 0.1``) give a
            TrackML-like event: 83% of particles below 1 GeV, mean pT ~ 0.65 GeV, and a tail
            harder than minimum bias (0.1% above 10 GeV, a few per mille above 5 GeV) that
            stands in for the hard-scatter (ttbar) tracks in TrackML events, up to
            ``pt_max = 100 GeV``.
        pt_power: exponent ``n`` of the power spectrum (> 0).
        pt_scale: scale ``p0`` in GeV of the power spectrum (> 0).
        eta_range: pseudorapidity range (uniform in eta).
        phi_range: azimuth range in radians (uniform).
        vertex_sigma_xy: Gaussian spread of the vertex in x and in y, mm.
        vertex_sigma_z: Gaussian spread of the vertex in z, mm.
        resolution_rphi: Gaussian hit resolution along r*phi, mm.
        resolution_z: Gaussian hit resolution along the long coordinate (z on a barrel
            cylinder, r on an endcap disk), mm.
        hit_efficiency: probability that a crossing gives a hit (holes otherwise).
        noise_fraction: noise hits as a fraction of the particle hits, placed uniformly
            (per unit area) on all surfaces, ``particle_id = 0``.
        multiple_scattering: kink the direction at each crossing (Highland formula with
            the layer's x/X0 divided by the cosine of the incidence angle).
        b_field: field in tesla; ``None`` takes the preset's.
    """

    preset: str = "trackml"
    num_particles: int = 1000
    poisson: bool = True
    pt_min: float = 0.1
    pt_max: float = 100.0
    pt_spectrum: str = "power"
    pt_power: float = 4.0
    pt_scale: float = 1.0
    eta_range: tuple[float, float] = (-4.0, 4.0)
    phi_range: tuple[float, float] = (-math.pi, math.pi)
    vertex_sigma_xy: float = 0.015
    vertex_sigma_z: float = 55.0
    resolution_rphi: float = 0.015
    resolution_z: float = 0.05
    hit_efficiency: float = 0.98
    noise_fraction: float = 0.05
    multiple_scattering: bool = True
    b_field: float | None = None

    def __post_init__(self) -> None:
        # YAML gives lists; keep tuples so configs compare and hash the same.
        self.eta_range = tuple(float(v) for v in self.eta_range)
        self.phi_range = tuple(float(v) for v in self.phi_range)
        checks = [
            (self.num_particles >= 0, "num_particles must be >= 0"),
            (0 < self.pt_min < self.pt_max, "need 0 < pt_min < pt_max"),
            (self.pt_spectrum in _PT_SPECTRA, f"pt_spectrum must be one of {_PT_SPECTRA}"),
            (self.pt_power > 0 and self.pt_scale > 0, "pt_power and pt_scale must be > 0"),
            (len(self.eta_range) == 2 and self.eta_range[0] <= self.eta_range[1],
             "eta_range must be (lo, hi) with lo <= hi"),
            (len(self.phi_range) == 2 and self.phi_range[0] <= self.phi_range[1],
             "phi_range must be (lo, hi) with lo <= hi"),
            (min(self.vertex_sigma_xy, self.vertex_sigma_z) >= 0, "vertex sigmas must be >= 0"),
            (min(self.resolution_rphi, self.resolution_z) >= 0, "resolutions must be >= 0"),
            (0.0 <= self.hit_efficiency <= 1.0, "hit_efficiency must be in [0, 1]"),
            (self.noise_fraction >= 0, "noise_fraction must be >= 0"),
            (self.b_field is None or self.b_field > 0, "b_field must be None or > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"SimulatorConfig: {msg} (got {self!r})")


@dataclass
class Crossings:
    """Surface crossings of a set of particles, grouped by particle, in path order.

    Attributes (one entry per crossing, float64 unless noted):
        particle: int64 index of the particle in the input arrays.
        surface: int64 index into the geometry's :class:`SurfaceTable`.
        x, y, z: crossing point on the surface, mm.
        px, py, pz: momentum arriving at the crossing (before scattering there), GeV.
        turn: transverse turning angle accumulated from the vertex, rad (<= pi); None
            when :func:`propagate` was asked for no lengths.
        path: 3D path length from the vertex, mm; None like ``turn``.
    """

    particle: np.ndarray
    surface: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    turn: np.ndarray | None
    path: np.ndarray | None

    def __len__(self) -> int:
        return len(self.particle)

    def select(self, mask: np.ndarray) -> "Crossings":
        """The crossings where ``mask`` is True (order kept)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Crossings(**{k: None if a is None else a[mask] for k, a in fields.items()})


def _norm(x, y):
    """``sqrt(x^2 + y^2)``: several times faster than ``np.hypot`` (whose overflow guards
    we do not need at detector scales)."""
    return np.sqrt(x * x + y * y)


def _count_below(edges: np.ndarray, v: np.ndarray, strict: bool = True) -> np.ndarray:
    """``np.searchsorted(edges, v, side="left" if strict else "right")`` for a short sorted
    ``edges``: a few vectorised comparisons beat a binary search per element."""
    if len(edges) > 24:
        return np.searchsorted(edges, v, side="left" if strict else "right")
    out = np.zeros(len(v), dtype=np.int64)
    for e in edges:
        out += (e < v) if strict else (e <= v)
    return out


class _Helix:
    """Per-particle helix state of the particles still flying (float64 arrays).

    ``(x, y, z)`` is the current point, ``(ux, uy)`` the unit transverse direction,
    ``tanl = pz / pT``, ``p`` the momentum magnitude, ``sig = -q`` (+1: counter-clockwise),
    ``turn`` the turning angle and ``path`` the 3D path length accumulated since the vertex.
    """

    __slots__ = ("pidx", "x", "y", "z", "ux", "uy", "tanl", "pt", "p", "sig", "turn", "path")

    def __init__(self, **arrays: np.ndarray) -> None:
        for k in self.__slots__:
            setattr(self, k, arrays[k])

    def take(self, idx) -> "_Helix":
        return _Helix(**{k: getattr(self, k)[idx] for k in self.__slots__})


#: Particles propagated together without scattering (temporaries are per particle).
_CHUNK = 16384
#: Particles stepped together with multiple scattering (the step loop's temporaries are
#: per particle, so larger chunks mean fewer numpy calls).
_STEP_CHUNK = 16384
#: Hits processed together by the element-wise detector response.
_SLICE = 16384
#: Disks tried at once per particle when looking for the next one.
_DISK_BATCH = 4


def _cylinder_candidates(h: _Helix, R: np.ndarray, psi_rem: np.ndarray | None, radius: np.ndarray,
                         half_length: np.ndarray, planar: bool):
    """Both intersections of every helix with every cylinder, with a validity mask.

    The transverse circle (centre ``c``, radius ``R``, ``d = |c|``) meets ``|q| = rho`` at
    ``q = a c/d +- h c_perp/d`` with ``a = (rho^2 - R^2 + d^2) / 2d`` and
    ``h^2 = rho^2 - a^2`` (``d^2 - R^2`` is formed without cancellation for stiff tracks).
    A point lies ahead within the turn budget ``psi_rem`` iff its chord ``w = q - p0`` has
    ``w.u > 0`` (turning angle in (0, pi)) and ``|w| <= 2 R sin(psi_rem / 2)``: on [0, pi]
    the chord grows monotonically with the turning angle, so chord bounds replace angle
    bounds and no trigonometry is needed per candidate. The window ``|z| <= half_length``
    becomes a chord window the same way (a pair of sines per particle and half-length).

    Arrays are [surfaces, particles] so numpy's inner loops run over the particles.

    Args:
        psi_rem: [n] turning angle left, or None for a full half turn.

    Returns:
        (qx, qy, wx, wy, chord2, valid), each [2C, n]: row k < C is the ``+`` solution on
        cylinder k, row C + k the ``-`` solution.
    """
    x, y, ux, uy = h.x, h.y, h.ux, h.uy
    sR = h.sig * R
    cx = x - sR * uy
    cy = y + sR * ux
    dd = x * x + y * y - 2.0 * sR * (x * uy - y * ux)  # d^2 - R^2
    d = np.maximum(_norm(cx, cy), 1e-12)
    chx, chy = cx / d, cy / d
    rho2 = (radius * radius)[:, None]
    a = (rho2 + dd) * (0.5 / d)
    h2 = rho2 - a * a
    hh = np.sqrt(np.maximum(h2, 0.0))
    ax, ay = a * chx - x, a * chy - y
    ox, oy = hh * chy, hh * chx
    wx = np.concatenate([ax - ox, ax + ox])
    wy = np.concatenate([ay + oy, ay - oy])
    along = wx * ux + wy * uy
    chord2 = wx * wx + wy * wy
    meet = h2 >= 0.0
    valid = np.concatenate([meet, meet]) & (along > 0.0) & (chord2 > _PATH_TOL ** 2)
    slack_lo, slack_hi = 1.0 - 1e-12, 1.0 + 1e-12  # keep crossings exactly at a window edge
    if planar:
        if psi_rem is not None:
            hi_c = 2.0 * R * np.sin(0.5 * psi_rem)
            valid &= chord2 <= hi_c * hi_c * slack_hi
    else:
        uniq, grp = np.unique(half_length, return_inverse=True)
        rt = R * h.tanl
        flat = rt == 0.0
        lo2 = np.empty((len(uniq), len(x)))
        hi2 = np.empty((len(uniq), len(x)))
        psi_max = psi_rem if psi_rem is not None else MAX_TURN
        for g, H in enumerate(uniq):
            with np.errstate(divide="ignore", invalid="ignore"):
                pa = (-H - h.z) / rt
                pb = (H - h.z) / rt
            inside = np.abs(h.z) <= H
            lo = np.maximum(np.where(flat, np.where(inside, 0.0, np.inf), np.minimum(pa, pb)), 0.0)
            hi = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(pa, pb))
            hi = np.minimum(hi, psi_max)
            ok = lo <= hi
            lo_c = 2.0 * R * np.sin(0.5 * np.where(ok, lo, 0.0))
            hi_c = 2.0 * R * np.sin(0.5 * np.where(ok, hi, 0.0))
            lo2[g] = np.where(ok, lo_c * lo_c * slack_lo, np.inf)
            hi2[g] = np.where(ok, hi_c * hi_c * slack_hi, -np.inf)
        rows = np.concatenate([grp, grp])
        valid &= (chord2 >= lo2[rows]) & (chord2 <= hi2[rows])
    return wx + x, wy + y, wx, wy, chord2, valid


def _disk_terms(h: _Helix, R: np.ndarray):
    """Per-particle terms of :func:`_disk_r2`: ``(e, 4 d R, theta0)``."""
    sR = h.sig * R
    cx = h.x - sR * h.uy
    cy = h.y + sR * h.ux
    d = _norm(cx, cy)
    v0x, v0y = h.x - cx, h.y - cy
    theta0 = np.arctan2(cx * v0y - cy * v0x, cx * v0x + cy * v0y)
    dd = h.x * h.x + h.y * h.y - 2.0 * sR * (h.x * h.uy - h.y * h.ux)
    return dd / (d + R), 4.0 * d * R, theta0


def _disk_r2(terms, sig: np.ndarray, p: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Squared transverse radius of helix ``p`` after turning ``psi``.

    ``r^2 = |c + v|^2 = (d - R)^2 + 4 d R cos^2(theta / 2)`` with ``v`` the vector from the
    centre ``c`` to the point and ``theta = theta0 + sigma psi`` the angle between ``c`` and
    ``v``: one cosine per candidate, accurate near the axis.
    """
    e, dr4, theta0 = terms
    c = np.cos(0.5 * (theta0[p] + sig[p] * psi))
    return e[p] * e[p] + dr4[p] * c * c


def _advance(x, y, ux, uy, sig, R, S, C):
    """Point and unit direction after turning by psi, given ``S = sin psi``, ``C = 1 - cos psi``."""
    xn = x + R * (ux * S - sig * uy * C)
    yn = y + R * (uy * S + sig * ux * C)
    cpsi = 1.0 - C
    uxn = ux * cpsi - sig * uy * S
    uyn = uy * cpsi + sig * ux * S
    norm = _norm(uxn, uyn)  # keep |u| = 1 against rounding drift over many steps
    return xn, yn, uxn / norm, uyn / norm


def _scatter(geometry: DetectorGeometry, h: _Helix, surface: np.ndarray,
             rng: np.random.Generator) -> None:
    """Multiple-scattering kink of every helix in ``h`` at its current crossing (in place).

    Highland: ``theta0 = 13.6 MeV / (beta p) sqrt(t) (1 + 0.038 ln(t / beta^2))`` with
    ``t = x/X0 / |cos alpha|`` (alpha: angle to the surface normal). Two independent
    Gaussian angles of width theta0 tilt the direction in the two planes containing it
    (only the transverse one in a planar detector); |p| is unchanged (no energy loss).
    """
    st = geometry.surfaces
    n = len(h.x)
    cosl = 1.0 / np.sqrt(1.0 + h.tanl * h.tanl)
    sinl = h.tanl * cosl
    is_disk = st.kind[surface] == DISK
    r = _norm(h.x, h.y)
    cos_inc = np.where(is_disk, np.abs(sinl),
                       np.abs(h.ux * h.x + h.uy * h.y) / np.maximum(r, 1e-12) * cosl)
    # grazing crossings: cap the traversed material at 100x the nominal thickness
    t = st.x_over_x0[surface] / np.maximum(cos_inc, 1e-2)
    beta2 = h.p * h.p / (h.p * h.p + PION_MASS ** 2)
    pos = t > 0
    log_term = np.log(np.where(pos, t, 1.0) / beta2)
    bracket = np.where(pos, np.maximum(1.0 + 0.038 * log_term, 0.0), 0.0)
    theta0 = 0.0136 / (np.sqrt(beta2) * h.p) * np.sqrt(t) * bracket
    g = rng.standard_normal((2, n))
    t1 = theta0 * g[0]
    # d = (u cosl, sinl); e1 = (-uy, ux, 0); e2 = (-u sinl, cosl)
    if geometry.planar:
        dx = h.ux - t1 * h.uy
        dy = h.uy + t1 * h.ux
        dt = _norm(dx, dy)
        h.ux, h.uy = dx / dt, dy / dt
        return
    t2 = theta0 * g[1]
    dx = h.ux * cosl - t1 * h.uy - t2 * h.ux * sinl
    dy = h.uy * cosl + t1 * h.ux - t2 * h.uy * sinl
    dz = sinl + t2 * cosl
    dt = _norm(dx, dy)
    h.ux, h.uy = dx / dt, dy / dt
    h.tanl = dz / dt
    h.pt = h.p * dt / np.sqrt(dt * dt + dz * dz)


def _initial_helix(vx, vy, vz, px, py, pz, q) -> _Helix:
    pt = _norm(px, py)
    if not np.all(pt > 0) or not np.all(np.isfinite(pt)):
        bad = int(np.flatnonzero(~(pt > 0) | ~np.isfinite(pt))[0])
        raise ValueError(f"propagate: particle {bad} has transverse momentum {pt[bad]} (need > 0)")
    if not np.all(np.abs(q) == 1):
        bad = int(np.flatnonzero(np.abs(q) != 1)[0])
        raise ValueError(f"propagate: particle {bad} has charge {q[bad]} (need +-1)")
    for name, a in (("vx", vx), ("vy", vy), ("vz", vz), ("pz", pz)):
        if not np.all(np.isfinite(a)):
            bad = int(np.flatnonzero(~np.isfinite(a))[0])
            raise ValueError(f"propagate: particle {bad} has {name} = {a[bad]}")
    n = len(pt)
    return _Helix(pidx=np.arange(n), x=vx.copy(), y=vy.copy(), z=vz.copy(), ux=px / pt, uy=py / pt,
                  tanl=pz / pt, pt=pt, p=np.sqrt(pt * pt + pz * pz), sig=-q, turn=np.zeros(n),
                  path=np.zeros(n))


def propagate(geometry: DetectorGeometry, vx: np.ndarray, vy: np.ndarray, vz: np.ndarray,
              px: np.ndarray, py: np.ndarray, pz: np.ndarray, q: np.ndarray, *,
              multiple_scattering: bool = False, rng: np.random.Generator | None = None,
              lengths: bool = True) -> Crossings:
    """Crossings of helices with the geometry's surfaces, in path order, up to half a turn.

    Without multiple scattering every particle follows one helix, so all its crossings
    come from one vectorised pass and a sort by turning angle. With scattering a step loop
    (vectorised over particles) finds, for every particle still flying, the next crossing
    (smallest positive path length over all surfaces), kinks the direction there and
    re-seeds the helix. Both stop a particle after half a turn or when no surface is ahead.

    Args:
        geometry: the detector (its ``b_field`` is used).
        vx, vy, vz: [P] vertex, mm.
        px, py, pz: [P] momentum at the vertex, GeV (pT > 0).
        q: [P] charge, +-1.
        multiple_scattering: apply the Highland kink at each crossing (needs ``rng``).
        rng: random generator for the scattering angles.
        lengths: also return ``turn`` and ``path`` (False: they are None, which saves an
            arctangent per crossing in a planar detector without scattering).

    Returns:
        The :class:`Crossings`, grouped by particle (in input order), in path order.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (vx, vy, vz, px, py, pz, q)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise ValueError(f"propagate: vertex/momentum/charge arrays must be 1D of one length, got "
                         f"shapes {[a.shape for a in arrays]}")
    if multiple_scattering and rng is None:
        raise ValueError("propagate: multiple_scattering=True needs an rng")
    h = _initial_helix(*arrays)
    if geometry.planar and (np.any(h.z != 0) or np.any(h.tanl != 0)):
        raise ValueError(f"propagate: planar geometry {geometry.name!r} needs vz == 0 and pz == 0")
    parts = []
    for first, size, c in _propagate_chunks(geometry, h, multiple_scattering, rng, lengths):
        local, index = c[0] - first, c[-1]
        counts = np.bincount(local, minlength=size)
        slot = np.empty(len(local), dtype=np.int64)
        slot[(np.cumsum(counts) - counts)[local] + index] = np.arange(len(local))
        parts.append(tuple(None if a is None else a[slot] for a in c))
    return _stack_crossings(parts, lengths)


def _propagate_chunks(geometry: DetectorGeometry, h: _Helix, multiple_scattering: bool,
                      rng: np.random.Generator | None, lengths: bool):
    """Yield ``(first particle, number of particles, crossing tuple)`` per chunk.

    Chunk sizes are constants, so the random stream (hence the event) does not depend on
    the machine; chunking bounds the size of the temporaries for very large events.
    """
    run, size = (_chunk_steps, _STEP_CHUNK) if multiple_scattering else (_chunk_helix, _CHUNK)
    n = len(h.x)
    for lo in range(0, n, size):
        hi = min(lo + size, n)
        yield lo, hi - lo, run(geometry, h.take(slice(lo, hi)), rng, lengths)


def _stack_crossings(parts: list[tuple], lengths: bool) -> Crossings:
    """Concatenate chunk tuples into one :class:`Crossings` (float fields share one block:
    one large allocation instead of many, which matters where page faults are slow)."""
    if not parts:
        empty = _empty_crossings()
        return empty if lengths else dataclasses.replace(empty, turn=None, path=None)
    m = sum(len(c[0]) for c in parts)
    nf = 8 if lengths else 6
    block = np.empty((nf, m))
    ints = np.empty((2, m), dtype=np.int64)
    for k in range(2):
        np.concatenate([c[k] for c in parts], out=ints[k])
    for k in range(nf):
        np.concatenate([c[2 + k] for c in parts], out=block[k])
    fl = list(block) + [None] * (8 - nf)
    return Crossings(ints[0], ints[1], *fl)


def _gather(flat_mask_t: np.ndarray, nrow: int, n: int):
    """Particle-major (particle, row) pairs of the True entries of a [rows, n] mask given
    as its transpose, and their flat indices into the [rows, n] arrays."""
    flat = np.flatnonzero(flat_mask_t)
    p = flat // nrow
    row = flat - p * nrow
    return p, row, row * n + p


def _chunk_helix(geometry: DetectorGeometry, h: _Helix, rng=None, lengths: bool = True) -> tuple:
    """All crossings of each particle's single helix (no scattering) in one pass.

    Cylinders: a particle whose transverse radius grows monotonically through every
    cylinder it can reach (the usual case, see :func:`_radial_profile`) crosses exactly the
    cylinders with ``|p0| < rho <= r_hi``, once each, outward, in radius order; those
    crossings are computed directly. The remaining particles take the general two-solution
    path (:func:`_cylinder_candidates`). Disks: every plane ahead within half a turn whose
    annulus contains the helix there.

    Returns:
        ``(particle, surface, x, y, z, px, py, pz, turn, path, index)``, mostly surface by
        surface; ``index`` numbers each particle's crossings along its path from 0.
    """
    st = geometry.surfaces
    R = PT_TO_RADIUS * h.pt / geometry.b_field
    cyl = np.flatnonzero(st.kind == CYLINDER)
    cyl = cyl[np.argsort(st.radius[cyl], kind="stable")]
    dsk = np.flatnonzero(st.kind == DISK) if not geometry.planar else cyl[:0]
    need_psi = lengths or not geometry.planar
    parts = []  # (p, surface, x, y, z, px, py, psi, index or None)
    if len(cyl):
        prof = _radial_profile(h, R)
        general = _needs_general(prof, st.radius[cyl])
        rows = np.flatnonzero(general) if general.any() else None
        parts.append(_simple_cylinders(geometry, h, R, prof, cyl, rows, need_psi))
        if rows is not None:
            p, *rest = _general_cylinders(geometry, h.take(rows), R[rows], cyl, need_psi)
            parts.append((rows[p], *rest))
    if len(dsk):
        parts.append(_disk_crossings(geometry, h, R, dsk))
    if not parts:
        return tuple(_empty_crossings().__dict__.values()) + (np.zeros(0, dtype=np.int64),)
    p, surf, x, y, z, px, py, psi, index = (
        c[0] if len(parts) == 1 else None if c[0] is None else np.concatenate(c)
        for c in zip(*parts))
    if any(part[-1] is None for part in parts):
        # number the crossings along each particle by turning angle (= path order); the
        # rows stay where they are (surface by surface, which the final sort likes)
        order = np.argsort(p * 4.0 + psi)
        counts = np.bincount(p, minlength=len(h.x))
        index = np.empty(len(p), dtype=np.int64)
        index[order] = np.arange(len(p)) - (np.cumsum(counts) - counts)[p[order]]
    if geometry.planar:
        pz = np.zeros(len(p))
        path = R[p] * psi if lengths else None
    else:
        tanl = h.tanl[p]
        pz = h.pt[p] * tanl
        path = R[p] * psi * np.sqrt(1.0 + tanl * tanl) if lengths else None
    return (p + h.pidx[0], surf, x, y, z, px, py, pz, psi if lengths else None, path, index)


def _disk_crossings(geometry: DetectorGeometry, h: _Helix, R: np.ndarray, dsk: np.ndarray) -> tuple:
    """Crossings with the disks ``dsk``, disk by disk: planes ahead within half a turn whose
    annulus holds the helix there (index None: to be numbered by the caller)."""
    st = geometry.surfaces
    terms = _disk_terms(h, R)
    rt = R * h.tanl
    parts = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in dsk:
            psi = (st.z[s] - h.z) / rt
            p = np.flatnonzero((psi * R > _PATH_TOL) & (psi <= MAX_TURN))
            psi = psi[p]
            r2 = _disk_r2(terms, h.sig, p, psi)
            keep = (r2 >= st.r_min[s] ** 2) & (r2 <= st.r_max[s] ** 2)
            parts.append((p[keep], psi[keep], s))
    p = np.concatenate([c[0] for c in parts])
    psi = np.concatenate([c[1] for c in parts])
    surf = np.repeat(np.array([c[2] for c in parts], dtype=np.int64), [len(c[0]) for c in parts])
    s_half = np.sin(0.5 * psi)
    xs, ys, uxn, uyn = _advance(h.x[p], h.y[p], h.ux[p], h.uy[p], h.sig[p], R[p],
                                np.sin(psi), 2.0 * s_half * s_half)
    pt = h.pt[p]
    return p, surf, xs, ys, st.z[surf], pt * uxn, pt * uyn, psi, None


def _radial_profile(h: _Helix, R: np.ndarray, psi_end: np.ndarray | None = None) -> dict:
    """Per-particle description of how the transverse radius r evolves over the turning
    angles ``[0, psi_end]`` (default: half a turn).

    With ``c`` the circle centre (``d = |c|``), r runs between ``r_min = |d - R|`` and
    ``r_max = d + R``, reached at ``psi_far`` (and ``psi_far - pi``). r falls from the
    start when ``psi_far > pi`` (``inward``) and falls after ``psi_far`` when that comes
    before ``psi_end`` (``far_in``). Otherwise it grows from ``r_a = |p0|`` to
    ``r_hi`` (``r_max``, or ``r_end``, its value at ``psi_end``).
    """
    x, y, ux, uy, sig = h.x, h.y, h.ux, h.uy, h.sig
    sR = sig * R
    cx = x - sR * uy
    cy = y + sR * ux
    d = np.maximum(_norm(cx, cy), 1e-12)
    chx, chy = cx / d, cy / d
    dd = x * x + y * y - 2.0 * sR * (x * uy - y * ux)  # d^2 - R^2 without cancellation
    r_a = _norm(x, y)
    if psi_end is None:
        cos_end = -1.0
        r_end = _norm(x - 2.0 * sR * uy, y + 2.0 * sR * ux)
    else:
        sh = np.sin(0.5 * psi_end)
        S, C = np.sin(psi_end), 2.0 * sh * sh
        cos_end = 1.0 - C
        r_end = _norm(x + R * (ux * S - sig * uy * C), y + R * (uy * S + sig * ux * C))
    # turning angle psi_far from p0 to the farthest point c + R c_hat, through its sine and
    # cosine (p0 - c = sig R (uy, -ux)): sin = u.c_hat, cos = sig (uy chx - ux chy)
    sin_far = ux * chx + uy * chy
    cos_far = sig * (uy * chx - ux * chy)
    far_in = (sin_far >= 0.0) & (cos_far > cos_end)   # psi_far in [0, psi_end)
    inward = sin_far < 0.0                              # psi_far in (pi, 2 pi)
    r_max = d + R
    return dict(cx=cx, cy=cy, d=d, chx=chx, chy=chy, dd=dd, r_a=r_a, r_end=r_end,
                r_min=np.abs(dd) / r_max, r_max=r_max, far_in=far_in, inward=inward,
                r_hi=np.where(far_in, r_max, r_end))


def _needs_general(prof: dict, radius: np.ndarray) -> np.ndarray:
    """Particles where some cylinder lies in a band where r falls (or within rounding of
    one): those can cross a cylinder inward, so they take the general path."""
    m = 1e-6  # mm, far above the rounding of the radii
    top = len(radius) - 1
    # smallest radius >= the band's lower edge, compared with its upper edge (radius sorted)
    i1 = np.minimum(_count_below(radius, prof["r_min"] - m), top)
    band1 = prof["inward"] & (radius[i1] >= prof["r_min"] - m) & (radius[i1] <= prof["r_a"] + m)
    i2 = np.minimum(_count_below(radius, prof["r_end"] - m), top)
    band2 = prof["far_in"] & (radius[i2] >= prof["r_end"] - m) & (radius[i2] <= prof["r_max"] + m)
    return band1 | band2


def _simple_cylinders(geometry: DetectorGeometry, h: _Helix, R: np.ndarray, prof: dict,
                      cyl: np.ndarray, skip: np.ndarray | None, need_psi: bool) -> tuple:
    """Outward crossings of the monotone particles (all but ``skip``) with the cylinders
    ``cyl`` (sorted by radius), cylinder by cylinder.

    The outward intersection of the circle with ``|q| = rho`` is
    ``q = a c/d - sigma h c_perp/d`` (``a = (rho^2 + d^2 - R^2) / 2d``,
    ``h = sqrt(rho^2 - a^2)``), and the momentum there is ``pT sigma perp(q - c) / R``.
    The crossed cylinders are consecutive in radius, so the index along the particle is
    the cylinder's rank minus that of its first one (None if the z window dropped some).

    Returns:
        ``(p, surface, x, y, z, px, py, psi, index)``, cylinder by cylinder.
    """
    st = geometry.surfaces
    radius = st.radius[cyl]
    lo = prof["r_a"] + _PATH_TOL
    hi = prof["r_hi"]
    if skip is not None:
        hi = hi.copy()
        hi[skip] = -1.0
    first = _count_below(radius, lo, strict=False)
    half_d = 0.5 / prof["d"]
    neg_sig = -h.sig
    # momentum at q: pT sigma perp(q - c) / R, and pT / R = B / PT_TO_RADIUS for all particles
    k = h.sig * (geometry.b_field / PT_TO_RADIUS)
    dd, chx, chy, cx, cy = prof["dd"], prof["chx"], prof["chy"], prof["cx"], prof["cy"]
    parts = []
    for j, rho in enumerate(radius):
        ok = (rho > lo) & (rho <= hi)
        p = np.flatnonzero(ok)
        if len(p) == 0:
            continue
        full = len(p) == len(ok)
        a = (rho * rho + dd) * half_d
        hh = np.sqrt(np.maximum(rho * rho - a * a, 0.0)) * neg_sig
        qx = a * chx - hh * chy
        qy = a * chy + hh * chx
        vx = (cy - qy) * k
        vy = (qx - cx) * k
        if not full:
            qx, qy, vx, vy = qx[p], qy[p], vx[p], vy[p]
        parts.append((p, j, qx, qy, vx, vy))
    if not parts:
        e = np.zeros(0)
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), e, e, e, e, e, e, \
            np.zeros(0, dtype=np.int64)
    p, x, y, px, py = (np.concatenate([c[i] for c in parts]) for i in (0, 2, 3, 4, 5))
    row = np.repeat(np.array([c[1] for c in parts], dtype=np.int64), [len(c[0]) for c in parts])
    surf = cyl[row]
    index = row - first[p]
    if geometry.planar:
        psi = _turn(h, p, px, py) if need_psi else None
        z = np.zeros(len(p))
    else:
        psi = _turn(h, p, px, py)
        z = h.z[p] + R[p] * psi * h.tanl[p]
        inside = np.abs(z) <= st.half_length[surf]
        if not inside.all():
            p, surf, x, y, z, px, py, psi = (a[inside] for a in (p, surf, x, y, z, px, py, psi))
            index = None
    return p, surf, x, y, z, px, py, psi, index


def _turn(h: _Helix, p: np.ndarray, ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
    """Turning angle in [0, pi] from the start direction of helix ``p`` to the direction
    of ``(ux, uy)`` (any length)."""
    u0x, u0y = h.ux[p], h.uy[p]
    psi = np.arctan2(h.sig[p] * (u0x * uy - u0y * ux), u0x * ux + u0y * uy)
    # at (or within rounding of) half a turn the sine may come out as -0: that is +pi
    return np.where(psi < 0.0, psi + 2.0 * np.pi, psi)


def _general_cylinders(geometry: DetectorGeometry, h: _Helix, R: np.ndarray, cyl: np.ndarray,
                       need_psi: bool) -> tuple:
    """All cylinder crossings within half a turn from both circle intersections (any
    helix), particle-major, ordered by turning angle, with their index along the particle."""
    st = geometry.surfaces
    n = len(h.x)
    qx, qy, wx, wy, _, valid = _cylinder_candidates(
        h, R, None, st.radius[cyl], st.half_length[cyl], geometry.planar)
    p, row, g = _gather(valid.T, valid.shape[0], n)
    wxs, wys = wx.ravel()[g], wy.ravel()[g]
    Rr, sig, ux, uy = R[p], h.sig[p], h.ux[p], h.uy[p]
    S = (wxs * ux + wys * uy) / Rr
    C = sig * (wys * ux - wxs * uy) / Rr
    psi = np.arctan2(S, 1.0 - C)
    surf = cyl[row % len(cyl)]
    xs, ys = qx.ravel()[g], qy.ravel()[g]
    scale = st.radius[surf] / _norm(xs, ys)  # exactly on the cylinder
    _, _, uxn, uyn = _advance(xs, ys, ux, uy, sig, Rr, S, C)
    z = np.zeros(len(p)) if geometry.planar else h.z[p] + Rr * psi * h.tanl[p]
    pt = h.pt[p]
    order = np.argsort(p * 4.0 + psi)
    p = p[order]
    counts = np.bincount(p, minlength=n)
    index = np.arange(len(p)) - (np.cumsum(counts) - counts)[p]
    cols = (surf, xs * scale, ys * scale, z, pt * uxn, pt * uyn, psi)
    return (p, *(a[order] for a in cols), index)


def _chunk_steps(geometry: DetectorGeometry, h: _Helix, rng: np.random.Generator,
                 lengths: bool = True) -> tuple:
    """Step loop: next crossing for every flying particle, kink, re-seed, repeat.

    The next crossing is the smallest positive turning angle over all surfaces within the
    turn budget: cylinders are tried in radius order (:func:`_next_cylinder`; particles
    whose radius may fall take the general two-solution search), then disks in z order up
    to the angle found (:func:`_next_disk`). Returns the tuple of :func:`_chunk_helix`,
    step by step.
    """
    st = geometry.surfaces
    cyl = np.flatnonzero(st.kind == CYLINDER)
    cyl = cyl[np.argsort(st.radius[cyl], kind="stable")]
    dsk = np.flatnonzero(st.kind == DISK) if not geometry.planar else cyl[:0]
    dsk = dsk[np.argsort(st.z[dsk], kind="stable")]
    n0 = len(h.x)
    first = h.pidx[0] if n0 else 0
    nstep = np.zeros(n0, dtype=np.int64)
    out: list[tuple] = []
    # within half a turn a particle crosses a cylinder at most twice and a disk at most once
    for _ in range(2 * len(cyl) + len(dsk) + 1):
        n = len(h.x)
        if n == 0:
            break
        R = PT_TO_RADIUS * h.pt / geometry.b_field
        psi_rem = MAX_TURN - h.turn
        best = psi_rem.copy()
        surf = np.full(n, -1)
        x, y, ux, uy = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
        if len(cyl):
            found = _next_cylinder(geometry, h, R, cyl, best)
            if found is not None:
                rows, psi_c, s_c, xc, yc, uxc, uyc = found
                best[rows], surf[rows] = psi_c, s_c
                x[rows], y[rows], ux[rows], uy[rows] = xc, yc, uxc, uyc
        if len(dsk):
            psi_d, s_d = _next_disk(geometry, h, R, dsk, best)
            got = (s_d >= 0) & (psi_d < best)
            if got.any():
                best[got], surf[got] = psi_d[got], s_d[got]
                sh = np.sin(0.5 * psi_d[got])
                x[got], y[got], ux[got], uy[got] = _advance(
                    h.x[got], h.y[got], h.ux[got], h.uy[got], h.sig[got], R[got],
                    np.sin(psi_d[got]), 2.0 * sh * sh)
        hit = surf >= 0
        if not hit.any():
            break
        if not hit.all():
            h, R, best, surf = h.take(hit), R[hit], best[hit], surf[hit]
            x, y, ux, uy = x[hit], y[hit], ux[hit], uy[hit]
        is_d = st.kind[surf] == DISK
        z = h.z + R * best * h.tanl
        if is_d.any():
            z[is_d] = st.z[surf[is_d]]  # exactly on the disk plane
        turn = h.turn + best
        path = h.path + R * best * np.sqrt(1.0 + h.tanl * h.tanl)
        local = h.pidx - first
        k = nstep[local]
        nstep[local] += 1
        out.append((local, surf, x, y, z, h.pt * ux, h.pt * uy, h.pt * h.tanl, turn, path, k))
        h.x, h.y, h.z, h.ux, h.uy, h.turn, h.path = x, y, z, ux, uy, turn, path
        _scatter(geometry, h, surf, rng)
    if not out:
        return tuple(_empty_crossings().__dict__.values()) + (np.zeros(0, dtype=np.int64),)
    cols = [np.concatenate(c) for c in zip(*out)]
    cols[0] += first
    return tuple(cols)


def _next_disk(geometry: DetectorGeometry, h: _Helix, R: np.ndarray, dsk: np.ndarray,
               limit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First disk crossing of each helix with turning angle <= ``limit``.

    z is linear in the turning angle, so the disks (``dsk``, sorted by z) are met in z
    order: try the next plane ahead, then further ones (a few at a time) while the helix
    misses their annuli. Particles that reach no plane within ``limit`` (most barrel
    tracks, once a cylinder crossing is known) drop out before any trigonometry.

    Returns:
        (psi, surface) per particle; surface -1 where none.
    """
    st = geometry.surfaces
    zs = st.z[dsk]
    nd = len(zs)
    n = len(h.x)
    psi_out = np.full(n, np.inf)
    s_out = np.full(n, -1)
    fwd = h.tanl > 0
    k = np.where(fwd, np.searchsorted(zs, h.z + _PATH_TOL, side="right"),
                 np.searchsorted(zs, h.z - _PATH_TOL, side="left") - 1)
    rt = R * h.tanl
    with np.errstate(divide="ignore", invalid="ignore"):
        psi0 = (zs[np.clip(k, 0, nd - 1)] - h.z) / rt
    rows = np.flatnonzero((h.tanl != 0) & (k >= 0) & (k < nd) & (psi0 <= limit))
    if len(rows) == 0:
        return psi_out, s_out
    step = np.where(fwd[rows], 1, -1)
    k = k[rows]
    x, y, ux, uy, sig = h.x[rows], h.y[rows], h.ux[rows], h.uy[rows], h.sig[rows]
    sR = sig * R[rows]
    cx, cy = x - sR * uy, y + sR * ux
    d = _norm(cx, cy)
    v0x, v0y = x - cx, y - cy
    theta0 = np.arctan2(cx * v0y - cy * v0x, cx * v0x + cy * v0y)
    e = (x * x + y * y - 2.0 * sR * (x * uy - y * ux)) / (d + R[rows])
    e2, dr4 = e * e, 4.0 * d * R[rows]
    z0, rt, lim = h.z[rows], rt[rows], limit[rows]
    live = np.arange(len(rows))  # index into the per-row arrays
    batch = 1  # the next plane is usually the one; then look further, a few at a time
    while len(live):
        ahead = np.arange(batch)[:, None]
        kk = k[live] + step[live] * ahead                      # [batch, m]
        inside = (kk >= 0) & (kk < nd)
        kk = np.clip(kk, 0, nd - 1)
        psi = (zs[kk] - z0[live]) / rt[live]
        within = inside & (psi <= lim[live])
        s = dsk[kk]
        c = np.cos(0.5 * (theta0[live] + sig[live] * psi))
        r2 = e2[live] + dr4[live] * c * c
        hit = within & (r2 >= st.r_min[s] ** 2) & (r2 <= st.r_max[s] ** 2)
        first = np.zeros(len(live), dtype=np.int64)  # first hit along the batch
        for b in range(batch - 1, -1, -1):
            first[hit[b]] = b
        got = hit.any(axis=0)
        cols = np.flatnonzero(got)
        psi_out[rows[live[got]]] = psi[first[got], cols]
        s_out[rows[live[got]]] = s[first[got], cols]
        k[live] += batch * step[live]
        live = live[~got & within[-1]]
        batch = _DISK_BATCH
    return psi_out, s_out


def _next_cylinder(geometry: DetectorGeometry, h: _Helix, R: np.ndarray, cyl: np.ndarray,
                   limit: np.ndarray):
    """First cylinder crossing of each helix with turning angle <= ``limit``.

    Particles whose radius grows through every reachable cylinder (see
    :func:`_radial_profile`) meet the cylinders in radius order: try the next radius out,
    and the following ones while the crossing falls outside the cylinder's length (z moves
    monotonically, so stop once it is beyond every remaining half-length). The others take
    the general two-solution search.

    Returns:
        None, or (rows, psi, surface, x, y, ux, uy) for the particles that cross one.
    """
    st = geometry.surfaces
    radius = st.radius[cyl]
    half = st.half_length[cyl]
    # largest half-length from cylinder j outward: beyond it no later cylinder is hit
    half_out = np.maximum.accumulate(half[::-1])[::-1]
    prof = _radial_profile(h, R, MAX_TURN - h.turn)
    general = _needs_general(prof, radius)
    j = _count_below(radius, prof["r_a"] + _PATH_TOL, strict=False)
    rows = np.flatnonzero(~general & (j < len(radius)))
    found = []
    while len(rows):
        jj = j[rows]
        rho = radius[jj]
        reach = rho <= prof["r_hi"][rows]
        rho2 = rho * rho
        sig = h.sig[rows]
        a = (rho2 + prof["dd"][rows]) * (0.5 / prof["d"][rows])
        hh = np.sqrt(np.maximum(rho2 - a * a, 0.0)) * -sig
        chx, chy = prof["chx"][rows], prof["chy"][rows]
        qx = a * chx - hh * chy
        qy = a * chy + hh * chx
        inv = sig / R[rows]
        vx = (prof["cy"][rows] - qy) * inv
        vy = (qx - prof["cx"][rows]) * inv
        psi = _turn(h, rows, vx, vy)
        z = h.z[rows] + R[rows] * psi * h.tanl[rows]
        ahead = reach & (psi <= limit[rows])
        hit = ahead & (np.abs(z) <= half[jj])
        if hit.any():
            found.append((rows[hit], psi[hit], cyl[jj[hit]], qx[hit], qy[hit], vx[hit], vy[hit]))
        j[rows] += 1
        receding = z * h.tanl[rows] >= 0  # |z| keeps growing
        nxt = np.minimum(jj + 1, len(radius) - 1)
        more = ahead & ~hit & (jj + 1 < len(radius)) & ~(receding & (np.abs(z) > half_out[nxt]))
        rows = rows[more]
    if general.any():
        g = _general_next_cylinder(geometry, h, R, cyl, limit, np.flatnonzero(general))
        if g is not None:
            found.append(g)
    if not found:
        return None
    return tuple(np.concatenate(c) for c in zip(*found))


def _general_next_cylinder(geometry: DetectorGeometry, h: _Helix, R: np.ndarray, cyl: np.ndarray,
                           limit: np.ndarray, rows: np.ndarray):
    """:func:`_next_cylinder` for any helix: both intersections with every cylinder."""
    st = geometry.surfaces
    sub = h.take(rows)
    Rr = R[rows]
    qx, qy, wx, wy, chord2, valid = _cylinder_candidates(
        sub, Rr, np.minimum(limit[rows], MAX_TURN - sub.turn), st.radius[cyl], st.half_length[cyl],
        geometry.planar)
    masked = np.where(valid, chord2, np.inf)
    col = np.argmin(masked, axis=0)
    ar = np.arange(len(rows))
    has = np.isfinite(masked[col, ar])
    if not has.any():
        return None
    col, ar = col[has], ar[has]
    wxs, wys = wx[col, ar], wy[col, ar]
    ux, uy, sig, Rh = sub.ux[ar], sub.uy[ar], sub.sig[ar], Rr[ar]
    S = (wxs * ux + wys * uy) / Rh
    C = sig * (wys * ux - wxs * uy) / Rh
    psi = np.arctan2(S, 1.0 - C)
    _, _, uxn, uyn = _advance(0.0, 0.0, ux, uy, sig, Rh, S, C)
    xs, ys = qx[col, ar], qy[col, ar]
    s = cyl[col % len(cyl)]
    scale = st.radius[s] / _norm(xs, ys)  # exactly on the cylinder
    return rows[ar], psi, s, xs * scale, ys * scale, uxn, uyn


def _empty_crossings() -> Crossings:
    i, f = np.zeros(0, dtype=np.int64), np.zeros(0)
    return Crossings(i, i, f, f, f, f, f, f, f, f)


def event_seed(seed: int, index: int) -> int:
    """The seed of event ``index`` in the stream ``seed``: the one event numbering of the project.

    ``Simulator.simulate_many(seed=s)``, ``gnn-jepa simulate --seed s`` and the datasets
    (``data: {seed: s}``) all simulate event ``i`` with ``event_seed(s, i)``, so they give the
    same events. The first 4 bytes of SHA-256 of ``"seed:index"``: stable across runs,
    platforms and numpy versions; neighbouring seeds and indices give unrelated streams.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"event_seed: seed and index must be >= 0, got {seed}, {index}")
    digest = hashlib.sha256(f"{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class _HitChunk:
    """The measured hits of one chunk of particles, before the event-wide sort."""

    __slots__ = ("pid", "x", "y", "z", "tx", "ty", "tz", "px", "py", "pz", "weight", "key")

    def __init__(self, **arrays: np.ndarray) -> None:
        for k in self.__slots__:
            setattr(self, k, arrays[k])


class Simulator:
    """Simulates events for one :class:`SimulatorConfig`.

    Example::

        sim = Simulator.from_preset("trackml", num_particles=1000)
        event = sim.simulate(seed=7)            # same seed -> bit-identical tables
        events = sim.simulate_many(10, seed=0)  # event i uses event_seed(0, i)
    """

    def __init__(self, config: SimulatorConfig | None = None, **overrides) -> None:
        config = config if config is not None else SimulatorConfig()
        if overrides:
            names = {f.name for f in dataclasses.fields(SimulatorConfig)}
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise ValueError(f"Simulator: unknown config field(s) {unknown}; "
                                 f"valid: {sorted(names)}")
            config = dataclasses.replace(config, **overrides)
        self.config = config
        geometry = DetectorGeometry.preset(config.preset)
        if config.b_field is not None:
            geometry = dataclasses.replace(geometry, b_field=float(config.b_field))
        self.geometry = geometry
        st = geometry.surfaces
        n_cyl = int((st.kind == CYLINDER).sum())
        #: most crossings one particle can make: cylinders twice, disks once (half a turn)
        self._max_crossings = 2 * n_cyl + (len(st) - n_cyl)
        self._order_table = _order_table(self._max_crossings)
        self._key = _SortKey(geometry)
        #: radius at which particles are ordered by azimuth (see sample_particles)
        self._r_ref = float(np.median([cy.radius for cy in geometry.cylinders] or [geometry.r_max]))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "Simulator":
        """A simulator for detector preset ``name`` with config fields ``overrides``."""
        return cls(SimulatorConfig(preset=name), **overrides)

    def __repr__(self) -> str:
        return f"Simulator({self.config!r})"

    # -- particles ---------------------------------------------------------------------
    def _sample_pt(self, rng: np.random.Generator, n: int) -> np.ndarray:
        c = self.config
        u = rng.random(n)
        if c.pt_spectrum == "uniform":
            return c.pt_min + (c.pt_max - c.pt_min) * u
        # inverse CDF of (1 + pT/p0)^-n on [pt_min, pt_max]; with y = 1 + pT/p0 the CDF is
        # (y^(1-n) - y_min^(1-n)) / (y_max^(1-n) - y_min^(1-n))  (log-uniform y for n == 1)
        y0, y1 = 1.0 + c.pt_min / c.pt_scale, 1.0 + c.pt_max / c.pt_scale
        if abs(c.pt_power - 1.0) < 1e-12:
            y = y0 * (y1 / y0) ** u
        else:
            e = 1.0 - c.pt_power
            y = (y0 ** e + u * (y1 ** e - y0 ** e)) ** (1.0 / e)
        return np.clip(c.pt_scale * (y - 1.0), c.pt_min, c.pt_max)

    def sample_particles(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw the particles of one event: ``vx, vy, vz, px, py, pz, q`` (float64 arrays).

        A planar geometry gets ``pz = vz = 0`` (the eta range and vertex z spread are ignored).
        """
        c = self.config
        n = int(rng.poisson(c.num_particles)) if c.poisson else int(c.num_particles)
        pt = self._sample_pt(rng, n)
        phi = rng.uniform(c.phi_range[0], c.phi_range[1], n)
        q = np.where(rng.random(n) < 0.5, -1.0, 1.0)
        vx = rng.normal(0.0, c.vertex_sigma_xy, n) if c.vertex_sigma_xy > 0 else np.zeros(n)
        vy = rng.normal(0.0, c.vertex_sigma_xy, n) if c.vertex_sigma_xy > 0 else np.zeros(n)
        if self.geometry.planar:
            pz, vz = np.zeros(n), np.zeros(n)
        else:
            eta = rng.uniform(c.eta_range[0], c.eta_range[1], n)
            pz = pt * np.sinh(eta)
            vz = rng.normal(0.0, c.vertex_sigma_z, n) if c.vertex_sigma_z > 0 else np.zeros(n)
        # List the particles by the azimuth of their track at a mid radius (the particles are
        # i.i.d., so numbering them in any order changes no distribution): the hits of one
        # layer then come out of the propagation almost in azimuth order, which makes the
        # final sort into detector order cheap (its gathers stay in cache).
        R = PT_TO_RADIUS * pt / self.geometry.b_field
        ref = phi + q * np.arcsin(np.minimum(self._r_ref / (2.0 * R), 1.0))
        order = np.argsort(np.where(ref > np.pi, ref - 2 * np.pi,
                                    np.where(ref < -np.pi, ref + 2 * np.pi, ref)))
        pt, phi, q, vx, vy, vz, pz = (a[order] for a in (pt, phi, q, vx, vy, vz, pz))
        return dict(vx=vx, vy=vy, vz=vz, px=pt * np.cos(phi), py=pt * np.sin(phi), pz=pz, q=q)

    # -- detector response -------------------------------------------------------------
    def _smear(self, rng: np.random.Generator, surface: np.ndarray, x: np.ndarray, y: np.ndarray,
               z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gaussian smearing along the surface (the measured point stays on it).

        r*phi: a rotation by ``eps = N(0, resolution_rphi) / r``, applied as the exact
        rotation by ``atan(eps)`` (the same for eps << 1, and free of trigonometry). Long
        coordinate: z on cylinders, r on disks, ``N(0, resolution_z)``.
        """
        c = self.config
        srphi, slong = c.resolution_rphi, 0.0 if self.geometry.planar else c.resolution_z
        if (srphi == 0 and slong == 0) or len(x) == 0:
            return x, y, z
        g = rng.standard_normal((2, len(x)))
        r = _norm(x, y)
        eps = srphi * g[0] / r
        is_disk = self.geometry.surfaces.kind[surface] == DISK
        dr = np.where(is_disk, slong * g[1], 0.0)
        scale = (r + dr) / r / np.sqrt(1.0 + eps * eps)
        xm = (x - eps * y) * scale
        ym = (y + eps * x) * scale
        zm = z + np.where(is_disk, 0.0, slong * g[1]) if slong > 0 else z
        return xm, ym, zm

    def _response(self, rng: np.random.Generator, cr: tuple, first: int, n_chunk: int,
                  pt_weight_part: np.ndarray, offset: int) -> tuple[_HitChunk, np.ndarray]:
        """Efficiency, weights, smearing and sort keys for one chunk of crossings.

        ``cr`` is a crossing tuple of :func:`_chunk_helix` for particles ``first ...
        first + n_chunk - 1``; ``offset`` is the event-wide index of its first hit.
        Returns the chunk's hits and the hit count of each of its particles.
        """
        c = self.config
        pid, surf, x, y, z, px, py, pz = cr[:8]
        index = cr[-1]
        local = pid - first
        if c.hit_efficiency < 1.0 and len(pid):
            keep = rng.random(len(pid)) < c.hit_efficiency
            # renumber the surviving crossings along each particle: lay the crossings out
            # particle by particle, count survivors with an exclusive prefix sum
            counts = np.bincount(local, minlength=n_chunk)
            start = (np.cumsum(counts) - counts)[local]
            slot = start + index
            kept = np.zeros(len(pid), dtype=np.int64)
            kept[slot] = keep
            before = np.cumsum(kept) - kept
            index = (before[slot] - before[start])[keep]
            pid, surf, x, y, z, px, py, pz, local = (
                a[keep] for a in (pid, surf, x, y, z, px, py, pz, local))
        nhits = np.bincount(local, minlength=n_chunk)
        weight = self._order_table[nhits[local], index] * pt_weight_part[pid]
        # element-wise work in slices: small temporaries are recycled by the allocator
        m = len(pid)
        smear = c.resolution_rphi > 0 or (c.resolution_z > 0 and not self.geometry.planar)
        xm, ym, zm = (np.empty(m), np.empty(m), np.empty(m)) if smear else (x, y, z)
        key = np.empty(m, dtype=np.int64)
        for lo in range(0, m, _SLICE):
            sl = slice(lo, min(lo + _SLICE, m))
            if smear:
                xm[sl], ym[sl], zm[sl] = self._smear(rng, surf[sl], x[sl], y[sl], z[sl])
            key[sl] = self._key(surf[sl], xm[sl], ym[sl], zm[sl], offset + lo)
        return _HitChunk(pid=pid + 1, x=xm, y=ym, z=zm, tx=x, ty=y, tz=z, px=px, py=py, pz=pz,
                         weight=weight, key=key), nhits

    def _noise(self, rng: np.random.Generator, n: int, offset: int) -> _HitChunk:
        """``n`` noise hits, uniform per unit area over all surfaces (exactly on them)."""
        st = self.geometry.surfaces
        surface = rng.choice(len(st), size=n, p=st.area / st.area.sum())
        phi = rng.uniform(-math.pi, math.pi, n)
        u = rng.random(n)
        is_disk = st.kind[surface] == DISK
        rmin2, rmax2 = np.nan_to_num(st.r_min[surface]) ** 2, np.nan_to_num(st.r_max[surface]) ** 2
        # uniform per unit area on an annulus: r^2 uniform
        r = np.where(is_disk, np.sqrt(rmin2 + u * (rmax2 - rmin2)),
                     np.nan_to_num(st.radius[surface]))
        if self.geometry.planar:
            z = np.zeros(n)
        else:
            z = np.where(is_disk, np.nan_to_num(st.z[surface]),
                         (2.0 * u - 1.0) * np.nan_to_num(st.half_length[surface]))
        x, y = r * np.cos(phi), r * np.sin(phi)
        zero = np.zeros(n)
        return _HitChunk(pid=np.zeros(n, dtype=np.int64), x=x, y=y, z=z, tx=x, ty=y, tz=z,
                         px=zero, py=zero, pz=zero, weight=zero,
                         key=self._key(surface, x, y, z, offset))

    # -- events ------------------------------------------------------------------------
    def simulate(self, seed: int, event_id: int = 0) -> Event:
        """Simulate one event; the same ``seed`` always gives bit-identical tables.

        Hits are sorted as in TrackML: by ``(volume_id, layer_id)``, then module, then
        azimuth, so the row order carries no truth; ``hit_id`` runs 1..N in that order.
        Truth weights are the TrackML score weights (hits ordered along each particle).
        """
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"simulate: seed must be an int >= 0, got {seed!r}")
        c, geo = self.config, self.geometry
        rng = np.random.default_rng(int(seed))
        part = self.sample_particles(rng)
        n_part = len(part["q"])
        h = _initial_helix(*(part[k] for k in ("vx", "vy", "vz", "px", "py", "pz", "q")))
        ptw = pt_weight(h.pt)
        bound = n_part * self._max_crossings
        self._key.check_capacity(bound + int(math.ceil(c.noise_fraction * bound)) + 1)
        chunks, nhits, offset = [], [], 0
        steps = _propagate_chunks(geo, h, c.multiple_scattering, rng, lengths=False)
        for first, n_chunk, cr in steps:
            hc, nh = self._response(rng, cr, first, n_chunk, ptw, offset)
            chunks.append(hc)
            nhits.append(nh)
            offset += len(hc.pid)
        m = offset
        n_noise = int(round(c.noise_fraction * m))
        if n_noise:
            chunks.append(self._noise(rng, n_noise, offset))
        nhits = np.concatenate(nhits) if nhits else np.zeros(0, dtype=np.int64)
        hits, truth = self._assemble(chunks, m + n_noise)
        particles = pd.DataFrame({
            "particle_id": np.arange(1, n_part + 1, dtype=np.int64),
            "vx": part["vx"], "vy": part["vy"], "vz": part["vz"],
            "px": part["px"], "py": part["py"], "pz": part["pz"],
            "q": part["q"].astype(np.int64), "nhits": nhits.astype(np.int64),
        }, copy=False)
        return Event(hits=hits, truth=truth, particles=particles, event_id=int(event_id))

    def _assemble(self, chunks: list[_HitChunk], n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Sort all hits into TrackML order and build the hits and truth tables.

        Columns are rows of two large blocks (float and int): a few large allocations
        instead of dozens of medium ones. Every column owns its memory (no two columns
        alias, so editing one never changes another); a column known to be zero (z in a
        planar detector) or equal to another (true = measured position without smearing)
        is filled or copied rather than gathered again.
        """
        st = self.geometry.surfaces
        planar = self.geometry.planar
        same = all(ch.tx is ch.x for ch in chunks)
        names = ("x", "y", "z", "tx", "ty", "tz", "tpx", "tpy", "tpz", "weight")
        # column -> the staged field it is gathered from (None: zero)
        source = {"x": "x", "y": "y", "z": None if planar else "z",
                  "tx": "x" if same else "tx", "ty": "y" if same else "ty",
                  "tz": None if planar else ("z" if same else "tz"),
                  "tpx": "px", "tpy": "py", "tpz": None if planar else "pz", "weight": "weight"}
        fields = list(dict.fromkeys(f for f in source.values() if f is not None))
        if not chunks:
            chunks = [_HitChunk(**{k: np.zeros(0, dtype=np.int64 if k in ("pid", "key") else None)
                                   for k in _HitChunk.__slots__})]
        if len(chunks) == 1:  # the chunk's arrays are the staging area
            stage = {f: getattr(chunks[0], f) for f in fields}
            pid_stage, perm = chunks[0].pid, chunks[0].key
        else:
            block = np.empty((len(fields), n))
            stage = {f: np.concatenate([getattr(ch, f) for ch in chunks], out=block[k])
                     for k, f in enumerate(fields)}
            pid_stage = np.concatenate([ch.pid for ch in chunks])
            perm = np.concatenate([ch.key for ch in chunks])
        surf, module = self._key.sort(perm)  # the keys become the permutation, in place
        out = dict(zip(names, np.empty((len(names), n))))
        done: dict[str, np.ndarray] = {}
        for name in names:
            f = source[name]
            if f is None:
                out[name].fill(0.0)
            elif f in done:
                np.copyto(out[name], done[f])
            else:
                done[f] = np.take(stage[f], perm, out=out[name], mode="clip")  # perm in range
        total = out["weight"].sum()
        if total > 0:
            out["weight"] /= total
        ints = dict(zip(("hit_id", "truth_hit_id", "particle_id", "volume_id", "layer_id"),
                        np.empty((5, n), dtype=np.int64)))
        ints["hit_id"].fill(1)
        np.cumsum(ints["hit_id"], out=ints["hit_id"])
        np.copyto(ints["truth_hit_id"], ints["hit_id"])
        np.take(pid_stage, perm, out=ints["particle_id"], mode="clip")
        np.take(st.volume_id, surf, out=ints["volume_id"], mode="clip")
        np.take(st.layer_id, surf, out=ints["layer_id"], mode="clip")
        hits = pd.DataFrame({"hit_id": ints["hit_id"], "x": out["x"], "y": out["y"], "z": out["z"],
                             "volume_id": ints["volume_id"], "layer_id": ints["layer_id"],
                             "module_id": module}, copy=False)
        truth = pd.DataFrame({"hit_id": ints["truth_hit_id"], "particle_id": ints["particle_id"],
                              **{k: out[k] for k in names[3:]}}, copy=False)
        return hits, truth

    def simulate_many(self, n: int, seed: int, first_event_id: int = 0) -> list[Event]:
        """``n`` events; event ``i`` is ``simulate(event_seed(seed, i), first_event_id + i)``."""
        if n < 0:
            raise ValueError(f"simulate_many: n must be >= 0, got {n}")
        return [self.simulate(event_seed(seed, i), first_event_id + i) for i in range(n)]


class _SortKey:
    """Packs (surface rank, module, azimuth bin, hit index) into one int64 per hit.

    Sorting these keys (a plain ``np.sort``, much faster than ``argsort``) orders the hits
    by ``(volume_id, layer_id)``, module and azimuth (binned :func:`pseudo_angle`), and the
    low bits give back each hit's index, i.e. the permutation. Bit widths: ``rank`` and
    ``module`` as the geometry needs, 28 for the index, the rest (>= 8) for the azimuth.
    """

    _IDX_BITS = 28  # up to 268M hits per event

    def __init__(self, geometry: DetectorGeometry) -> None:
        st = geometry.surfaces
        self.st = st
        self.geometry = geometry
        self.rank_bits = max(1, int(len(st) - 1).bit_length())
        self.max_module = int((st.n_phi * st.n_long).max())
        self.mod_bits = self.max_module.bit_length()
        self.phi_bits = 63 - self.rank_bits - self.mod_bits - self._IDX_BITS
        self.code = st.rank << self.mod_bits  # surface rank in the top bits
        self.surface_of_rank = np.argsort(st.rank)
        if self.phi_bits < 8:
            raise ValueError(f"geometry {geometry.name!r}: too many surfaces/modules to pack the "
                             f"hit sort key ({self.rank_bits} + {self.mod_bits} bits)")

    def check_capacity(self, n: int) -> None:
        if n >= 1 << self._IDX_BITS:
            raise ValueError(f"simulate: an event of up to {n} hits exceeds the "
                             f"{1 << self._IDX_BITS} hits the sort key can index")

    def __call__(self, surface: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray,
                 offset: int) -> np.ndarray:
        """Keys of hits ``offset, offset + 1, ...`` on ``surface`` at ``(x, y, z)``."""
        angle = pseudo_angle(x, y)  # orders by azimuth like atan2, much cheaper
        key = self.code[surface]
        key += self.geometry.module_id(surface, x, y, z, angle)
        key <<= self.phi_bits
        nbin = 1 << self.phi_bits
        phi_bin = ((angle + 2.0) * (nbin / 4.0)).astype(np.int64)
        key |= np.minimum(phi_bin, nbin - 1, out=phi_bin)
        key <<= self._IDX_BITS
        key |= np.arange(offset, offset + len(x))
        return key

    def sort(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sort ``keys`` in place and turn them into the permutation; return the sorted
        hits' surface index and module id."""
        keys.sort()
        top = keys >> (self._IDX_BITS + self.phi_bits)
        module = top & ((1 << self.mod_bits) - 1)
        rank = top >> self.mod_bits
        np.bitwise_and(keys, (1 << self._IDX_BITS) - 1, out=keys)
        return self.surface_of_rank[rank], module


def _order_table(max_hits: int) -> np.ndarray:
    """``table[n, k]``: TrackML order weight of hit ``k`` of a particle with ``n`` hits
    (:func:`gnn_jepa.data.weights.order_weights`; zero below ``MIN_HITS`` hits)."""
    table = np.zeros((max_hits + 1, max(max_hits, 1)))
    for n in range(MIN_HITS, max_hits + 1):
        table[n, :n] = order_weights(n)
    return table
