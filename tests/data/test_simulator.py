"""Physics and bookkeeping tests of the detector simulator (gnn_jepa.data.simulator)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from gnn_jepa.data.convert import event_to_data
from gnn_jepa.data.detector import CYLINDER, DISK, Cylinder, DetectorGeometry, Disk
from gnn_jepa.data.event import HIT_COLUMNS, PARTICLE_COLUMNS, TRUTH_COLUMNS
from gnn_jepa.data.simulator import (PION_MASS, Simulator, SimulatorConfig, event_seed,
                                     propagate)
from gnn_jepa.geometry import PT_TO_RADIUS
from gnn_jepa.data.weights import trackml_hit_weights

CLEAN = dict(multiple_scattering=False, resolution_rphi=0.0, resolution_z=0.0,
             noise_fraction=0.0, hit_efficiency=1.0)


def clean_event(preset="trackml", seed=3, **kw):
    return Simulator.from_preset(preset, **{**CLEAN, "num_particles": 400, **kw}).simulate(seed)


def with_particles(event):
    """Truth joined with its particle (noise dropped), in hit order."""
    t = event.truth.merge(event.particles, on="particle_id", how="inner")
    return t.sort_values("hit_id").reset_index(drop=True)


def helix_turn(t, b_field):
    """Transverse turning angle from the vertex to each truth point, about the centre of the
    particle's helix (computed from the vertex and the momentum there)."""
    pt = np.hypot(t.px, t.py)
    R = PT_TO_RADIUS * pt / b_field
    sig = -t.q.to_numpy(float)
    ux, uy = t.px / pt, t.py / pt
    cx, cy = t.vx - sig * R * uy, t.vy + sig * R * ux
    a0 = np.arctan2(t.vy - cy, t.vx - cx)
    a1 = np.arctan2(t.ty - cy, t.tx - cx)
    return np.mod(sig * (a1 - a0), 2 * np.pi).to_numpy(), R.to_numpy()


# -- geometry ------------------------------------------------------------------------------

def test_trackml_preset_layout():
    g = DetectorGeometry.preset("trackml")
    st = g.surfaces
    barrel = {(v, l): r for v, l, r, k in zip(st.volume_id, st.layer_id, st.radius, st.kind)
              if k == CYLINDER}
    assert barrel == {(8, 2): 32, (8, 4): 72, (8, 6): 116, (8, 8): 172, (13, 2): 260, (13, 4): 360,
                      (13, 6): 500, (13, 8): 660, (17, 2): 820, (17, 4): 1020}
    assert g.b_field == 2.0
    disks = st.kind == DISK
    # pixel endcaps at |z| = 600 ... 1500 on both sides, layer ids growing with z
    for vol, sign in ((7, -1), (9, 1)):
        sel = disks & (st.volume_id == vol)
        z = st.z[sel][np.argsort(st.layer_id[sel])]
        assert np.all(np.sign(z) == sign) and np.all(np.diff(z) > 0)
        assert sorted(np.abs(z)) == [600, 700, 820, 960, 1100, 1300, 1500]
        assert np.all(st.r_min[sel] == 30) and np.all(st.r_max[sel] == 175)
    for vol in (12, 14, 16, 18):
        assert sorted(np.abs(st.z[disks & (st.volume_id == vol)])) == [1220, 1500, 1800, 2150, 2550,
                                                                      2950]
    assert set(st.x_over_x0) == {0.02, 0.03}


def test_toy2d_preset_is_planar_barrel():
    g = DetectorGeometry.preset("toy2d")
    assert g.planar and not g.disks and len(g.cylinders) == 10
    assert np.allclose(np.diff([c.radius for c in g.cylinders]), 100.0)


def test_geometry_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown detector preset 'atlas'"):
        DetectorGeometry.preset("atlas")
    with pytest.raises(ValueError, match="b_field"):
        DetectorGeometry((Cylinder(1, 2, radius=10, half_length=10),), b_field=0.0)
    with pytest.raises(ValueError, match="duplicate"):
        DetectorGeometry((Cylinder(1, 2, radius=10, half_length=10), Cylinder(1, 2, radius=20, half_length=10)))
    with pytest.raises(ValueError, match="r_min < r_max"):
        DetectorGeometry((), (Disk(1, 2, z=100, r_min=50, r_max=40),))


@pytest.mark.parametrize("preset", ["trackml", "toy2d"])
def test_module_sectors_match_azimuth(preset):
    """The lookup-table sectors equal floor((atan2(y, x) + pi) / 2pi * n_phi)."""
    g = DetectorGeometry.preset(preset)
    st = g.surfaces
    rng = np.random.default_rng(0)
    n = 100000
    s = rng.integers(0, len(st), n)
    phi = rng.uniform(-math.pi, math.pi, n)
    disk = st.kind[s] == DISK
    r = np.where(disk, rng.uniform(np.nan_to_num(st.r_min[s]), np.nan_to_num(st.r_max[s])),
                 np.nan_to_num(st.radius[s]))
    z = np.where(disk, np.nan_to_num(st.z[s]),
                 rng.uniform(-1, 1, n) * np.nan_to_num(st.half_length[s]))
    x, y = r * np.cos(phi), r * np.sin(phi)
    n_phi = st.n_phi[s]
    ref = ((np.arctan2(y, x) + math.pi) / (2 * math.pi) * n_phi).astype(np.int64)
    ref = np.minimum(ref, n_phi - 1)
    assert np.array_equal((g.module_id(s, x, y, z) - 1) % n_phi, ref)


def test_module_ids_segment_phi_and_z():
    g = DetectorGeometry.preset("trackml")
    st = g.surfaces
    s = np.zeros(4, dtype=np.int64)  # innermost pixel layer, 12 sectors x 14 z bins
    phi = np.array([-math.pi + 1e-9, -1e-9, 1e-9, math.pi - 1e-9])
    x, y = 32 * np.cos(phi), 32 * np.sin(phi)
    ids = g.module_id(s, x, y, np.array([-490.0, 0.0, 0.0, 490.0]))
    n_phi = st.n_phi[0]
    assert n_phi == 12 and st.n_long[0] == 14
    assert ids[0] == 1                                 # first sector, first z bin
    i_z0 = int((0.0 + 491.0) // 72.0)                  # z = 0 in bins of 72 mm from -491
    assert ids[1] == 1 + i_z0 * n_phi + n_phi // 2 - 1  # just below phi = 0
    assert ids[2] == ids[1] + 1
    assert ids[3] == 13 * n_phi + n_phi                # last sector, last z bin


# -- physics of the trajectories ------------------------------------------------------------

def test_hits_lie_on_their_surfaces():
    sim = Simulator.from_preset("trackml", num_particles=400)
    ev = sim.simulate(11)
    g, c = sim.geometry, sim.config
    st = g.surfaces
    s = g.surface_index(ev.hits.volume_id, ev.hits.layer_id)
    assert np.all(s >= 0)
    # true points exactly on the surface, measured points smeared along it
    dt = g.distance_to_surface(s, ev.truth.tx, ev.truth.ty, ev.truth.tz)
    assert dt.max() < 1e-9
    x, y, z = ev.hits.x.to_numpy(), ev.hits.y.to_numpy(), ev.hits.z.to_numpy()
    r = np.hypot(x, y)
    cyl = st.kind[s] == CYLINDER
    assert np.abs(r[cyl] - st.radius[s[cyl]]).max() < 1e-9
    assert (np.abs(z[cyl]) - st.half_length[s[cyl]]).max() < 6 * c.resolution_z
    assert np.array_equal(z[~cyl], st.z[s[~cyl]])
    assert (st.r_min[s[~cyl]] - r[~cyl]).max() < 6 * c.resolution_z
    assert (r[~cyl] - st.r_max[s[~cyl]]).max() < 6 * c.resolution_z
    assert cyl.any() and (~cyl).any()
    # smearing has the configured widths: along r*phi and along z (barrel) / r (disks)
    dphi = np.angle(np.exp(1j * (np.arctan2(y, x) - np.arctan2(ev.truth.ty, ev.truth.tx))))
    real = ev.truth.particle_id.to_numpy() > 0
    assert np.std((dphi * r)[real]) == pytest.approx(c.resolution_rphi, rel=0.1)
    assert np.std((z - ev.truth.tz)[real & cyl]) == pytest.approx(c.resolution_z, rel=0.1)
    assert np.std((r - np.hypot(ev.truth.tx, ev.truth.ty))[real & ~cyl]) == pytest.approx(
        c.resolution_z, rel=0.1)


@pytest.mark.parametrize("b_field", [2.0, 3.8])
def test_circle_fit_gives_helix_radius(b_field):
    ev = clean_event(b_field=b_field)
    t = with_particles(ev)
    rel = []
    for _, g in t.groupby("particle_id"):
        if len(g) < 3:
            continue
        x, y = g.tx.to_numpy(), g.ty.to_numpy()
        # algebraic (Kasa) fit: x^2 + y^2 + D x + E y + F = 0
        D, E, F = np.linalg.lstsq(np.c_[x, y, np.ones_like(x)], -(x * x + y * y), rcond=None)[0]
        R_fit = math.sqrt(D * D / 4 + E * E / 4 - F)
        pt = math.hypot(g.px.iloc[0], g.py.iloc[0])
        rel.append(R_fit / (1000 * pt / (0.3 * b_field)) - 1)
    assert len(rel) > 300
    assert np.abs(rel).max() < 1e-6


def test_z_is_linear_in_transverse_arc_length():
    t = with_particles(clean_event())
    psi, R = helix_turn(t, 2.0)
    s = R * psi
    slope = (t.pz / np.hypot(t.px, t.py)).to_numpy()
    assert np.abs(t.tz.to_numpy() - t.vz.to_numpy() - slope * s).max() < 1e-6


def test_momentum_at_hit_is_tangent_with_constant_magnitude():
    t = with_particles(clean_event())
    psi, _ = helix_turn(t, 2.0)
    phi0 = np.arctan2(t.py, t.px).to_numpy()
    sig = -t.q.to_numpy(float)
    phi_hit = np.arctan2(t.tpy, t.tpx).to_numpy()
    assert np.abs(np.angle(np.exp(1j * (phi_hit - phi0 - sig * psi)))).max() < 1e-9
    assert np.allclose(np.hypot(t.tpx, t.tpy), np.hypot(t.px, t.py), rtol=1e-12)
    assert np.allclose(t.tpz, t.pz, rtol=1e-12)


def test_positive_charge_bends_clockwise():
    g = DetectorGeometry.preset("toy2d")
    pt = 1.0
    R = PT_TO_RADIUS * pt / g.b_field
    zeros = np.zeros(2)
    cr = propagate(g, zeros, zeros, zeros, np.full(2, pt), zeros, zeros, np.array([1.0, -1.0]))
    for q in (1, -1):
        sel = cr.particle == (0 if q == 1 else 1)
        x, y = cr.x[sel], cr.y[sel]
        r = np.hypot(x, y)
        assert len(x) == 10
        # from the origin along +x: a chord of length r subtends phi = -q asin(r / 2R)
        assert np.allclose(np.arctan2(y, x), -q * np.arcsin(r / (2 * R)), atol=1e-12)
        assert np.all(np.sign(y) == -q)
    # the same in a full event: the hits sit on the side the charge turns to
    t = with_particles(clean_event())
    cross = (t.px * (t.ty - t.vy) - t.py * (t.tx - t.vx)).to_numpy()
    assert np.all(np.sign(cross) == -t.q.to_numpy())


def test_hits_come_in_path_order():
    ev = clean_event(num_particles=600, resolution_rphi=0.015, resolution_z=0.05)
    data = event_to_data(ev)
    t = ev.truth.merge(ev.particles, on="particle_id", how="left")
    real = t.particle_id.to_numpy() > 0
    psi, _ = helix_turn(t[real], 2.0)
    rank = pd.Series(psi).groupby(t.particle_id[real].to_numpy()).rank(method="first") - 1
    assert np.array_equal(data.hit_order.numpy()[real], rank.to_numpy().astype(np.int64))
    assert np.all(data.hit_order.numpy()[~real] == -1)


def test_loopers_stop_after_half_a_turn():
    ev = clean_event(num_particles=500, pt_min=0.1, pt_max=0.4, pt_spectrum="uniform")
    t = with_particles(ev)
    psi, R = helix_turn(t, 2.0)
    assert psi.max() <= math.pi + 1e-9
    # a particle from (near) the origin never gets farther than its diameter
    assert np.all(np.hypot(t.tx, t.ty) <= 2 * R + 0.1)
    # central loopers hit exactly the barrel layers inside their diameter, once each
    radii = np.array([c.radius for c in DetectorGeometry.preset("trackml").cylinders])
    p = ev.particles.assign(R=PT_TO_RADIUS * np.hypot(ev.particles.px, ev.particles.py) / 2.0)
    central = p[(np.abs(p.pz / np.hypot(p.px, p.py)) < 0.2) & (p.vz.abs() < 100)]
    central = central[np.abs(radii[None, :] - 2 * central.R.to_numpy()[:, None]).min(axis=1) > 1]
    assert len(central) > 10
    expected = (radii[None, :] < 2 * central.R.to_numpy()[:, None]).sum(axis=1)
    assert np.array_equal(central.nhits.to_numpy(), expected)
    assert expected.min() < 7  # some really are cut short
    # with scattering too, the accumulated turning angle stays below pi
    sim = Simulator.from_preset("trackml", num_particles=300, pt_min=0.1, pt_max=0.3,
                                pt_spectrum="uniform")
    rng = np.random.default_rng(0)
    p = sim.sample_particles(rng)
    cr = propagate(sim.geometry, *(p[k] for k in ("vx", "vy", "vz", "px", "py", "pz", "q")),
                   multiple_scattering=True, rng=rng)
    assert cr.turn.max() <= math.pi
    assert (cr.turn > 2.5).any()  # they do get near the cut


def _reference_crossings(geometry, v, p, q, n=20001):
    """Crossings by brute force: the helix sampled on a fine grid of turning angles
    (centre-angle parametrisation), sign changes of r - rho / z - z_disk, refined by
    bisection. Returns [(surface, psi)] in path order."""
    pt = math.hypot(p[0], p[1])
    R = PT_TO_RADIUS * pt / geometry.b_field
    sig = -q
    ux, uy = p[0] / pt, p[1] / pt
    cx, cy = v[0] - sig * R * uy, v[1] + sig * R * ux
    a0 = math.atan2(v[1] - cy, v[0] - cx)
    st = geometry.surfaces
    cyl = (st.kind == CYLINDER)[:, None]
    level = np.where(cyl[:, 0], st.radius, st.z)[:, None]

    def pos(psi):
        a = a0 + sig * psi
        return cx + R * np.cos(a), cy + R * np.sin(a), v[2] + R * psi * p[2] / pt

    def f(psi, s):  # signed distance to the level of surface s (r - rho or z - z_disk)
        x, y, z = pos(psi)
        return np.where(cyl[s, 0], np.hypot(x, y), z) - level[s, 0]

    grid = np.linspace(0.0, math.pi, n)
    x, y, z = pos(grid)
    val = np.where(cyl, np.hypot(x, y), z) - level  # [surfaces, grid]
    s_idx, i = np.nonzero(np.sign(val[:, :-1]) * np.sign(val[:, 1:]) < 0)
    lo, hi = grid[i], grid[i + 1]
    sgn_lo = np.sign(val[s_idx, i])
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        same = np.sign(f(mid, s_idx)) == sgn_lo
        lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
    x, y, z = pos(lo)
    r = np.hypot(x, y)
    ok = np.where(st.kind[s_idx] == CYLINDER, np.abs(z) <= np.nan_to_num(st.half_length[s_idx]),
                  (r >= np.nan_to_num(st.r_min[s_idx])) & (r <= np.nan_to_num(st.r_max[s_idx])))
    return sorted(zip(s_idx[ok].tolist(), lo[ok].tolist()), key=lambda c: c[1])


def test_crossings_match_brute_force_reference():
    """Random helices, including displaced starts that cross cylinders inward and curl
    back: same surfaces in the same order at the same turning angles."""
    g = DetectorGeometry.preset("trackml")
    rng = np.random.default_rng(5)
    n = 40
    pt = rng.uniform(0.15, 3.0, n)
    phi = rng.uniform(-math.pi, math.pi, n)
    eta = rng.uniform(-3, 3, n)
    v = np.c_[rng.normal(0, 0.02, n), rng.normal(0, 0.02, n), rng.normal(0, 50, n)]
    # a third start between layers, moving in any direction (secondary-like)
    far = np.arange(n) % 3 == 0
    rv = rng.uniform(40, 600, far.sum())
    av = rng.uniform(-math.pi, math.pi, far.sum())
    v[far, 0], v[far, 1] = rv * np.cos(av), rv * np.sin(av)
    q = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    cr = propagate(g, v[:, 0], v[:, 1], v[:, 2], px, py, pz, q)
    total = 0
    for i in range(n):
        ref = _reference_crossings(g, v[i], (px[i], py[i], pz[i]), q[i])
        sel = cr.particle == i
        assert [s for s, _ in ref] == cr.surface[sel].tolist(), f"particle {i}"
        assert np.allclose([a for _, a in ref], cr.turn[sel], atol=1e-9)
        total += len(ref)
    assert total > 200


def test_step_loop_without_material_equals_single_helix():
    base = DetectorGeometry.preset("trackml")
    g = dataclasses.replace(base, cylinders=tuple(dataclasses.replace(c, x_over_x0=0.0)
                                                  for c in base.cylinders),
                            disks=tuple(dataclasses.replace(d, x_over_x0=0.0) for d in base.disks))
    sim = Simulator.from_preset("trackml", num_particles=1500, vertex_sigma_xy=5.0)
    rng = np.random.default_rng(2)
    p = sim.sample_particles(rng)
    # a fifth start between layers, in any direction: inward crossings, curling back
    far = np.arange(len(p["q"])) % 5 == 0
    rv, av = rng.uniform(40, 600, far.sum()), rng.uniform(-math.pi, math.pi, far.sum())
    p["vx"][far], p["vy"][far] = rv * np.cos(av), rv * np.sin(av)
    args = [p[k] for k in ("vx", "vy", "vz", "px", "py", "pz", "q")]
    one = propagate(g, *args)
    step = propagate(g, *args, multiple_scattering=True, rng=np.random.default_rng(0))
    assert len(one) == len(step) > 10000
    assert np.array_equal(one.particle, step.particle)
    assert np.array_equal(one.surface, step.surface)
    for f in ("x", "y", "z", "px", "py", "pz", "turn", "path"):
        assert np.allclose(getattr(one, f), getattr(step, f), rtol=1e-9, atol=1e-7), f


def test_multiple_scattering_follows_highland():
    """Kink at a thin layer, seen as the direction change at a massless layer 1 mm out."""
    g = DetectorGeometry((Cylinder(8, 2, 0.02, radius=100.0, half_length=1000.0),
                          Cylinder(8, 4, 0.0, radius=101.0, half_length=1000.0)),
                         b_field=2.0)
    n, pt = 40000, 1.0
    rng = np.random.default_rng(1)
    phi = rng.uniform(-math.pi, math.pi, n)
    zeros = np.zeros(n)
    args = (zeros, zeros, zeros, pt * np.cos(phi), pt * np.sin(phi), zeros, np.ones(n))
    ref = propagate(g, *args)
    ms = propagate(g, *args, multiple_scattering=True, rng=rng)
    second = lambda c: c.surface == 1  # noqa: E731
    d_phi = np.arctan2(ms.py, ms.px) - np.arctan2(ref.py, ref.px)
    d_phi = np.angle(np.exp(1j * d_phi))[second(ms)]
    d_lam = np.arctan2(ms.pz, np.hypot(ms.px, ms.py))[second(ms)]
    R = PT_TO_RADIUS * pt / 2.0
    t = 0.02 / math.sqrt(1 - (100.0 / (2 * R)) ** 2)  # x/X0 along the slanted path
    beta = pt / math.hypot(pt, PION_MASS)
    theta0 = 0.0136 / (beta * pt) * math.sqrt(t) * (1 + 0.038 * math.log(t / beta ** 2))
    assert np.std(d_phi) == pytest.approx(theta0, rel=0.03)
    assert np.std(d_lam) == pytest.approx(theta0, rel=0.03)
    # the hits move but stay exactly on the surfaces
    assert np.abs(np.hypot(ms.x, ms.y) - np.where(ms.surface == 0, 100.0, 101.0)).max() < 1e-9


def test_multiple_scattering_changes_hits_but_not_particles():
    on = Simulator.from_preset("trackml", num_particles=300).simulate(4)
    off = Simulator.from_preset("trackml", num_particles=300, multiple_scattering=False).simulate(4)
    pd.testing.assert_frame_equal(on.particles.drop(columns="nhits"),
                                  off.particles.drop(columns="nhits"))
    a = on.truth.sort_values(["particle_id", "tx"])
    b = off.truth.sort_values(["particle_id", "tx"])
    assert not np.array_equal(a.tx.to_numpy()[: min(len(a), len(b))],
                              b.tx.to_numpy()[: min(len(a), len(b))])


def test_toy2d_hits_have_z_zero():
    ev = Simulator.from_preset("toy2d", num_particles=300).simulate(0)  # MS, smearing, noise on
    assert len(ev.hits) > 1000
    for col in (ev.hits.z, ev.truth.tz, ev.truth.tpz, ev.particles.vz, ev.particles.pz):
        assert np.all(col.to_numpy() == 0.0)
    st = DetectorGeometry.preset("toy2d").surfaces
    assert set(np.unique(np.round(np.hypot(ev.hits.x, ev.hits.y), 6))) <= set(st.radius)


# -- detector response and bookkeeping --------------------------------------------------------

def test_same_seed_bit_identical_other_seed_different():
    a = Simulator.from_preset("trackml", num_particles=300).simulate(7, event_id=5)
    b = Simulator.from_preset("trackml", num_particles=300).simulate(7, event_id=5)
    c = Simulator.from_preset("trackml", num_particles=300).simulate(8, event_id=5)
    for name in ("hits", "truth", "particles"):
        ta, tb = getattr(a, name), getattr(b, name)
        pd.testing.assert_frame_equal(ta, tb, check_exact=True)
        for col in ta.columns:
            assert ta[col].to_numpy().tobytes() == tb[col].to_numpy().tobytes()
    assert a.event_id == 5
    assert not a.hits[["x", "y", "z"]].equals(c.hits[["x", "y", "z"]])


def test_tables_do_not_share_memory():
    ev = Simulator.from_preset("toy2d", num_particles=100, **CLEAN).simulate(0)
    before = ev.truth.copy()
    ev.hits.loc[0, "x"] = 1e6
    ev.hits.loc[0, "z"] = 5.0
    ev.hits.loc[0, "hit_id"] = 99
    pd.testing.assert_frame_equal(ev.truth, before)


def test_simulate_many_uses_derived_seeds():
    sim = Simulator.from_preset("toy2d", num_particles=50)
    evs = sim.simulate_many(3, seed=9, first_event_id=100)
    assert [e.event_id for e in evs] == [100, 101, 102]
    again = sim.simulate(event_seed(9, 1), event_id=101)
    pd.testing.assert_frame_equal(evs[1].hits, again.hits, check_exact=True)
    assert len({len(e.hits) for e in evs}) > 1 or not evs[0].hits.equals(evs[2].hits)
    assert event_seed(9, 1) != event_seed(9, 2) != event_seed(10, 1)


def test_particle_count_poisson_or_fixed():
    pois = Simulator.from_preset("toy2d", num_particles=200, **CLEAN)
    counts = [len(pois.simulate(s).particles) for s in range(40)]
    assert len(set(counts)) > 10
    assert abs(np.mean(counts) - 200) < 5 * math.sqrt(200 / 40)
    fixed = Simulator.from_preset("toy2d", num_particles=200, poisson=False, **CLEAN)
    assert {len(fixed.simulate(s).particles) for s in range(5)} == {200}


def test_noise_fraction_and_noise_hits():
    sim = Simulator.from_preset("trackml", num_particles=400, noise_fraction=0.2)
    ev = sim.simulate(2)
    noise = ev.truth.particle_id.to_numpy() == 0
    assert noise.sum() == round(0.2 * (~noise).sum())
    assert np.all(ev.truth.weight[noise] == 0)
    assert np.all(ev.truth.loc[noise, ["tpx", "tpy", "tpz"]].to_numpy() == 0)
    g = sim.geometry
    s = g.surface_index(ev.hits.volume_id[noise], ev.hits.layer_id[noise])
    assert g.distance_to_surface(s, ev.hits.x[noise], ev.hits.y[noise],
                                 ev.hits.z[noise]).max() < 1e-9
    # uniform per unit area: the share of noise on each surface follows its area
    st = g.surfaces
    share = np.bincount(s, minlength=len(st)) / noise.sum()
    assert np.abs(share - st.area / st.area.sum()).max() < 0.03


def test_inefficiency_drops_hits_and_renumbers():
    full = clean_event(num_particles=800, seed=6)
    holes = clean_event(num_particles=800, seed=6, hit_efficiency=0.8)
    pd.testing.assert_frame_equal(full.particles.drop(columns="nhits"),
                                  holes.particles.drop(columns="nhits"))
    key = ["particle_id", "tx", "ty", "tz"]
    merged = holes.truth.merge(full.truth, on=key, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()  # every surviving hit is one of the crossings
    frac = len(holes.hits) / len(full.hits)
    n = len(full.hits)
    assert abs(frac - 0.8) < 5 * math.sqrt(0.8 * 0.2 / n)
    counts = holes.truth.particle_id.value_counts()
    assert np.array_equal(holes.particles.set_index("particle_id").nhits.reindex(counts.index),
                          counts.to_numpy())
    # hit order along particles (hence the weights) still follows the path
    data = event_to_data(holes)
    t = holes.truth.merge(holes.particles, on="particle_id")
    psi, _ = helix_turn(t, 2.0)
    order = data.hit_order.numpy()[t.hit_id.to_numpy() - 1]
    rank = pd.Series(psi).groupby(t.particle_id.to_numpy()).rank(method="first") - 1
    assert np.array_equal(order, rank.to_numpy().astype(np.int64))


@pytest.mark.parametrize("effects", [CLEAN, {}])
def test_weights_equal_trackml_definition(effects):
    ev = Simulator.from_preset("trackml", num_particles=500, **effects).simulate(1)
    data = event_to_data(ev)  # hit order from the distance to the vertex
    pt = ev.truth.merge(ev.particles, on="particle_id", how="left")
    pt = np.nan_to_num(np.hypot(pt.px, pt.py).to_numpy())
    ref = trackml_hit_weights(ev.truth.particle_id.to_numpy(), pt, data.hit_order.numpy())
    # the simulator orders hits along the true path: the same order, unless scattering
    # brings two hits to nearly the same distance from the vertex
    same = np.isclose(ev.truth.weight.to_numpy(), ref, rtol=1e-12, atol=0)
    assert same.mean() >= 0.999
    if effects is CLEAN:
        assert same.all()
    assert ev.truth.weight.sum() == pytest.approx(1.0, rel=1e-12)
    assert (ev.truth.weight > 0).mean() > 0.9


def test_tables_follow_trackml_conventions():
    ev = Simulator.from_preset("trackml", num_particles=300).simulate(0)
    assert tuple(ev.hits.columns) == HIT_COLUMNS
    assert tuple(ev.truth.columns) == TRUTH_COLUMNS
    assert tuple(ev.particles.columns) == PARTICLE_COLUMNS
    assert np.array_equal(ev.hits.hit_id, np.arange(1, len(ev.hits) + 1))
    assert np.array_equal(ev.truth.hit_id, ev.hits.hit_id)
    vl = ev.hits.volume_id.to_numpy() * 1000 + ev.hits.layer_id.to_numpy()
    assert np.all(np.diff(vl) >= 0)  # sorted by (volume, layer)
    assert np.all(np.diff(ev.hits.module_id.to_numpy())[np.diff(vl) == 0] >= 0)
    pid = ev.particles.particle_id.to_numpy()
    assert pid.min() > 0 and len(np.unique(pid)) == len(pid)
    real = ev.truth.particle_id[ev.truth.particle_id > 0]
    assert np.array_equal(ev.particles.set_index("particle_id").nhits.loc[real.unique()],
                          real.value_counts().loc[real.unique()].to_numpy())
    assert set(ev.particles.q) <= {-1, 1}
    for col in ("hit_id", "volume_id", "layer_id", "module_id"):
        assert ev.hits[col].dtype == np.int64
    # within a layer the rows are not grouped by particle (no truth in the row order)
    first = ev.truth.particle_id[(ev.hits.volume_id == 8) & (ev.hits.layer_id == 2)].to_numpy()
    assert not np.all(np.diff(first[first > 0]) > 0)


def test_pt_spectrum_follows_power_law():
    sim = Simulator.from_preset("trackml", num_particles=100000, poisson=False)
    p = sim.sample_particles(np.random.default_rng(0))
    pt = np.sort(np.hypot(p["px"], p["py"]))
    c = sim.config
    assert pt[0] >= c.pt_min and pt[-1] <= c.pt_max
    y0, y1, e = 1 + c.pt_min / c.pt_scale, 1 + c.pt_max / c.pt_scale, 1 - c.pt_power
    cdf = ((1 + pt / c.pt_scale) ** e - y0 ** e) / (y1 ** e - y0 ** e)
    ks = np.abs(cdf - np.arange(1, len(pt) + 1) / len(pt)).max()
    assert ks < 1.63 / math.sqrt(len(pt))  # KS test at 1%
    assert 0.80 < np.mean(pt < 1.0) < 0.87  # most particles below 1 GeV
    eta = np.arcsinh(p["pz"] / np.hypot(p["px"], p["py"]))
    assert -4 <= eta.min() and eta.max() <= 4


def test_empty_event():
    ev = Simulator.from_preset("trackml", num_particles=0, poisson=False).simulate(0)
    assert len(ev.hits) == 0 and len(ev.truth) == 0 and len(ev.particles) == 0
    assert tuple(ev.hits.columns) == HIT_COLUMNS


def test_event_converts_to_pyg_data():
    ev = Simulator.from_preset("trackml", num_particles=200).simulate(0)
    data = event_to_data(ev)
    assert data.num_nodes == len(ev.hits)
    real = data.particle_id > 0
    assert (data.pt[real] >= 0.1 - 1e-6).all() and (data.hit_order[real] >= 0).all()


def test_config_and_input_errors():
    with pytest.raises(ValueError, match="pt_min"):
        SimulatorConfig(pt_min=2.0, pt_max=1.0)
    with pytest.raises(ValueError, match="hit_efficiency"):
        Simulator.from_preset("trackml", hit_efficiency=1.5)
    with pytest.raises(ValueError, match="unknown config field"):
        Simulator.from_preset("trackml", num_particle=10)
    with pytest.raises(ValueError, match="unknown detector preset"):
        Simulator.from_preset("cms")
    with pytest.raises(ValueError, match="seed"):
        Simulator.from_preset("toy2d").simulate(-1)
    with pytest.raises(ValueError, match="charge"):
        g = DetectorGeometry.preset("toy2d")
        one = np.ones(1)
        propagate(g, 0 * one, 0 * one, 0 * one, one, 0 * one, 0 * one, 2 * one)
    assert SimulatorConfig(eta_range=[-1, 1]).eta_range == (-1.0, 1.0)
