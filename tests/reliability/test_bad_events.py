"""A folder with bad events: ``on_bad_event: error`` (the default) stops at the first one,
naming it; ``on_bad_event: skip`` leaves each out of its split with a counted
SkippedEventWarning, lists it in ``dm.skipped`` and records it in the cache.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gnn_jepa.data import dataset as dataset_module
from gnn_jepa.data.trackml import TrackMLFormatError, read_event, write_event
from gnn_jepa.datamodule import EventDataModule, SkippedEventWarning
from tests.reliability.conftest import (datamodule, edit_table, leftovers, no_rebuild, set_cell,
                                        simulate)


def _bad_folder(tmp_path, good_events) -> tuple[Path, dict[int, str]]:
    """Five events, two of them bad in different ways: {global index: the reader's message}."""
    d = tmp_path / "mixed"
    d.mkdir()
    for ev in [*good_events, simulate(15, 1003), simulate(15, 1004)]:
        write_event(ev, d)
    edit_table(d / f"event{1001:09d}-hits.csv", set_cell("x", 1, "12,5"))  # not a number
    edit_table(d / f"event{1003:09d}-hits.csv", set_cell("z", 4, "1e30"))  # beyond the coordinate limit
    reasons = {}
    for index, eid in [(1, 1001), (3, 1003)]:
        with pytest.raises(TrackMLFormatError) as err:
            read_event(d / f"event{eid:09d}")
        reasons[index] = str(err.value)
    assert "'12,5' is not a number" in reasons[1] and "value 1e+30 mm is outside any detector" in reasons[3]
    return d, reasons


def skipping(d: Path, cache: Path | None, **kw) -> EventDataModule:
    return datamodule(d, cache, num_train=4, num_val=1, on_bad_event="skip", **kw)


def skip_messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, SkippedEventWarning)]


@pytest.mark.parametrize("workers", [0, 2])
def test_on_bad_event_skip_leaves_out_and_counts_bad_events(tmp_path, good_events, monkeypatch, workers):
    d, reasons = _bad_folder(tmp_path, good_events)
    cache = tmp_path / "cache"
    dm = skipping(d, cache, prepare_workers=workers)
    with pytest.warns(SkippedEventWarning) as record:
        dm.prepare_data()
        train = sorted(int(b.event_id) for batch in dm.train_dataloader() for b in batch.to_data_list())
        val = [int(b.event_id) for b in dm.val_dataloader()]
    assert train == [1000, 1002] and val == [1004]
    assert dm.skipped == {"train": [(1, reasons[1]), (3, reasons[3])], "val": []}
    name = {i: d / f"event{1000 + i:09d}" for i in (1, 3)}
    assert skip_messages(record) == [
        f"skipping event 1 ({name[1]}) of split 'train' (bad data): {reasons[1]}",
        f"skipping event 3 ({name[3]}) of split 'train' (bad data): {reasons[3]}",
        f"skipped 2 of 4 events of split 'train' (bad data): 1 ({name[1]}), 3 ({name[3]})"]
    # the cache: a data file per good event, a bad-event record per bad one, nothing else
    folder = next(cache.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == [
        "event_000000000.pt", "event_000000001.bad.json", "event_000000002.pt",
        "event_000000003.bad.json", "event_000000004.pt", "recipe.json"]

    # another rank (no prepare_data there) and the next run: the same lists, from the records
    # alone, no file read and nothing rebuilt
    monkeypatch.setattr(dataset_module, "read_event", lambda *a, **k: pytest.fail("read an event"))
    with no_rebuild(), pytest.warns(SkippedEventWarning):
        other = skipping(d, cache)
        assert other._dataset("train").indices == [0, 2] and other._dataset("val").indices == [4]
        again = skipping(d, cache)
        again.prepare_data()
        assert again._dataset("train").indices == [0, 2]
    assert other.skipped == dm.skipped and again.skipped == {"train": dm.skipped["train"]}
    monkeypatch.undo()

    # repaired, event 1 comes back (its record no longer matches its files); event 3 stays out
    write_event(good_events[1], d)
    fixed = skipping(d, cache)
    with pytest.warns(SkippedEventWarning) as record:
        fixed.prepare_data()
        assert fixed._dataset("train").indices == [0, 1, 2]
    assert skip_messages(record) == [
        f"skipping event 3 ({name[3]}) of split 'train' (bad data): {reasons[3]}",
        f"skipped 1 of 4 events of split 'train' (bad data): 3 ({name[3]})"]
    assert fixed.skipped["train"] == [(3, reasons[3])]
    assert not (folder / "event_000000001.bad.json").exists() and (folder / "event_000000001.pt").exists()

    # without a cache: the same events left out, the same reasons
    memory = skipping(d, None)
    with pytest.warns(SkippedEventWarning):
        assert memory._dataset("train").indices == [0, 1, 2]
    assert memory.skipped == {"train": [(3, reasons[3])]}
    assert not leftovers(cache, d)
    with pytest.warns(SkippedEventWarning), pytest.raises(
            ValueError, match=r"every one of the 1 events of split 'train' has bad data"):
        datamodule(d, None, train_offset=3, num_train=1, on_bad_event="skip")._dataset("train")


def test_on_bad_event_error_stops_at_the_first_bad_event_naming_it(tmp_path, good_events):
    d, reasons = _bad_folder(tmp_path, good_events)
    for cache in (tmp_path / "cache", None):
        dm = datamodule(d, cache, num_train=4, num_val=1)
        assert dm.on_bad_event == "error"  # the default
        with pytest.raises(TrackMLFormatError) as err:
            dm.prepare_data()
            list(dm.train_dataloader())
        assert str(err.value) == reasons[1] and f"event{1001:09d}-hits.csv" in reasons[1]
    assert not list((tmp_path / "cache").rglob("*.bad.json"))  # nothing recorded as bad


def test_an_unreadable_file_is_a_counted_skip(tmp_path, data_dir):
    """Bytes that are no CSV (here: not UTF-8) are bad data like a bad value: skipped, counted."""
    hits = data_dir / f"event{1001:09d}-hits.csv"
    hits.write_bytes(b"\xff\xfe" + hits.read_bytes())
    dm = datamodule(data_dir, tmp_path / "cache", on_bad_event="skip")
    with pytest.warns(SkippedEventWarning) as record:
        dm.prepare_data()
        assert dm._dataset("train").indices == [0, 2]
    [(index, reason)] = dm.skipped["train"]
    assert index == 1 and reason.startswith(f"{hits}: not a readable CSV table (UnicodeDecodeError")
    assert skip_messages(record)[-1] == (f"skipped 1 of 3 events of split 'train' (bad data): "
                                         f"1 ({data_dir / 'event000001001'})")


@pytest.mark.parametrize("damage", ["garbage", "no_reason"])
def test_a_damaged_bad_event_record_is_checked_again(tmp_path, data_dir, damage):
    """A bad-event record that cannot be read is no verdict: the event is read again, found bad
    again, skipped with the same reason, and the record rewritten."""
    edit_table(data_dir / f"event{1001:09d}-hits.csv", set_cell("x", 1, "12,5"))
    cache = tmp_path / "cache"
    first = datamodule(data_dir, cache, on_bad_event="skip")
    with pytest.warns(SkippedEventWarning):
        first.prepare_data()
        first._dataset("train")
    [marker] = cache.rglob("event_000000001.bad.json")
    good_record = json.loads(marker.read_text())
    marker.write_text("{not json" if damage == "garbage" else json.dumps({"source": []}))
    again = datamodule(data_dir, cache, on_bad_event="skip")
    with pytest.warns(SkippedEventWarning):
        again.prepare_data()
        assert again._dataset("train").indices == [0, 2]
    assert again.skipped == first.skipped
    assert json.loads(marker.read_text())["reason"] == good_record["reason"]
