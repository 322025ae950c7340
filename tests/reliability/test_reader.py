"""Bad input, end to end: every problem gets a clear error naming it, or a documented counted skip,
and nothing is left half-written on disk.

The corpus is generated here from small simulated events written as TrackML CSV and then
damaged; it is read the way training reads it (``EventDataModule(source="trackml")`` ->
``EventDataset`` -> on-disk cache -> DataLoader), not only through ``trackml.read_event``.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import os
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch

from gnn_jepa.cli import CheckpointMismatchError, main
from gnn_jepa.data import trackml
from gnn_jepa.data import dataset as dataset_module
from gnn_jepa.datamodule import EventDataModule, SkippedEventWarning
from gnn_jepa.data.dataset import CacheRebuildWarning, EventDataset, EventSource, atomic_torch_save
from gnn_jepa.data.event import Event
from gnn_jepa.data.simulator import Simulator
from gnn_jepa.data.trackml import TrackMLFormatError, read_event, write_event
from gnn_jepa.models import JEPAPretraining
from gnn_jepa.models.checkpoints import PretrainedLoadError
from gnn_jepa.models.track_finding import TrackFinding

ROOT = Path(__file__).resolve().parents[2]
NUM_EVENTS = 3
GRAPH = {"kind": "eta_phi", "radius": 0.05, "w_r": 0.0}
TINY_ENCODER = dict(d_model=16, d_embedding=8, n_layers=1, heads=2)
TINY_MODEL = dict(encoder=TINY_ENCODER, predictor={"d_model": 16, "layers": 1})


def simulate(n_particles: int, event_id: int) -> Event:
    sim = Simulator.from_preset("trackml", num_particles=n_particles, eta_range=(-2.0, 2.0))
    return sim.simulate(seed=event_id, event_id=event_id)


@pytest.fixture(scope="module")
def good_events() -> list[Event]:
    return [simulate(15, 1000 + i) for i in range(NUM_EVENTS)]


@pytest.fixture
def data_dir(tmp_path, good_events) -> Path:
    d = tmp_path / "events"
    d.mkdir()
    for ev in good_events:
        write_event(ev, d)
    return d


def datamodule(data_dir: Path, cache: Path | None, **kw) -> EventDataModule:
    args = dict(source="trackml", data_dir=str(data_dir), num_train=NUM_EVENTS, num_val=0, num_test=0,
                batch_size=2, graph=GRAPH, cache_dir=None if cache is None else str(cache))
    return EventDataModule(**{**args, **kw})


def leftovers(*dirs: Path) -> list[Path]:
    """Temporary files (of atomic writes) left anywhere under ``dirs``."""
    return [p for d in dirs if d.exists() for p in d.rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------- damaged CSV corpus
def _edit(path: Path, fn) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


def _set(col: str, row: int, value: str):
    def fn(df):
        df.loc[row, col] = value
        return df
    return fn


# name -> (table, edit, [fragments the message must contain])
CORPUS = {
    "nan_coordinate": ("hits", _set("x", 3, "nan"), ["column 'x'", "row 3", "non-finite value nan"]),
    "inf_coordinate": ("hits", _set("z", 0, "inf"), ["column 'z'", "row 0", "non-finite value inf"]),
    "empty_event": ("hits", lambda df: df.iloc[:0], ["no hits"]),
    "missing_column": ("hits", lambda df: df.drop(columns=["y"]), ["missing column(s) ['y']"]),
    "duplicate_hit_id": ("hits", lambda df: df.assign(hit_id=df["hit_id"].where(df.index != 5, df["hit_id"][2])),
                         ["duplicate hit_id", "rows 2 and 5"]),
    "truth_not_matching_hits": ("truth", lambda df: df.drop(index=4),
                                ["truth rows must list the hits", "is in hits but not in truth"]),
    "wrong_dtype_id": ("hits", _set("volume_id", 2, "8.5"), ["column 'volume_id'", "row 2", "'8.5'",
                                                             "not a 64-bit integer"]),
    "wrong_dtype_float": ("hits", _set("x", 1, "12,5"), ["column 'x'", "row 1", "'12,5'", "not a number"]),
    "unknown_particle": ("truth", _set("particle_id", 0, "999999999"), ["particle_id 999999999",
                                                                        "absent from"]),
    "huge_coordinate": ("hits", _set("x", 6, "1e30"), ["column 'x'", "row 6", "value 1e+30 mm",
                                                       "outside any detector", "--data.max_coordinate"]),
    "coordinate_in_um": ("hits", _set("z", 2, "-250000.0"), ["column 'z'", "row 2", "-250000.0 mm",
                                                             "|z| >= 100000 mm"]),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_csv_event_is_named_and_leaves_nothing_half_written(tmp_path, data_dir, case):
    part, edit, fragments = CORPUS[case]
    bad = data_dir / f"event{1001:09d}-{part}.csv"
    original = bad.read_bytes()
    _edit(bad, edit)
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
    raw = path.read_bytes()
    line6 = raw.split(b"\n")[5]
    changed = {"not_utf8": b"\xff\xfe" + line6[2:], "extra_field": line6 + b",7",
               "open_quote": b'"' + line6}[how]
    path.write_bytes(raw.replace(line6, changed, 1))
    return path


@pytest.mark.parametrize("how,what", [("truncated_gzip", "EOFError: Compressed file ended"),
                                      ("not_utf8", "UnicodeDecodeError: 'utf-8' codec"),
                                      ("extra_field", "Expected 7 fields in line 6, saw 8"),
                                      ("open_quote", "EOF inside string")])
def test_unreadable_csv_bytes_are_named(data_dir, how, what):
    """Bytes that are no CSV table (a cut gzip stream, not UTF-8, a ragged row, an open quote)
    are a TrackMLFormatError naming the file, like any other bad value."""
    bad = _damage_bytes(data_dir / f"event{1001:09d}-hits.csv", how)
    with pytest.raises(TrackMLFormatError) as err:
        EventDataset(EventSource("trackml", data_dir=str(data_dir)), [1])[0]
    msg = str(err.value)
    assert msg.startswith(f"{bad}: not a readable CSV table (") and what in msg, msg


def test_the_coordinate_limit_is_configurable(data_dir, tmp_path):
    """A detector larger than the default limit reads with a larger ``max_coordinate``; a
    non-positive limit is refused."""
    _edit(data_dir / f"event{1001:09d}-hits.csv", _set("z", 2, "-250000.0"))
    with pytest.raises(TrackMLFormatError, match="-250000.0 mm"):
        EventDataset(EventSource("trackml", data_dir=str(data_dir)), [1])[0]
    data = EventDataset(EventSource("trackml", data_dir=str(data_dir), max_coordinate=1e6), [1])[0]
    assert float(data.pos[:, 2].min()) == -250000.0
    with pytest.raises(ValueError, match="max_coordinate must be > 0"):
        EventSource("trackml", data_dir=str(data_dir), max_coordinate=0)


def test_missing_events_are_named(data_dir, tmp_path):
    dm = datamodule(data_dir, tmp_path / "cache", num_train=NUM_EVENTS + 2)
    with pytest.raises(IndexError, match=rf"event index {NUM_EVENTS} but .* holds {NUM_EVENTS} events"):
        dm.prepare_data()
    (data_dir / f"event{1002:09d}-truth.csv").unlink()
    with pytest.raises(TrackMLFormatError, match="missing truth file for event 1002"):
        datamodule(data_dir, tmp_path / "cache2").prepare_data()


# ----------------------------------------------------------------------- bad events: error or skip
def _bad_folder(tmp_path, good_events) -> tuple[Path, dict[int, str]]:
    """Five events, two of them bad in different ways: {global index: the reader's message}."""
    d = tmp_path / "mixed"
    d.mkdir()
    for ev in [*good_events, simulate(15, 1003), simulate(15, 1004)]:
        write_event(ev, d)
    _edit(d / f"event{1001:09d}-hits.csv", _set("x", 1, "12,5"))  # not a number
    _edit(d / f"event{1003:09d}-hits.csv", _set("z", 4, "1e30"))  # beyond the coordinate limit
    reasons = {}
    for index, eid in [(1, 1001), (3, 1003)]:
        with pytest.raises(TrackMLFormatError) as err:
            read_event(d / f"event{eid:09d}")
        reasons[index] = str(err.value)
    assert "'12,5' is not a number" in reasons[1] and "value 1e+30 mm is outside any detector" in reasons[3]
    return d, reasons


def skipping(d: Path, cache: Path | None, **kw) -> EventDataModule:
    return datamodule(d, cache, num_train=4, num_val=1, on_bad_event="skip", **kw)


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
    assert [str(w.message) for w in record if issubclass(w.category, SkippedEventWarning)] == [
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
    assert [str(w.message) for w in record if issubclass(w.category, SkippedEventWarning)] == [
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


def test_invalid_on_bad_event_is_refused(tmp_path, data_dir):
    expected = r"data.on_bad_event must be one of \('error', 'skip'\), got 'ignore'"
    with pytest.raises(ValueError, match=expected):
        datamodule(data_dir, None, on_bad_event="ignore")
    with pytest.raises(ValueError, match="data.on_bad_event must be one of"):
        main(["fit", "--config", str(ROOT / "configs/pretrain/trackml_small.yaml"),
              "--trainer.accelerator", "cpu", "--trainer.logger", "false",
              "--data.cache_dir", str(tmp_path / "cache"), "--data.on_bad_event", "ignore"])


# ----------------------------------------------------------------------- too small to mask: counted skip
def _truncate(ev: Event, n_hits: int) -> Event:
    hits, truth = ev.hits.iloc[:n_hits], ev.truth.iloc[:n_hits]
    particles = ev.particles[ev.particles["particle_id"].isin(truth["particle_id"])]
    return Event(hits=hits.reset_index(drop=True), truth=truth.reset_index(drop=True),
                 particles=particles.reset_index(drop=True), event_id=ev.event_id)


def test_events_without_valid_targets_are_counted_skips(tmp_path, good_events):
    """A one-hit event and a 12-hit event: no target region can reach min_target_hits=5 x K=4.

    The masker marks both graphs invalid and counts them; the JEPA step returns a zero loss
    that still has a graph (Lightning's backward needs one), and a fit runs through.
    """
    d = tmp_path / "small"
    d.mkdir()
    write_event(_truncate(good_events[0], 1), d)
    write_event(_truncate(good_events[1], 12), d)
    dm = datamodule(d, tmp_path / "cache", num_train=2)
    dm.prepare_data()
    batch = next(iter(dm.train_dataloader()))
    assert sorted(torch.bincount(batch.batch).tolist()) == [1, 12]

    pl.seed_everything(0)
    model = JEPAPretraining(**TINY_MODEL, masker={"num_targets": 4, "min_target_hits": 5})
    masks = model.masker(batch, model.mask_generator(0))
    assert masks.num_skipped == 2 and not masks.graph_valid.any()
    assert masks.num_regions == 0 and not masks.context.any() and (masks.target_region < 0).all()
    loss = model.training_step(batch, 0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None for g in grads)
    assert all(torch.count_nonzero(g) == 0 for g in grads if g is not None)

    logger = pl.loggers.CSVLogger(str(tmp_path), name="skip")
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=logger, log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         limit_val_batches=0)
    trainer.fit(model, dm)
    assert trainer.global_step == 2
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    skipped = [float(r["train/skipped_events"]) for r in rows if r.get("train/skipped_events")]
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert skipped == [2.0, 2.0] and losses == [0.0, 0.0]


# ----------------------------------------------------------------------- the on-disk cache
def assert_same_data(a, b) -> None:
    """Every attribute of two ``Data`` equal exactly (tensors element for element)."""
    assert sorted(a.keys()) == sorted(b.keys())
    for key in a.keys():
        if torch.is_tensor(a[key]):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def rebuild_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, CacheRebuildWarning)]


@contextlib.contextmanager
def no_rebuild():
    """A context in which a CacheRebuildWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheRebuildWarning)
        yield


def _flip_payload(f: Path) -> None:
    """Invert 16 bytes in the middle of the record's payload (the zip container does not notice)."""
    payload = torch.load(f, weights_only=False)["payload"]
    raw = bytearray(f.read_bytes())
    mid = raw.index(payload) + len(payload) // 2
    raw[mid:mid + 16] = bytes(b ^ 0xFF for b in raw[mid:mid + 16])
    f.write_bytes(bytes(raw))


# damage -> the reason the warning gives
DAMAGE = {
    "truncated": (lambda f, good: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]), "unreadable ("),
    "empty": (lambda f, good: f.write_bytes(b""), "unreadable (EOFError: "),
    "garbage": (lambda f, good: f.write_bytes(b"\x00not a pickle" * 8), "unreadable (UnpicklingError: "),
    "flipped_payload": (lambda f, good: _flip_payload(f),
                        "checksum mismatch (its bytes changed after it was written)"),
    "old_format": (lambda f, good: torch.save(good, f), "old cache format (a bare Data, no checksum)"),
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
    _edit(hits, _set("x", 3, "123.25"))
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


# ----------------------------------------------------------------------- checkpoints and configs
def _jepa_checkpoint(path: Path, cli: bool = True, **hp) -> Path:
    """A checkpoint with the layout ``gnn-jepa fit`` writes (LightningCLI adds ``_class_path``),
    or (``cli=False``) a plain ``Trainer`` writes."""
    pl.seed_everything(0)
    model = JEPAPretraining(**{**TINY_MODEL, **hp})
    hparams = dict(model.hparams)
    if cli:
        hparams = {"_class_path": "gnn_jepa.models.JEPAPretraining", **hparams,
                   "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams, "global_step": 0}, path)
    return path


def test_pretrained_checkpoint_of_another_config_is_refused(tmp_path):
    ck = _jepa_checkpoint(tmp_path / "jepa_d16.ckpt")
    with pytest.raises(PretrainedLoadError) as err:
        TrackFinding(encoder={**TINY_ENCODER, "d_model": 32}, pretrained=str(ck))
    msg = str(err.value)
    assert str(ck) in msg and "'d_model': (16, 32)" in msg
    ok = TrackFinding(encoder=TINY_ENCODER, pretrained=str(ck))  # the matching config loads
    sd = torch.load(ck, weights_only=False)["state_dict"]
    assert torch.equal(ok.encoder.input_proj.weight, sd["target_encoder.input_proj.weight"])
    with pytest.raises(PretrainedLoadError, match="no 'target_encoder.\\*' weights"):
        torch.save({"state_dict": {"head.w": torch.zeros(1)}}, tmp_path / "other.ckpt")
        TrackFinding(encoder=TINY_ENCODER, pretrained=str(tmp_path / "other.ckpt"))


@pytest.mark.parametrize("ckpt", ["file", "plain_trainer_file", "last"])
def test_fit_ckpt_path_of_another_config_is_refused_before_training(tmp_path, ckpt):
    """``--ckpt_path <file>``: LightningCLI would silently build the checkpoint's d_model=16
    instead of the given 32; ``--ckpt_path last`` (not parsed by LightningCLI) and a plain
    Trainer's checkpoint (which LightningCLI cannot parse) would fail inside Lightning's
    state_dict loading. All are refused up front, naming the file and the setting."""
    # default_root_dir/last.ckpt: what "last" finds
    ck = _jepa_checkpoint(tmp_path / "last.ckpt", cli=ckpt != "plain_trainer_file")
    args = ["fit", "--config", str(ROOT / "configs/pretrain/trackml_small.yaml"),
            "--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.max_steps", "1",
            "--trainer.default_root_dir", str(tmp_path), "--data.cache_dir", str(tmp_path / "cache"),
            "--ckpt_path", "last" if ckpt == "last" else str(ck)]
    small = [f"--model.init_args.encoder.{k}={v}" for k, v in TINY_ENCODER.items() if k != "d_model"]
    small += ["--model.init_args.predictor.d_model=16", "--model.init_args.predictor.layers=1"]
    with pytest.raises(CheckpointMismatchError) as err:
        main([*args, *small, "--model.init_args.encoder.d_model", "32"])
    msg = str(err.value)
    assert str(ck) in msg
    if ckpt == "file":
        assert "encoder.d_model: 16 vs 32" in msg
    else:
        assert "'encoder.d_model': (16, 32)" in msg and "context_encoder.input_proj.weight" in msg
    assert not (tmp_path / "cache").exists()  # refused before any data was prepared


@pytest.mark.parametrize("section,key", [("model", "d_modle"), ("data", "num_trian"), ("trainer", "max_step")])
def test_unknown_config_key_exits_nonzero_naming_it(tmp_path, capsys, section, key):
    import yaml
    cfg = yaml.safe_load((ROOT / "configs/pretrain/trackml_small.yaml").read_text())
    target = cfg[section]["init_args"] if section == "model" else cfg[section]
    target[key] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(bad)])
    assert exit_.value.code not in (0, None)
    assert key in capsys.readouterr().err


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

