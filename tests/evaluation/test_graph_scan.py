"""The radius-scan report on a tiny simulated event."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("gnn_jepa.data.simulator")

from gnn_jepa.evaluation.graph_scan import main  # noqa: E402


def test_report_json_scan_is_monotone(capsys):
    assert main(["--particles", "40", "--events", "1", "--radii", "0.05,0.2",
                 "--max-num-neighbors", "0,3", "--w-eta", "0.1", "--w-r", "2e-4",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {(r["radius"], r["max_num_neighbors"]): r for r in out["rows"]}
    small, large = rows[(0.05, None)], rows[(0.2, None)]
    # A larger radius is a superset graph: never less efficient, never sparser.
    assert large["efficiency_pt_min"] >= small["efficiency_pt_min"]
    assert large["mean_degree"] > small["mean_degree"]
    assert rows[(0.2, 3)]["mean_degree"] <= 6.0  # union of 3-nearest lists: degree <= 2k
    q = out["radius_for_efficiency"]
    assert 0 < q["0.95"] <= q["0.99"] <= q["0.995"]


def test_report_rejects_bad_radii():
    with pytest.raises(SystemExit):
        main(["--radii", "0,0.1"])


def test_report_ceiling_grows_with_the_graph_and_filter_is_applied(capsys):
    """The ceiling (TrackML score of tracks from truth edge scores) of a superset graph is
    never lower, a complete-enough graph reaches ~1, and the pair filter only removes edges."""
    args = ["--particles", "40", "--events", "1", "--radii", "0.03,3", "--w-eta", "0.1",
            "--w-r", "2e-4", "--ceiling", "--json"]
    assert main(args) == 0
    rows = {r["radius"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert 0.0 <= rows[0.03]["ceiling_trackml_score"] < rows[3]["ceiling_trackml_score"]
    assert rows[3]["efficiency"] == 1.0 and rows[3]["ceiling_trackml_score"] > 0.99
    assert main(args + ["--pair-filter", "trackml_all_pt"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "trackml_all_pt" in out["pair_filter"]
    assert {r["radius"]: r for r in out["rows"]}[3]["mean_degree"] < rows[3]["mean_degree"]


def test_report_union_adds_a_second_graphs_edges(capsys):
    """``--union`` scans the union of each radius graph and the given graph: a superset of
    both, so its efficiency and degree are at least each one's."""
    base = ["--particles", "40", "--events", "1", "--radii", "0.03", "--w-eta", "0.1",
            "--w-r", "2e-4", "--json"]
    other = {"kind": "cylindrical", "w_r": 1e-3, "w_z": 1e-3, "radius": 0.05}
    assert main(base) == 0
    alone = json.loads(capsys.readouterr().out)["rows"][0]
    assert main(["--particles", "40", "--events", "1", "--frame", "cylindrical", "--w-r",
                 "1e-3", "--w-z", "1e-3", "--radii", "0.05", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)["rows"][0]
    assert main(base + ["--union", json.dumps(other)]) == 0
    out = json.loads(capsys.readouterr().out)
    both = out["rows"][0]
    assert "cylindrical" in out["union"]
    assert both["efficiency"] >= max(alone["efficiency"], second["efficiency"])
    assert both["mean_degree"] > max(alone["mean_degree"], second["mean_degree"])
    assert both["mean_degree"] <= alone["mean_degree"] + second["mean_degree"] + 1e-9
