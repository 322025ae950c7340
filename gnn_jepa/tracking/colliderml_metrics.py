r"""The ColliderML tracking task's metrics, computed by our code (numpy in, floats out).

ColliderML (arXiv 2512.15230) scores a submission of rows ``event_id, hit_id, track_id``
(``hit_id``: the hit's row index within its event, from 0) against the flat truth hits
``event_id, hit_id, particle_id`` and the flat particles ``event_id, particle_id, px, py,
primary``. Its four metrics differ from ours (:mod:`gnn_jepa.tracking.metrics`); here they
are as its scorer (``colliderml.tasks.tracking.metrics``, version 0.4) defines them, with unit
hit weights. Only submitted hits found in the truth count ("matched" hits); a track is the
set of its matched hits, within one event.

* ``trackml_eff``: a track's majority particle :math:`P` is the particle with most of its
  hits (ties: the one whose first hit comes first in the submission's row order). The track is
  correct when :math:`|T \cap P| / |T| \ge 0.5` and :math:`|T \cap P| / |P| \ge 0.5`
  (:math:`|P|`: all of P's hits in the event's truth, submitted or not).
  :math:`\mathrm{trackml\_eff} = \sum_{\mathrm{correct}\ T} |T \cap P| \,/\, \#\mathrm{matched\ hits}`.
  Note the ``>=`` (ours is ``>``) and the denominator: the submitted hits, not all hits, so
  hits left out of a submission are not counted as missed.
* ``fake_rate``: tracks whose most frequent particle holds < 50% of their hits, over all
  tracks.
* ``dup_rate``: particles whose hits lie on more than one track, over the particles with a
  submitted hit. A single stray hit makes a duplicate.
* ``physics_eff_pt1``: particles with ``primary`` set (every particle when the column is
  absent) and :math:`p_T = \sqrt{p_x^2 + p_y^2} > 1` GeV, counted in the particles table
  (with or without hits), that are the majority particle of some track. Counted per event
  here; the package's scorer pools particle ids across events (a particle id found in one
  event counts in every event that has it) and reads the majority particle from a
  ``majority_particle_id`` column of the submission, so the two agree on one event, or when
  that column holds the majority particles computed here (:func:`majority_particles`).

The package rounds each value to 6 decimals; these functions do not.

Our events' noise hits (``particle_id`` 0; ColliderML marks none) are not in the truth: they
count nowhere, like a submitted hit that the truth does not hold.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from gnn_jepa.data.colliderml import pa, pq, require_pyarrow
from gnn_jepa.tracking.building import to_submission_ids
from gnn_jepa.tracking.metrics import _np, _same_length

#: Metric names, as the task reports them.
METRICS = ("trackml_eff", "fake_rate", "dup_rate", "physics_eff_pt1")
#: Columns of a submission.
PREDICTION_COLUMNS = ("event_id", "hit_id", "track_id")


def _groups(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense group index of each row by the tuple of ``keys``, and each group's first row."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort(keys[::-1])
    change = np.zeros(n, bool)
    change[0] = True
    for k in keys:
        ks = k[order]
        change[1:] |= ks[1:] != ks[:-1]
    gid_sorted = np.cumsum(change) - 1
    gid = np.empty(n, np.int64)
    gid[order] = gid_sorted
    first = np.full(int(gid_sorted[-1]) + 1, n, np.int64)
    np.minimum.at(first, gid, np.arange(n))
    return gid, first


def _tracks(event_id: np.ndarray, track_id: np.ndarray, particle_id: np.ndarray) -> dict:
    """Per-track counts over the matched rows given (in submission order)."""
    track, _ = _groups(event_id, track_id)
    pair, pair_first = _groups(track, particle_id)
    pair_n = np.bincount(pair)
    pair_track = track[pair_first]
    pair_particle = particle_id[pair_first]
    # majority: most hits, then the particle whose first hit comes first
    order = np.lexsort((pair_first, -pair_n, pair_track))
    lead = np.r_[True, pair_track[order][1:] != pair_track[order][:-1]]
    major = order[lead]  # one pair per track, tracks in increasing order
    return {"track": track, "pair_first": pair_first, "pair_n": pair_n,
            "pair_particle": pair_particle, "major": major, "track_n": np.bincount(track)}


def majority_particles(event_id: Any, track_id: Any, particle_id: Any) -> np.ndarray:
    """[N] the majority particle (as :data:`trackml_eff` chooses it) of each row's track;
    rows with ``particle_id`` 0 (not in the truth) give 0 and do not count."""
    e, t, p = (_np(a, name, np.int64) for a, name in
               ((event_id, "event_id"), (track_id, "track_id"), (particle_id, "particle_id")))
    _same_length(event_id=e, track_id=t, particle_id=p)
    out = np.zeros(len(p), np.int64)
    m = p != 0
    if m.any():
        tr = _tracks(e[m], t[m], p[m])
        out[m] = tr["pair_particle"][tr["major"]][tr["track"]]
    return out


def colliderml_metrics(event_id: Any, track_id: Any, particle_id: Any,
                       primary_pt1: Any | None = None,
                       num_primary_pt1: Mapping[int, int] | None = None,
                       submitted: Any | None = None) -> dict[str, float]:
    """The task's four metrics for per-hit arrays in submission row order.

    Args:
        event_id: [N] event of each hit.
        track_id: [N] its track (any integers; ids are per event).
        particle_id: [N] its true particle, 0 = not in the truth (noise): such rows count
            nowhere.
        primary_pt1: [N] bool, the hit's particle is primary with pT > 1 GeV; with
            ``num_primary_pt1`` gives ``physics_eff_pt1``, else it is ``nan``.
        num_primary_pt1: ``{event_id: number of primary pT > 1 particles}`` (the
            denominator, particles without hits included) for every event of ``event_id``;
            events listed here without rows count in the denominator too.
        submitted: [N] bool, the hit is in the submission (default: all). Truth hits left
            out of a submission still count in their particle's number of hits (the
            completeness of ``trackml_eff``); submitted rows come first in row order.

    Returns:
        ``{"trackml_eff", "fake_rate", "dup_rate", "physics_eff_pt1"}``: 0.0 with no
        matched hit (the package's convention), ``physics_eff_pt1`` 0.0 when no event has a
        primary pT > 1 particle.
    """
    e, t, p = (_np(a, name, np.int64) for a, name in
               ((event_id, "event_id"), (track_id, "track_id"), (particle_id, "particle_id")))
    _same_length(event_id=e, track_id=t, particle_id=p)
    sub = np.ones(len(p), bool) if submitted is None else _np(submitted, "submitted", bool)
    _same_length(event_id=e, submitted=sub)
    truth_all = p != 0
    events = np.unique(e)
    out = dict.fromkeys(METRICS, 0.0)
    if primary_pt1 is None or num_primary_pt1 is None:
        out["physics_eff_pt1"] = float("nan")
    m = truth_all & sub
    if not m.any():
        return out
    # every particle's hits in the truth, submitted or not
    particle_all, _ = _groups(e[truth_all], p[truth_all])
    particle_n = np.bincount(particle_all)
    particle = particle_all[m[truth_all]]
    particle_first = np.full(len(particle_n), len(m), np.int64)
    e, t, p = e[m], t[m], p[m]
    np.minimum.at(particle_first, particle, np.arange(len(p)))
    tr = _tracks(e, t, p)
    major, pair_n = tr["major"], tr["pair_n"]
    major_n = pair_n[major]
    track_n = tr["track_n"]
    pair_particle = particle[tr["pair_first"]]  # the (event, particle) of each (track, particle)
    major_particle = pair_particle[major]
    correct = (major_n / track_n >= 0.5) & (major_n / particle_n[major_particle] >= 0.5)
    out["trackml_eff"] = float(major_n[correct].sum() / len(p))
    out["fake_rate"] = float(np.mean(major_n / track_n < 0.5))
    tracks_of_particle = np.bincount(pair_particle, minlength=len(particle_n))
    out["dup_rate"] = float(np.mean(tracks_of_particle[np.unique(particle)] > 1))
    if primary_pt1 is not None and num_primary_pt1 is not None:
        flag = _np(primary_pt1, "primary_pt1", bool)[m]
        missing = [int(x) for x in events if int(x) not in num_primary_pt1]
        if missing:
            raise ValueError(f"num_primary_pt1 lacks events {missing[:5]}")
        den = sum(int(v) for v in num_primary_pt1.values())  # events without rows included
        found = np.unique(major_particle[flag[particle_first[major_particle]]])
        out["physics_eff_pt1"] = float(len(found) / den) if den else 0.0
    return out


def read_predictions(path: str | Path) -> pd.DataFrame:
    """A task submission (Parquet, or CSV with a header), checked: the three columns, integer,
    no missing value, no ``(event_id, hit_id)`` twice. Errors name the file and column."""
    path = Path(path)
    if path.suffix == ".parquet":
        require_pyarrow()
        frame = pq.read_table(path).to_pandas()
    else:
        frame = pd.read_csv(path)
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: no column {missing} (a ColliderML tracking submission has "
                         f"{list(PREDICTION_COLUMNS)})")
    for c in PREDICTION_COLUMNS:
        if frame[c].isna().any() or not pd.api.types.is_integer_dtype(frame[c]):
            raise ValueError(f"{path}: column {c!r} must be integers without gaps, got "
                             f"{frame[c].dtype}")
    dup = frame.duplicated(["event_id", "hit_id"])
    if dup.any():
        row = frame[dup].iloc[0]
        raise ValueError(f"{path}: hit {int(row.hit_id)} of event {int(row.event_id)} is "
                         "submitted twice")
    return frame[list(PREDICTION_COLUMNS)]


def score_tables(predictions: pd.DataFrame, truth_hits: pd.DataFrame,
                 particles: pd.DataFrame | None = None) -> dict[str, float]:
    """:func:`colliderml_metrics` of a submission against the task's flat truth tables.

    Args:
        predictions: ``event_id, hit_id, track_id`` rows (row order sets majority ties).
        truth_hits: ``event_id, hit_id, particle_id`` of every truth hit (ColliderML particle
            ids, any integers; rows absent here are not matched).
        particles: ``event_id, particle_id, px, py`` and optionally ``primary``; without it
            ``physics_eff_pt1`` is ``nan``.
    """
    truth = truth_hits[["event_id", "hit_id", "particle_id"]].astype(np.int64)
    # particle ids shifted by one so that 0 keeps meaning "not in the truth"; nullable
    # integers, so that the merge's missing rows do not turn large ids into floats
    truth = truth.assign(particle_id=(truth["particle_id"] + 1).astype("Int64"))
    merged = predictions[list(PREDICTION_COLUMNS)].astype(np.int64).merge(
        truth, on=["event_id", "hit_id"], how="left", sort=False, indicator=True)
    # truth hits left out of the submission, after it: they count in |P| only
    rest = truth.merge(predictions[["event_id", "hit_id"]], on=["event_id", "hit_id"],
                       how="left", indicator=True)
    rest = rest[rest["_merge"] == "left_only"].assign(track_id=-1)
    submitted = np.r_[np.ones(len(merged), bool), np.zeros(len(rest), bool)]
    merged = pd.concat([merged[["event_id", "track_id", "particle_id"]],
                        rest[["event_id", "track_id", "particle_id"]]], ignore_index=True)
    pid = merged["particle_id"].fillna(0).to_numpy(np.int64)
    flag = num = None
    if particles is not None:
        pt = np.hypot(particles["px"].to_numpy(np.float64), particles["py"].to_numpy(np.float64))
        primary = (particles["primary"].to_numpy(bool) if "primary" in particles.columns
                   else np.ones(len(particles), bool))
        sel = particles[primary & (pt > 1.0)]
        num = sel.groupby("event_id").size().to_dict()
        num = {int(ev): int(num.get(ev, 0))
               for ev in set(merged["event_id"].unique()) | set(particles["event_id"].unique())}
        keys = set(zip(sel["event_id"].astype(np.int64), sel["particle_id"].astype(np.int64) + 1))
        flag = np.fromiter((k in keys for k in zip(merged["event_id"], pid)), bool, len(pid))
    return colliderml_metrics(merged["event_id"], merged["track_id"], pid, flag, num, submitted)


def summarize_colliderml(events: list[dict]) -> tuple[dict[str, float | None], dict[str, str]]:
    """:func:`colliderml_metrics` over test events, as ``gnn-jepa test`` reports them.

    Args:
        events: one dict per event: ``track_id`` [N] (negative = unassigned, each such hit
            its own track, as in the submission), ``particle_id`` [N] (0 = noise), and
            optionally ``primary_pt1`` [N] and ``num_primary_pt1`` (int).

    Returns:
        ``{"colliderml_<metric>": value}`` and ``{"metrics.colliderml_<metric>": reason}`` for
        a value left ``None`` (``physics_eff_pt1`` when an event lacks its primary flags).
    """
    n = [len(e["track_id"]) for e in events]
    # events keyed by position: two test events may share an event id (two folders)
    key = np.repeat(np.arange(len(events)), n)
    track = np.concatenate([to_submission_ids(np.asarray(e["track_id"])) for e in events])
    particle = np.concatenate([np.asarray(e["particle_id"], np.int64) for e in events])
    flags = all(e.get("primary_pt1") is not None and e.get("num_primary_pt1") is not None
                for e in events)
    if flags:
        m = colliderml_metrics(key, track, particle,
                               np.concatenate([np.asarray(e["primary_pt1"], bool) for e in events]),
                               {k: int(e["num_primary_pt1"]) for k, e in enumerate(events)})
    else:
        m = colliderml_metrics(key, track, particle)
    out = {f"colliderml_{k}": float(v) for k, v in m.items()}
    undefined = {}
    if not flags:
        out["colliderml_physics_eff_pt1"] = None
        undefined["metrics.colliderml_physics_eff_pt1"] = (
            "the events carry no primary_pt1 / num_primary_pt1 (data cached by a version "
            "before cache format 3)")
    return out, undefined


def write_predictions(rows: list[tuple[int, np.ndarray, np.ndarray]], folder: str | Path,
                      rank: int | None = None) -> str:
    """Write a task submission: ``rows`` of ``(event_id, hit_id [N], track_id [N])``, into
    ``folder/colliderml_predictions.parquet`` (``.csv`` without pyarrow;
    ``colliderml_predictions.rank<k>.parquet`` with ``rank``, one file per process); atomic.
    Returns the path."""
    frame = pd.DataFrame({
        "event_id": np.concatenate([np.full(len(h), e, np.int64) for e, h, _ in rows])
        if rows else np.zeros(0, np.int64),
        "hit_id": np.concatenate([np.asarray(h, np.int64) for _, h, _ in rows])
        if rows else np.zeros(0, np.int64),
        "track_id": np.concatenate([np.asarray(t, np.int64) for _, _, t in rows])
        if rows else np.zeros(0, np.int64)})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = "colliderml_predictions" + ("" if rank is None else f".rank{rank}")
    path = folder / (stem + (".parquet" if pq else ".csv"))
    tmp = path.with_name(path.name + ".tmp")
    if pq:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    else:
        frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return str(path)
