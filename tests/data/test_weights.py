"""TrackML hit weights against values worked out by hand.

Order weights stretch the profile [10, 8, 6, 5, 3, 3, 3, 5, 6] over n hits: profile point k
sits at hit position k (n - 1) / 8 and hit i takes the linearly interpolated value.
"""
from __future__ import annotations

import numpy as np
import pytest

from gnn_jepa.data.weights import ORDER_PROFILE, order_weights, pt_weight, trackml_hit_weights


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
