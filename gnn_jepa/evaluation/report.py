"""The test report: the metrics table printed, ``metrics.json`` and efficiency plots written.

``gnn-jepa test`` writes it from :attr:`TrackFinding.test_summary
<gnn_jepa.models.track_finding.TrackFinding>` (made by
:func:`~gnn_jepa.tracking.metrics.summarize_events`).

``metrics.json`` is strict JSON (RFC 8259: no ``NaN`` or ``Infinity``, which Python's
``json`` would otherwise write and most other readers refuse). An undefined metric, ``None``
or a non-finite number in the summary (``nan`` is how the metrics say "empty denominator"),
is written as ``null``, and the top-level ``"null_values"`` maps its path (``"metrics.fake_rate"``,
``"efficiency_vs_eta[0].efficiency"``) to the reason.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from gnn_jepa.data.dataset import atomic_write_text
from gnn_jepa.tracking.metrics import format_table
from gnn_jepa.viz import plot_efficiency

#: Why a metric (the last part of its path) can be undefined: an empty denominator.
NULL_REASONS = {
    "trackml_score": "the hit weights sum to 0 (no particle with >= 4 hits)",
    "trackml_score_std": "no event has a TrackML score",
    "dm_efficiency": "no reconstructable particle (0/0)",
    "fake_rate": "no track with enough hits (0/0)",
    "unmatched_rate": "no track with enough hits (0/0)",
    "duplicate_rate": "no reconstructable particle matched by a track (0/0)",
    "efficiency": "no reconstructable particle in this bin (0/0)",
    "error": "no reconstructable particle in this bin (0/0)",
    "edge_auc": "the edge labels hold one class only",
    "edge_efficiency": "no true edge (0/0)",
    "edge_purity": "no edge above the cut (0/0)",
}


def _key(path: str) -> str:
    """``"efficiency_vs_eta[0].efficiency"`` -> ``"efficiency"``."""
    return path.rsplit(".", 1)[-1].split("[", 1)[0]


def strict_json_tree(obj: Any, reasons: Mapping[str, str] | None = None,
                     path: str = "") -> tuple[Any, dict[str, str]]:
    """``obj`` with every number JSON can hold exactly and every undefined one as ``None``.

    numpy scalars and arrays become Python numbers and lists; ``None``, ``nan`` and
    ``+-inf`` become ``None``, recorded in the returned ``{path: reason}`` (the reason from
    ``reasons[path]``, else :data:`NULL_REASONS` by the metric's name, else the value).

    Raises:
        TypeError: a value that is neither a number, string, bool, ``None``, mapping nor
            sequence (named by its path).
    """
    reasons = dict(reasons or {})
    nulls: dict[str, str] = {}

    def null(where: str, value: Any) -> None:
        what = "undefined" if value is None else f"not a finite number ({value})"
        nulls[where] = reasons.get(where) or NULL_REASONS.get(_key(where)) or what

    def walk(x: Any, where: str) -> Any:
        if isinstance(x, np.ndarray):
            x = x.tolist()
        elif isinstance(x, np.generic):
            x = x.item()
        elif hasattr(x, "detach") and hasattr(x, "tolist"):  # a torch tensor
            x = x.detach().cpu().tolist()
        if x is None:
            null(where, x)
            return None
        if isinstance(x, (bool, int, str)):
            return x
        if isinstance(x, float):
            if math.isfinite(x):
                return x
            null(where, x)
            return None
        if isinstance(x, Mapping):
            return {str(k): walk(v, f"{where}.{k}" if where else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(x)]
        raise TypeError(f"metrics.json: {where or 'the summary'} is of type {type(x).__name__} "
                        f"({x!r}), not a number, string, list or mapping")

    return walk(obj, path), nulls


def metrics_json(summary: Mapping[str, Any]) -> str:
    """The text of ``metrics.json``: strict JSON with ``"null_values"`` (see the module doc).

    ``summary["undefined"]`` (``{path: reason}``, from
    :func:`~gnn_jepa.tracking.metrics.summarize_events`) gives the reasons it knows.
    """
    body = {k: v for k, v in summary.items() if k != "undefined"}
    tree, nulls = strict_json_tree(body, summary.get("undefined"))
    tree["null_values"] = nulls
    return json.dumps(tree, indent=1, allow_nan=False) + "\n"


def write_report(summary: dict, out_dir: str | Path) -> Path:
    """Print the metrics table and write ``metrics.json`` and efficiency plots into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(format_table(summary["metrics"]))
    atomic_write_text(metrics_json(summary), out / "metrics.json")
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
