"""Tracking metrics on small hand-made events with answers worked out by hand."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from gnn_jepa.tracking.metrics import (UndefinedScoreError, edge_metrics, efficiency_table,
                                       format_table, match_tracks, roc_auc, summarize_events,
                                       trackml_score, trackml_score_defined, tracking_metrics)
from gnn_jepa.data.weights import trackml_hit_weights

# ---------------------------------------------------------------- a small event for the score
# particle 11: 4 hits, 22: 4 hits, 33: 3 hits (weighs 0), noise: 2 hits. All pT 3 GeV, so
# each long particle carries half the event weight, split by order weights [30,16,9,18]/73.
PID = np.array([11, 11, 11, 11, 22, 22, 22, 22, 33, 33, 33, 0, 0])
ORDER = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, -1, -1])
PT = np.where(PID == 0, 0.0, 3.0)
W = trackml_hit_weights(PID, PT, ORDER)
NOISE = [-1, -1]


def test_weights_of_the_score_event():
    np.testing.assert_allclose(W[:4], np.array([30, 16, 9, 18]) / 146, rtol=1e-12)
    assert W[8:].tolist() == [0.0] * 5


def test_perfect_tracks_score_one():
    tracks = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2] + NOISE)
    assert trackml_score(tracks, PID, W) == pytest.approx(1.0, abs=1e-15)


def test_all_hits_in_one_track_score_zero():
    assert trackml_score(np.zeros(13, dtype=int), PID, W) == 0.0


def test_split_fifty_fifty_fails_the_majority_rule():
    # particle 11 split 2 + 2 (completeness 0.5 each): only particle 22 counts
    tracks = np.array([0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3] + NOISE)
    assert trackml_score(tracks, PID, W) == pytest.approx(0.5, abs=1e-15)
    # one track with 2 hits of 11 and 2 of 22 (purity 0.5): nothing counts from it
    tracks = np.array([0, 0, 1, 1, 0, 0, 2, 2, -1, -1, -1] + NOISE)
    assert trackml_score(tracks, PID, W) == 0.0


def test_partial_track_scores_its_majority_hits_only():
    # track 0 = 11's hits 0,1,2 + one hit of 22: purity 3/4, completeness 3/4 -> good,
    # worth (30 + 16 + 9) / 146; 11's last hit alone is a singleton of a 4-hit particle (no);
    # track 1 = 22's other 3 hits (purity 1, completeness 3/4) -> (16 + 9 + 18) / 146.
    tracks = np.array([0, 0, 0, -1, 0, 1, 1, 1, -1, -1, -1] + NOISE)
    assert trackml_score(tracks, PID, W) == pytest.approx((55 + 43) / 146, abs=1e-15)


def test_noise_hits_weigh_nothing():
    base = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1, -1, -1] + NOISE)
    with_noise = base.copy()
    with_noise[11] = 0  # a noise hit joins track 0: purity 4/5 still > 1/2
    noise_track = base.copy()
    noise_track[11:] = 5  # the noise hits form their own (noise-majority) track
    s = trackml_score(base, PID, W)
    assert s == pytest.approx(1.0)
    assert trackml_score(with_noise, PID, W) == s
    assert trackml_score(noise_track, PID, W) == s


def test_particles_with_fewer_than_four_hits_weigh_nothing():
    found = np.array([0, 0, 0, 0, -1, -1, -1, -1, 2, 2, 2] + NOISE)
    missed = np.array([0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1] + NOISE)
    assert trackml_score(found, PID, W) == trackml_score(missed, PID, W) == pytest.approx(0.5)


def _reference_score(tracks, pid, w):
    """The challenge's score written out with Python loops (singletons for -1)."""
    tracks = [t if t >= 0 else f"single{i}" for i, t in enumerate(tracks)]
    n_of = Counter(pid.tolist())
    score = 0.0
    for t in set(tracks):
        hits = [i for i, x in enumerate(tracks) if x == t]
        counts = Counter(pid[i] for i in hits)
        best = max(counts.values())
        major = min(p for p, c in counts.items() if c == best)
        if major != 0 and best / len(hits) > 0.5 and best / n_of[major] > 0.5:
            score += sum(w[i] for i in hits if pid[i] == major)
    return score / w.sum()


def test_score_equals_loop_reference_on_random_events():
    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(20, 200))
        pid = rng.integers(0, 12, n)
        w = rng.random(n) * (pid != 0)
        tracks = np.where(rng.random(n) < 0.2, -1, pid + rng.integers(0, 3, n) * 20)
        tracks = np.where(rng.random(n) < 0.2, rng.integers(0, 30, n), tracks)
        assert trackml_score(tracks, pid, w) == pytest.approx(_reference_score(tracks, pid, w),
                                                               rel=1e-12, abs=1e-15)


# ------------------------------------------------------------- a small event for DM metrics
def _dm_event():
    """Hand-built event; counts below are worked out in the tests.

    P1 (6 hits, pT 2, eta 0.5):  T1 = 5 hits of P1 + 1 of P2 -> purity 5/6, compl. 5/6: DM.
    P2 (4 hits, pT 2, eta -0.5): T2 = its 3 other hits + P1's 6th hit -> purity 3/4,
                                 compl. 3/4: DM.
    P3 (6 hits, pT 2, eta 1.5):  split 3 + 3 into T3, T4 -> compl. 1/2: not DM (2 fakes),
                                 both purity-matched -> P3 is a duplicate.
    P4 (5 hits, pT 0.5, eta 0):  T5 = all of it -> DM, but P4 is not reconstructable.
    P5 (3 hits, pT 5, eta 2.5):  unassigned -> reconstructable, missed.
    P6 (2 hits, pT 5, eta 0):    T7 = its 2 hits -> too short to count; P6 too short.
    noise (4 hits):              T6 = 3 noise hits -> fake; 1 noise hit unassigned.
    """
    spec = [  # (particle, pt, eta, track of each hit)
        (1, 2.0, 0.5, [1, 1, 1, 1, 1, 2]), (2, 2.0, -0.5, [1, 2, 2, 2]),
        (3, 2.0, 1.5, [3, 3, 3, 4, 4, 4]), (4, 0.5, 0.0, [5] * 5),
        (5, 5.0, 2.5, [-1] * 3), (6, 5.0, 0.0, [7, 7]), (0, 0.0, 0.0, [6, 6, 6, -1]),
    ]
    pid, pt, eta, tid = [], [], [], []
    for p, ptv, etav, tracks in spec:
        pid += [p] * len(tracks)
        pt += [ptv] * len(tracks)
        eta += [etav] * len(tracks)
        tid += tracks
    return np.array(tid), np.array(pid), np.array(pt), np.array(eta)


def test_match_tracks():
    tid, pid, _, _ = _dm_event()
    m = match_tracks(tid, pid)
    assert m["track_id"].tolist() == [1, 2, 3, 4, 5, 6]  # T7 (2 hits) and singletons left out
    assert m["major_particle_id"].tolist() == [1, 2, 3, 3, 4, 0]
    assert m["n_hits"].tolist() == [6, 4, 3, 3, 5, 3]
    assert m["particle_nhits"].tolist() == [6, 4, 6, 6, 5, 4]
    np.testing.assert_allclose(m["purity"], [5 / 6, 3 / 4, 1, 1, 1, 1])
    np.testing.assert_allclose(m["completeness"], [5 / 6, 3 / 4, 1 / 2, 1 / 2, 1, 3 / 4])
    assert m["dm_matched"].tolist() == [True, True, False, False, True, False]
    assert m["purity_matched"].tolist() == [True, True, True, True, True, False]
    assert match_tracks(tid, pid, min_track_hits=1)["track_id"].tolist() == \
        [1, 2, 3, 4, 5, 6, 7, -1, -1, -1, -1]


def test_tracking_metrics_hand_case():
    tid, pid, pt, eta = _dm_event()
    w = np.where(pid == 1, 1.0, 0.0)  # all weight on P1: T1 carries 5 of its 6 hits
    m = tracking_metrics(tid, pid, pt, eta, w)
    assert m["n_particles"] == 4  # P1, P2, P3, P5
    assert m["n_matched"] == 2 and m["dm_efficiency"] == 0.5
    # fake = no majority particle: only T6 (noise majority); T3 and T4 are pure halves of P3,
    # not DM-matched (unmatched) but not fakes
    assert m["n_tracks"] == 6 and m["n_fake"] == 1 and m["fake_rate"] == pytest.approx(1 / 6)
    assert m["n_unmatched"] == 3 and m["unmatched_rate"] == 0.5  # T3, T4, T6
    assert m["n_purity_matched"] == 3 and m["n_duplicated"] == 1
    assert m["duplicate_rate"] == pytest.approx(1 / 3)
    assert m["trackml_score"] == pytest.approx(5 / 6)
    # a looser pT cut makes P4 reconstructable (and matched): 3 of 5
    assert tracking_metrics(tid, pid, pt, eta, w, pt_min=0.1)["dm_efficiency"] == pytest.approx(0.6)
    # |eta| < 1 keeps P1, P2: both matched
    assert tracking_metrics(tid, pid, pt, eta, w, eta_max=1.0)["dm_efficiency"] == 1.0
    # torch tensors are accepted too
    mt = tracking_metrics(torch.tensor(tid), torch.tensor(pid), torch.tensor(pt),
                          torch.tensor(eta), torch.tensor(w))
    assert mt == m


def test_efficiency_tables():
    tid, pid, pt, eta = _dm_event()
    rows = efficiency_table(tid, pid, pt, eta, [0.0, 1.0, 3.0, 10.0], by="pt")
    # pT turn-on (pt_min defaults to 0): P4 | P1, P2, P3 | P5
    assert [(r["lo"], r["hi"], r["n"], r["n_matched"]) for r in rows] == \
        [(0.0, 1.0, 1, 1), (1.0, 3.0, 3, 2), (3.0, 10.0, 1, 0)]
    assert rows[1]["efficiency"] == pytest.approx(2 / 3)
    assert rows[1]["error"] == pytest.approx(math.sqrt(2 / 3 * 1 / 3 / 3))
    rows = efficiency_table(tid, pid, pt, eta, [-3.0, 0.0, 3.0], by="eta")
    # pT > 1 GeV by default: P2 | P1, P3, P5
    assert [(r["n"], r["efficiency"]) for r in rows] == [(1, 1.0), (3, pytest.approx(1 / 3))]
    empty = efficiency_table(tid, pid, pt, eta, [5.0, 6.0], by="eta")
    assert empty[0]["n"] == 0 and math.isnan(empty[0]["efficiency"])
    with pytest.raises(ValueError, match="increasing"):
        efficiency_table(tid, pid, pt, eta, [1.0, 1.0])


def test_length_mismatch_names_the_arrays():
    with pytest.raises(ValueError, match="'weight': 3"):
        trackml_score(np.zeros(4), np.zeros(4), np.zeros(3))


# ------------------------------------------------------- events with nothing to score
# all noise: 5 hits; all short: particles 4 and 5 with 3 hits each (< 4: weight 0) + noise
ALL_NOISE = {"pid": np.zeros(5, dtype=int), "tid": np.array([0, 0, 0, -1, -1]),
             "order": np.full(5, -1)}
ALL_SHORT = {"pid": np.array([4, 4, 4, 5, 5, 5, 0]), "tid": np.array([0, 0, 0, 1, 1, 1, -1]),
             "order": np.array([0, 1, 2, 0, 1, 2, -1])}


def _weights(event):
    pid = event["pid"]
    return trackml_hit_weights(pid, np.where(pid == 0, 0.0, 2.0), event["order"])


@pytest.mark.parametrize("event", [ALL_NOISE, ALL_SHORT], ids=["all_noise", "all_short"])
def test_score_of_an_event_without_weight_is_undefined(event):
    w = _weights(event)
    assert w.tolist() == [0.0] * len(w)
    assert not trackml_score_defined(w)
    with pytest.raises(UndefinedScoreError, match="TrackML score undefined: the .* hit weights "
                                                  "sum to 0"):
        trackml_score(event["tid"], event["pid"], w)
    # perfect tracks do not make it defined either: nothing is there to find
    with pytest.raises(UndefinedScoreError):
        trackml_score(event["pid"], event["pid"], w)
    m = tracking_metrics(event["tid"], event["pid"], np.full(len(w), 2.0), np.zeros(len(w)), w)
    assert m["trackml_score"] is None


def test_bad_weights_are_errors():
    w = W.copy()
    w[3] = -w[3]
    with pytest.raises(ValueError, match=r"finite and >= 0: weight\[3\] = -0\.1232876"):
        trackml_score(np.zeros(13), PID, w)
    w[3] = np.nan
    with pytest.raises(ValueError, match=r"weight\[3\] = nan"):
        trackml_score_defined(w)
    assert trackml_score_defined(W)


def _event_dict(tid, pid, w):
    n = len(pid)
    return {"track_id": tid, "particle_id": pid, "pt": np.where(pid == 0, 0.0, 3.0),
            "eta": np.zeros(n), "weight": w}


def test_summary_averages_only_events_with_a_score():
    # the score event with tracks scoring 0.5 (test_split_fifty_fifty...) and 1.0, plus an
    # all-noise event: mean 0.75 over 2 scored events of 3, std 0.25
    half = np.array([0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3] + NOISE)
    full = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2] + NOISE)
    noise = _event_dict(ALL_NOISE["tid"], ALL_NOISE["pid"], _weights(ALL_NOISE))
    s = summarize_events([_event_dict(half, PID, W), noise, _event_dict(full, PID, W)])
    m = s["metrics"]
    assert m["trackml_score"] == pytest.approx(0.75, abs=1e-15)
    assert m["trackml_score_std"] == pytest.approx(0.25, abs=1e-15)
    assert m["trackml_score_events"] == 2 and m["num_events"] == 3
    assert s["undefined"] == {}


def test_summary_without_any_score_says_why():
    short = _event_dict(ALL_SHORT["tid"], ALL_SHORT["pid"], _weights(ALL_SHORT))
    noise = _event_dict(ALL_NOISE["tid"], ALL_NOISE["pid"], _weights(ALL_NOISE))
    s = summarize_events([short, noise])
    m = s["metrics"]
    assert m["trackml_score"] is None and m["trackml_score_std"] is None
    assert m["trackml_score_events"] == 0 and m["num_events"] == 2
    assert "hit weights of all 2 events sum to 0" in s["undefined"]["metrics.trackml_score"]
    # particles 4, 5: 3 hits, pT 3 -> reconstructable, both DM-matched by their tracks
    assert m["dm_efficiency"] == 1.0 and m["n_tracks"] == 3  # + the 3-noise-hit track
    assert "trackml_score        |    n/a" in format_table(m)


# ---------------------------------------------------------------------------- edges
def _pairwise_auc(s, y):
    pos, neg = s[y], s[~y]
    return float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))


def test_auc_equals_brute_force_with_ties():
    rng = np.random.default_rng(2)
    for _ in range(10):
        y = rng.random(300) < 0.3
        s = np.round(rng.random(300) * 0.6 + 0.4 * y, 1)  # coarse: many ties
        assert roc_auc(s, y) == pytest.approx(_pairwise_auc(s, y), abs=1e-12)
    assert roc_auc([0.1, 0.9], [0, 1]) == 1.0
    assert roc_auc([0.3, 0.3], [0, 1]) == 0.5
    assert math.isnan(roc_auc([0.3, 0.4], [1, 1]))


def test_edge_metrics_by_hand():
    s = np.array([0.9, 0.8, 0.5, 0.3, 0.7, 0.1])
    y = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    m = edge_metrics(s, y, threshold=0.5)
    # predicted (> 0.5): edges 0, 1, 4 -> TP 2 of 4 true, 2 of 3 predicted.
    # AUC: pairs (true, false) won: 0.9, 0.8 beat both; 0.5, 0.3 beat only 0.1 -> 6/8
    assert m == {"auc": 0.75, "efficiency": 0.5, "purity": pytest.approx(2 / 3)}


def test_format_table():
    text = format_table({"dm_efficiency": 0.5, "n_tracks": 6, "fake_rate": float("nan"),
                         "edge": {"auc": 0.75},
                         "eff_vs_pt": [{"lo": 0.0, "hi": 1.0, "n": 3, "efficiency": 2 / 3}]})
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "|", "value"]
    assert "dm_efficiency | 0.5000" in text and "n_tracks      |      6" in text
    assert "fake_rate     |    nan" in text and "edge.auc      | 0.7500" in text
    assert "eff_vs_pt" in lines and lines[-1].split(" | ") == ["0.0000", "1.0000", "3", "    0.6667"]


def test_top1_next_hit_by_hand():
    """Hits 0, 1, 2 at distances 1, 2, 3 and hit 3 at 2.5. Hit 0's outward edges: 0->1 (true,
    0.9), 0->3 (0.4): right. Hit 1's: 1->2 (true, 0.3), 1->3 (0.8): wrong. Hit 3 has only a
    false outward edge 3->2: not counted. The inward copy 2->1 (score 0.99) is ignored."""
    from gnn_jepa.tracking.metrics import top1_next_hit

    key = [1.0, 2.0, 3.0, 2.5]
    ei = [[0, 0, 1, 1, 3, 2], [1, 3, 2, 3, 2, 1]]
    scores = [0.9, 0.4, 0.3, 0.8, 0.7, 0.99]
    labels = [1, 0, 1, 0, 0, 1]
    assert top1_next_hit(scores, ei, labels, key) == 0.5
    assert top1_next_hit([0.9, 0.4, 0.9, 0.8, 0.7, 0.99], ei, labels, key) == 1.0
    assert math.isnan(top1_next_hit(scores, ei, [0] * 6, key))
