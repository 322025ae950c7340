"""Aggregate per-event reconstruction results into the metrics table, JSON and plots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gnn_jepa.tracking.metrics import edge_metrics, efficiency_table, format_table, tracking_metrics

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

    The TrackML score is computed per event (its weights sum to one per event) and averaged;
    efficiencies, fake and duplicate rates pool all particles and tracks of all events.
    """
    if not events:
        raise ValueError("no test events to summarise")
    scores = [tracking_metrics(e["track_id"], e["particle_id"], e["pt"], e["eta"], e["weight"],
                               pt_min=pt_min, min_hits=min_hits)["trackml_score"] for e in events]
    cat = _concatenate(events)
    pooled = tracking_metrics(cat["track_id"], cat["particle_id"], cat["pt"], cat["eta"],
                              cat["weight"], pt_min=pt_min, min_hits=min_hits)
    pooled["trackml_score"] = float(np.mean(scores))
    pooled["trackml_score_std"] = float(np.std(scores))
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
    return {"metrics": pooled, "efficiency_vs_pt": by_pt, "efficiency_vs_eta": by_eta}


def write_report(summary: dict, out_dir: str | Path) -> Path:
    """Print the metrics table and write ``metrics.json`` and efficiency plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(format_table(summary["metrics"]))
    (out / "metrics.json").write_text(json.dumps(summary, indent=1, default=float))
    save_efficiency_plots(summary, out / "efficiency.png")
    return out


def save_efficiency_plots(summary: dict, path: str | Path) -> Path:
    """Efficiency vs pT and vs eta side by side (:func:`gnn_jepa.viz.plot_efficiency`) -> PNG.

    Drawn on a bare :class:`~matplotlib.figure.Figure` (no pyplot), so it never switches the
    caller's matplotlib backend (an in-process test run inside a notebook keeps its inline
    figures).
    """
    from matplotlib.figure import Figure

    from gnn_jepa.viz import plot_efficiency

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    plot_efficiency(summary["efficiency_vs_pt"], axes[0], by="pt")
    plot_efficiency(summary["efficiency_vs_eta"], axes[1], by="eta")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)
