"""Tracking metrics (definitions of DESIGN.md, "Metrics"): numpy in, python numbers out.

Matching vocabulary, for a reconstructed track T and its *majority particle* P (the
particle contributing most hits to T; ties go to the smallest particle id, as in the
official TrackML scorer):

* ``purity = |T ∩ P| / |T|`` and ``completeness = |T ∩ P| / |P|`` (``|P|`` counts all
  of P's hits in the event).
* T is **double-majority (DM) matched** to P when ``purity > 0.5`` and
  ``completeness > 0.5`` and P is not noise (``particle_id != 0``). A particle can be
  DM-matched by at most one track (two disjoint tracks cannot both hold more than half
  of its hits).
* T is **purity matched** to P when ``purity > 0.5`` and P is not noise (used for
  duplicates, since DM matching can never produce one).

Hits with a negative ``track_id`` (unassigned) are each a track of their own, as in a
TrackML submission built by :func:`gnn_jepa.tracking.building.to_submission_ids`.

Metrics:

* TrackML score ``= sum(weight of the majority-particle hits of DM-matched tracks) /
  sum(weight)`` — the challenge's definition (its "good" track is our DM match). Noise
  and particles with < 4 hits carry zero weight through
  :func:`gnn_jepa.data.weights.trackml_hit_weights`; a noise-majority track never
  counts, whatever weights are passed. An event whose weights sum to 0 (only noise and
  particles with < 4 hits) has **no score**: 0/0 is not 0 (nothing was missed) nor 1, so
  :func:`trackml_score` raises :class:`UndefinedScoreError`, :func:`tracking_metrics` gives
  ``None``, and :func:`summarize_events` averages over the events that have a score.
* DM efficiency ``= #reconstructable particles DM-matched by a track of >= min_track_hits
  hits / #reconstructable``, reconstructable = not noise, ``pT > pt_min``, ``>= min_hits``
  hits (and ``|eta| < eta_max`` when given).
* Fake rate ``= #tracks (>= min_track_hits hits) with no majority particle / #tracks (>=
  min_track_hits hits)``, DESIGN.md's definition: no non-noise particle holds more than half
  of the track's hits (purity <= 0.5, or a noise majority). A pure but incomplete piece of
  a track is *not* a fake (it shows up in the duplicate rate and the efficiency).
* Unmatched rate ``= #tracks (>= min_track_hits hits) that are not DM-matched / #tracks``:
  the stricter figure that also counts pure but incomplete pieces (completeness <= 0.5).
* Duplicate rate ``= #reconstructable particles purity-matched by >= 2 tracks (>=
  min_track_hits hits) / #reconstructable particles purity-matched by >= 1 such track``.

The other metrics give ``nan`` for an empty denominator (no particle, track or edge to
count); :func:`gnn_jepa.evaluation.report.write_report` writes those as JSON ``null`` with
the reason.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from gnn_jepa.tracking.building import to_submission_ids


def _np(x: Any, name: str, dtype: Any = None) -> np.ndarray:
    """A 1-D numpy copy-free view of ``x`` (numpy, list or torch tensor on any device)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per hit/edge), got shape {a.shape}")
    return a


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"per-hit arrays differ in length: {lengths}")
    return next(iter(lengths.values()))


def _track_table(track_id: np.ndarray, particle_id: np.ndarray,
                 weight: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per-track majority particle and counts over all tracks (unassigned hits = singletons)."""
    n = len(track_id)
    t = to_submission_ids(track_id)
    p = particle_id
    w = np.zeros(n) if weight is None else weight
    order = np.lexsort((p, t))
    ts, ps = t[order], p[order]
    pair_start = np.flatnonzero(np.r_[True, (ts[1:] != ts[:-1]) | (ps[1:] != ps[:-1])]) if n else \
        np.zeros(0, dtype=np.int64)
    pair_t, pair_p = ts[pair_start], ps[pair_start]
    pair_n = np.diff(np.r_[pair_start, n])
    pair_w = np.add.reduceat(w[order], pair_start) if n else np.zeros(0)
    # majority pair of each track: most hits first, then smallest particle id
    by_track = np.lexsort((pair_p, -pair_n, pair_t))
    first = np.r_[True, pair_t[by_track][1:] != pair_t[by_track][:-1]] if n else np.zeros(0, bool)
    maj = by_track[first]
    track_start = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]]) if n else np.zeros(0, np.int64)
    n_hits = np.diff(np.r_[track_start, n])
    uniq_p, count_p = np.unique(p, return_counts=True)
    major_p = pair_p[maj]
    major_n = pair_n[maj]
    particle_n = count_p[np.searchsorted(uniq_p, major_p)] if n else np.zeros(0, np.int64)
    purity = major_n / np.maximum(n_hits, 1)
    completeness = major_n / np.maximum(particle_n, 1)
    real = major_p != 0
    return {
        "track_id": np.asarray(track_id)[order][track_start].astype(np.int64),
        "n_hits": n_hits.astype(np.int64),
        "major_particle_id": major_p.astype(np.int64),
        "major_nhits": major_n.astype(np.int64),
        "particle_nhits": particle_n.astype(np.int64),
        "purity": purity,
        "completeness": completeness,
        "dm_matched": real & (purity > 0.5) & (completeness > 0.5),
        "purity_matched": real & (purity > 0.5),
        "major_weight": pair_w[maj],
    }


def match_tracks(track_id: Any, particle_id: Any, min_track_hits: int = 3) -> dict[str, np.ndarray]:
    """Majority particle and matching fractions of every track with >= ``min_track_hits`` hits.

    Args:
        track_id: [N] track of each hit, negative = unassigned (each its own track).
        particle_id: [N] true particle of each hit, 0 = noise.
        min_track_hits: tracks with fewer hits are left out.

    Returns:
        One entry per track (assigned tracks by increasing id, then the unassigned-hit
        singletons, ``track_id`` -1, in hit order), each a numpy array: ``track_id``,
        ``n_hits``, ``major_particle_id``, ``major_nhits`` (hits of the majority particle
        on the track), ``particle_nhits`` (hits of that particle in the event), ``purity``
        (major_nhits / n_hits), ``completeness`` (major_nhits / particle_nhits),
        ``dm_matched`` and ``purity_matched`` (bool, see the module doc).
    """
    t = _np(track_id, "track_id", np.int64)
    p = _np(particle_id, "particle_id", np.int64)
    _same_length(track_id=t, particle_id=p)
    table = _track_table(t, p, None)
    table.pop("major_weight")
    keep = table["n_hits"] >= min_track_hits
    return {k: v[keep] for k, v in table.items()}


class UndefinedScoreError(ValueError):
    """The TrackML score of an event is undefined: its hit weights sum to 0."""


def _check_weights(w: np.ndarray) -> float:
    """Sum of TrackML hit weights, which must be finite and >= 0 (``ValueError`` naming the hit)."""
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"TrackML hit weights must be finite and >= 0: weight[{i}] = {w[i]} "
                         f"({len(bad)} such hits)")
    return float(w.sum())


def trackml_score_defined(weight: Any) -> bool:
    """Whether an event with these hit weights has a TrackML score (the weights sum to > 0).

    Raises:
        ValueError: a weight is negative or not finite.
    """
    return _check_weights(_np(weight, "weight", np.float64)) > 0


def trackml_score(track_id: Any, particle_id: Any, weight: Any) -> float:
    """The TrackML challenge score of one event.

    ``score = sum_{T good} sum_{h in T, pid(h) = P_T} w_h / sum_h w_h`` where a track T is
    good when its majority particle P_T is not noise, holds > 50% of T's hits, and has >
    50% of its own hits on T. Unassigned hits (negative ``track_id``) are singleton tracks.

    Args:
        track_id: [N] reconstructed track of each hit.
        particle_id: [N] true particle, 0 = noise.
        weight: [N] TrackML hit weights (:func:`~gnn_jepa.data.weights.trackml_hit_weights`).

    Returns:
        The score in [0, 1].

    Raises:
        UndefinedScoreError: the weights sum to 0 (the event holds only noise and particles
            with fewer than 4 hits, or its truth weights were all zero): nothing to score.
            :func:`trackml_score_defined` tells beforehand.
        ValueError: a weight is negative or not finite, or the arrays differ in length.
    """
    t = _np(track_id, "track_id", np.int64)
    p = _np(particle_id, "particle_id", np.int64)
    w = _np(weight, "weight", np.float64)
    _same_length(track_id=t, particle_id=p, weight=w)
    total = _check_weights(w)
    if total <= 0:
        raise UndefinedScoreError(
            f"TrackML score undefined: the {len(w)} hit weights sum to 0 (no particle with >= 4 "
            "hits, or truth weights all zero; gnn_jepa.data.weights.event_hit_weights computes "
            "them)")
    table = _track_table(t, p, w)
    return float(table["major_weight"][table["dm_matched"]].sum() / total)


def _particle_table(t: np.ndarray, p: np.ndarray, pt: np.ndarray, eta: np.ndarray,
                    min_track_hits: int) -> dict[str, np.ndarray]:
    """Per non-noise particle: hits, pT, eta, DM-matched?, number of purity-matched tracks."""
    tracks = _track_table(t, p, None)
    considered = tracks["n_hits"] >= min_track_hits
    real = p != 0
    pid, first, nhits = np.unique(p[real], return_index=True, return_counts=True)
    idx = np.flatnonzero(real)[first]
    dm = np.isin(pid, tracks["major_particle_id"][considered & tracks["dm_matched"]])
    pm_ids, pm_counts = np.unique(tracks["major_particle_id"][considered & tracks["purity_matched"]],
                                  return_counts=True)
    n_pm = np.zeros(len(pid), dtype=np.int64)
    n_pm[np.searchsorted(pid, pm_ids)] = pm_counts
    return {"particle_id": pid, "nhits": nhits, "pt": pt[idx].astype(np.float64),
            "eta": eta[idx].astype(np.float64), "dm_matched": dm, "n_purity_tracks": n_pm,
            "tracks": tracks, "considered": considered}


def _reconstructable(parts: dict[str, np.ndarray], pt_min: float, min_hits: int,
                     eta_max: float | None) -> np.ndarray:
    sel = (parts["pt"] > pt_min) & (parts["nhits"] >= min_hits)
    if eta_max is not None:
        sel &= np.abs(parts["eta"]) < eta_max
    return sel


def _ratio(num: int, den: int) -> float:
    return float(num) / den if den else math.nan


def tracking_metrics(track_id: Any, particle_id: Any, pt: Any, eta: Any, weight: Any, *,
                     pt_min: float = 1.0, min_hits: int = 3, min_track_hits: int = 3,
                     eta_max: float | None = None) -> dict[str, float | int | None]:
    """Event-level tracking metrics (definitions in the module docstring).

    Args:
        track_id: [N] reconstructed track of each hit, negative = unassigned.
        particle_id: [N] true particle, 0 = noise.
        pt: [N] pT (GeV) of each hit's particle (read at the particle's first hit).
        eta: [N] pseudorapidity of each hit's particle.
        weight: [N] TrackML hit weights.
        pt_min: reconstructable particles have ``pT > pt_min``.
        min_hits: reconstructable particles have ``>= min_hits`` hits.
        min_track_hits: only tracks with at least this many hits count as reconstructed.
        eta_max: if given, reconstructable particles also have ``|eta| < eta_max``.

    Returns:
        ``trackml_score`` (``None`` when the weights sum to 0: see :func:`trackml_score`),
        ``dm_efficiency``, ``fake_rate``, ``unmatched_rate``, ``duplicate_rate`` (floats,
        ``nan`` for an empty denominator) and the counts behind them: ``n_tracks`` (tracks
        with >= min_track_hits hits), ``n_fake``, ``n_unmatched``, ``n_particles``
        (reconstructable), ``n_matched``, ``n_purity_matched``, ``n_duplicated``.
    """
    t = _np(track_id, "track_id", np.int64)
    p = _np(particle_id, "particle_id", np.int64)
    pt_ = _np(pt, "pt", np.float64)
    eta_ = _np(eta, "eta", np.float64)
    w = _np(weight, "weight", np.float64)
    _same_length(track_id=t, particle_id=p, pt=pt_, eta=eta_, weight=w)
    score = trackml_score(t, p, w) if trackml_score_defined(w) else None
    parts = _particle_table(t, p, pt_, eta_, min_track_hits)
    tracks, considered = parts["tracks"], parts["considered"]
    recon = _reconstructable(parts, pt_min, min_hits, eta_max)
    n_tracks = int(considered.sum())
    n_fake = int((considered & ~tracks["purity_matched"]).sum())
    n_unmatched = int((considered & ~tracks["dm_matched"]).sum())
    n_particles = int(recon.sum())
    n_matched = int((recon & parts["dm_matched"]).sum())
    n_pm = int((recon & (parts["n_purity_tracks"] >= 1)).sum())
    n_dup = int((recon & (parts["n_purity_tracks"] >= 2)).sum())
    return {
        "trackml_score": score,
        "dm_efficiency": _ratio(n_matched, n_particles),
        "fake_rate": _ratio(n_fake, n_tracks),
        "unmatched_rate": _ratio(n_unmatched, n_tracks),
        "duplicate_rate": _ratio(n_dup, n_pm),
        "n_tracks": n_tracks,
        "n_fake": n_fake,
        "n_unmatched": n_unmatched,
        "n_particles": n_particles,
        "n_matched": n_matched,
        "n_purity_matched": n_pm,
        "n_duplicated": n_dup,
    }


def efficiency_table(track_id: Any, particle_id: Any, pt: Any, eta: Any, bins: Sequence[float],
                     by: str = "pt", *, pt_min: float | None = None, min_hits: int = 3,
                     min_track_hits: int = 3, eta_max: float | None = None) -> list[dict[str, float]]:
    """DM efficiency of reconstructable particles in bins of pT or eta.

    Args:
        track_id, particle_id, pt, eta: per-hit arrays as in :func:`tracking_metrics`.
        bins: increasing bin edges; bin i is ``[bins[i], bins[i+1])``, particles outside
            every bin are left out.
        by: ``"pt"`` or ``"eta"``.
        pt_min: reconstructable ``pT > pt_min``; ``None`` means 0 for ``by="pt"`` (to show
            the turn-on) and 1 GeV for ``by="eta"``.
        min_hits, min_track_hits, eta_max: as in :func:`tracking_metrics`.

    Returns:
        One dict per bin: ``lo``, ``hi``, ``n`` (reconstructable particles), ``n_matched``,
        ``efficiency`` (``nan`` if ``n == 0``) and ``error`` (binomial
        ``sqrt(eff (1 - eff) / n)``).
    """
    if by not in ("pt", "eta"):
        raise ValueError(f"by must be 'pt' or 'eta', got {by!r}")
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be >= 2 strictly increasing edges, got {list(edges)}")
    if pt_min is None:
        pt_min = 0.0 if by == "pt" else 1.0
    t = _np(track_id, "track_id", np.int64)
    p = _np(particle_id, "particle_id", np.int64)
    pt_ = _np(pt, "pt", np.float64)
    eta_ = _np(eta, "eta", np.float64)
    _same_length(track_id=t, particle_id=p, pt=pt_, eta=eta_)
    parts = _particle_table(t, p, pt_, eta_, min_track_hits)
    recon = _reconstructable(parts, pt_min, min_hits, eta_max)
    x = parts[by][recon]
    matched = parts["dm_matched"][recon]
    b = np.searchsorted(edges, x, side="right") - 1
    rows = []
    for i in range(len(edges) - 1):
        in_bin = b == i
        n = int(in_bin.sum())
        k = int(matched[in_bin].sum())
        eff = _ratio(k, n)
        err = math.sqrt(eff * (1 - eff) / n) if n else math.nan
        rows.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": n, "n_matched": k,
                     "efficiency": eff, "error": err})
    return rows


def _mid_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    start = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    end = np.r_[start[1:], len(x)]  # exclusive
    group_rank = (start + 1 + end) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(group_rank, end - start)
    return ranks


def roc_auc(scores: Any, labels: Any) -> float:
    """Exact ROC AUC = P(score of a random true edge > score of a random false edge).

    Mann-Whitney form with mid-ranks, so ties count one half:
    ``AUC = (sum_{i true} rank_i - P (P + 1) / 2) / (P N)``. ``nan`` without both classes.
    """
    s = _np(scores, "scores", np.float64)
    y = _np(labels, "labels").astype(bool)
    _same_length(scores=s, labels=y)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _mid_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def edge_metrics(scores: Any, labels: Any, threshold: float = 0.5) -> dict[str, float]:
    """Edge classification quality.

    Args:
        scores: [E] edge scores.
        labels: [E] truth (true = both hits are consecutive hits of one particle).
        threshold: edges with ``score > threshold`` count as predicted true.

    Returns:
        ``auc`` (:func:`roc_auc`), ``efficiency = TP / (TP + FN)`` (recall) and
        ``purity = TP / (TP + FP)`` (precision); ``nan`` for an empty denominator.
    """
    s = _np(scores, "scores", np.float64)
    y = _np(labels, "labels").astype(bool)
    _same_length(scores=s, labels=y)
    pred = s > threshold
    tp = int((pred & y).sum())
    return {"auc": roc_auc(s, y), "efficiency": _ratio(tp, int(y.sum())),
            "purity": _ratio(tp, int(pred.sum()))}


def top1_next_hit(scores: Any, edge_index: Any, labels: Any, order_key: Any) -> float:
    """Fraction of hits whose best-scoring outward edge is a true one.

    An edge is outward from the hit nearer the origin by ``order_key`` (the order the
    walkthrough builder follows; ties broken by hit index), so each hit pair of an undirected
    graph counts once, with the score of its outward direction. Among the hits that have at
    least one true outward edge in the graph, the fraction whose highest-scoring outward edge
    (any score, no cut) is true: what a builder that follows each hit's best continuation
    gets right. ``nan`` when no hit has a true outward edge.

    Args:
        scores: [E] edge scores. edge_index: [2, E]. labels: [E] truth (segment labels).
        order_key: [N] per-hit order (e.g. distance from the origin).
    """
    s = _np(scores, "scores", np.float64)
    ei = np.asarray(edge_index.cpu() if hasattr(edge_index, "cpu") else edge_index, dtype=np.int64)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must be [2, E], got shape {ei.shape}")
    y = _np(labels, "labels").astype(bool)
    key = _np(order_key, "order_key", np.float64)
    _same_length(scores=s, labels=y, edges=ei[0])
    src, dst = ei
    outward = (key[src] < key[dst]) | ((key[src] == key[dst]) & (src < dst))
    src, s, y = src[outward], s[outward], y[outward]
    if not y.any():
        return float("nan")
    has_true = np.zeros(len(key), dtype=bool)
    has_true[src[y]] = True
    order = np.lexsort((-s, src))  # by hit, best score first
    src_o, y_o = src[order], y[order]
    first = np.ones(len(src_o), dtype=bool)
    first[1:] = src_o[1:] != src_o[:-1]
    best_src, best_true = src_o[first], y_o[first]
    counted = has_true[best_src]
    return float(best_true[counted].mean())


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{float(value):.4f}"
    return str(value)


def format_table(metrics: Mapping[str, Any]) -> str:
    """Render metrics as a plain-text table.

    Scalars become ``name | value`` rows (floats to 4 decimals, ``None`` as ``n/a``); nested
    mappings are flattened as ``outer.inner``; a list of row dicts (e.g.
    :func:`efficiency_table`) is rendered as its own sub-table under its name.
    """
    scalars: list[tuple[str, str]] = []
    tables: list[tuple[str, list[Mapping[str, Any]]]] = []

    def walk(prefix: str, m: Mapping[str, Any]) -> None:
        for k, v in m.items():
            name = f"{prefix}{k}"
            if isinstance(v, Mapping):
                walk(name + ".", v)
            elif isinstance(v, (list, tuple)) and v and all(isinstance(r, Mapping) for r in v):
                tables.append((name, list(v)))
            else:
                scalars.append((name, _fmt(v)))

    walk("", metrics)
    lines: list[str] = []
    if scalars:
        kw = max(len("metric"), *(len(k) for k, _ in scalars))
        vw = max(len("value"), *(len(v) for _, v in scalars))
        lines.append(f"{'metric':<{kw}} | {'value':>{vw}}")
        lines.append(f"{'-' * kw}-+-{'-' * vw}")
        lines += [f"{k:<{kw}} | {v:>{vw}}" for k, v in scalars]
    for name, rows in tables:
        cols = list(dict.fromkeys(c for r in rows for c in r))
        cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
        widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(cols)]
        if lines:
            lines.append("")
        lines.append(name)
        lines.append(" | ".join(f"{c:>{w}}" for c, w in zip(cols, widths)))
        lines.append("-+-".join("-" * w for w in widths))
        lines += [" | ".join(f"{x:>{w}}" for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


PT_BINS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0)
ETA_BINS = (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0)


def _concatenate(events: list[dict]) -> dict:
    """Merge events into one table with event-unique track and particle ids."""
    tids, pids = [], []
    for k, e in enumerate(events):
        t = np.asarray(e["track_id"]).astype(np.int64)
        p = np.asarray(e["particle_id"]).astype(np.int64)
        # -1 stays -1; ids made unique per event by pairing with the event index
        tids.append(np.where(t >= 0, t * len(events) + k, -1))
        pids.append(np.where(p != 0, (np.unique(p, return_inverse=True)[1] + 1) * len(events) + k, 0))
    cat = {key: np.concatenate([np.asarray(e[key]) for e in events]) for key in ("pt", "eta", "weight")}
    cat["track_id"] = np.concatenate(tids)
    cat["particle_id"] = np.concatenate(pids)
    return cat


def summarize_events(events: list[dict], edges: list[dict] | None = None, *, pt_min: float = 1.0,
                     min_hits: int = 3, threshold: float = 0.5) -> dict:
    """Metrics over a set of test events.

    The TrackML score is computed per event (its weights sum to one per event) and averaged
    over the events that have one: ``trackml_score_events`` of them (an event whose weights
    sum to 0 has no score, see :func:`trackml_score`). With none, ``trackml_score`` and
    ``trackml_score_std`` are ``None`` and ``undefined`` says why. Efficiencies, fake and
    duplicate rates pool all particles and tracks of all events.

    Returns:
        ``metrics`` (the :func:`tracking_metrics` keys plus ``trackml_score_std``,
        ``trackml_score_events``, ``num_events``, ``threshold`` and, with ``edges``, the
        ``edge_*`` keys of :func:`edge_metrics`), ``efficiency_vs_pt``, ``efficiency_vs_eta``
        (rows of :func:`efficiency_table`) and ``undefined``: ``{"metrics.<key>": reason}``
        for each metric left ``None``.
    """
    if not events:
        raise ValueError("no test events to summarise")
    scores = [trackml_score(e["track_id"], e["particle_id"], e["weight"]) for e in events
              if trackml_score_defined(e["weight"])]
    cat = _concatenate(events)
    pooled = tracking_metrics(cat["track_id"], cat["particle_id"], cat["pt"], cat["eta"],
                              cat["weight"], pt_min=pt_min, min_hits=min_hits)
    undefined = {}
    if scores:
        pooled["trackml_score"] = float(np.mean(scores))
        pooled["trackml_score_std"] = float(np.std(scores))
    else:
        pooled["trackml_score"] = pooled["trackml_score_std"] = None
        reason = (f"no event has a TrackML score: the hit weights of all {len(events)} events "
                  "sum to 0 (no particle with >= 4 hits, or truth weights all zero)")
        undefined = {"metrics.trackml_score": reason, "metrics.trackml_score_std": reason}
    pooled["trackml_score_events"] = len(scores)
    pooled["num_events"] = len(events)
    pooled["threshold"] = float(threshold)  # the edge-score cut the tracks were built with
    if edges:
        em = edge_metrics(np.concatenate([e["edge_scores"] for e in edges]),
                          np.concatenate([e["edge_y"] for e in edges]), threshold)
        pooled.update({f"edge_{k}": float(v) for k, v in em.items()})
    by_pt = efficiency_table(cat["track_id"], cat["particle_id"], cat["pt"], cat["eta"], PT_BINS,
                             by="pt", pt_min=0.0, min_hits=min_hits)
    by_eta = efficiency_table(cat["track_id"], cat["particle_id"], cat["pt"], cat["eta"], ETA_BINS,
                              by="eta", pt_min=pt_min, min_hits=min_hits)
    return {"metrics": pooled, "efficiency_vs_pt": by_pt, "efficiency_vs_eta": by_eta,
            "undefined": undefined}
