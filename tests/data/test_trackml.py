"""TrackML CSV reader/writer: exact round trips, official format, and every error path."""
from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal

from gnn_jepa.data.convert import event_to_data
from gnn_jepa.data.dataset import EventDataset, EventSource
from gnn_jepa.data.event import Event
from gnn_jepa.data.simulator import Simulator
from gnn_jepa.data.trackml import (TrackMLFormatError, event_prefix, list_events,
                                   parse_event_id, read_event, read_events, write_event)
from gnn_jepa.data.weights import ComputedWeightsWarning, computed_weight_counts

# Official-looking TrackML files (column order and formats of the challenge's CSVs).
# Particle ids like the official ones need all 64 bits: as float64 they would be rounded.
PID_A = 4503668346847232
PID_B = 922337203685477581  # > 2**53: not representable exactly as a double
HITS_CSV = """hit_id,x,y,z,volume_id,layer_id,module_id
1,-64.4099,-7.1637,-1502.5,7,2,1
2,-55.3361,0.635342,-1502.5,7,2,1
3,-83.8305,-1.14301,-1502.5,7,2,1
4,-96.1091,-8.24103,-1502.5,7,2,1
5,-62.6736,-9.3712,-1502.5,7,2,1
"""
TRUTH_CSV = f"""hit_id,particle_id,tx,ty,tz,tpx,tpy,tpz,weight
1,0,-64.4116,-7.16412,-1502.5,250710,-149908,-956385,0
2,{PID_B},-55.3385,0.630805,-1502.5,-0.570605,0.0283904,-15.4922,1e-05
3,{PID_A},-83.8284,-1.14558,-1502.5,-0.0487772,0.0116051,-0.987146,0.000104
4,{PID_A},-96.1129,-8.23096,-1502.5,-0.179573,-0.148838,-2.18617,6e-06
5,0,-62.6736,-9.3712,-1502.5,0,0,0,0
"""
PARTICLES_CSV = f"""particle_id,vx,vy,vz,px,py,pz,q,nhits
{PID_A},-0.00928816,0.00986098,-0.0778789,-0.0552689,0.323272,-0.203492,-1,2
{PID_B},-0.0131188,-0.0217042,-8.55525,-0.571018,0.0293836,-15.4938,1,1
"""
CELLS_CSV = """hit_id,ch0,ch1,value
1,209,617,0.013832
1,210,617,0.079887
2,68,446,0.211723
"""


def _write_official(tmp_path: Path, name: str = "event000001000", *, gz: bool = False,
                    hits: str = HITS_CSV, truth: str | None = TRUTH_CSV,
                    particles: str | None = PARTICLES_CSV, cells: str | None = CELLS_CSV) -> Path:
    prefix = tmp_path / name
    for part, text in (("hits", hits), ("truth", truth), ("particles", particles), ("cells", cells)):
        if text is None:
            continue
        if gz:
            with gzip.open(f"{prefix}-{part}.csv.gz", "wt") as f:
                f.write(text)
        else:
            Path(f"{prefix}-{part}.csv").write_text(text)
    return prefix


def _awkward_event(event_id: int = 7) -> Event:
    """A small event whose floats and ids stress an exact text round trip."""
    rng = np.random.default_rng(1)
    n = 6
    hits = pd.DataFrame({
        "hit_id": np.arange(1, n + 1, dtype=np.int64),
        "x": np.array([0.1, 1 / 3, -0.0, 1e-300, 5e-324, 1.7976931348623157e308]),
        "y": rng.normal(size=n) * 1e3,
        "z": rng.normal(size=n) * 1e-7,
        "volume_id": np.array([8, 8, 13, 13, 17, 17], dtype=np.int64),
        "layer_id": np.array([2, 4, 2, 4, 2, 4], dtype=np.int64),
        "module_id": np.arange(n, dtype=np.int64) * 1000,
    })
    pid = np.array([PID_A, PID_A, 0, 2 ** 62 + 1, 2 ** 62 + 1, 2 ** 62 + 1], dtype=np.int64)
    truth = pd.DataFrame({
        "hit_id": hits["hit_id"].to_numpy(), "particle_id": pid,
        **{c: rng.normal(size=n) for c in ("tx", "ty", "tz", "tpx", "tpy", "tpz")},
        "weight": rng.random(n),
    })
    particles = pd.DataFrame({
        "particle_id": np.array([PID_A, 2 ** 62 + 1], dtype=np.int64),
        **{c: rng.normal(size=2) for c in ("vx", "vy", "vz", "px", "py", "pz")},
        "q": np.array([-1, 1], dtype=np.int64), "nhits": np.array([2, 3], dtype=np.int64),
    })
    cells = pd.DataFrame({"hit_id": np.array([1, 1, 6], dtype=np.int64),
                          "ch0": np.array([3, 4, 5], dtype=np.int64),
                          "ch1": np.array([9, 9, 1], dtype=np.int64),
                          "value": np.array([0.013832, 1 / 7, 2.5])})
    return Event(hits=hits, truth=truth, particles=particles, event_id=event_id, cells=cells)


def _assert_events_equal(a: Event, b: Event) -> None:
    assert a.event_id == b.event_id
    for name in ("hits", "truth", "particles"):
        assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)
    if a.cells is None:
        assert b.cells is None
    else:
        assert_frame_equal(a.cells, b.cells, check_exact=True)


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_is_exact(tmp_path, compress):
    event = _awkward_event()
    written = write_event(event, tmp_path / "event000000007", compress=compress)
    suffix = ".csv.gz" if compress else ".csv"
    assert sorted(p.name for p in written) == sorted(
        f"event000000007-{p}{suffix}" for p in ("hits", "truth", "particles", "cells"))
    # the awkward doubles include the largest float: no coordinate limit here
    back = read_event(tmp_path / "event000000007", max_coordinate=float("inf"))
    _assert_events_equal(event, back)
    # bit-level check of the awkward doubles (-0.0 keeps its sign, subnormals survive)
    assert np.array_equal(back.hits["x"].to_numpy().view(np.int64),
                          event.hits["x"].to_numpy().view(np.int64))
    assert not list(tmp_path.glob(".*tmp"))  # no temporaries left behind


def test_float32_columns_are_written_exactly_as_float64(tmp_path):
    event = _awkward_event()
    event.hits["y"] = event.hits["y"].astype(np.float32)
    write_event(event, tmp_path)
    back = read_event(event_prefix(tmp_path, 7), max_coordinate=float("inf"))
    assert back.hits["y"].dtype == np.float64
    assert np.array_equal(back.hits["y"].to_numpy(), event.hits["y"].to_numpy().astype(np.float64))


def test_gzip_output_is_deterministic_and_replaces_plain_twin(tmp_path):
    event = _awkward_event()
    write_event(event, tmp_path / "event000000007")
    write_event(event, tmp_path / "event000000007", compress=True)
    first = Path(f"{tmp_path}/event000000007-hits.csv.gz").read_bytes()
    assert not Path(f"{tmp_path}/event000000007-hits.csv").exists()
    write_event(event, tmp_path / "event000000007", compress=True)
    assert Path(f"{tmp_path}/event000000007-hits.csv.gz").read_bytes() == first


@pytest.mark.parametrize("gz", [False, True])
def test_reads_official_files_exactly(tmp_path, gz):
    event = read_event(_write_official(tmp_path, gz=gz))
    assert event.event_id == 1000
    assert list(event.hits.columns) == ["hit_id", "x", "y", "z", "volume_id", "layer_id", "module_id"]
    assert event.truth["particle_id"].dtype == np.int64
    assert event.truth["particle_id"].tolist() == [0, PID_B, PID_A, PID_A, 0]
    assert event.particles["particle_id"].tolist() == [PID_A, PID_B]
    assert event.hits["x"].iat[1] == -55.3361
    assert event.truth["weight"].iat[2] == 0.000104
    assert event.particles["q"].tolist() == [-1, 1]
    assert event.cells["value"].tolist() == [0.013832, 0.079887, 0.211723]
    assert event.hits["x"].dtype == np.float64 and event.hits["volume_id"].dtype == np.int64


def test_test_set_event_without_truth(tmp_path):
    prefix = _write_official(tmp_path, truth=None, particles=None, cells=None)
    event = read_event(prefix, parts=("hits",))
    assert len(event.hits) == 5 and len(event.truth) == 0 and len(event.particles) == 0
    assert list(event.truth.columns)[:2] == ["hit_id", "particle_id"]
    assert event.cells is None
    out = tmp_path / "out"
    out.mkdir()
    written = write_event(event, out)  # a directory prefix -> event000001000
    assert [p.name for p in written] == ["event000001000-hits.csv"]
    _assert_events_equal(event, read_event(out / "event000001000", parts=("hits",)))


def test_cells_are_optional(tmp_path):
    event = read_event(_write_official(tmp_path, cells=None))
    assert event.cells is None and len(event.truth) == 5


def test_list_events_sorted_by_event_id(tmp_path):
    for name, gz in (("event000001010", True), ("event000000999", False), ("event000001000", False)):
        _write_official(tmp_path, name, gz=gz)
    (tmp_path / "notes-hits.csv").write_text("x\n")
    (tmp_path / "event000000001-truth.csv").write_text(TRUTH_CSV)  # no hits file: not an event
    assert list_events(tmp_path) == [tmp_path / "event000000999", tmp_path / "event000001000",
                                     tmp_path / "event000001010"]
    with pytest.raises(NotADirectoryError, match="nowhere"):
        list_events(tmp_path / "nowhere")


def test_parse_event_id():
    assert parse_event_id("a/b/event000001000") == 1000
    with pytest.raises(TrackMLFormatError, match="without '-hits.csv'"):
        parse_event_id("a/event000001000-hits.csv")


# ----------------------------------------------------------------------------- format errors
def test_missing_file(tmp_path):
    prefix = _write_official(tmp_path, particles=None)
    with pytest.raises(TrackMLFormatError, match=r"missing particles file for event 1000.*"
                                                 r"event000001000-particles\.csv"):
        read_event(prefix)


def test_both_compressions_present_is_ambiguous(tmp_path):
    prefix = _write_official(tmp_path)
    _write_official(tmp_path, gz=True)
    with pytest.raises(TrackMLFormatError, match="ambiguous hits table"):
        read_event(prefix)


def test_missing_column(tmp_path):
    hits = HITS_CSV.replace("volume_id,", "volume,")
    with pytest.raises(TrackMLFormatError, match=r"-hits\.csv: missing column\(s\) \['volume_id'\]"):
        read_event(_write_official(tmp_path, hits=hits))


def test_nan_coordinate(tmp_path):
    hits = HITS_CSV.replace("3,-83.8305,", "3,nan,")
    with pytest.raises(TrackMLFormatError,
                       match=r"-hits\.csv: column 'x' row 2 \(hit_id 3\): non-finite value nan"):
        read_event(_write_official(tmp_path, hits=hits))


def test_inf_and_empty_float_fields(tmp_path):
    truth = TRUTH_CSV.replace("-1.14558,", "inf,")
    with pytest.raises(TrackMLFormatError, match=r"-truth\.csv: column 'ty' row 2 \(hit_id 3\).*inf"):
        read_event(_write_official(tmp_path, truth=truth))
    particles = PARTICLES_CSV.replace("-8.55525,", ",")
    with pytest.raises(TrackMLFormatError,
                       match=rf"-particles\.csv: column 'vz' row 1 \(particle_id {PID_B}\)"):
        read_event(_write_official(tmp_path, particles=particles))


def test_duplicate_hit_id(tmp_path):
    hits = HITS_CSV.replace("\n4,", "\n2,")
    with pytest.raises(TrackMLFormatError, match=r"-hits\.csv: column 'hit_id': duplicate hit_id 2 "
                                                 r"\(rows 1 and 3\)"):
        read_event(_write_official(tmp_path, hits=hits))


def test_truth_hit_ids_differ_from_hits(tmp_path):
    truth = TRUTH_CSV.replace("\n5,0,", "\n6,0,")
    with pytest.raises(TrackMLFormatError, match=r"-truth\.csv: .*hit_id 6 is in truth but not in "
                                                 r"hits.*hit_id 5 is in hits but not in truth"):
        read_event(_write_official(tmp_path, truth=truth))
    lines = TRUTH_CSV.splitlines()
    swapped = "\n".join([lines[0], lines[1], lines[3], lines[2], lines[4], lines[5]]) + "\n"
    with pytest.raises(TrackMLFormatError, match=r"order differs first at row 1: truth hit_id 3, "
                                                 r"hits hit_id 2"):
        read_event(_write_official(tmp_path, truth=swapped))
    short = "\n".join(lines[:-1]) + "\n"
    with pytest.raises(TrackMLFormatError, match=r"truth has 4 rows, hits 5"):
        read_event(_write_official(tmp_path, truth=short))


def test_particle_referenced_by_truth_but_absent(tmp_path):
    particles = "\n".join(PARTICLES_CSV.splitlines()[:2]) + "\n"  # drop PID_B
    with pytest.raises(TrackMLFormatError, match=rf"-truth\.csv: column 'particle_id' row 1 "
                                                 rf"\(hit_id 2\): particle_id {PID_B} is absent"):
        read_event(_write_official(tmp_path, particles=particles))


@pytest.mark.parametrize("part, old, new, pattern", [
    ("hits", "-55.3361,0.635342", "-55.3361,abc", r"-hits\.csv: column 'y' row 1 \(line 3\): "
                                                  r"value 'abc' is not a number"),
    ("hits", "-1502.5,7,2,1\n4,", "-1502.5,7.5,2,1\n4,", r"column 'volume_id' row 2 \(line 4\): "
                                                         r"value '7\.5' is not a 64-bit integer"),
    ("truth", f"2,{PID_B},", "2,,", r"-truth\.csv: column 'particle_id' row 1 \(line 3\): "
                                    r"value '' is not a 64-bit integer"),
    ("particles", f"{PID_A},", "99999999999999999999,", r"column 'particle_id' row 0 \(line 2\): "
                                                        r"value '99999999999999999999'"),
])
def test_non_numeric_values(tmp_path, part, old, new, pattern):
    texts = {"hits": HITS_CSV, "truth": TRUTH_CSV, "particles": PARTICLES_CSV}
    assert old in texts[part]
    texts[part] = texts[part].replace(old, new, 1)
    with pytest.raises(TrackMLFormatError, match=pattern):
        read_event(_write_official(tmp_path, **texts))


def test_empty_files(tmp_path):
    with pytest.raises(TrackMLFormatError, match=r"-truth\.csv: empty file"):
        read_event(_write_official(tmp_path, truth=""))
    with pytest.raises(TrackMLFormatError, match=r"-hits\.csv\.gz: empty file"):
        read_event(_write_official(_fresh(tmp_path, "gz"), gz=True, hits=""))
    header_only = HITS_CSV.splitlines()[0] + "\n"
    with pytest.raises(TrackMLFormatError, match=r"-hits\.csv: no hits \(header only\)"):
        read_event(_write_official(_fresh(tmp_path, "hdr"), hits=header_only, truth=None,
                                   particles=None, cells=None), parts=("hits",))


def _fresh(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    return d


def test_cells_must_reference_hits(tmp_path):
    cells = CELLS_CSV.replace("\n2,68", "\n9,68")
    with pytest.raises(TrackMLFormatError, match=r"-cells\.csv: column 'hit_id' row 2: hit_id 9"):
        read_event(_write_official(tmp_path, cells=cells))


def test_write_validates_before_writing(tmp_path):
    event = _awkward_event()
    event.truth.loc[2, "tz"] = np.inf
    with pytest.raises(TrackMLFormatError, match=r"event 7 truth table: column 'tz' row 2 "
                                                 r"\(hit_id 3\): non-finite"):
        write_event(event, tmp_path / "event000000007")
    assert list(tmp_path.iterdir()) == []
    event = _awkward_event()
    event.hits["layer_id"] = event.hits["layer_id"] + 0.5
    with pytest.raises(TrackMLFormatError, match=r"column 'layer_id' row 0: value 2\.5 is not an "
                                                 r"integer"):
        write_event(event, tmp_path / "event000000007")
    with pytest.raises(TrackMLFormatError, match=r"names event 8 but event\.event_id is 7"):
        write_event(_awkward_event(), tmp_path / "event000000008")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- hit weights
def _simulated(tmp_path: Path, event_id: int = 5, num_particles: int = 60) -> tuple[Event, Path]:
    sim = Simulator.from_preset("trackml", num_particles=num_particles)
    event = sim.simulate(event_id, event_id)
    prefix = event_prefix(tmp_path, event_id)
    write_event(event, prefix)
    return event, prefix


def _edit_truth(prefix: Path, fn) -> None:
    path = Path(f"{prefix}-truth.csv")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


@pytest.mark.parametrize("how, reason", [
    ("zero", "sums to 0"),
    ("drop", "is missing"),
    ("blank", "is blank"),
])
def test_unusable_weight_column_is_computed_as_the_simulator_does(tmp_path, how, reason):
    event, prefix = _simulated(tmp_path)
    edits = {"zero": lambda df: df.assign(weight="0"), "drop": lambda df: df.drop(columns="weight"),
             "blank": lambda df: df.assign(weight="")}
    _edit_truth(prefix, edits[how])
    with pytest.warns(ComputedWeightsWarning) as record:
        back = read_event(prefix)
    msgs = [str(w.message) for w in record]
    assert len(msgs) == 1
    assert msgs[0].startswith(f"{prefix}-truth.csv: the truth 'weight' column {reason}")
    # the simulator's own weights, bit for bit; every other column untouched
    _assert_events_equal(event, back)
    assert list(back.truth.columns) == list(event.truth.columns)
    # and what the dataset makes of the folder
    data = EventDataset(EventSource("trackml", data_dir=str(tmp_path)), [0])[0]
    assert torch.equal(data.weight, event_to_data(event).weight)


def test_positive_weight_column_is_kept_as_it_is(tmp_path):
    # the official sample's weights sum to 1.2e-4 (a few hits of an event): kept bit for bit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        event = read_event(_write_official(tmp_path))
    assert event.truth["weight"].tolist() == [0.0, 1e-05, 0.000104, 6e-06, 0.0]


def test_zero_weights_without_scorable_particles_stay_zero_silently(tmp_path):
    # the official sample's particles have 2 and 1 hits: < 4, so every TrackML weight is 0
    truth = TRUTH_CSV
    for w in ("1e-05", "0.000104", "6e-06"):
        truth = truth.replace(f",{w}\n", ",0\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        event = read_event(_write_official(tmp_path, truth=truth))
    assert event.truth["weight"].tolist() == [0.0] * 5


def test_weights_without_the_particles_part(tmp_path):
    event, prefix = _simulated(tmp_path)
    _edit_truth(prefix, lambda df: df.assign(weight="0"))
    # particles not asked for: read from its file for the weights anyway
    with pytest.warns(ComputedWeightsWarning):
        back = read_event(prefix, parts=("hits", "truth"))
    assert len(back.particles) == 0
    assert np.array_equal(back.truth["weight"].to_numpy(), event.truth["weight"].to_numpy())
    # no particles file: vertices at the origin, pT from the truth momentum (an estimate)
    Path(f"{prefix}-particles.csv").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the folder's second such event: counted, not reported
        back = read_event(prefix, parts=("hits", "truth"))
    assert computed_weight_counts()[str(tmp_path)] == 2
    w = back.truth["weight"].to_numpy()
    assert w.sum() == pytest.approx(1.0) and ((w > 0) == (event.truth["weight"] > 0)).all()


def test_one_warning_per_folder_then_counts(tmp_path):
    event = Simulator.from_preset("trackml", num_particles=10).simulate(0)
    event.truth["weight"] = 0.0
    for i in range(12):
        event.event_id = i
        write_event(event, tmp_path)
    with pytest.warns(ComputedWeightsWarning) as record:
        events = read_events(list_events(tmp_path))
    msgs = [str(w.message) for w in record]
    assert len(msgs) == 2, msgs
    assert msgs[0].startswith(f"{tmp_path}/event000000000-truth.csv: the truth 'weight' column "
                              "sums to 0")
    assert msgs[1].startswith(f"{tmp_path}: TrackML hit weights computed from truth for 10 events")
    assert all(e.truth["weight"].sum() == pytest.approx(1.0) for e in events)


def test_bad_weights_are_errors(tmp_path):
    truth = TRUTH_CSV.replace(",0.000104\n", ",-0.000104\n")
    with pytest.raises(TrackMLFormatError, match=r"-truth\.csv: column 'weight' row 2 "
                                                 r"\(hit_id 3\): negative weight -0\.000104 "
                                                 r".*computed"):
        read_event(_write_official(tmp_path, truth=truth))
    truth = TRUTH_CSV.replace(",0.000104\n", ",\n")  # one blank weight: not a blank column
    with pytest.raises(TrackMLFormatError, match=r"column 'weight' row 2 \(hit_id 3\): non-finite "
                                                 r"value nan"):
        read_event(_write_official(_fresh(tmp_path, "one_blank"), truth=truth))
    event = _awkward_event()
    event.truth.loc[1, "weight"] = -1.0
    with pytest.raises(TrackMLFormatError, match=r"event 7 truth table: column 'weight' row 1"):
        write_event(event, tmp_path / "event000000007")
