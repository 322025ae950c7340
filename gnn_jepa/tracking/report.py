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
    plot_efficiency(summary, out / "efficiency.png")
    return out


def plot_efficiency(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "efficiency_vs_pt", r"$p_T$ [GeV]"),
                           (axes[1], "efficiency_vs_eta", r"$\eta$")):
        rows = [r for r in summary[key] if r["n"] > 0]
        if rows:
            centres = [0.5 * (r["lo"] + r["hi"]) for r in rows]
            widths = [0.5 * (r["hi"] - r["lo"]) for r in rows]
            eff = [r["efficiency"] for r in rows]
            err = [np.sqrt(max(e * (1 - e), 1e-12) / r["n"]) for e, r in zip(eff, rows)]
            ax.errorbar(centres, eff, xerr=widths, yerr=err, fmt="o", label="double-majority")
        ax.set_xlabel(label)
        ax.set_ylabel("tracking efficiency")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    axes[0].set_xscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
