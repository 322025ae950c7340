"""``gnn-jepa fit-graph``: fit the learned graph on a TrackML folder, write loadable preset
files and a graph block, report held-out efficiency; another detector's numbering; errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from gnn_jepa.cli import COMMANDS, main
from gnn_jepa.data.convert import event_to_data
from gnn_jepa.data.trackml import list_events, read_event, write_event
from gnn_jepa.evaluation.fit_graph import _round_up
from gnn_jepa.graph.edge_filter import EdgeFilter
from gnn_jepa.graph.edges import graph_truth_metrics
from gnn_jepa.graph.metric_learning import load_hit_embedding
from gnn_jepa.graph.pair_filter import LayerPairFilter, UnseenLayerWarning
from gnn_jepa.graph.transform import BuildGraph
from studies.other_detector.renumber import renumber

#: small and fast: 4 fit + 2 held-out events of 100 particles (~1k hits), a small MLP
FAST = ["--fit-events", "4", "--eval-events", "2", "--steps", "60", "--hidden", "16",
        "--layers", "2"]
SHIPPED = {"kind": "learned", "embedding": "trackml", "pair_filter": "trackml_all_pt",
           "radius": 0.16}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit_graph")
    main(["simulate", "--num-events", "6", "--num-particles", "100", "--out",
          str(root / "sim")])
    shutil.copytree(root / "sim", root / "other")
    renumber(root / "other", zero_weights=False)
    return root


def _run(capsys, argv) -> dict:
    main(["fit-graph", *argv, "--json"])
    return json.loads(capsys.readouterr().out)


def test_registered_with_its_help(capsys):
    assert "fit-graph" in COMMANDS
    with pytest.raises(SystemExit) as e:
        main(["fit-graph", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--out", "--fit-events", "--eval-events", "--offset", "--target-degree",
                 "--radius", "--radii", "--steps", "--compare", "--json"):
        assert flag in out


def test_fit_graph_with_an_edge_filter(folders, tmp_path, capsys):
    """--edge-filter-efficiency: edge_filter.pt is written and named in the graph block; on
    the held-out events the filtered graph has fewer edges than the same graph without it,
    which is reported next to it, and a config loads it."""
    out = tmp_path / "graph"
    rep = _run(capsys, [str(folders / "sim"), "--out", str(out), *FAST,
                        "--edge-filter-efficiency", "0.99", "--edge-filter-steps", "80"])
    assert {p.name for p in out.iterdir()} == {"embedding.pt", "pair_filter.json", "edge_filter.pt",
                                               "graph.yaml", "fit_graph.json"}
    block = yaml.safe_load((out / "graph.yaml").read_text())["graph"]
    assert block == rep["graph"] and block["edge_filter"] == str(out / "edge_filter.pt")
    ef = EdgeFilter.load(block["edge_filter"])
    assert ef.metadata["efficiency"] == 0.99 and ef.metadata["radius"] == rep["radius"]
    chosen, plain = rep["rows"]
    assert (chosen["graph"], plain["graph"]) == ("fitted (chosen)", "fitted, no edge filter")
    assert chosen["mean_degree"] < plain["mean_degree"]
    assert chosen["efficiency"] <= plain["efficiency"] and chosen["efficiency"] > 0.9
    held = [event_to_data(read_event(p)) for p in list_events(folders / "sim")[4:]]
    edges = sum(BuildGraph(**block).edges(d).shape[1] for d in held)
    assert chosen["mean_degree"] == pytest.approx(edges / sum(d.num_nodes for d in held))
    with pytest.raises(SystemExit):
        main(["fit-graph", str(folders / "sim"), "--out", str(tmp_path / "x"),
              "--edge-filter-efficiency", "1.5"])
    assert "--edge-filter-efficiency must be in (0, 1]" in capsys.readouterr().err


def test_fit_graph_writes_presets_a_config_loads(folders, tmp_path, capsys):
    out = tmp_path / "graph"
    rep = _run(capsys, [str(folders / "sim"), "--out", str(out), *FAST, "--radii", "0.2"])
    files = {p.name for p in out.iterdir()}
    assert files == {"embedding.pt", "pair_filter.json", "graph.yaml", "fit_graph.json"}
    assert json.loads((out / "fit_graph.json").read_text()) == rep
    names = [p.name for p in list_events(folders / "sim")]
    assert rep["fit_events"] == names[:4] and rep["eval_events"] == names[4:]
    # the graph block: what a config's graph: holds, loadable by BuildGraph
    block = yaml.safe_load((out / "graph.yaml").read_text())["graph"]
    assert block == rep["graph"] == {"kind": "learned", "embedding": str(out / "embedding.pt"),
                                     "pair_filter": str(out / "pair_filter.json"),
                                     "radius": rep["radius"]}
    _, meta = load_hit_embedding(block["embedding"])
    assert meta["fit_events"] == names[:4] and meta["pt_weight"] == 1.0
    assert LayerPairFilter.load(block["pair_filter"]).config["pt_min"] == 0.0
    chosen, scan = rep["rows"]
    assert chosen["graph"] == "fitted (chosen)" and scan["radius"] == 0.2
    # the report's numbers are the loaded graph's on the held-out events
    held = [event_to_data(read_event(p)) for p in list_events(folders / "sim")[4:]]
    build = BuildGraph(**block)
    m = [graph_truth_metrics(build(d.clone()).edge_index, d.particle_id, d.hit_order, d.pt)
         for d in held]
    segs = sum(x["num_segments"] for x in m)
    assert chosen["efficiency"] == pytest.approx(
        sum(x["efficiency"] * x["num_segments"] for x in m) / segs)
    assert chosen["mean_degree"] == pytest.approx(
        sum(x["mean_degree"] * x["num_nodes"] for x in m) / sum(x["num_nodes"] for x in m))
    # the radius was chosen for degree 25 on the fit events; held-out ones are close
    assert rep["target_degree"] == 25.0 and 18 < chosen["mean_degree"] < 35
    assert chosen["efficiency"] >= 0.9 and chosen["efficiency_pt_min"] >= 0.95
    assert 0 < chosen["purity"] < 1 and chosen["unseen_hit_fraction"] == 0.0
    assert 0.8 < chosen["ceiling_trackml_score"] <= 1 and chosen["warnings"] == []
    assert scan["mean_degree"] < chosen["mean_degree"]  # a smaller radius, a sparser graph


def test_table_output_and_a_fixed_radius(folders, tmp_path, capsys):
    main(["fit-graph", str(folders / "sim"), "--out", str(tmp_path / "g"), *FAST,
          "--radius", "0.3", "--offset", "0"])
    out = capsys.readouterr().out
    assert "fitted (chosen)" in out and "ceiling TrackML" in out and "eff(pT>1)" in out
    assert '--data.graph \'{"kind": "learned"' in out
    rep = json.loads((tmp_path / "g" / "fit_graph.json").read_text())
    assert rep["radius"] == 0.3 and rep["target_degree"] is None


def test_another_detector_shipped_filter_warns_fitted_one_keeps_segments(folders, tmp_path,
                                                                          capsys):
    """Renumbered (volume, layer) ids: the shipped filter knows none of them, says so and
    keeps nothing; the graph fitted on the folder keeps >= 90% of held-out segments."""
    rep = _run(capsys, [str(folders / "other"), "--out", str(tmp_path / "g"), *FAST,
                        "--compare", json.dumps(SHIPPED)])
    fitted, shipped = rep["rows"]
    assert fitted["efficiency"] >= 0.9 and fitted["unseen_hit_fraction"] == 0.0
    assert shipped["block"] == SHIPPED and shipped["unseen_hit_fraction"] == 1.0
    assert shipped["efficiency"] == 0.0 and shipped["ceiling_trackml_score"] == 0.0
    # no edge: the purity is undefined, null in the (strict) JSON report, '-' in the table
    assert shipped["purity"] is None
    text = (tmp_path / "g" / "fit_graph.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"fit_graph.json holds {c}"))
    main(["fit-graph", str(folders / "other"), "--out", str(tmp_path / "g3"), *FAST,
          "--compare", json.dumps(SHIPPED)])
    table_row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("trackml + ")][0]
    assert table_row.split()[7] == "-" and "nan" not in table_row
    assert len(shipped["warnings"]) == 1
    assert "never saw (volume, layer) ids (1, 1), (1, 2)" in shipped["warnings"][0]
    # the warning a config with the shipped presets would raise, with its counts
    d = event_to_data(read_event(list_events(folders / "other")[4]))
    build = BuildGraph(**SHIPPED)
    info = build.pair_filter.unseen_layers(d)
    assert info["hits"] == d.num_nodes and len(info["ids"]) > 10
    with pytest.warns(UnseenLayerWarning, match=f"{d.num_nodes} of the {d.num_nodes} hits"):
        assert build(d.clone()).edge_index.shape[1] == 0
    # the same events in the simulator's own numbering: the same fitted graph
    same = _run(capsys, [str(folders / "sim"), "--out", str(tmp_path / "g2"), *FAST])
    assert same["rows"][0]["efficiency"] == fitted["efficiency"]
    assert same["radius"] == rep["radius"]


def _folder_with(tmp_path, folders, n=6) -> Path:
    dst = tmp_path / "events"
    dst.mkdir()
    for prefix in list_events(folders / "sim")[:n]:
        for f in prefix.parent.glob(prefix.name + "-*"):
            shutil.copy(f, dst / f.name)
    return dst


@pytest.mark.parametrize("argv,message", [
    (["MISSING"], "data folder '{tmp}/nope' does not exist"),
    (["EMPTY"], "no TrackML events in '{tmp}/empty'"),
    (["SIM", "--fit-events", "5"], "holds 6 events; --offset 0 + --fit-events 5 + "
                                   "--eval-events 2 need 7"),
    (["SIM", "--offset", "3", "--fit-events", "2"], "need 7"),
    (["SIM", "--fit-events", "0"], "--fit-events: must be >= 1, got 0"),
    (["SIM", "--eval-events", "x"], "--eval-events: expected an integer, got 'x'"),
    (["SIM", "--radius", "0.1", "--target-degree", "20"], "not allowed with argument"),
    (["SIM", "--target-degree", "0"], "--target-degree: must be > 0, got 0"),
    (["SIM", "--radii", "0.1,-1"], "every radius must be > 0"),
    (["SIM", "--compare", "{nope"], "--compare: not JSON"),
    (["SIM", "--compare", '{"kind": "learned", "embedding": "nope", "radius": 0.1}'],
     "no shipped graph preset 'nope'"),
    (["SIM", "--filter-quantile", "0.2"], "--filter-quantile must be in (0.5, 1]"),
])
def test_argument_errors(folders, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    sub = {"MISSING": str(tmp_path / "nope"), "EMPTY": str(tmp_path / "empty"),
           "SIM": str(folders / "sim")}
    with pytest.raises(SystemExit) as e:
        main(["fit-graph", sub[argv[0]], *argv[1:], "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written before the arguments hold


def test_events_without_truth_cannot_be_fitted(folders, tmp_path):
    events = _folder_with(tmp_path, folders)
    prefixes = list_events(events)
    Path(f"{prefixes[1]}-truth.csv").unlink()
    with pytest.raises(SystemExit, match=r"event000001001: no truth file .*events without "
                                         r"truth cannot be fitted"):
        main(["fit-graph", str(events), "--out", str(tmp_path / "out"), *FAST])
    # a truth file where every hit is noise: named too
    shutil.copy(folders / "sim" / f"{prefixes[1].name}-truth.csv",
                f"{prefixes[1]}-truth.csv")
    ev = read_event(prefixes[5])
    ev.truth["particle_id"] = 0
    ev.truth["weight"] = 0.0
    write_event(ev, prefixes[5])
    with pytest.raises(SystemExit, match=r"event000001005-truth.csv: no true segment"):
        main(["fit-graph", str(events), "--out", str(tmp_path / "out"), *FAST])
    assert not (tmp_path / "out").exists()


def test_round_up_keeps_four_digits_and_never_rounds_down():
    for x in (0.097541, 0.1, 1.23456e-3, 12.3451, 0.99999):
        r = _round_up(x)
        assert r >= x and len(f"{r:.10g}".replace(".", "").strip("0")) <= 4
    assert _round_up(0.097541) == 0.09755 and _round_up(0.1) == 0.1
    assert _round_up(0.099991) == 0.1


# --------------------------------------------------------------------------- ColliderML
@pytest.fixture(scope="module")
def colliderml(tmp_path_factory):
    """The fixture's 6 simulated events as ColliderML shards (``cml``, written by ``gnn-jepa
    simulate --format colliderml``) and the same events, as read back from the shards, as
    TrackML CSV files (``csv``; the CSV round trip is exact)."""
    pytest.importorskip("pyarrow")
    from gnn_jepa.data.colliderml import ColliderMLReader

    root = tmp_path_factory.mktemp("fit_graph_cml")
    main(["simulate", "--format", "colliderml", "--num-events", "6", "--num-particles", "100",
          "--out", str(root / "cml")])
    reader = ColliderMLReader(root / "cml")
    (root / "csv").mkdir()
    for i in range(len(reader)):
        write_event(reader.read(i), root / "csv")
    return root


def test_colliderml_shards_fit_as_the_same_events_in_csv(colliderml, tmp_path, capsys):
    """fit-graph on a ColliderML root reads the events in event-id order with the same
    fit / held-out split, and reports exactly what it reports on the same events as CSV."""
    cml = _run(capsys, [str(colliderml / "cml"), "--out", str(tmp_path / "a"), *FAST])
    csv = _run(capsys, [str(colliderml / "csv"), "--out", str(tmp_path / "b"), *FAST])
    assert (cml["source"], csv["source"]) == ("colliderml", "trackml")
    assert cml["fit_events"] == [f"sim_pu0 event {i}" for i in range(1000, 1004)]
    assert cml["eval_events"] == ["sim_pu0 event 1004", "sim_pu0 event 1005"]
    assert csv["fit_events"] == [f"event{i:09d}" for i in range(1000, 1004)]
    chosen = cml["rows"][0]
    assert chosen["efficiency"] > 0.9 and chosen["efficiency_pt_min"] > 0.9
    assert 0.8 < chosen["ceiling_trackml_score"] <= 1 and chosen["unseen_hit_fraction"] == 0.0
    assert cml["radius"] == csv["radius"] and cml["margin"] == csv["margin"]
    assert cml["hits_per_event"] == csv["hits_per_event"]
    assert ([{k: v for k, v in h.items() if k != "time_s"} for h in cml["train_history"]]
            == [{k: v for k, v in h.items() if k != "time_s"} for h in csv["train_history"]])
    timing = {"seconds_per_event"}
    assert ({k: v for k, v in chosen.items() if k not in timing}
            == {k: v for k, v in csv["rows"][0].items() if k not in timing})


def test_colliderml_detection_and_errors(colliderml, tmp_path, capsys):
    from gnn_jepa.evaluation.fit_graph import list_labelled_events

    cml = colliderml / "cml"
    for root in (cml, cml / "data", cml / "data" / "sim_pu0_tracker_hits"):
        source, events = list_labelled_events(root)
        assert source == "colliderml" and [e.name for e in events][:2] == [
            "sim_pu0 event 1000", "sim_pu0 event 1001"]
    assert list_labelled_events(colliderml / "csv")[0] == "trackml"
    assert list_labelled_events(cml, "trackml") == ("trackml", [])
    # hits without their particles shards: the truth is unknown, named as such
    hits_only = tmp_path / "hits_only" / "data"
    shutil.copytree(cml / "data" / "sim_pu0_tracker_hits", hits_only / "sim_pu0_tracker_hits")
    with pytest.raises(SystemExit, match=r"sim_pu0_tracker_hits/train-00000.parquet event 1000: "
                                         r"no particles shards .* needs the sim_pu0_particles "
                                         r"shards"):
        main(["fit-graph", str(hits_only.parent), "--out", str(tmp_path / "out"), *FAST])
    # both kinds in one folder: say which to take
    both = tmp_path / "both"
    shutil.copytree(colliderml / "csv", both)
    shutil.copytree(cml / "data", both / "data")
    with pytest.raises(SystemExit) as e:
        main(["fit-graph", str(both), "--out", str(tmp_path / "out"), *FAST])
    assert e.value.code == 2
    assert "holds both TrackML events (6) and ColliderML shards (sim_pu0_tracker_hits): pass " \
           "--source trackml or --source colliderml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["fit-graph", str(colliderml / "csv"), "--source", "colliderml", "--out",
              str(tmp_path / "out")])
    assert e.value.code == 2 and "no ColliderML events in" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
