"""Bad arguments of the plain commands, ``gnn-jepa simulate`` and ``gnn-jepa fit-graph``: each
exits before writing anything, with a message naming the argument and its value (argparse:
status 2) or the event file at fault (``SystemExit(message)``).
"""
from __future__ import annotations

import pytest

from gnn_jepa.cli import main
from tests.reliability.conftest import edit_table, exit_code_and_stderr, hits_file, set_cell

# argv after "simulate --out OUT" -> what stderr must contain
SIMULATE = {
    "negative_event_count": (["--num-events", "-3"], "argument --num-events: must be >= 1, got -3"),
    "zero_particles": (["--num-particles", "0"], "argument --num-particles: must be >= 1, got 0"),
    "particles_as_word": (["--num-particles", "ten"], "argument --num-particles: expected an integer, "
                                                      "got 'ten'"),
    "fractional_event_count": (["--num-events", "2.5"], "argument --num-events: expected an integer, "
                                                        "got '2.5'"),
    "negative_first_event": (["--first-event", "-5"], "argument --first-event: must be >= 0, got -5"),
    "unknown_preset": (["--preset", "lhc"], "argument --preset: invalid choice: 'lhc' (choose from "
                                            "'toy2d', 'trackml')"),
}


@pytest.mark.parametrize("case", sorted(SIMULATE))
def test_simulate_names_the_bad_argument(tmp_path, capsys, case):
    argv, message = SIMULATE[case]
    code, err = exit_code_and_stderr(["simulate", "--out", str(tmp_path / "sim"), *argv], capsys)
    assert code == 2 and f"gnn-jepa simulate: error: {message}" in err, err
    assert not (tmp_path / "sim").exists()


def test_simulate_without_or_onto_a_file_names_out(tmp_path, capsys):
    """``--out`` missing, or a file (which used to end in a FileExistsError traceback)."""
    code, err = exit_code_and_stderr(["simulate", "--num-events", "1"], capsys)
    assert code == 2 and "error: the following arguments are required: --out" in err
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    code, err = exit_code_and_stderr(["simulate", "--num-events", "1", "--num-particles", "5",
                                      "--out", str(out)], capsys)
    assert code == 2 and f"gnn-jepa simulate: error: --out '{out}' exists and is not a folder" in err
    assert out.read_text() == "keep me"


# argv after "fit-graph DATA --out OUT" (DATA: the 3-event folder) -> what stderr must contain
FIT_GRAPH = {
    "too_few_events": ([], "'{data}' holds 3 events; --offset 0 + --fit-events 8 + --eval-events 2 "
                           "need 10"),
    "too_few_after_offset": (["--offset", "2", "--fit-events", "1"],
                             "'{data}' holds 3 events; --offset 2 + --fit-events 1 + --eval-events 2 "
                             "need 5"),
    "edge_filter_efficiency_above_one": (["--edge-filter-efficiency", "1.5"],
                                         "--edge-filter-efficiency must be in (0, 1] (0: none), got 1.5"),
    "edge_filter_efficiency_negative": (["--edge-filter-efficiency", "-0.1"],
                                        "argument --edge-filter-efficiency: must be >= 0, got -0.1"),
    "filter_quantile_low": (["--filter-quantile", "0.2"], "--filter-quantile must be in (0.5, 1], got 0.2"),
    "filter_quantile_nan": (["--filter-quantile", "nan"], "--filter-quantile must be in (0.5, 1], got nan"),
    "radius_infinite": (["--radius", "inf"], "argument --radius: must be a finite number, got inf"),
    "zero_steps": (["--steps", "0"], "argument --steps: must be >= 1, got 0"),
    "compare_not_an_object": (["--compare", "[1]"], "argument --compare: expected a JSON object of "
                                                    "BuildGraph arguments, got '[1]'"),
    "compare_unknown_key": (["--compare", '{"radiu": 1}'],
                            "--compare {{\"radiu\": 1}}: BuildGraph.__init__() got an unexpected keyword "
                            "argument 'radiu'"),
}


@pytest.mark.parametrize("case", sorted(FIT_GRAPH))
def test_fit_graph_names_the_bad_argument(tmp_path, data_dir, capsys, case):
    argv, message = FIT_GRAPH[case]
    code, err = exit_code_and_stderr(["fit-graph", str(data_dir), "--out", str(tmp_path / "out"),
                                      *argv], capsys)
    assert code == 2 and f"gnn-jepa fit-graph: error: {message.format(data=data_dir)}" in err, err
    assert not (tmp_path / "out").exists()


def test_fit_graph_names_a_folder_that_is_not_one(tmp_path, data_dir, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    for folder, problem in [("nope", "does not exist"), ("a_file", "is not a folder")]:
        code, err = exit_code_and_stderr(["fit-graph", str(tmp_path / folder), "--out",
                                          str(tmp_path / "out")], capsys)
        assert code == 2 and f"error: data folder '{tmp_path / folder}' {problem}" in err
    code, err = exit_code_and_stderr(["fit-graph", str(tmp_path / "empty"), "--out",
                                      str(tmp_path / "out")], capsys)
    assert code == 2 and f"error: no TrackML events in '{tmp_path / 'empty'}'" in err
    code, err = exit_code_and_stderr(["fit-graph", str(data_dir), "--fit-events", "2", "--eval-events",
                                      "1", "--out", str(tmp_path / "a_file")], capsys)
    assert code == 2 and f"error: --out '{tmp_path / 'a_file'}' exists and is not a folder" in err
    assert not (tmp_path / "out").exists() and (tmp_path / "a_file").read_text() == "x"


@pytest.mark.parametrize("case", ["bad_value", "no_particles_file"])
def test_fit_graph_names_a_bad_event_before_training(tmp_path, data_dir, case):
    """An event of the fit or held-out set that does not read stops the command before any
    training, naming the event and the reader's reason."""
    prefix = data_dir / "event000001001"
    if case == "bad_value":
        edit_table(hits_file(data_dir), set_cell("x", 2, "abc"))
        reason = f"{hits_file(data_dir)}: column 'x' row 2 (line 4): value 'abc' is not a number"
    else:
        hits_file(data_dir, part="particles").unlink()
        reason = (f"missing particles file for event 1001: neither {prefix}-particles.csv nor "
                  f"{prefix}-particles.csv.gz exists")
    with pytest.raises(SystemExit) as exit_:
        main(["fit-graph", str(data_dir), "--out", str(tmp_path / "out"), "--fit-events", "2",
              "--eval-events", "1"])
    assert exit_.value.code == f"gnn-jepa fit-graph: {prefix}: {reason}"
    assert not (tmp_path / "out").exists()
