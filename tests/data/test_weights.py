"""TrackML hit weights against values worked out by hand.

Order weights stretch the profile [10, 8, 6, 5, 3, 3, 3, 5, 6] over n hits: profile point k
sits at hit position k (n - 1) / 8 and hit i takes the linearly interpolated value.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gnn_jepa.data.simulator import Simulator
from gnn_jepa.data.weights import (ORDER_PROFILE, ComputedWeightsWarning, bad_weight_row,
                                   computed_weight_counts, event_hit_weights,
                                   note_computed_weights, order_weights, pt_weight,
                                   trackml_hit_weights, weight_column_problem)


def test_order_weights_four_hits():
    # supports at 0, 3/8, 6/8, 9/8, ..., 3. Hit 1 lies between 6/8 (6) and 9/8 (5): 6 - 2/3;
    # hit 2 between 15/8 and 18/8, both 3; hit 3 at the last point, 6. Sum 73/3.
    raw = np.array([10, 16 / 3, 3, 6])
    np.testing.assert_allclose(order_weights(4), raw / raw.sum(), rtol=1e-14)
    np.testing.assert_allclose(order_weights(4), np.array([30, 16, 9, 18]) / 73, rtol=1e-14)


def test_order_weights_ten_hits():
    # supports at k * 9/8; in ninths the interpolated profile is
    # [90, 74, 58, 48, 35, 27, 27, 31, 46, 54] / 9, summing to 490 / 9.
    expected = np.array([90, 74, 58, 48, 35, 27, 27, 31, 46, 54]) / 490
    np.testing.assert_allclose(order_weights(10), expected, rtol=1e-14)


def test_order_weights_nine_hits_is_the_profile_and_short_particles_weigh_nothing():
    np.testing.assert_allclose(order_weights(9), ORDER_PROFILE / ORDER_PROFILE.sum(), rtol=1e-14)
    assert order_weights(3).tolist() == [0.0, 0.0, 0.0]


def test_pt_weight():
    np.testing.assert_allclose(pt_weight([0.1, 0.5, 1.75, 3.0, 50.0]), [0.2, 0.2, 0.6, 1.0, 1.0],
                               rtol=1e-14)


def test_hit_weights_combine_pt_and_order_and_normalise():
    # particle 7: 4 hits, pT 3 (w_pt 1); particle 9: 10 hits, pT 0.5 (w_pt 0.2);
    # particle 5: 3 hits (weight 0); 2 noise hits. Hits listed out of order.
    rng = np.random.default_rng(0)
    pid = np.array([7] * 4 + [9] * 10 + [5] * 3 + [0] * 2)
    pt = np.array([3.0] * 4 + [0.5] * 10 + [2.0] * 3 + [0.0] * 2)
    order = np.r_[np.arange(4), np.arange(10), np.arange(3), [-1, -1]]
    perm = rng.permutation(len(pid))
    w = trackml_hit_weights(pid[perm], pt[perm], order[perm])
    expected = np.r_[np.array([30, 16, 9, 18]) / 73 * 1.0,
                     np.array([90, 74, 58, 48, 35, 27, 27, 31, 46, 54]) / 490 * 0.2,
                     np.zeros(3), np.zeros(2)] / 1.2
    np.testing.assert_allclose(w, expected[perm], rtol=1e-12)
    assert w.sum() == pytest.approx(1.0, abs=1e-15)


def test_hit_weights_all_zero_without_long_particles():
    assert trackml_hit_weights(np.array([0, 3, 3]), np.array([0.0, 1, 1]),
                               np.array([-1, 0, 1])).tolist() == [0.0, 0.0, 0.0]


# ------------------------------------------------------------- weights computed from truth
def _tables():
    """Particle 7: 4 hits on the +x axis (vertex at the origin, pT 5 GeV: w_pt 1); particle 9:
    4 hits on the +y axis (vertex at the origin, pT 0.5: w_pt 0.2); particle 5: 3 hits
    (weight 0); one noise hit. Rows are shuffled, so order comes from the distances."""
    rows = [  # hit_id, particle, x, y, z
        (1, 7, 300.0, 0.0, 0.0), (2, 9, 0.0, 40.0, 0.0), (3, 7, 100.0, 0.0, 0.0),
        (4, 0, 5.0, 5.0, 5.0), (5, 9, 0.0, 10.0, 0.0), (6, 7, 200.0, 0.0, 0.0),
        (7, 5, -10.0, 0.0, 0.0), (8, 9, 0.0, 30.0, 0.0), (9, 7, 10.0, 0.0, 0.0),
        (10, 5, -20.0, 0.0, 0.0), (11, 9, 0.0, 20.0, 0.0), (12, 5, -30.0, 0.0, 0.0),
    ]
    hits = pd.DataFrame(rows, columns=["hit_id", "particle_id", "x", "y", "z"])
    # truth momentum: what the particles table says, except particle 9's last hits
    tpx = np.where(hits.particle_id == 7, 3.0, 0.0)
    tpy = np.where(hits.particle_id == 7, 4.0, np.where(hits.particle_id == 9, 0.5, 0.0))
    tpy[hits.hit_id.isin([2, 8]).to_numpy()] = 9.0  # scattered: not read (hit 5 is first)
    tpx[hits.particle_id.to_numpy() == 5] = 1.0
    truth = pd.DataFrame({"hit_id": hits.hit_id, "particle_id": hits.particle_id,
                          "tpx": tpx, "tpy": tpy})
    particles = pd.DataFrame({"particle_id": [5, 7, 9], "vx": [0.0] * 3, "vy": [0.0] * 3,
                              "vz": [0.0] * 3, "px": [1.0, 3.0, 0.0],
                              "py": [0.0, 4.0, 0.5]})
    return hits, truth, particles


# order weights of 4 hits are [30, 16, 9, 18] / 73; particles 7 (w_pt 1) and 9 (w_pt 0.2)
# add up to 1.2. Particle 7's hits in row order: x = 300, 100, 200, 10 -> orders 3, 1, 2, 0;
# particle 9's: y = 40, 10, 30, 20 -> orders 3, 0, 2, 1.
_EXPECTED = np.array([18, 18 * 0.2, 16, 0, 30 * 0.2, 9, 0, 9 * 0.2, 30, 0, 16 * 0.2, 0]) / 73 / 1.2


def test_event_hit_weights_by_hand():
    hits, truth, particles = _tables()
    np.testing.assert_allclose(event_hit_weights(hits, truth, particles), _EXPECTED, rtol=1e-14)


def test_event_hit_weights_order_from_the_particles_vertex():
    # particle 7's vertex moved to x = 160 mm: its hits at x = 300, 100, 200, 10 lie 140, 60,
    # 40, 150 mm from it, so their orders become 2, 1, 0, 3 (weights 9, 16, 30, 18 / 73)
    hits, truth, particles = _tables()
    particles.loc[particles.particle_id == 7, "vx"] = 160.0
    w = event_hit_weights(hits, truth, particles)
    np.testing.assert_allclose(w[[0, 2, 5, 8]], np.array([9, 16, 30, 18]) / 73 / 1.2, rtol=1e-14)


def test_event_hit_weights_without_particles():
    # vertex taken at the origin, pT from the truth momentum of each particle's first hit:
    # 7: (3, 4) -> 5; 9: first hit y = 10 (row 5) has (0, 0.5) -> 0.5: the same weights
    hits, truth, _ = _tables()
    np.testing.assert_allclose(event_hit_weights(hits, truth, None), _EXPECTED, rtol=1e-14)


def test_event_hit_weights_needs_every_particle():
    hits, truth, particles = _tables()
    with pytest.raises(ValueError, match="particle_id 9 is absent"):
        event_hit_weights(hits, truth, particles[particles.particle_id != 9])


def test_event_hit_weights_reproduce_the_simulator_bit_for_bit():
    # default preset: multiple scattering, smearing, inefficiency and noise
    ev = Simulator.from_preset("trackml", num_particles=400).simulate(3)
    w = event_hit_weights(ev.hits, ev.truth, ev.particles)
    assert np.array_equal(w, ev.truth["weight"].to_numpy())


def test_weight_column_problem():
    assert weight_column_problem(None) == "is missing"
    assert weight_column_problem(np.full(3, np.nan)) == "is blank (no value in any row)"
    assert weight_column_problem(np.zeros(3)) == "sums to 0"
    assert weight_column_problem(np.array([0.0, 1e-9, 0.0])) is None  # need not sum to 1
    assert weight_column_problem(np.array([np.nan, 1.0])) is None  # a bad value: an error
    assert weight_column_problem(np.zeros(0)) is None
    assert bad_weight_row(np.array([0.5, 0.0, -0.1, np.nan])) == 2
    assert bad_weight_row(np.array([0.5, np.inf])) == 1
    assert bad_weight_row(np.array([0.5, 0.0])) is None


def test_note_computed_weights_warns_on_the_first_then_at_powers_of_ten(recwarn):
    dataset = f"dataset-{id(recwarn)}"  # fresh in this process
    counts = [note_computed_weights(dataset, f"event {i}", "sums to 0") for i in range(1, 101)]
    assert counts == list(range(1, 101))
    msgs = [str(w.message) for w in recwarn.list if w.category is ComputedWeightsWarning]
    assert len(msgs) == 3
    assert msgs[0].startswith("event 1: the truth 'weight' column sums to 0; computed the TrackML")
    assert msgs[1].startswith(f"{dataset}: TrackML hit weights computed from truth for 10 events")
    assert "latest: event 10, sums to 0" in msgs[1]
    assert "for 100 events so far" in msgs[2]
    assert computed_weight_counts()[dataset] == 100
