"""Bad TrackML CSV files, read the way training reads them: every problem is a
TrackMLFormatError (or the error of a missing folder/event) naming the file, the column, the
row and the value, nothing is left half-written on disk, and the variants a reader must
tolerate (an extra column, a BOM, CRLF line ends, computed weights) read as meant.
"""
from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gnn_jepa.data import trackml
from gnn_jepa.data.dataset import EventDataset, EventSource
from gnn_jepa.data.trackml import TrackMLFormatError, read_event, write_event
from gnn_jepa.data.weights import ComputedWeightsWarning
from tests.reliability.conftest import (NUM_EVENTS, datamodule, edit_table, hits_file, leftovers,
                                        set_cell)


class text:
    """A CORPUS edit of a file's text instead of its cells."""

    def __init__(self, fn):
        self.fn = fn


def apply_edit(path: Path, edit) -> None:
    if isinstance(edit, text):
        path.write_text(edit.fn(path.read_text()))
    else:
        edit_table(path, edit)


def _repeat_x(csv_text: str) -> str:
    header, *rows = csv_text.splitlines()
    return "\n".join([header + ",x"] + [row + ",5.0" for row in rows]) + "\n"


# ----------------------------------------------------------------------- damaged CSV corpus
# name -> (table, edit, [fragments the message must contain])
CORPUS = {
    "nan_coordinate": ("hits", set_cell("x", 3, "nan"), ["column 'x'", "row 3", "non-finite value nan"]),
    "inf_coordinate": ("hits", set_cell("z", 0, "inf"), ["column 'z'", "row 0", "non-finite value inf"]),
    "empty_event": ("hits", lambda df: df.iloc[:0], ["no hits"]),
    "missing_column": ("hits", lambda df: df.drop(columns=["y"]), ["missing column(s) ['y']"]),
    "duplicate_hit_id": ("hits", lambda df: df.assign(hit_id=df["hit_id"].where(df.index != 5, df["hit_id"][2])),
                         ["duplicate hit_id", "rows 2 and 5"]),
    "truth_not_matching_hits": ("truth", lambda df: df.drop(index=4),
                                ["truth rows must list the hits", "is in hits but not in truth"]),
    "wrong_dtype_id": ("hits", set_cell("volume_id", 2, "8.5"), ["column 'volume_id'", "row 2", "'8.5'",
                                                                 "not a 64-bit integer"]),
    "wrong_dtype_float": ("hits", set_cell("x", 1, "12,5"), ["column 'x'", "row 1", "'12,5'", "not a number"]),
    "unknown_particle": ("truth", set_cell("particle_id", 0, "999999999"), ["particle_id 999999999",
                                                                            "absent from"]),
    "huge_coordinate": ("hits", set_cell("x", 6, "1e30"), ["column 'x'", "row 6", "value 1e+30 mm",
                                                           "outside any detector", "--data.max_coordinate"]),
    "coordinate_in_um": ("hits", set_cell("z", 2, "-250000.0"), ["column 'z'", "row 2", "-250000.0 mm",
                                                                 "|z| >= 100000 mm"]),
    "negative_weight": ("truth", set_cell("weight", 2, "-0.5"), ["column 'weight'", "row 2 (hit_id 3)",
                                                                 "negative weight -0.5"]),
    "blank_value": ("hits", set_cell("y", 2, ""), ["column 'y'", "row 2", "non-finite value nan"]),
    "non_numeric_id": ("hits", set_cell("hit_id", 2, "abc"), ["column 'hit_id'", "row 2 (line 4)",
                                                              "value 'abc' is not a 64-bit integer"]),
    "id_beyond_int64": ("truth", set_cell("particle_id", 2, "99999999999999999999"),
                        ["column 'particle_id'", "row 2", "'99999999999999999999' is not a 64-bit integer"]),
    "charge_not_integer": ("particles", set_cell("q", 0, "1.5"), ["column 'q'", "row 0",
                                                                  "'1.5' is not a 64-bit integer"]),
    "truth_header_only": ("truth", lambda df: df.iloc[:0], ["truth rows must list the hits",
                                                            "truth has 0 rows"]),
    "truth_order_differs": ("truth", lambda df: df.iloc[[1, 0, *range(2, len(df))]],
                            ["order differs first at row 0: truth hit_id 2, hits hit_id 1"]),
    "particles_header_only": ("particles", lambda df: df.iloc[:0],
                              ["column 'particle_id' row 0", "particle_id 1 is absent from"]),
    "duplicate_particle_id": ("particles", lambda df: pd.concat([df, df.iloc[[0]]]),
                              ["column 'particle_id': duplicate particle_id 1", "rows 0 and"]),
    "semicolon_separated": ("hits", text(lambda s: s.replace(",", ";")),
                            ["missing column(s) ['hit_id', 'x', 'y', 'z'",
                             "found ['hit_id;x;y;z;volume_id;layer_id;module_id']"]),
    "repeated_column": ("hits", text(_repeat_x), ["column(s) ['x'] appear more than once in the header"]),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_csv_event_is_named_and_leaves_nothing_half_written(tmp_path, data_dir, case):
    part, edit, fragments = CORPUS[case]
    bad = data_dir / f"event{1001:09d}-{part}.csv"
    original = bad.read_bytes()
    apply_edit(bad, edit)
    cache = tmp_path / "cache"
    dm = datamodule(data_dir, cache)
    with pytest.raises(TrackMLFormatError) as err:
        dm.prepare_data()  # caches every event: event 1000 first, then the bad 1001
    msg = str(err.value)
    assert bad.name in msg, msg  # names the file (and so the event)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    cached = sorted(p.name for p in cache.rglob("event_*.pt"))
    assert cached == ["event_000000000.pt"]  # the good event before it; nothing for the bad one
    assert not leftovers(cache, data_dir)
    # the same through the dataset with the memory-only cache
    with pytest.raises(TrackMLFormatError, match=bad.name):
        EventDataset(EventSource("trackml", data_dir=str(data_dir)), [1])[0]
    # repaired, the same cache completes
    bad.write_bytes(original)
    datamodule(data_dir, cache).prepare_data()
    assert len(list(cache.rglob("event_*.pt"))) == NUM_EVENTS


def _damage_bytes(path: Path, how: str) -> Path:
    """Damage a table file's bytes so that it is no CSV table at all; returns the damaged file."""
    if how == "truncated_gzip":
        gz = path.with_name(path.name + ".gz")
        gz.write_bytes(gzip.compress(path.read_bytes())[:200])
        path.unlink()
        return gz
    if how == "plain_named_gz":  # a plain CSV file named .csv.gz
        return path.rename(path.with_name(path.name + ".gz"))
    if how == "gzip_named_csv":  # gzip bytes under the plain .csv name
        path.write_bytes(gzip.compress(path.read_bytes()))
        return path
    raw = path.read_bytes()
    line6 = raw.split(b"\n")[5]
    changed = {"not_utf8": b"\xff\xfe" + line6[2:], "extra_field": line6 + b",7",
               "open_quote": b'"' + line6}[how]
    path.write_bytes(raw.replace(line6, changed, 1))
    return path


@pytest.mark.parametrize("how,what", [("truncated_gzip", "EOFError: Compressed file ended"),
                                      ("not_utf8", "UnicodeDecodeError: 'utf-8' codec"),
                                      ("extra_field", "Expected 7 fields in line 6, saw 8"),
                                      ("open_quote", "EOF inside string"),
                                      ("plain_named_gz", "BadGzipFile: Not a gzipped file"),
                                      ("gzip_named_csv", "UnicodeDecodeError: 'utf-8' codec can't "
                                                         "decode byte 0x8b")])
def test_unreadable_csv_bytes_are_named(data_dir, how, what):
    """Bytes that are no CSV table (a cut gzip stream, not UTF-8, a ragged row, an open quote,
    a compression that does not match the name) are a TrackMLFormatError naming the file, like
    any other bad value."""
    bad = _damage_bytes(data_dir / f"event{1001:09d}-hits.csv", how)
    with pytest.raises(TrackMLFormatError) as err:
        EventDataset(EventSource("trackml", data_dir=str(data_dir)), [1])[0]
    msg = str(err.value)
    assert msg.startswith(f"{bad}: not a readable CSV table (") and what in msg, msg


# ----------------------------------------------------------------------- files of an event
def _empty_file(d: Path) -> str:
    hits_file(d).write_bytes(b"")
    return (f"{hits_file(d)}: empty file (expected a header line with columns hit_id, x, y, z, "
            "volume_id, layer_id, module_id)")


def _both_variants(d: Path) -> str:
    gz = d / f"event{1001:09d}-truth.csv.gz"
    gz.write_bytes(gzip.compress(hits_file(d, part="truth").read_bytes()))
    return f"both {hits_file(d, part='truth')} and {gz} exist: ambiguous truth table, remove one"


def _no_particles_file(d: Path) -> str:
    hits_file(d, part="particles").unlink()
    prefix = d / f"event{1001:09d}"
    return (f"missing particles file for event 1001: neither {prefix}-particles.csv nor "
            f"{prefix}-particles.csv.gz exists")


def _cells_of_unknown_hit(d: Path) -> str:
    cells = hits_file(d, part="cells")
    cells.write_text("hit_id,ch0,ch1,value\n999999,1,2,0.5\n")
    return f"{cells}: column 'hit_id' row 0: hit_id 999999 is absent from {hits_file(d)}"


FILE_PROBLEMS = {"empty_file": _empty_file, "csv_and_csv_gz": _both_variants,
                 "missing_particles_file": _no_particles_file,
                 "cells_of_unknown_hit": _cells_of_unknown_hit}


@pytest.mark.parametrize("case", sorted(FILE_PROBLEMS))
def test_missing_empty_or_conflicting_files_are_named(data_dir, case):
    expected = FILE_PROBLEMS[case](data_dir)
    with pytest.raises(TrackMLFormatError) as err:
        EventDataset(EventSource("trackml", data_dir=str(data_dir)), [1])[0]
    assert str(err.value) == expected


@pytest.mark.parametrize("name,hint", [("event000001001-hits.csv", " (pass the prefix without "
                                                                   "'-hits.csv')"),
                                       ("run7", "")])
def test_a_prefix_without_an_event_number_is_named(data_dir, name, hint):
    with pytest.raises(TrackMLFormatError) as err:
        read_event(data_dir / name)
    assert str(err.value) == (f"cannot parse an event id from '{data_dir / name}': the prefix must "
                              f"end in 'event<digits>', e.g. 'dir/event000001000'{hint}")


def test_a_folder_without_events_is_named(tmp_path):
    """Files whose names carry no event number are not events; a folder of only such files
    holds none, and the error says what an event file is called."""
    d = tmp_path / "misnamed"
    d.mkdir()
    for name in ("hits.csv", "event-hits.csv", "event1000-hits.txt", "eventABC-hits.csv"):
        (d / name).write_text("hit_id,x,y,z,volume_id,layer_id,module_id\n1,1,1,1,1,1,1\n")
    with pytest.raises(IndexError) as err:
        datamodule(d, tmp_path / "cache", num_train=1).prepare_data()
    assert str(err.value) == (f"event index 0 but {d} holds 0 events (no file named "
                              "event<digits>-hits.csv or event<digits>-hits.csv.gz)")
    with pytest.raises(NotADirectoryError, match=f"TrackML event directory '{tmp_path / 'nope'}' "
                                                 "does not exist"):
        datamodule(tmp_path / "nope", tmp_path / "cache", num_train=1).prepare_data()


def test_missing_events_are_named(data_dir, tmp_path):
    dm = datamodule(data_dir, tmp_path / "cache", num_train=NUM_EVENTS + 2)
    with pytest.raises(IndexError, match=rf"event index {NUM_EVENTS} but .* holds {NUM_EVENTS} events"):
        dm.prepare_data()
    # without its truth file an event is unlabelled (for pretraining; track finding refuses
    # it by name, tests/test_cli.py); without its particles file, with a truth file, an error
    (data_dir / f"event{1002:09d}-particles.csv").unlink()
    with pytest.raises(TrackMLFormatError, match="missing particles file for event 1002"):
        datamodule(data_dir, tmp_path / "cache2").prepare_data()
    (data_dir / f"event{1002:09d}-truth.csv").unlink()
    assert not EventSource("trackml", data_dir=str(data_dir)).event(2).has_truth


def test_the_coordinate_limit_is_configurable(data_dir, tmp_path):
    """A detector larger than the default limit reads with a larger ``max_coordinate``; a
    non-positive limit is refused."""
    edit_table(data_dir / f"event{1001:09d}-hits.csv", set_cell("z", 2, "-250000.0"))
    with pytest.raises(TrackMLFormatError, match="-250000.0 mm"):
        EventDataset(EventSource("trackml", data_dir=str(data_dir)), [1])[0]
    data = EventDataset(EventSource("trackml", data_dir=str(data_dir), max_coordinate=1e6), [1])[0]
    assert float(data.pos[:, 2].min()) == -250000.0
    with pytest.raises(ValueError, match="max_coordinate must be > 0"):
        EventSource("trackml", data_dir=str(data_dir), max_coordinate=0)


# ----------------------------------------------------------------------- tolerated variants
def _lines(ending: bytes):
    return lambda raw: raw.replace(b"\n", ending)


# name -> (table, change of the file's bytes, ComputedWeightsWarning expected)
TOLERATED = {
    "extra_column": ("hits", None, False),
    "utf8_bom": ("hits", lambda raw: b"\xef\xbb\xbf" + raw, False),
    "crlf_line_ends": ("truth", _lines(b"\r\n"), False),
    "weight_column_missing": ("truth", None, True),
    "weights_all_zero": ("truth", None, True),
}


@pytest.mark.parametrize("case", sorted(TOLERATED))
def test_tolerated_variants_read_as_meant(data_dir, case):
    """An extra column is kept after the canonical ones; a UTF-8 byte-order mark and CRLF line
    ends change nothing; a missing or all-zero weight column is computed, with a
    ComputedWeightsWarning naming the file, to the weights the simulator wrote."""
    part, change, computed = TOLERATED[case]
    path = hits_file(data_dir, part=part)
    before = read_event(data_dir / f"event{1001:09d}")
    if change is not None:
        path.write_bytes(change(path.read_bytes()))
    elif case == "extra_column":
        edit_table(path, lambda df: df.assign(energy="1.5"))
    else:
        edit_table(path, (lambda df: df.drop(columns=["weight"])) if case == "weight_column_missing"
                   else (lambda df: df.assign(weight="0")))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        after = read_event(data_dir / f"event{1001:09d}")
    notes = [str(w.message) for w in record if issubclass(w.category, ComputedWeightsWarning)]
    if computed:
        reason = "is missing" if case == "weight_column_missing" else "sums to 0"
        assert len(notes) == 1 and notes[0].startswith(f"{path}: the truth 'weight' column {reason}; "
                                                       "computed the TrackML hit weights")
        np.testing.assert_allclose(after.truth["weight"], before.truth["weight"], rtol=1e-12, atol=0)
        after.truth["weight"] = before.truth["weight"]
    else:
        assert notes == []
    if case == "extra_column":
        assert list(after.hits.columns) == [*before.hits.columns, "energy"]
        assert (after.hits["energy"] == 1.5).all()
        after.hits = after.hits.drop(columns=["energy"])
    for table in ("hits", "truth", "particles"):
        pd.testing.assert_frame_equal(getattr(after, table), getattr(before, table), check_exact=True)


# ----------------------------------------------------------------------- writing
def test_failed_event_write_leaves_no_partial_event(tmp_path, good_events, monkeypatch):
    """write_event stages all tables and renames them only when every one was written."""
    real = trackml._write_csv
    calls = []

    def failing(df, path, compress):
        calls.append(path)
        if len(calls) == 2:  # the truth table, after hits was written in full
            real(df.iloc[:3], path, compress)
            raise OSError(5, "Input/output error")
        return real(df, path, compress)
    monkeypatch.setattr(trackml, "_write_csv", failing)
    with pytest.raises(OSError, match="Input/output"):
        write_event(good_events[0], tmp_path)
    assert list(tmp_path.iterdir()) == []
