"""The on-disk event cache: a damaged or stale cache file is rebuilt with a CacheRebuildWarning
naming the file and the reason (the epoch runs through, every event in it); a touched but
unchanged source is not rebuilt; a failed write leaves nothing behind. (And loading the
cached events never draws from the global RNG.)
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
import torch

from gnn_jepa.data import dataset as dataset_module
from gnn_jepa.data.dataset import (CACHE_FORMAT, CacheRebuildWarning, EventDataset, EventSource,
                                   atomic_torch_save)
from tests.reliability.conftest import (assert_same_data, datamodule, edit_table, leftovers,
                                        no_rebuild, rebuild_warnings, set_cell)


def _flip_payload(f: Path) -> None:
    """Invert 16 bytes in the middle of the record's payload (the zip container does not notice)."""
    payload = torch.load(f, weights_only=False)["payload"]
    raw = bytearray(f.read_bytes())
    mid = raw.index(payload) + len(payload) // 2
    raw[mid:mid + 16] = bytes(b ^ 0xFF for b in raw[mid:mid + 16])
    f.write_bytes(bytes(raw))


def _record(f: Path, **changes) -> None:
    """Rewrite the record with some of its fields changed."""
    torch.save({**torch.load(f, weights_only=False), **changes}, f)


def _payload(obj) -> dict:
    """Record fields of a payload that is not a Data, with a valid checksum."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    return {"payload": payload, "checksum": hashlib.sha256(payload).hexdigest()}


# damage -> the reason the warning gives
DAMAGE = {
    "truncated": (lambda f, good: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]), "unreadable ("),
    "empty": (lambda f, good: f.write_bytes(b""), "unreadable (EOFError: "),
    "garbage": (lambda f, good: f.write_bytes(b"\x00not a pickle" * 8), "unreadable (UnpicklingError: "),
    "flipped_payload": (lambda f, good: _flip_payload(f),
                        "checksum mismatch (its bytes changed after it was written)"),
    "old_format": (lambda f, good: torch.save(good, f), "old cache format (a bare Data, no checksum)"),
    "not_a_record": (lambda f, good: torch.save({"x": good.pos}, f), "not a cache record (a dict)"),
    "other_format_version": (lambda f, good: _record(f, format=1), f"cache format 1, expected {CACHE_FORMAT}"),
    "payload_not_data": (lambda f, good: _record(f, **_payload({"pos": good.pos})),
                         "payload is a dict, not a Data"),
    "payload_not_pickle": (lambda f, good: _record(f, payload=b"junk",
                                                   checksum=hashlib.sha256(b"junk").hexdigest()),
                           "unreadable payload ("),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_cache_file_is_rebuilt_naming_the_file(tmp_path, data_dir, damage):
    cache = tmp_path / "cache"
    dm = datamodule(data_dir, cache)
    dm.prepare_data()
    f = sorted(cache.rglob("event_*.pt"))[1]
    good = dm.train_dataloader().dataset[1]
    damage_fn, reason = DAMAGE[damage]
    damage_fn(f, good)
    loader = datamodule(data_dir, cache, batch_size=1).train_dataloader()
    with pytest.warns(CacheRebuildWarning) as record:
        ids = sorted(int(batch.event_id) for batch in loader)
    assert ids == [1000, 1001, 1002]  # the epoch ran through, every event in it
    [msg] = rebuild_warnings(record)  # one warning, naming the file and the reason
    assert msg.startswith(f"cached event file {f}: {reason}") and msg.endswith(": rebuilding event 1")
    with no_rebuild():  # rewritten as a valid record: loads as it is, equal to the original
        assert_same_data(datamodule(data_dir, cache).train_dataloader().dataset[1], good)
    assert not leftovers(cache)


def test_csv_edited_after_caching_is_read_again(tmp_path, data_dir):
    cache = tmp_path / "cache"
    datamodule(data_dir, cache).prepare_data()
    f = sorted(cache.rglob("event_*.pt"))[1]
    hits = data_dir / f"event{1001:09d}-hits.csv"
    edit_table(hits, set_cell("x", 3, "123.25"))
    with pytest.warns(CacheRebuildWarning) as record:
        data = datamodule(data_dir, cache).train_dataloader().dataset[1]
    assert rebuild_warnings(record) == [
        f"cached event file {f}: source file(s) {hits.name} (content changed) changed since it was "
        "cached: rebuilding event 1"]
    assert float(data.pos[3, 0]) == 123.25
    with no_rebuild():
        assert float(datamodule(data_dir, cache).train_dataloader().dataset[1].pos[3, 0]) == 123.25
    # a table that appears (a cells file) is a change too
    cells = data_dir / f"event{1001:09d}-cells.csv"
    cells.write_text("hit_id,ch0,ch1,value\n1,2,3,0.5\n")
    with pytest.warns(CacheRebuildWarning, match=rf"{cells.name} \(new file\) changed since"):
        datamodule(data_dir, cache).train_dataloader().dataset[1]


def test_source_file_removed_after_caching_is_a_change(tmp_path, data_dir):
    """An event cached with its cells file, which is then deleted, is read again."""
    cells = data_dir / f"event{1001:09d}-cells.csv"
    cells.write_text("hit_id,ch0,ch1,value\n1,2,3,0.5\n")
    cache = tmp_path / "cache"
    datamodule(data_dir, cache).prepare_data()
    f = sorted(cache.rglob("event_*.pt"))[1]
    cells.unlink()
    with pytest.warns(CacheRebuildWarning) as record:
        datamodule(data_dir, cache).train_dataloader().dataset[1]
    assert rebuild_warnings(record) == [
        f"cached event file {f}: source file(s) {cells.name} (removed) changed since it was "
        "cached: rebuilding event 1"]
    with no_rebuild():
        datamodule(data_dir, cache).train_dataloader().dataset[1]


def test_touched_source_file_is_not_rebuilt(tmp_path, data_dir, monkeypatch):
    """A new mtime with the same content: hashed once, no rebuild, the stamp refreshed (so the
    next load is a stat again)."""
    cache = tmp_path / "cache"
    datamodule(data_dir, cache).prepare_data()
    f = sorted(cache.rglob("event_*.pt"))[1]
    before = torch.load(f, weights_only=False)
    hits = data_dir / f"event{1001:09d}-hits.csv"
    st = hits.stat()
    os.utime(hits, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    hashed, real = [], dataset_module.file_sha256

    def counting(path):
        hashed.append(Path(path).name)
        return real(path)
    monkeypatch.setattr(dataset_module, "file_sha256", counting)
    with no_rebuild():
        data = datamodule(data_dir, cache).train_dataloader().dataset[1]
        assert hashed == [hits.name]
        after = torch.load(f, weights_only=False)
        assert after["checksum"] == before["checksum"] and after["payload"] == before["payload"]
        stamp = {e["name"]: e["mtime_ns"] for e in after["source"]}
        assert stamp[hits.name] == st.st_mtime_ns + 5_000_000_000
        assert [e["name"] for e in after["source"]] == [f"event{1001:09d}-{t}.csv" for t in
                                                        ("hits", "truth", "particles")]
        again = datamodule(data_dir, cache).train_dataloader().dataset[1]
        assert hashed == [hits.name]  # the refreshed stamp matches: nothing hashed
    assert_same_data(data, again)


def test_failed_cache_write_leaves_no_file(tmp_path, monkeypatch):
    """A write that dies half-way (disk full, ...) leaves neither the file nor its temp file."""
    def half_save(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", half_save)
    target = tmp_path / "cache" / "event_000000007.pt"
    with pytest.raises(OSError, match="No space left"):
        atomic_torch_save({"a": 1}, target)
    assert not target.exists() and not leftovers(tmp_path)
    monkeypatch.undo()
    src = EventSource("simulate", simulator={"preset": "trackml", "num_particles": 5}, seed=1)
    ds = EventDataset(src, [0], cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(OSError):
        ds[0]
    assert not list(ds.cache_path.glob("event_*")) and not leftovers(tmp_path)
    assert (ds.cache_path / "recipe.json").is_file()


def test_a_cache_dir_that_is_a_file_is_named(tmp_path, data_dir):
    """``cache_dir`` naming a file: the error names the folder it could not create under it."""
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("x")
    with pytest.raises(NotADirectoryError) as err:
        datamodule(data_dir, not_a_folder).prepare_data()
    assert f"Not a directory: '{not_a_folder}/" in str(err.value)
    assert not_a_folder.read_text() == "x"


# ----------------------------------------------------------------------- loading
def test_loading_never_draws_from_the_global_rng(tmp_path, data_dir):
    """Iterating the loaders (which seed their workers) leaves the global RNG as it was, so
    data loading cannot shift what a model draws, and a resumed run draws the same."""
    dm = datamodule(data_dir, tmp_path / "cache", num_train=1, num_val=1, num_test=1)
    dm.prepare_data()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        assert sum(1 for _ in loader) > 0
    assert torch.equal(torch.random.get_rng_state(), state)
