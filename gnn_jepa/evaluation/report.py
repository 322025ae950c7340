"""The test report: the metrics table printed, ``metrics.json`` and efficiency plots written.

``gnn-jepa test`` writes it from :attr:`TrackFinding.test_summary
<gnn_jepa.models.track_finding.TrackFinding>` (made by
:func:`~gnn_jepa.tracking.metrics.summarize_events`)."""
from __future__ import annotations

import json
from pathlib import Path

from gnn_jepa.tracking.metrics import format_table
from gnn_jepa.viz import plot_efficiency

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

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    plot_efficiency(summary["efficiency_vs_pt"], axes[0], by="pt")
    plot_efficiency(summary["efficiency_vs_eta"], axes[1], by="eta")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)
