import math

import numpy as np
import pytest
import torch

from gnn_jepa.data.convert import event_to_data
from gnn_jepa.data.dataset import EventSource
from gnn_jepa.data.mixing import MIX_COLUMN, MixedEventSource, mix_angles, mix_events, rotate_event
from tests.data.test_convert import hand_event


def test_rotate_event_turns_hits_truth_and_particles_about_the_beam():
    ev = rotate_event(hand_event(), math.pi / 2)
    # (100, 0) -> (0, 100); (0, 50) -> (-50, 0); z untouched
    np.testing.assert_allclose(ev.hits[["x", "y", "z"]].to_numpy()[[0, 2]],
                               [[0.0, 100.0, 10.0], [-50.0, 0.0, 0.0]], atol=1e-9)
    np.testing.assert_allclose(ev.truth[["tx", "ty"]].to_numpy()[0], [0.0, 100.0], atol=1e-9)
    np.testing.assert_allclose(ev.truth[["tpx", "tpy"]].to_numpy()[0], [0.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(ev.particles[["px", "py", "pz"]].to_numpy()[0], [-4.0, 3.0, 5.0], atol=1e-9)
    assert hand_event().hits["x"].iloc[0] == 100.0  # the input is not modified


def test_mix_events_by_hand():
    a, b = hand_event(), hand_event()
    ev = mix_events([a, b], [0.0, math.pi])
    assert len(ev.hits) == 8 and ev.hits[MIX_COLUMN].tolist() == [0] * 4 + [1] * 4
    assert ev.hits["hit_id"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]  # shifted past a's
    # b's particle 7 becomes 7 + 7 (shifted by a's largest id), its noise stays 0
    assert ev.truth["particle_id"].tolist() == [7, 7, 0, 7, 14, 14, 0, 14]
    assert ev.particles["particle_id"].tolist() == [7, 14]
    np.testing.assert_allclose(ev.hits[["x", "y"]].to_numpy()[4], [-100.0, 0.0], atol=1e-9)
    assert ev.event_id == 42
    d = event_to_data(ev)
    assert d.mix_source.tolist() == [0] * 4 + [1] * 4
    assert d.hit_order.tolist() == [2, 0, -1, 1] * 2  # each particle keeps its own order
    assert not hasattr(event_to_data(a), MIX_COLUMN)


def test_mix_events_refuses_one_event_or_missing_angles():
    with pytest.raises(ValueError, match="at least 2"):
        mix_events([hand_event()], [0.0])
    with pytest.raises(ValueError, match="1 angles for 2 events"):
        mix_events([hand_event(), hand_event()], [0.0])


def test_mixed_source_overlays_consecutive_events_with_seeded_angles():
    src = EventSource("simulate", simulator={"preset": "trackml", "num_particles": 5}, seed=3)
    mixed = MixedEventSource(src, 2)
    ev = mixed.event(4)
    a, b = src.event(8), src.event(9)
    assert len(ev.hits) == len(a.hits) + len(b.hits)
    np.testing.assert_array_equal(ev.hits[["x", "y", "z"]].to_numpy()[:len(a.hits)],
                                  a.hits[["x", "y", "z"]].to_numpy())
    angle = mix_angles(3, 4, 2)[1]
    turned = rotate_event(b, angle).hits[["x", "y", "z"]].to_numpy()
    np.testing.assert_allclose(ev.hits[["x", "y", "z"]].to_numpy()[len(a.hits):], turned)
    assert mix_angles(3, 4, 2)[0] == 0.0 and mix_angles(3, 4, 2)[1] == angle  # reproducible
    assert mix_angles(3, 5, 2)[1] != angle
    assert mixed.describe()["mix_events"] == 2 and mixed.files(4) is None
    assert mixed.name(4) == "overlay 4 of simulated event 8 + simulated event 9"
    with pytest.raises(ValueError, match="k must be >= 2"):
        MixedEventSource(src, 1)


def test_mixing_hits_only_events_gives_an_unlabelled_overlay():
    """Unlabelled events (hits only, as a TrackML folder without -truth.csv gives) mix too:
    the overlay has no truth, and its Data still says which event each hit came from."""
    a, b = hand_event().without_truth(), hand_event().without_truth()
    ev = mix_events([a, b], [0.0, 1.0])
    assert len(ev.hits) == 8 and not ev.has_truth and len(ev.particles) == 0
    d = event_to_data(ev)
    assert d.mix_source.tolist() == [0] * 4 + [1] * 4 and not bool(d.has_truth)
    assert (d.particle_id == 0).all()
