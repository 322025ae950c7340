"""The ColliderML task's metrics: a hand-worked event, per-event track ids, the task's
submission reader, and equality with the ``colliderml`` package's scorer where installed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gnn_jepa.tracking.colliderml_metrics import (colliderml_metrics, majority_particles,
                                                  read_predictions, score_tables)

# one event, hits in submission order: (track, particle); particles 1..6, 0 = noise
#  T1: a a a b   -> majority a (3/4), a has 4 hits: 3/4 >= 0.5 -> correct, 3 hits
#  T2: a b       -> tie, a comes first: 1/2 >= 0.5 but a's completeness 1/4 -> not correct
#  T3: c c       -> correct, 2 hits
#  T4: d e f     -> 1/3 < 0.5: the one fake
#  noise hit     -> counts nowhere
TRACK = [1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 4, 2]
PARTICLE = [1, 1, 1, 2, 1, 2, 3, 3, 4, 5, 6, 0]
# primary with pT > 1: a, c, d (and one particle of the event with no hit: 4 in all)
PRIMARY_PT1 = [p in (1, 3, 4) for p in PARTICLE]


def test_hand_worked_event():
    m = colliderml_metrics([7] * 12, TRACK, PARTICLE, PRIMARY_PT1, {7: 4})
    assert m["trackml_eff"] == pytest.approx(5 / 11)  # (3 + 2) of 11 matched hits
    assert m["fake_rate"] == pytest.approx(1 / 4)
    assert m["dup_rate"] == pytest.approx(2 / 6)  # a and b lie on T1 and T2
    assert m["physics_eff_pt1"] == pytest.approx(3 / 4)  # a (T1, T2), c (T3), d (T4)
    assert majority_particles([7] * 12, TRACK, PARTICLE).tolist() == \
        [1, 1, 1, 1, 1, 1, 3, 3, 4, 4, 4, 0]


def test_tie_goes_to_the_particle_seen_first():
    # T2 = (b, a) instead of (a, b): b is now its majority, and b's 1 of 2 hits is >= 0.5
    track, particle = TRACK[:4] + [2, 2], PARTICLE[:4] + [2, 1]
    m = colliderml_metrics([0] * 6, track, particle)
    assert m["trackml_eff"] == pytest.approx((3 + 1) / 6)
    assert np.isnan(m["physics_eff_pt1"])  # no particle table given


def test_track_ids_are_per_event():
    one = colliderml_metrics([7] * 12, TRACK, PARTICLE, PRIMARY_PT1, {7: 4})
    two = colliderml_metrics([7] * 12 + [9] * 12, TRACK * 2, PARTICLE * 2, PRIMARY_PT1 * 2,
                             {7: 4, 9: 4})
    assert two == pytest.approx(one)


def test_empty_and_bad_inputs():
    assert colliderml_metrics([1, 1], [0, 0], [0, 0], [False, False], {1: 0}) == \
        {"trackml_eff": 0.0, "fake_rate": 0.0, "dup_rate": 0.0, "physics_eff_pt1": 0.0}
    with pytest.raises(ValueError, match="differ in length"):
        colliderml_metrics([1, 1], [0], [1, 1])
    with pytest.raises(ValueError, match=r"lacks events \[7\]"):
        colliderml_metrics([7] * 12, TRACK, PARTICLE, PRIMARY_PT1, {8: 4})


def _tables(rng: np.random.Generator, events=(3, 11, 12), particles=12, hits=60):
    """A random submission and its truth: ColliderML ids (particles from 0, hit rows from 0),
    particle ids disjoint between events, tracks with ties and strays."""
    preds, truth, parts = [], [], []
    for k, ev in enumerate(events):
        pid = rng.integers(0, particles, hits) + 100 * k
        truth.append(pd.DataFrame({"event_id": ev, "hit_id": np.arange(hits), "particle_id": pid}))
        track = np.where(rng.random(hits) < 0.7, pid % 50, rng.integers(0, 8, hits))
        keep = rng.random(hits) < 0.9  # some hits left out of the submission
        order = rng.permutation(np.flatnonzero(keep))
        preds.append(pd.DataFrame({"event_id": ev, "hit_id": order, "track_id": track[order]}))
        ids = np.arange(particles + 3) + 100 * k  # 3 particles without hits
        parts.append(pd.DataFrame({"event_id": ev, "particle_id": ids,
                                   "px": rng.normal(0, 1.2, len(ids)),
                                   "py": rng.normal(0, 1.2, len(ids)),
                                   "primary": rng.random(len(ids)) < 0.8}))
    return pd.concat(preds, ignore_index=True), pd.concat(truth, ignore_index=True), \
        pd.concat(parts, ignore_index=True)


def test_score_tables_matches_the_per_hit_form():
    preds, truth, parts = _tables(np.random.default_rng(0))
    got = score_tables(preds, truth, parts)
    # the submitted hits in submission order, then the truth hits left out
    merged = preds.merge(truth, on=["event_id", "hit_id"])
    left_out = truth[~truth.set_index(["event_id", "hit_id"]).index.isin(
        preds.set_index(["event_id", "hit_id"]).index)]
    assert 0 < len(left_out) < len(truth)
    rows = pd.concat([merged, left_out.assign(track_id=-1)], ignore_index=True)
    submitted = np.arange(len(rows)) < len(merged)
    pt = np.hypot(parts.px, parts.py)
    sel = parts[parts.primary & (pt > 1)]
    keys = set(zip(sel.event_id, sel.particle_id))
    flag = [k in keys for k in zip(rows.event_id, rows.particle_id)]
    want = colliderml_metrics(rows.event_id, rows.track_id, rows.particle_id + 1, flag,
                              sel.groupby("event_id").size().to_dict(), submitted)
    assert got == pytest.approx(want)
    assert 0 < got["trackml_eff"] < 1 and 0 < got["dup_rate"] < 1
    # left-out hits lower the completeness of their particles' tracks, not the denominator
    everything = colliderml_metrics(rows.event_id, rows.track_id, rows.particle_id + 1)
    assert everything["trackml_eff"] != got["trackml_eff"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_the_colliderml_scorer(seed):
    scorer = pytest.importorskip("colliderml.tasks.tracking.metrics")
    pa = pytest.importorskip("pyarrow")
    preds, truth, parts = _tables(np.random.default_rng(seed))
    ours = score_tables(preds, truth, parts)
    merged = preds.merge(truth, on=["event_id", "hit_id"], how="left")
    major = majority_particles(merged.event_id, merged.track_id, merged.particle_id + 1) - 1
    p = pa.Table.from_pandas(preds.assign(majority_particle_id=major), preserve_index=False)
    t = pa.Table.from_pandas(truth, preserve_index=False)
    theirs = {"trackml_eff": scorer.trackml_weighted_efficiency(p, t),
              "fake_rate": scorer.fake_rate(p, t), "dup_rate": scorer.duplicate_rate(p, t),
              "physics_eff_pt1": scorer.physics_eff_pt1(p, pa.Table.from_pandas(
                  parts, preserve_index=False))}
    for k, v in theirs.items():  # the package rounds to 6 decimals
        assert round(ours[k], 6) == pytest.approx(v, abs=1e-9), k


def test_read_predictions_round_trip_and_errors(tmp_path):
    preds, _, _ = _tables(np.random.default_rng(3))
    path = tmp_path / "p.csv"
    preds.to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_predictions(path), preds, check_dtype=False)
    preds.drop(columns="track_id").to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"p.csv: no column \['track_id'\]"):
        read_predictions(path)
    pd.concat([preds, preds.iloc[:1]]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="submitted twice"):
        read_predictions(path)
    preds.assign(track_id=preds.track_id.astype(float).where(preds.index > 0)).to_csv(path,
                                                                                       index=False)
    with pytest.raises(ValueError, match="'track_id' must be integers"):
        read_predictions(path)


def test_large_ids_events_without_rows_and_rank_files(tmp_path):
    from gnn_jepa.tracking.colliderml_metrics import write_predictions
    big = 2 ** 53 + 2  # not exact in float64: a merge must not turn ids into floats
    truth = pd.DataFrame({"event_id": [1, 1], "hit_id": [0, 1], "particle_id": [big, big + 1]})
    preds = pd.DataFrame({"event_id": [1, 1, 1], "hit_id": [0, 1, 7], "track_id": [5, 6, 6]})
    parts = pd.DataFrame({"event_id": [1, 1, 5], "particle_id": [big, big + 1, 0],
                          "px": [2.0, 0.1, 3.0], "py": [0.0, 0.0, 0.0]})
    m = score_tables(preds, truth, parts)
    assert m["dup_rate"] == 0.0 and m["trackml_eff"] == 1.0
    # event 5's primary pT > 1 particle has no hit and no row: found by no track
    assert m["physics_eff_pt1"] == pytest.approx(1 / 2)
    path = write_predictions([(1, np.arange(3), np.zeros(3, np.int64))], tmp_path, rank=2)
    assert path.endswith(("colliderml_predictions.rank2.parquet", "colliderml_predictions.rank2.csv"))
