"""metrics.json is strict JSON: undefined metrics are ``null`` with their reason, never NaN."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gnn_jepa.evaluation.report import metrics_json, strict_json_tree, write_report
from gnn_jepa.tracking.metrics import summarize_events


def strict_loads(text: str):
    """``json.loads`` that refuses NaN, Infinity and -Infinity, as strict JSON readers do."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_strict_loads_refuses_what_python_writes_by_default():
    with pytest.raises(ValueError, match="not JSON: NaN"):
        strict_loads(json.dumps({"x": math.nan}))


def test_non_finite_values_become_null_with_their_reason():
    summary = {
        "metrics": {"trackml_score": None, "trackml_score_std": None, "fake_rate": math.nan,
                    "dm_efficiency": np.float32(0.5), "n_tracks": np.int64(3),
                    "edge_auc": float("nan"), "odd": float("inf"), "flag": np.bool_(True),
                    "loss": torch.tensor(0.25)},
        "efficiency_vs_eta": [{"lo": -4.0, "hi": -3.0, "n": 0, "efficiency": math.nan,
                               "error": math.nan},
                              {"lo": 0.0, "hi": 1.0, "n": 2, "efficiency": 1.0, "error": 0.0}],
        "undefined": {"metrics.trackml_score": "no event has a score (all weights 0)"},
    }
    text = metrics_json(summary)
    out = strict_loads(text)
    m = out["metrics"]
    assert m == {"trackml_score": None, "trackml_score_std": None, "fake_rate": None,
                 "dm_efficiency": 0.5, "n_tracks": 3, "edge_auc": None, "odd": None,
                 "flag": True, "loss": 0.25}
    assert isinstance(m["n_tracks"], int)
    assert out["efficiency_vs_eta"][0] == {"lo": -4.0, "hi": -3.0, "n": 0, "efficiency": None,
                                           "error": None}
    assert out["null_values"] == {
        "metrics.trackml_score": "no event has a score (all weights 0)",  # the summary's reason
        "metrics.trackml_score_std": "no event has a TrackML score",
        "metrics.fake_rate": "no track with enough hits (0/0)",
        "metrics.edge_auc": "the edge labels hold one class only",
        "metrics.odd": "not a finite number (inf)",
        "efficiency_vs_eta[0].efficiency": "no reconstructable particle in this bin (0/0)",
        "efficiency_vs_eta[0].error": "no reconstructable particle in this bin (0/0)",
    }
    assert "undefined" not in out


def test_unknown_objects_are_named():
    with pytest.raises(TypeError, match=r"metrics\.when is of type object"):
        strict_json_tree({"metrics": {"when": object()}})


@pytest.mark.filterwarnings("ignore:No artists with labels")  # empty efficiency plots
def test_write_report_of_events_without_a_score(tmp_path, capsys):
    # two all-noise events: no TrackML score, no reconstructable particle, one fake track
    pid = np.zeros(4, dtype=np.int64)
    event = {"track_id": np.array([0, 0, 0, -1]), "particle_id": pid, "pt": np.zeros(4),
             "eta": np.zeros(4), "weight": np.zeros(4)}
    edges = {"edge_scores": np.array([0.9, 0.1]), "edge_y": np.array([False, False])}
    summary = summarize_events([event, dict(event)], [edges])
    out = write_report(summary, tmp_path)
    assert "trackml_score" in capsys.readouterr().out
    got = strict_loads((out / "metrics.json").read_text())
    m = got["metrics"]
    assert m["trackml_score"] is None and m["num_events"] == 2 and m["trackml_score_events"] == 0
    assert m["fake_rate"] == 1.0 and m["dm_efficiency"] is None and m["edge_auc"] is None
    nulls = got["null_values"]
    assert nulls["metrics.trackml_score"].startswith("no event has a TrackML score: the hit "
                                                     "weights of all 2 events sum to 0")
    assert nulls["metrics.dm_efficiency"] == "no reconstructable particle (0/0)"
    assert all(r["efficiency"] is None for r in got["efficiency_vs_pt"])
    assert (out / "efficiency.png").stat().st_size > 0
    assert not list(tmp_path.glob(".*tmp"))  # written atomically
